;; Writes one i32 over any address of the memory, as a kernel with a stray
;; pointer would; otherwise does nothing.
;;
;; i32 words of the data region:
;;   +0   mask: worker i writes, in a call with a non-empty range, if bit i is set
;;   +4   the byte address to write
;;   +8   the value to write
;;   +12  when: 0 at once; 1 after spinning until +16 is non-zero
;;   +16  the release word of when 1
;;   +20  calls that wrote
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (import "env" "worker_index" (global $index i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (if (i32.ge_u (local.get $start) (local.get $end)) (then (return)))
    (if (i32.eqz
          (i32.and
            (i32.atomic.load (global.get $data))
            (i32.shl (i32.const 1) (global.get $index))))
      (then (return)))
    (if (i32.atomic.load offset=12 (global.get $data))
      (then
        (block $released
          (loop $spin
            (br_if $released (i32.atomic.load offset=16 (global.get $data)))
            (br $spin)))))
    (i32.atomic.store
      (i32.atomic.load offset=4 (global.get $data))
      (i32.atomic.load offset=8 (global.get $data)))
    (drop (i32.atomic.rmw.add offset=20 (global.get $data) (i32.const 1)))))
