;; Blocks worker 0 alone until the host opens a gate, then counts its elements.
;;
;; Worker 0 first adds 1 to the "entered" word, then waits until the gate word
;; is non-zero; after 10 s it gives up, adds 1 to the "gave up" word and goes on,
;; so a caller wrongly blocked here fails a test instead of hanging it. Every
;; worker then atomically adds 1 to the i32 at data_offset + 4 * i for every i
;; of its range. The words live at data_offset + 65536 (element 16384):
;;   +0 gate   +4 entered   +8 gave up
;; The host opens the gate with an atomic store of a non-zero value followed
;; by a notify on the same word.
(module
  (import "env" "memory" (memory 2 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (import "env" "worker_index" (global $index i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (local $gate i32) (local $p i32) (local $stop i32)
    (local.set $gate (i32.add (global.get $data) (i32.const 65536)))
    (if (i32.eqz (global.get $index))
      (then
        (drop (i32.atomic.rmw.add offset=4 (local.get $gate) (i32.const 1)))
        (block $open
          (loop $closed
            (br_if $open (i32.atomic.load (local.get $gate)))
            ;; returns at once ("not-equal") if the gate opened since the load
            (if (i32.eq
                  (memory.atomic.wait32 (local.get $gate) (i32.const 0) (i64.const 10000000000))
                  (i32.const 2))
              (then
                (drop (i32.atomic.rmw.add offset=8 (local.get $gate) (i32.const 1)))
                (br $open)))
            (br $closed)))))
    (local.set $p (i32.add (global.get $data) (i32.shl (local.get $start) (i32.const 2))))
    (local.set $stop (i32.add (global.get $data) (i32.shl (local.get $end) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $stop)))
        (drop (i32.atomic.rmw.add (local.get $p) (i32.const 1)))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $next)))))
