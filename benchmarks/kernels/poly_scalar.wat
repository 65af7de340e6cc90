;; In place over float32 elements [start, end) of the array x, one element
;; at a time: 64 times x = x * 1.0001 + 0.5.
;;
;; Each step is an f32.mul rounded to float32, then an f32.add rounded to
;; float32 (wasm has no fused multiply-add), so the result is bit-identical to
;; numpy's `x = x * np.float32(1.0001) + np.float32(0.5)` repeated 64 times.
;; The multiplier is written in hex so that it is exactly np.float32(1.0001).
;;
;;   entry:poly(start, end, float *x)
(module
  (import "env" "memory" (memory 1 65536 shared))
  (func (export "entry:poly") (param $start i32) (param $end i32) (param $x i32)
    (local $p i32) (local $stop i32) (local $xi f32) (local $i i32)
    (local.set $p (i32.add (local.get $x) (i32.shl (local.get $start) (i32.const 2))))
    (local.set $stop (i32.add (local.get $x) (i32.shl (local.get $end) (i32.const 2))))
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
