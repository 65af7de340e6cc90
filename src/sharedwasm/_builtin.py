"""Kernels that ship with sharedwasm, each with its numpy reference.

They serve the demo, the tests and the benchmarks, and double as examples of
the kernel ABI written by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ._kernel import Kernel

KERNEL_DIR = Path(__file__).parent / "_kernels"
"""Where the built-in kernels' WebAssembly text lives (shipped as package data)."""


def map_f32_kernel() -> Kernel:
    """Compile the demo kernel."""
    return Kernel.from_file(KERNEL_DIR / "map_f32.wat")


def map_f32_reference(x: npt.NDArray[np.float32]) -> npt.NDArray[Any]:
    """Return what `map_f32` computes, in float32 with the same rounding steps."""
    x = np.asarray(x, dtype=np.float32)
    return (x * x) * np.float32(0.25) + np.sqrt(x)
