;; Writes f(i, run) = i * 31 + run * 1000003 (wrapping i32) as the i32 element i
;; of its range; grows the memory, traps and hangs on request.
;;
;; Header: i32 words at absolute bytes 0..15, before the pool's status board
;; (the pool leaves bytes before status_offset alone):
;;   +0   pages to grow: the first call that swaps it for 0 runs memory.grow
;;   +4   memory.grow's result, the previous page count (-1: refused)
;;   +8   run counter, written by the host before each run
;;   +12  element index at which any worker traps, before writing it; -1: none
;;   +16  element index at which any worker hangs, before writing it (a loop
;;        that only an interrupt ends); -1: none
;;   +20  set to 1 by a worker that hangs
;; Element i is at data_offset + 4 * i.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))

  (func (export "compute_partition") (param $start i32) (param $end i32)
    (local $i i32) (local $p i32) (local $pages i32) (local $base i32) (local $at i32)
    (local $hang i32)
    (local.set $pages (i32.atomic.rmw.xchg (i32.const 0) (i32.const 0)))
    (if (local.get $pages)
      (then (i32.atomic.store (i32.const 4) (memory.grow (local.get $pages)))))
    (local.set $base (i32.mul (i32.atomic.load (i32.const 8)) (i32.const 1000003)))
    (local.set $at (i32.atomic.load (i32.const 12)))
    (local.set $hang (i32.atomic.load (i32.const 16)))
    (local.set $p (i32.add (global.get $data) (i32.shl (local.get $start) (i32.const 2))))
    (local.set $i (local.get $start))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (if (i32.eq (local.get $i) (local.get $at)) (then unreachable))
        (if (i32.eq (local.get $i) (local.get $hang))
          (then
            (i32.atomic.store (i32.const 20) (i32.const 1))
            (loop $forever (br $forever))))
        (i32.store (local.get $p)
          (i32.add (i32.mul (local.get $i) (i32.const 31)) (local.get $base)))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))))
