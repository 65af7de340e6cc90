;; Waits (up to 10 s) until the i32 start flag at data + 16 is nonzero, then,
;; once per element of its range, atomically adds 1 to the i32 counter at
;; data + 0 and to the i64 counter at data + 8.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (local $i i32)
    (block $go
      (loop $park
        (br_if $go (i32.atomic.load (i32.add (global.get $data) (i32.const 16))))
        (br_if $go
          (i32.eq
            (memory.atomic.wait32
              (i32.add (global.get $data) (i32.const 16)) (i32.const 0) (i64.const 10000000000))
            (i32.const 2)))
        (br $park)))
    (local.set $i (local.get $start))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (drop (i32.atomic.rmw.add (global.get $data) (i32.const 1)))
        (drop (i64.atomic.rmw.add (i32.add (global.get $data) (i32.const 8)) (i64.const 1)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))))
