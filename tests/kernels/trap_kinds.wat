;; Writes 2 * i + 1 as the i32 element i of its range, and traps on request.
;;
;; The data region starts with a 64-byte header of i32 words the host sets:
;;   +0   mask: bit w set makes worker w trap at the middle element of its
;;        range, (start + end) / 2, before writing it
;;   +4   kinds: bits 4w..4w+3 say how worker w traps:
;;        0 unreachable, 1 out-of-bounds load (at memory.size),
;;        2 integer divide by zero, 3 integer overflow (i32.div_s INT_MIN / -1),
;;        4 call stack exhausted (unbounded recursion)
;;   +8   element index at which any worker traps, whatever the mask; -1: none
;; Elements start after the header, at data_offset + 64.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (import "env" "worker_index" (global $index i32))

  ;; Never returns: each call recurses once more until the stack runs out.
  (func $recurse (param $depth i32) (result i32)
    (i32.add (call $recurse (i32.add (local.get $depth) (i32.const 1))) (local.get $depth)))

  ;; Trap the way this worker's kind says. The operands come from locals, so
  ;; that the trap happens at run time, here, whatever the compiler folds.
  (func $trap (param $i i32)
    (local $kind i32) (local $zero i32)
    (local.set $kind
      (i32.and
        (i32.shr_u
          (i32.load offset=4 (global.get $data)) (i32.shl (global.get $index) (i32.const 2)))
        (i32.const 15)))
    (local.set $zero (i32.and (local.get $i) (i32.const 0)))
    (if (i32.eq (local.get $kind) (i32.const 1))
      (then
        ;; the first byte past the memory's current size
        (drop (i32.load (i32.shl (memory.size) (i32.const 16))))))
    (if (i32.eq (local.get $kind) (i32.const 2))
      (then (drop (i32.div_u (local.get $i) (local.get $zero)))))
    (if (i32.eq (local.get $kind) (i32.const 3))
      (then
        (drop
          (i32.div_s
            (i32.or (i32.const 0x80000000) (local.get $zero))
            (i32.sub (local.get $zero) (i32.const 1))))))
    (if (i32.eq (local.get $kind) (i32.const 4))
      (then (drop (call $recurse (local.get $i)))))
    unreachable)

  (func (export "compute_partition") (param $start i32) (param $end i32)
    (local $i i32) (local $mid i32) (local $at i32)
    (local.set $mid
      (select
        (i32.shr_u (i32.add (local.get $start) (local.get $end)) (i32.const 1))
        (i32.const -1)
        (i32.and
          (i32.shr_u (i32.load (global.get $data)) (global.get $index)) (i32.const 1))))
    (local.set $at (i32.load offset=8 (global.get $data)))
    (local.set $i (local.get $start))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $end)))
        (if (i32.or
              (i32.eq (local.get $i) (local.get $mid)) (i32.eq (local.get $i) (local.get $at)))
          (then (call $trap (local.get $i))))
        (i32.store offset=64
          (i32.add (global.get $data) (i32.shl (local.get $i) (i32.const 2)))
          (i32.add (i32.shl (local.get $i) (i32.const 1)) (i32.const 1)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))))
