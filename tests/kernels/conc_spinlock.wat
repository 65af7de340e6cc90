;; A spinlock shared with the host around a plain, non-atomic counter.
;;
;; i32 words of the data region:
;;   +0   lock: 0 free, 1 held; taken with compare-exchange 0 -> 1 and
;;        released with an atomic store of 0, by the host and the kernel alike
;;   +4   counter: plain loads and stores, only under the lock
;;   +8   go: every worker waits (up to 10 s) until the host stores non-zero
;;   +12  workers that are waiting for go, or past it
;;   +16  stop: the host stores non-zero once it has done its own cycles
;;   +20  K, the cycles each worker does at least
;;   +24  cycles every worker did, summed
;;   +28  workers that left because of stop (rather than at the end of the range)
;;   +32  workers that gave up: on go after 10 s, or on the lock after about
;;        5000 waits of 1 ms; a worker that gave up on the lock stops
;;   +36  failed compare-exchanges (contention the kernel saw)
;; A worker does one lock / add 1 / unlock cycle per element of its range, and
;; leaves early once it has done K cycles and stop is set; so the range only
;; caps a worker whose host never stops it.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (local $i i32) (local $cycles i32) (local $spins i32) (local $waits i32)
    (drop (i32.atomic.rmw.add offset=12 (global.get $data) (i32.const 1)))
    (block $go
      (loop $wait_go
        (br_if $go (i32.atomic.load offset=8 (global.get $data)))
        (if (i32.eq
              (memory.atomic.wait32 offset=8 (global.get $data) (i32.const 0)
                (i64.const 10000000000))
              (i32.const 2))
          (then
            (drop (i32.atomic.rmw.add offset=32 (global.get $data) (i32.const 1)))
            (br $go)))
        (br $wait_go)))
    (local.set $i (local.get $start))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (if (i32.ge_u (local.get $cycles) (i32.atomic.load offset=20 (global.get $data)))
          (then
            (if (i32.atomic.load offset=16 (global.get $data))
              (then
                (drop (i32.atomic.rmw.add offset=28 (global.get $data) (i32.const 1)))
                (br $done)))))
        (local.set $spins (i32.const 0))
        (local.set $waits (i32.const 0))
        (block $acquired
          (loop $acquire
            (br_if $acquired
              (i32.eqz
                (i32.atomic.rmw.cmpxchg (global.get $data) (i32.const 0) (i32.const 1))))
            (drop (i32.atomic.rmw.add offset=36 (global.get $data) (i32.const 1)))
            (local.set $spins (i32.add (local.get $spins) (i32.const 1)))
            ;; Spin a while, then sleep 1 ms at a time: the host releases
            ;; without a notify, and a holder may be descheduled.
            (if (i32.ge_u (local.get $spins) (i32.const 1000))
              (then
                (drop (memory.atomic.wait32 (global.get $data) (i32.const 1) (i64.const 1000000)))
                (local.set $waits (i32.add (local.get $waits) (i32.const 1)))
                (if (i32.ge_u (local.get $waits) (i32.const 5000))
                  (then
                    (drop (i32.atomic.rmw.add offset=32 (global.get $data) (i32.const 1)))
                    (br $done)))))
            (br $acquire)))
        (i32.store offset=4
          (global.get $data) (i32.add (i32.load offset=4 (global.get $data)) (i32.const 1)))
        (i32.atomic.store (global.get $data) (i32.const 0))
        (local.set $cycles (i32.add (local.get $cycles) (i32.const 1)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (drop (i32.atomic.rmw.add offset=24 (global.get $data) (local.get $cycles)))))
