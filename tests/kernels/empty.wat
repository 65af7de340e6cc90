;; Does nothing: measures and tests the dispatch path alone.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (func (export "compute_partition") (param i32 i32)))
