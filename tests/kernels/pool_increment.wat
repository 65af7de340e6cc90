;; Adds 1 to the i32 at data_offset + 4 * i for every i of its range, except
;; that an element holding -1 traps (unreachable): a kernel failure the host
;; can aim at one worker's partition.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (local $p i32) (local $stop i32) (local $x i32)
    (local.set $p (i32.add (global.get $data) (i32.shl (local.get $start) (i32.const 2))))
    (local.set $stop (i32.add (global.get $data) (i32.shl (local.get $end) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $stop)))
        (local.set $x (i32.load (local.get $p)))
        (if (i32.eq (local.get $x) (i32.const -1)) (then unreachable))
        (i32.store (local.get $p) (i32.add (local.get $x) (i32.const 1)))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $next)))))
