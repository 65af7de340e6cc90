;; Worker 0 parks in memory.atomic.wait32 on the i32 at data + 0 (expected 0,
;; 10 s timeout) and stores the wait's result code at data + 4 (0 "ok",
;; 1 "not-equal", 2 "timed-out"). It then notifies the i32 at data + 8 once
;; a millisecond until a notify wakes a waiter (at most 10000 tries) and stores
;; how many that notify woke at data + 12. data + 16 is its private sleep word.
;; Other workers do nothing.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (import "env" "worker_index" (global $index i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (local $woken i32) (local $tries i32)
    (if (i32.ne (global.get $index) (i32.const 0)) (then (return)))
    (i32.atomic.store
      (i32.add (global.get $data) (i32.const 4))
      (memory.atomic.wait32 (global.get $data) (i32.const 0) (i64.const 10000000000)))
    (block $done
      (loop $retry
        (local.set $woken
          (memory.atomic.notify (i32.add (global.get $data) (i32.const 8)) (i32.const 1)))
        (br_if $done (local.get $woken))
        (local.set $tries (i32.add (local.get $tries) (i32.const 1)))
        (br_if $done (i32.ge_u (local.get $tries) (i32.const 10000)))
        ;; nobody parked yet: sleep 1 ms on a word that stays 0
        (drop (memory.atomic.wait32
          (i32.add (global.get $data) (i32.const 16)) (i32.const 0) (i64.const 1000000)))
        (br $retry)))
    (i32.atomic.store (i32.add (global.get $data) (i32.const 12)) (local.get $woken))))
