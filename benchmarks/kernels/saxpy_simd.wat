;; SAXPY, y = a * x + y with a = 2.0, four elements at a time with f32x4,
;; then a scalar tail.
;;
;; Data layout, in bytes from data_offset (the same as saxpy_scalar.wat):
;;
;;   0          n, an i32: the length of x and of y
;;   64         x: n float32
;;   64 + 4n    y: n float32 (64-byte aligned when n is a multiple of 16)
;;
;; Run it with `elements=n`; compute_partition(start, end) updates
;; y[start:end]. Each lane is an f32 multiply then an f32 add, not fused.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (local $px i32) (local $vstop i32) (local $stop i32) (local $dy i32)
    (local.set $px
      (i32.add (i32.add (global.get $data) (i32.const 64)) (i32.shl (local.get $start) (i32.const 2))))
    (local.set $stop
      (i32.add (i32.add (global.get $data) (i32.const 64)) (i32.shl (local.get $end) (i32.const 2))))
    (local.set $vstop
      (i32.add (local.get $px)
        (i32.and (i32.sub (local.get $stop) (local.get $px)) (i32.const -16))))
    ;; y[i] lives 4n bytes after x[i].
    (local.set $dy (i32.shl (i32.load (global.get $data)) (i32.const 2)))
    (block $vdone
      (loop $vnext
        (br_if $vdone (i32.ge_u (local.get $px) (local.get $vstop)))
        (v128.store (i32.add (local.get $px) (local.get $dy))
          (f32x4.add
            (f32x4.mul (v128.const f32x4 2.0 2.0 2.0 2.0) (v128.load (local.get $px)))
            (v128.load (i32.add (local.get $px) (local.get $dy)))))
        (local.set $px (i32.add (local.get $px) (i32.const 16)))
        (br $vnext)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $px) (local.get $stop)))
        (f32.store (i32.add (local.get $px) (local.get $dy))
          (f32.add
            (f32.mul (f32.const 2.0) (f32.load (local.get $px)))
            (f32.load (i32.add (local.get $px) (local.get $dy)))))
        (local.set $px (i32.add (local.get $px) (i32.const 4)))
        (br $next)))))
