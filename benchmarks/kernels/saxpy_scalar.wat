;; SAXPY, y = a * x + y, one element at a time.
;;
;;   entry:saxpy(start, end, const float *x, float *y, float a)
;;
;; updates y[start:end] and only reads x. Each element is an f32 multiply then
;; an f32 add, not fused.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (func (export "entry:saxpy") (param $start i32) (param $end i32)
    (param $x i32) (param $y i32) (param $a f32)
    (local $px i32) (local $stop i32) (local $dy i32)
    (local.set $px
      (i32.add (local.get $x) (i32.shl (local.get $start) (i32.const 2))))
    (local.set $stop
      (i32.add (local.get $x) (i32.shl (local.get $end) (i32.const 2))))
    ;; y[i] lives y - x bytes after x[i].
    (local.set $dy (i32.sub (local.get $y) (local.get $x)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $px) (local.get $stop)))
        (f32.store (i32.add (local.get $px) (local.get $dy))
          (f32.add
            (f32.mul (local.get $a) (f32.load (local.get $px)))
            (f32.load (i32.add (local.get $px) (local.get $dy)))))
        (local.set $px (i32.add (local.get $px) (i32.const 4)))
        (br $next))))
  (@custom "sharedwasm.entries"
    "{\"version\": 1, \"entries\": {\"saxpy\": ["
    "{\"name\": \"x\", \"type\": \"const float *\"}, {\"name\": \"y\", \"type\": \"float *\"}, "
    "{\"name\": \"a\", \"type\": \"float\"}]}}"))
