;; For every element i of its range, stores total_workers * 1000 + worker_index + 1
;; as the i32 at data_offset + 4 * i. Proves that partitions are disjoint, cover
;; [0, total) exactly, and that each worker receives the globals the pool provides.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (import "env" "worker_index" (global $index i32))
  (import "env" "total_workers" (global $workers i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (local $i i32)
    (local.set $i (local.get $start))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        ;; plain store: each worker owns its slice, so no atomics are needed
        (i32.store
          (i32.add (global.get $data) (i32.shl (local.get $i) (i32.const 2)))
          (i32.add
            (i32.mul (global.get $workers) (i32.const 1000))
            (i32.add (global.get $index) (i32.const 1))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))))
