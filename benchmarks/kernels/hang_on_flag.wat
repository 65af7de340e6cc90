;; While the i32 at data_offset is non-zero, every call with a non-empty range
;; spins forever (a loop only an interrupt ends); otherwise calls return at once.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (if (i32.and
          (i32.lt_u (local.get $start) (local.get $end))
          (i32.ne (i32.atomic.load (global.get $data)) (i32.const 0)))
      (then (loop $forever (br $forever))))))
