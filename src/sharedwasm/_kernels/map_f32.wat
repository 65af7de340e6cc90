;; In place over float32 elements: x = (x * x) * 0.25 + sqrt(x).
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (local $p i32) (local $stop i32) (local $x f32)
    (local.set $p (i32.add (global.get $data) (i32.shl (local.get $start) (i32.const 2))))
    (local.set $stop (i32.add (global.get $data) (i32.shl (local.get $end) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $stop)))
        (local.set $x (f32.load (local.get $p)))
        (f32.store (local.get $p)
          (f32.add
            (f32.mul (f32.mul (local.get $x) (local.get $x)) (f32.const 0.25))
            (f32.sqrt (local.get $x))))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $next)))))
