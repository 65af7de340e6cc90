;; Does nothing: a run costs only the dispatch to the workers and back.
;;
;; Two entries: compute_partition, with no arguments (the Node peers call it
;; too), and entry:four, which takes two arrays and two scalars and ignores
;; them, so that the difference between the two is what passing arguments
;; costs. The custom section records four's C signature, as `sharedwasm
;; build` would, so the pool checks its arguments as it does a C kernel's.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (func (export "compute_partition") (param $start i32) (param $end i32))
  (func (export "entry:four") (param $start i32) (param $end i32)
        (param $x i32) (param $y i32) (param $a f32) (param $n i32))
  (@custom "sharedwasm.entries"
    "{\"version\": 1, \"entries\": {\"four\": ["
    "{\"name\": \"x\", \"type\": \"const float *\"}, {\"name\": \"y\", \"type\": \"float *\"}, "
    "{\"name\": \"a\", \"type\": \"float\"}, {\"name\": \"n\", \"type\": \"int32_t\", "
    "\"canonical\": \"int\"}]}}"))
