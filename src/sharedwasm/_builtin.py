"""Kernels that ship with sharedwasm, each with its numpy reference.

They serve the demo, the tests and the benchmarks, and double as examples of
the kernel ABI written by hand.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ._kernel import Kernel

MAP_F32_WAT = """\
;; In place over float32 elements: x = (x * x) * 0.25 + sqrt(x).
;; Each element is independent, so any partition of [0, total) is safe.
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (local $p i32) (local $stop i32) (local $x f32)
    (local.set $p (i32.add (global.get $data) (i32.shl (local.get $start) (i32.const 2))))
    (local.set $stop (i32.add (global.get $data) (i32.shl (local.get $end) (i32.const 2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $stop)))
        (local.set $x (f32.load (local.get $p)))
        (f32.store (local.get $p)
          (f32.add
            (f32.mul (f32.mul (local.get $x) (local.get $x)) (f32.const 0.25))
            (f32.sqrt (local.get $x))))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $next)))))
"""


def map_f32_kernel() -> Kernel:
    """Compile the demo kernel."""
    return Kernel.from_wat(MAP_F32_WAT, name="map_f32")


def map_f32_reference(x: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
    """Return what `map_f32` computes, in float32 with the same rounding steps."""
    x = np.asarray(x, dtype=np.float32)
    return (x * x) * np.float32(0.25) + np.sqrt(x)
