;; The worker whose index is the i32 at data_offset traps at once (unreachable);
;; every other worker counts itself in, waits for the host to open a gate, then
;; counts itself out. i32 words of the data region:
;;   +0  index of the worker that traps (-1: none)
;;   +4  gate: the host opens it with an atomic store of 1 and a notify
;;   +8  workers that entered     +12  workers that gave up waiting (after 10 s)
;;   +16 workers that finished
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (import "env" "worker_index" (global $index i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (if (i32.eq (i32.atomic.load (global.get $data)) (global.get $index)) (then unreachable))
    (drop (i32.atomic.rmw.add offset=8 (global.get $data) (i32.const 1)))
    (block $open
      (loop $closed
        (br_if $open (i32.atomic.load offset=4 (global.get $data)))
        ;; returns at once ("not-equal") if the gate opened since the load
        (if (i32.eq
              (memory.atomic.wait32 offset=4 (global.get $data) (i32.const 0)
                (i64.const 10000000000))
              (i32.const 2))
          (then
            (drop (i32.atomic.rmw.add offset=12 (global.get $data) (i32.const 1)))
            (br $open)))
        (br $closed)))
    (drop (i32.atomic.rmw.add offset=16 (global.get $data) (i32.const 1)))))
