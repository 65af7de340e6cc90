;; Counts how often each element is processed, and logs every call.
;;
;; For every i of its range it atomically adds 1 to the i32 at data_offset + 4 * i,
;; except that an element holding -1 traps (unreachable) before it is counted.
;; Bookkeeping lives at data_offset + 65536 (element 16384), so a run must use
;; fewer elements than that and a memory large enough for the log:
;;   +0   i32  elements of every call that returned, summed
;;   +4   i32  calls started, also the log's cursor
;;   +16  log, one 16-byte entry per call in the order calls began:
;;        i32 start, i32 end, i32 worker_index, i32 1 once the call returned
(module
  (import "env" "memory" (memory 2 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (import "env" "worker_index" (global $index i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (local $book i32) (local $entry i32) (local $p i32) (local $stop i32)
    (local.set $book (i32.add (global.get $data) (i32.const 65536)))
    (local.set $entry
      (i32.add
        (i32.add (local.get $book) (i32.const 16))
        (i32.shl
          (i32.atomic.rmw.add offset=4 (local.get $book) (i32.const 1))
          (i32.const 4))))
    (i32.store (local.get $entry) (local.get $start))
    (i32.store offset=4 (local.get $entry) (local.get $end))
    (i32.store offset=8 (local.get $entry) (global.get $index))
    (local.set $p (i32.add (global.get $data) (i32.shl (local.get $start) (i32.const 2))))
    (local.set $stop (i32.add (global.get $data) (i32.shl (local.get $end) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $stop)))
        (if (i32.eq (i32.atomic.load (local.get $p)) (i32.const -1)) (then unreachable))
        (drop (i32.atomic.rmw.add (local.get $p) (i32.const 1)))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $next)))
    (i32.store offset=12 (local.get $entry) (i32.const 1))
    (drop
      (i32.atomic.rmw.add (local.get $book) (i32.sub (local.get $end) (local.get $start))))))
