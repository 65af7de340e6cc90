"""The kernel library: problem makers and numpy references for the entries of `kernels/*.c`.

`SPECS` names every entry, its module and `make(n, rng)`, which returns a
`Problem`: the entry's arguments by parameter name (inputs from the seeded
generator, scalars, and `Zeros` or `Partials` for what the kernel writes) and
the numpy reference. `bind` puts a problem's arrays in a pool's heap, so that
runs copy nothing:

    spec = library.SPECS["saxpy_simd"]
    problem = spec.make(1000, np.random.default_rng(1))
    with sw.WorkerPool(spec.kernel(), workers=2) as pool:
        args = library.bind(pool, problem)
        pool.run("saxpy", *args.values(), entry=spec.entry)
        assert np.array_equal(problem.result(args), problem.expected())

Every reference is exact, because the kernels and numpy do the same IEEE
operations in the same order (wasm has no fused multiply-add, and the kernels
turn contraction off), except sum_f32's: its float64 additions group by
worker and chunk, so `Problem.tolerance` bounds its error (and
`sum_f32_static` is exactly what a static run gives).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

import sharedwasm as sw

HERE = Path(__file__).resolve().parent


O3_SIMD: dict[str, Any] = {"simd": True, "optimize": "3"}
BUILD_OPTIONS: dict[str, dict[str, Any]] = {
    "map_f32": O3_SIMD,
    "poly_scalar": {"optimize": "3"},
    "poly_simd": O3_SIMD,
    "saxpy_simd": O3_SIMD,
    "reduce_f32": O3_SIMD,
    "mandelbrot": {"optimize": "3"},
    "histogram": {"optimize": "3"},
    "box_blur": O3_SIMD,
    "stack_heavy": {"optimize": "2"},
}
"""`sharedwasm.build` options of each module, by file stem (see `scripts/build_kernels.py`)."""

POLY_STEPS, POLY_MUL, POLY_ADD = 64, np.float32(1.0001), np.float32(0.5)
BINS = 256
MANDELBROT_WINDOW = (-2.0, 0.6, -0.7, 1.3)
"""x_min, x_max, y_min, y_max: off-centre in y, so the rows' costs are lopsided."""
STACK_WORDS = 256
"""uint32 words of the array in every stack_heavy frame (1 KiB)."""
STACK_SAFE_DEPTH = 32
"""Deepest recursion stack_heavy problems use: well inside a 64 KiB stack."""
STACK_OVERFLOW_DEPTH = 100_000
"""A depth whose frames (about 100 MiB) overflow any stack a pool gives."""

Array = npt.NDArray[Any]
F32 = npt.NDArray[np.float32]
U32 = npt.NDArray[np.uint32]


class Zeros(NamedTuple):
    """An array the kernel writes, made with `pool.zeros(shape, dtype)`."""

    shape: tuple[int, ...]
    dtype: type[np.generic]


class Partials(NamedTuple):
    """A reduction's slots, made with `pool.partials(dtype, fill)`."""

    dtype: type[np.generic]
    fill: float


Args = dict[str, Array | Zeros | Partials | int | float]


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """An entry's arguments, by parameter name and in order, and the numpy reference."""

    kernel: str
    args: Args
    output: str
    """The parameter whose array holds the result."""
    expected: Callable[[], Array]
    """numpy's result."""
    units: int
    """The kernel's natural units (elements, pixels, bytes) in one run."""
    bytes_moved: int
    """Bytes a run reads and writes, each counted once."""
    combine: Callable[[Array], Array] | None = None
    """For a reduction: the result from the partials, in worker order."""
    tolerance: float = 0.0
    """How far the result may be from `expected()` (0: bit for bit)."""

    @property
    def elements(self) -> int:
        """The run's element count: the first array argument's first axis."""
        first = next(v for v in self.args.values() if isinstance(v, np.ndarray | Zeros))
        return int(first.shape[0])

    @property
    def params(self) -> dict[str, int | float]:
        """The scalar arguments."""
        return {k: v for k, v in self.args.items() if isinstance(v, int | float)}

    def array(self, name: str) -> Array:
        """Return the input array `name`."""
        value = self.args[name]
        assert isinstance(value, np.ndarray), f"{name} is not an input array"
        return value

    def result(self, bound: dict[str, Any]) -> Array:
        """Return the result of a run over `bound` (see `bind`)."""
        out: Array = bound[self.output]
        return out if self.combine is None else self.combine(out)

    def mismatch(self, bound: dict[str, Any]) -> str | None:
        """Say how a run's result over `bound` differs from numpy's: in any byte, or beyond
        `tolerance`; None when it does not."""
        out, expected = self.result(bound), self.expected()
        if self.tolerance:
            if abs(out.item() - expected.item()) > self.tolerance:
                return f"{out.item()!r} is not within tolerance of numpy's"
        elif out.shape != expected.shape or out.tobytes() != expected.tobytes():
            bad = np.flatnonzero(out.reshape(-1) != expected.reshape(-1))
            where = int(bad[0]) if bad.size else -1
            return f"output differs from numpy (first at flat index {where})"
        return None


