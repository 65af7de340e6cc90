;; Hangs on request, in a way chosen by the host; otherwise writes its elements.
;;
;; i32 words of the data region (element i is the i32 at +64 + 4 * i):
;;   +0   mask: worker i hangs in any call with a non-empty range if bit i is set
;;   +4   how: 0 spin forever (a loop with no way out)
;;            1 park forever in memory.atomic.wait32 on +8 (no timeout)
;;            2 spin until +8 is non-zero, then finish the call
;;            3 every call, hanging or not, first waits 1 ms on +8 (slow chunks)
;;   +8   the word of hows 1-3
;;   +12  calls that entered a hang (or, how 3, a slow wait)
;;   +16  run tag t: element i becomes i + 1000 * t
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (import "env" "worker_index" (global $index i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (local $how i32) (local $i i32) (local $tag i32)
    (if (i32.ge_u (local.get $start) (local.get $end)) (then (return)))
    (local.set $how (i32.atomic.load offset=4 (global.get $data)))
    (if (i32.eq (local.get $how) (i32.const 3))
      (then
        (drop (i32.atomic.rmw.add offset=12 (global.get $data) (i32.const 1)))
        (drop (memory.atomic.wait32 offset=8 (global.get $data) (i32.const 0)
                (i64.const 1000000)))))
    (if (i32.and
          (i32.atomic.load (global.get $data))
          (i32.shl (i32.const 1) (global.get $index)))
      (then
        (drop (i32.atomic.rmw.add offset=12 (global.get $data) (i32.const 1)))
        (if (i32.eqz (local.get $how)) (then (loop $forever (br $forever))))
        (if (i32.eq (local.get $how) (i32.const 1))
          (then
            (drop (memory.atomic.wait32 offset=8 (global.get $data) (i32.const 0)
                    (i64.const -1)))))
        (if (i32.eq (local.get $how) (i32.const 2))
          (then
            (block $released
              (loop $spin
                (br_if $released (i32.atomic.load offset=8 (global.get $data)))
                (br $spin)))))))
    (local.set $tag (i32.mul (i32.atomic.load offset=16 (global.get $data)) (i32.const 1000)))
    (local.set $i (local.get $start))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (i32.store offset=64
          (i32.add (global.get $data) (i32.shl (local.get $i) (i32.const 2)))
          (i32.add (local.get $i) (local.get $tag)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))))
