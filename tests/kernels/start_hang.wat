;; A kernel whose start-up code may never return, chosen by the host through
;; two i32 words at fixed addresses (inside any pool's data region):
;;   60000  where: 0 nowhere; 1 the start function; 2 __set_stack_limits
;;   60004  how: 0 spin until 60008 is non-zero; 1 park on 60008 (no timeout);
;;               2 spin forever
;;   60008  the release word
(module
  (import "env" "memory" (memory 1 65536 shared))
  (global $sp (export "__stack_pointer") (mut i32) (i32.const 0))
  (func $hang_if (param $where i32)
    (local $how i32)
    (if (i32.ne (i32.atomic.load (i32.const 60000)) (local.get $where)) (then (return)))
    (local.set $how (i32.atomic.load (i32.const 60004)))
    (if (i32.eq (local.get $how) (i32.const 1))
      (then
        (drop (memory.atomic.wait32 (i32.const 60008) (i32.const 0) (i64.const -1)))
        (return)))
    (block $released
      (loop $spin
        (br_if $released
          (i32.and
            (i32.ne (local.get $how) (i32.const 2))
            (i32.ne (i32.atomic.load (i32.const 60008)) (i32.const 0))))
        (br $spin))))
  (func $start (call $hang_if (i32.const 1)))
  (start $start)
  (func (export "__set_stack_limits") (param i32 i32) (call $hang_if (i32.const 2)))
  (func (export "compute_partition") (param i32 i32)))
