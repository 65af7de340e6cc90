;; In place over float32 elements [start, end) of the array x, four at a
;; time with f32x4, then a scalar tail: 64 times x = x * 1.0001 + 0.5.
;;
;; f32x4.mul and f32x4.add round each lane to float32 like their scalar
;; counterparts, and nothing is fused, so the result is bit-identical to
;; poly_scalar.wat and to numpy's float32 loop. The multiplier is written in
;; hex so that it is exactly np.float32(1.0001).
;;
;;   entry:poly(start, end, float *x)
(module
  (import "env" "memory" (memory 1 65536 shared))
  (func (export "entry:poly") (param $start i32) (param $end i32) (param $x i32)
    (local $p i32) (local $vstop i32) (local $stop i32) (local $i i32)
    (local $v v128) (local $xi f32)
    (local.set $p (i32.add (local.get $x) (i32.shl (local.get $start) (i32.const 2))))
    (local.set $stop (i32.add (local.get $x) (i32.shl (local.get $end) (i32.const 2))))
    ;; Last byte a whole vector may start at: the range rounded down to 4 elements.
    (local.set $vstop
      (i32.add (local.get $p)
        (i32.and (i32.sub (local.get $stop) (local.get $p)) (i32.const -16))))
    (block $vdone
      (loop $vnext
        (br_if $vdone (i32.ge_u (local.get $p) (local.get $vstop)))
        (local.set $v (v128.load (local.get $p)))
        (local.set $i (i32.const 64))
        (loop $vstep
          (local.set $v
            (f32x4.add
              (f32x4.mul (local.get $v) (v128.const f32x4 0x1.00068ep+0 0x1.00068ep+0 0x1.00068ep+0 0x1.00068ep+0))
              (v128.const f32x4 0.5 0.5 0.5 0.5)))
          (local.set $i (i32.sub (local.get $i) (i32.const 1)))
          (br_if $vstep (local.get $i)))
        (v128.store (local.get $p) (local.get $v))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br $vnext)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $stop)))
        (local.set $xi (f32.load (local.get $p)))
        (local.set $i (i32.const 64))
        (loop $step
          (local.set $xi
            (f32.add (f32.mul (local.get $xi) (f32.const 0x1.00068ep+0)) (f32.const 0.5)))
          (local.set $i (i32.sub (local.get $i) (i32.const 1)))
          (br_if $step (local.get $i)))
        (f32.store (local.get $p) (local.get $xi))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $next))))
  (@custom "sharedwasm.entries"
    "{\"version\": 1, \"entries\": {\"poly\": [{\"name\": \"x\", \"type\": \"float *\"}]}}"))
