;; For every element of its range, adds 1 to the one i32 counter at data_offset
;; with a plain load, add and store: NOT atomic, so concurrent workers lose
;; updates. This is the mistake the tests document.
;;
;; The loaded value is also folded into a checksum (stored at data_offset + 64),
;; so that it has a second use: otherwise the compiler may fuse load, add and
;; store into one x86 `add [mem], 1`, which is still not atomic across CPUs
;; but cannot be preempted halfway, so on one CPU it would never lose an update.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (local $i i32) (local $x i32) (local $sum i32)
    (local.set $i (local.get $start))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (local.set $x (i32.load (global.get $data)))
        (i32.store (global.get $data) (i32.add (local.get $x) (i32.const 1)))
        (local.set $sum (i32.xor (local.get $sum) (local.get $x)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (i32.store offset=64 (global.get $data) (local.get $sum))))
