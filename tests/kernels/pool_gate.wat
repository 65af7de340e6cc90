;; Blocks every worker until the host opens a gate: the i32 at data_offset.
;; Word 1 counts workers that entered compute_partition, word 2 those that
;; left it. The host opens the gate with an atomic store of a non-zero value
;; followed by a notify on the same word.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (drop (i32.atomic.rmw.add offset=4 (global.get $data) (i32.const 1)))
    (block $open
      (loop $closed
        (br_if $open (i32.atomic.load (global.get $data)))
        ;; returns at once ("not-equal") if the gate opened since the load
        (drop (memory.atomic.wait32 (global.get $data) (i32.const 0) (i64.const -1)))
        (br $closed)))
    (drop (i32.atomic.rmw.add offset=8 (global.get $data) (i32.const 1)))))
