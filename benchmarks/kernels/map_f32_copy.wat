;; Out of place over float32: out[i] = (x[i] * x[i]) * 0.25 + sqrt(x[i]), the math of
;; the built-in map_f32 kernel, four lanes at a time (each lane rounds exactly as the
;; scalar code and numpy's float32 do), so that the input survives a run.
;;
;;   entry:map_f32_copy(start, end, const float *x, float *out)
;;
;; writes out[start:end] and only reads x.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (func (export "entry:map_f32_copy") (param $start i32) (param $end i32)
    (param $x i32) (param $out i32)
    (local $src i32) (local $dst i32) (local $stop i32) (local $stop4 i32)
    (local $v v128) (local $xi f32)
    (local.set $src (i32.add (local.get $x) (i32.shl (local.get $start) (i32.const 2))))
    (local.set $stop (i32.add (local.get $x) (i32.shl (local.get $end) (i32.const 2))))
    ;; The last address at which four whole lanes still fit before $stop.
    (local.set $stop4
      (i32.sub (local.get $stop)
        (i32.shl (i32.and (i32.sub (local.get $end) (local.get $start)) (i32.const 3)) (i32.const 2))))
    (local.set $dst (i32.add (local.get $out) (i32.shl (local.get $start) (i32.const 2))))
    (block $simd_done
      (loop $simd
        (br_if $simd_done (i32.ge_u (local.get $src) (local.get $stop4)))
        (local.set $v (v128.load (local.get $src)))
        (v128.store (local.get $dst)
          (f32x4.add
            (f32x4.mul (f32x4.mul (local.get $v) (local.get $v)) (v128.const f32x4 0.25 0.25 0.25 0.25))
            (f32x4.sqrt (local.get $v))))
        (local.set $src (i32.add (local.get $src) (i32.const 16)))
        (local.set $dst (i32.add (local.get $dst) (i32.const 16)))
        (br $simd)))
    (block $done
      (loop $tail
        (br_if $done (i32.ge_u (local.get $src) (local.get $stop)))
        (local.set $xi (f32.load (local.get $src)))
        (f32.store (local.get $dst)
          (f32.add
            (f32.mul (f32.mul (local.get $xi) (local.get $xi)) (f32.const 0.25))
            (f32.sqrt (local.get $xi))))
        (local.set $src (i32.add (local.get $src) (i32.const 4)))
        (local.set $dst (i32.add (local.get $dst) (i32.const 4)))
        (br $tail))))
  (@custom "sharedwasm.entries"
    "{\"version\": 1, \"entries\": {\"map_f32_copy\": ["
    "{\"name\": \"x\", \"type\": \"const float *\"}, {\"name\": \"out\", \"type\": \"float *\"}]}}"))
