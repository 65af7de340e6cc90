;; Worker 0 plays rounds [start, end) of ping-pong with the host over i32 words
;; at the data region: turn (data + 0), payload (data + 4), reply (data + 8),
;; error (data + 12). In round r it waits until turn is 2r+1 (the host's
;; move), reads payload with a plain load, writes payload + 1 to reply with a
;; plain store, then stores turn = 2r+2 and notifies it. A wait that times out
;; (10 s) stores r + 1 in error and gives up. Other workers do nothing.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (import "env" "worker_index" (global $index i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (local $r i32) (local $want i32) (local $seen i32)
    (if (i32.ne (global.get $index) (i32.const 0)) (then (return)))
    (local.set $r (local.get $start))
    (block $finished
      (loop $round
        (br_if $finished (i32.ge_u (local.get $r) (local.get $end)))
        (local.set $want
          (i32.add (i32.shl (local.get $r) (i32.const 1)) (i32.const 1)))
        (block $ready
          (loop $park
            (local.set $seen (i32.atomic.load (global.get $data)))
            (br_if $ready (i32.eq (local.get $seen) (local.get $want)))
            (if (i32.eq
                  (memory.atomic.wait32
                    (global.get $data) (local.get $seen) (i64.const 10000000000))
                  (i32.const 2))
              (then
                (i32.atomic.store
                  (i32.add (global.get $data) (i32.const 12))
                  (i32.add (local.get $r) (i32.const 1)))
                (return)))
            (br $park)))
        (i32.store
          (i32.add (global.get $data) (i32.const 8))
          (i32.add (i32.load (i32.add (global.get $data) (i32.const 4))) (i32.const 1)))
        (i32.atomic.store (global.get $data) (i32.add (local.get $want) (i32.const 1)))
        (drop (memory.atomic.notify (global.get $data) (i32.const -1)))
        (local.set $r (i32.add (local.get $r) (i32.const 1)))
        (br $round)))))
