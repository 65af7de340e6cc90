;; While the i32 that `flag` points to is non-zero, every call with a non-empty
;; range spins forever (a loop only an interrupt ends); otherwise calls return
;; at once.
;;
;;   entry:hang_on_flag(start, end, const int32_t *flag)
(module
  (import "env" "memory" (memory 1 65536 shared))
  (func (export "entry:hang_on_flag") (param $start i32) (param $end i32) (param $flag i32)
    (if (i32.and
          (i32.lt_u (local.get $start) (local.get $end))
          (i32.ne (i32.atomic.load (local.get $flag)) (i32.const 0)))
      (then (loop $forever (br $forever)))))
  (@custom "sharedwasm.entries"
    "{\"version\": 1, \"entries\": {\"hang_on_flag\": ["
    "{\"name\": \"flag\", \"type\": \"const int32_t *\", \"canonical\": \"const int *\"}]}}"))