def bind(pool: sw.WorkerPool, problem: Problem) -> dict[str, Any]:
    """Return `problem`'s arguments with inputs copied into `pool`'s heap and outputs made there."""
    bound: dict[str, Any] = {}
    for name, value in problem.args.items():
        if isinstance(value, np.ndarray):
            bound[name] = pool.asarray(value)
        elif isinstance(value, Zeros):
            bound[name] = pool.zeros(value.shape, value.dtype)
        elif isinstance(value, Partials):
            bound[name] = pool.partials(value.dtype, value.fill)
        else:
            bound[name] = value
    return bound


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """A library entry: its module, its problem maker and what a problem's units are."""

    name: str
    make: Callable[[int, np.random.Generator], Problem]
    """make(n, rng): a problem of n elements (rows for the image kernels)."""
    module: str = ""
    """Stem of its `.c` and `.wasm`; default, the name."""
    entry: str = ""
    """Its entry in the module; default, the name."""
    unit: str = "elements"
    """What `Problem.units` counts."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "module", self.module or self.name)
        object.__setattr__(self, "entry", self.entry or self.name)

    @property
    def source(self) -> Path:
        return HERE / f"{self.module}.c"

    @property
    def wasm(self) -> Path:
        return HERE / f"{self.module}.wasm"

    def kernel(self) -> sw.Kernel:
        """Return the compiled `.wasm`, compiled once per process."""
        return _load(self.wasm)


@functools.cache
def _load(path: Path) -> sw.Kernel:
    return sw.Kernel.from_file(path)


# -- float32 in place: map_f32, poly_scalar, poly_simd ---------------------------


def float_input(n: int, rng: np.random.Generator) -> F32:
    """Return n non-negative float32 values, with 0, 1, infinity and a subnormal first."""
    x = (rng.random(n) * 1000.0).astype(np.float32)
    x[: min(n, 4)] = np.array([0.0, 1.0, np.inf, 1e-40], dtype=np.float32)[: min(n, 4)]
    return x


def map_f32(x: F32) -> Problem:
    """x = (x * x) * 0.25 + sqrt(x) in place, each step rounded to float32."""
    expected = lambda: (x * x) * np.float32(0.25) + np.sqrt(x)  # noqa: E731
    return Problem("map_f32", {"x": x}, "x", expected, x.size, 8 * x.size)


def poly(kernel: str, x: F32) -> Problem:
    """64 steps of x = x * 1.0001 + 0.5 in place, each rounded to float32."""

    def expected() -> F32:
        y = x
        for _ in range(POLY_STEPS):
            y = y * POLY_MUL + POLY_ADD
        return y

    return Problem(kernel, {"x": x}, "x", expected, x.size, 8 * x.size)


# -- saxpy_simd, sum_f32, max_f32 ------------------------------------------------


def saxpy(n: int, rng: np.random.Generator) -> Problem:
    """y = a * x + y over n float32, with `a` drawn from rng."""
    a = float(np.float32(rng.uniform(-4.0, 4.0)))
    x, y = rng.standard_normal((2, n), dtype=np.float32)
    args: Args = {"a": a, "x": x, "y": y}
    return Problem("saxpy_simd", args, "y", lambda: np.float32(a) * x + y, n, 12 * n)


def in_order(partials: Array) -> Array:
    """Add the partials left to right, in float64."""
    total = 0.0
    for p in partials.tolist():
        total += p
    return np.array(total)


def sum_f32(n: int, rng: np.random.Generator) -> Problem:
    """The float64 sum of n standard normal float32, within `tolerance` of numpy's.

    Any order of n - 1 float64 additions is within about (n - 1) * 2**-53 *
    sum(|x|) of the exact sum, and so is numpy's pairwise sum: twice
    n * 2**-53 * sum(|x|) covers both.
    """
    x = rng.standard_normal(n, dtype=np.float32)
    bound = 2.0 * max(n, 1) * 2.0**-53 * float(np.sum(np.abs(x), dtype=np.float64))
    args: Args = {"x": x, "partial": Partials(np.float64, 0.0)}
    expected = lambda: np.array(np.sum(x, dtype=np.float64))  # noqa: E731
    return Problem("sum_f32", args, "partial", expected, n, 4 * n, in_order, bound)


def sum_f32_static(x: F32, workers: int) -> Array:
    """Return exactly what a static run of sum_f32 on `workers` workers gives.

    Worker i adds its share [i*chunk, (i+1)*chunk) left to right in float64
    (`np.cumsum` is sequential); the shares are then added in worker order.
    """
    chunk = -(-x.size // workers)
    shares = [x[i * chunk : (i + 1) * chunk].astype(np.float64) for i in range(workers)]
    return in_order(np.array([np.cumsum(s)[-1] if s.size else 0.0 for s in shares]))


def max_f32(n: int, rng: np.random.Generator) -> Problem:
    """The float32 max of n standard normal float32 (-inf for none): exact under any schedule."""
    x = rng.standard_normal(n, dtype=np.float32)
    args: Args = {"x": x, "partial": Partials(np.float32, -np.inf)}
    expected = lambda: np.array(np.max(x, initial=-np.inf), np.float32)  # noqa: E731
    combine = lambda p: np.array(np.max(p), np.float32)  # noqa: E731
    return Problem("max_f32", args, "partial", expected, n, 4 * n, combine)


# -- mandelbrot ------------------------------------------------------------------


def mandelbrot(
    height: int, rng: np.random.Generator, *, width: int | None = None, max_iter: int = 256
) -> Problem:
    """Escape counts of `height` rows of `width` pixels (default: square).

    The window is `MANDELBROT_WINDOW` nudged by up to 1 % of its size by
    `rng`, so that different seeds hit different points.
    """
    width = height if width is None else width
    x_min, x_max, y_min, y_max = MANDELBROT_WINDOW
    shift_x, shift_y = rng.uniform(-0.01, 0.01, 2).tolist()
    grid = (
        x_min + shift_x * (x_max - x_min),
        (x_max - x_min) / max(width, 1),
        y_min + shift_y * (y_max - y_min),
        (y_max - y_min) / max(height, 1),
    )
    args: Args = {"image": Zeros((height, width), np.int32), "width": width, "max_iter": max_iter}
    args.update(zip(("x0", "dx", "y0", "dy"), grid, strict=True))
    expected = lambda: escape_counts(width, height, max_iter, grid)  # noqa: E731
    return Problem("mandelbrot", args, "image", expected, width * height, 4 * width * height)


def escape_counts(
    width: int, height: int, max_iter: int, grid: tuple[float, float, float, float]
) -> npt.NDArray[np.int32]:
    """Return the escape counts over the pixel grid `(x0, dx, y0, dy)`, row-major.

    The float64 steps and their order are the kernels' (mandelbrot.c and
    benchmarks/kernels/mandelbrot_rows.wat), so the counts are exact. Only
    the pixels still iterating are carried along.
    """
    x0, dx, y0, dy = grid
    counts = np.full(width * height, max_iter, dtype=np.int32)
    idx = np.arange(width * height)
    c_re = np.tile(x0 + np.arange(width, dtype=np.float64) * dx, height)
    c_im = np.repeat(y0 + np.arange(height, dtype=np.float64) * dy, width)
    zr, zi = np.zeros(width * height), np.zeros(width * height)
    for n in range(max_iter):
        if idx.size == 0:
            break
        zr2, zi2 = zr * zr, zi * zi
        escaped = (zr2 + zi2) > 4.0
        if escaped.any():
            counts[idx[escaped]] = n
            keep = ~escaped
            idx, zr, zi, zr2, zi2 = idx[keep], zr[keep], zi[keep], zr2[keep], zi2[keep]
            c_re, c_im = c_re[keep], c_im[keep]
        zi = (zr + zr) * zi + c_im
        zr = (zr2 - zi2) + c_re
    return counts.reshape(height, width)


# -- histogram, box_blur ---------------------------------------------------------


def histogram(n: int, rng: np.random.Generator) -> Problem:
    """Counts of n binomially distributed bytes in 256 bins (so some bins stay empty)."""
    data = rng.binomial(255, 0.4, n).astype(np.uint8)
    args: Args = {"data": data, "bins": Zeros((BINS,), np.uint32)}
    expected = lambda: np.bincount(data, minlength=BINS).astype(np.uint32)  # noqa: E731
    return Problem("histogram", args, "bins", expected, n, n)


def box_blur(
    height: int, rng: np.random.Generator, *, width: int | None = None, image: Array | None = None
) -> Problem:
    """A 3x3 box blur of a random `height` x `width` uint8 image (default: square), or of `image`.

    Each output pixel is the 3x3 mean of the edge-padded image, rounded to
    nearest: (sum + 4) // 9.
    """
    if image is None:
        width = height if width is None else width
        image = rng.integers(0, 256, (height, width), dtype=np.uint8)
    image = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = image.shape

    def expected() -> Array:
        if not image.size:
            return np.zeros_like(image)
        padded = np.pad(image.astype(np.uint32), 1, mode="edge")
        total = np.zeros((h, w), np.uint32)
        for y, x in np.ndindex(3, 3):
            total += padded[y : y + h, x : x + w]
        return ((total + 4) // 9).astype(np.uint8)

    args: Args = {"image": image, "out": Zeros(image.shape, np.uint8), "width": w, "height": h}
    return Problem("box_blur", args, "out", expected, image.size, 2 * image.size)


# -- stack_heavy -----------------------------------------------------------------


def stack_heavy(
    n: int,
    rng: np.random.Generator,
    *,
    max_depth: int = STACK_SAFE_DEPTH,
    depths: npt.ArrayLike | None = None,
) -> Problem:
    """Checksums of n recursions with random seeds and depths in [1, max_depth], or `depths`."""
    seeds = rng.integers(0, 2**32, n, dtype=np.uint32)
    if depths is None:
        depth = rng.integers(1, max_depth + 1, n).astype(np.uint32)
    else:
        depth = np.asarray(depths, dtype=np.uint32).reshape(-1)
        if depth.size != n:
            raise ValueError(f"depths must have {n} entries (got {depth.size})")
    args: Args = {"seeds": seeds, "depths": depth, "results": Zeros((n,), np.uint32)}
    return Problem("stack_heavy", args, "results", lambda: checksums(seeds, depth), n, 12 * n)


def _mix(x: U32) -> U32:
    """lowbias32, the kernel's integer hash, over uint32 arrays (wrapping)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def checksums(seeds: U32, depths: U32) -> U32:
    """Return stack_heavy's checksums, computed level by level for every element at once.

    A frame folds its 256 words into its child's checksum c as
    `c * 31**256 + sum(word[k] * 31**(255 - k))` modulo 2**32, which is what
    the kernel's `acc = acc * 31 + word[k]` loop computes.
    """
    k = np.arange(STACK_WORDS, dtype=np.uint32)
    spread = k * np.uint32(0x9E3779B9)
    parent_index = (k * np.uint32(7) + np.uint32(3)) & np.uint32(STACK_WORDS - 1)
    powers = np.array([pow(31, STACK_WORDS - 1 - i, 2**32) for i in range(STACK_WORDS)], np.uint64)
    fold = np.uint64(pow(31, STACK_WORDS, 2**32))
    contributions = []
    seed, parent = seeds.copy(), None
    for level in range(int(depths.max()) if seeds.size else 0):
        words = _mix(seed[:, None] + spread[None, :])
        if parent is not None:
            words ^= parent[:, parent_index]
        # uint64 products and sums wrap modulo 2**64, which keeps them right modulo 2**32.
        contributions.append((words.astype(np.uint64) * powers).sum(axis=1, dtype=np.uint64))
        seed, parent = _mix(seed ^ np.uint32(level + 1)), words
    acc = np.zeros(seeds.size, np.uint64)
    for level in reversed(range(len(contributions))):
        folded = (acc * fold + contributions[level]) & np.uint64(0xFFFFFFFF)
        acc = np.where(level < depths, folded, acc)
    return acc.astype(np.uint32)


# -- the library -----------------------------------------------------------------

SPECS: dict[str, KernelSpec] = {
    spec.name: spec
    for spec in (
        KernelSpec("map_f32", lambda n, rng: map_f32(float_input(n, rng))),
        KernelSpec("poly_scalar", lambda n, rng: poly("poly_scalar", rng.random(n, np.float32))),
        KernelSpec("poly_simd", lambda n, rng: poly("poly_simd", rng.random(n, np.float32))),
        KernelSpec("saxpy_simd", saxpy, entry="saxpy"),
        KernelSpec("sum_f32", sum_f32, "reduce_f32"),
        KernelSpec("max_f32", max_f32, "reduce_f32"),
        KernelSpec("mandelbrot", mandelbrot, unit="pixels"),
        KernelSpec("histogram", histogram, unit="bytes"),
        KernelSpec("box_blur", box_blur, unit="pixels"),
        KernelSpec("stack_heavy", stack_heavy),
    )
}
"""Every library entry, by name."""
