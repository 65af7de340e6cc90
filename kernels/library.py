"""The kernel library: build options, problems and numpy references for `kernels/*.c`.

Each C kernel here has a `KernelSpec` in `SPECS`: where its `.wasm` is, how to
make a problem of a given size (a `Problem`: the bytes of the data region,
header included, with a seeded numpy generator), how many elements to run,
the numpy reference, and where the result is. The data layout of each kernel
is described at the top of its `.c` file; the makers below write exactly that.

    import library
    spec = library.SPECS["saxpy_simd"]
    problem = spec.make(1000, np.random.default_rng(1))
    memory = sw.Memory(*library.memory_pages(spec.kernel(), problem, workers=2))
    with sw.WorkerPool(spec.kernel(), memory, 2) as pool:
        data = pool.data(np.uint8)
        problem.fill(data)
        pool.run(elements=problem.elements, element_size=problem.element_size)
        assert np.array_equal(problem.result(data), spec.reference(problem))

Every reference is exact: the integer kernels' trivially, the float ones
because the kernels and numpy do the same IEEE operations in the same order
(WebAssembly has no fused multiply-add, and the kernels turn contraction off).

`BUILD_OPTIONS` holds the keyword arguments of `sharedwasm.build` per kernel;
`scripts/build_kernels.py` rebuilds the `.wasm` files with them.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypedDict

import numpy as np
import numpy.typing as npt

import sharedwasm as sw

HERE = Path(__file__).resolve().parent


class BuildOptions(TypedDict, total=False):
    """Keyword arguments of `sharedwasm.build` (and `build_is_current`)."""

    optimize: str | int
    simd: bool
    stack_check: bool
    defines: Sequence[str]
    cflags: Sequence[str]


BUILD_OPTIONS: dict[str, BuildOptions] = {
    "map_f32": {"simd": True, "optimize": "3"},
    "poly_scalar": {"optimize": "3"},
    "poly_simd": {"simd": True, "optimize": "3"},
    "saxpy_simd": {"simd": True, "optimize": "3"},
    "mandelbrot": {"optimize": "3"},
    "histogram": {"optimize": "3"},
    "box_blur": {"simd": True, "optimize": "3"},
    "stack_heavy": {"optimize": "2"},
}
"""Keyword arguments of `sharedwasm.build` for each kernel, by file stem."""

HEADER_BYTES = 64
"""Bytes of the parameter header of the kernels that have one."""

POLY_STEPS = 64
POLY_MUL = np.float32(1.0001)
POLY_ADD = np.float32(0.5)

HISTOGRAM_BINS = 256

MANDELBROT_WINDOW = (-2.0, 0.6, -0.7, 1.3)
"""x_min, x_max, y_min, y_max: off-centre in y, so the rows' costs are lopsided."""
MANDELBROT_MAX_ITER = 256

STACK_WORDS = 256
"""uint32 words of the array in every stack_heavy frame (1 KiB)."""
STACK_SAFE_DEPTH = 32
"""Deepest recursion stack_heavy problems use: well inside a 64 KiB stack."""
STACK_OVERFLOW_DEPTH = 100_000
"""A depth whose frames (about 100 MiB) overflow any stack a pool gives."""
STACK_RECORD = 16
"""Bytes per stack_heavy record: seed, depth, result, unused (uint32 each)."""

Schedule = Literal["static", "dynamic"]
U8 = npt.NDArray[np.uint8]
U32 = npt.NDArray[np.uint32]
F32 = npt.NDArray[np.float32]


def _pad64(n: int) -> int:
    return -(-n // 64) * 64


@dataclasses.dataclass(frozen=True, eq=False)
class Problem:
    """One problem for one kernel: the data region's contents, the run, the result's place.

    `fill` writes `blob` at the start of the data region: the header, the
    inputs and zeroed outputs, so a problem can be filled again before each
    run. Run it with `pool.run(elements=problem.elements,
    element_size=problem.element_size)`, then `result` is a view of the
    output in the data region.
    """

    kernel: str
    elements: int
    """Elements to run: the kernel's work items (rows for the image kernels)."""
    element_size: int
    """Bytes per element, for `pool.run`'s bound check."""
    blob: U8
    """The first bytes of the data region: header, inputs and zeroed outputs."""
    output_offset: int
    """Byte offset of the result in the data region."""
    output_dtype: np.dtype[Any]
    output_shape: tuple[int, ...]
    output_stride: int | None
    """Bytes from one result to the next, when the results are not packed (None: packed)."""
    inputs: dict[str, npt.NDArray[Any]]
    """What the reference needs: the input arrays, by name."""
    params: dict[str, int | float]
    """Scalar parameters (those of the header, and the problem's shape)."""
    units: int
    """How many of the kernel's natural units (elements, pixels, bytes) a run processes."""
    bytes_moved: int
    """Bytes a run reads and writes in the data region, counting each once."""

    @property
    def nbytes(self) -> int:
        """Bytes of the data region the problem uses."""
        count = math.prod(self.output_shape)
        step = self.output_dtype.itemsize if self.output_stride is None else self.output_stride
        out = self.output_offset + step * count
        return max(self.blob.size, out)

    def fill(self, data: U8) -> None:
        """Write the problem into a uint8 view of the data region (`pool.data(np.uint8)`)."""
        if data.size < self.nbytes:
            raise ValueError(
                f"data must hold at least {self.nbytes} bytes for this {self.kernel} problem "
                f"(got {data.size})"
            )
        data[: self.blob.size] = self.blob

    def result(self, data: U8) -> npt.NDArray[Any]:
        """Return the output as a view into a uint8 view of the data region."""
        strides = None if self.output_stride is None else (self.output_stride,)
        return np.ndarray(
            self.output_shape,
            self.output_dtype,
            buffer=data,
            offset=self.output_offset,
            strides=strides,
        )


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """A library kernel: its files, how to make a problem, and the numpy reference."""

    name: str
    summary: str
    make: Callable[[int, np.random.Generator], Problem]
    """make(n, rng): a problem of n elements (rows for the image kernels)."""
    reference: Callable[[Problem], npt.NDArray[Any]]
    """The expected result, with the shape and dtype of `Problem.result`."""
    unit: str
    """What `Problem.units` counts: "elements", "pixels" or "bytes"."""
    schedules: tuple[Schedule, ...] = ("static",)
    """Schedules the kernel is meant for; every kernel is correct under both."""

    @property
    def source(self) -> Path:
        return HERE / f"{self.name}.c"

    @property
    def wasm(self) -> Path:
        return HERE / f"{self.name}.wasm"

    @property
    def build_options(self) -> BuildOptions:
        return BUILD_OPTIONS.get(self.name, {})

    def kernel(self) -> sw.Kernel:
        """Return the compiled `.wasm`, compiled once per process."""
        return _load(self.wasm)


@functools.cache
def _load(path: Path) -> sw.Kernel:
    return sw.Kernel.from_file(path)


def memory_pages(kernel: sw.Kernel, problem: Problem, workers: int) -> tuple[int, int]:
    """Return `(initial, maximum)` pages for a memory that holds `problem` on `workers` workers."""
    pages = sw.WorkerPool.pages_needed(kernel, problem.nbytes, workers)
    return pages, max(pages, 16)


# -- map_f32, poly_scalar, poly_simd: float32 in place -------------------------


def float_input(n: int, rng: np.random.Generator) -> F32:
    """Return n non-negative float32 values, with 0, 1, infinity and a subnormal first."""
    x = (rng.random(n) * 1000.0).astype(np.float32)
    specials = np.array([0.0, 1.0, np.inf, 1e-40], dtype=np.float32)
    x[: min(n, 4)] = specials[: min(n, 4)]
    return x


def in_place(kernel: str, x: F32) -> Problem:
    """Return a problem of an in-place float32 kernel over a copy of `x`."""
    n = x.size
    return Problem(
        kernel=kernel,
        elements=n,
        element_size=4,
        blob=x.view(np.uint8).copy(),
        output_offset=0,
        output_dtype=np.dtype(np.float32),
        output_shape=(n,),
        output_stride=None,
        inputs={"x": x},
        params={"n": n},
        units=n,
        bytes_moved=8 * n,
    )


def map_f32(n: int, rng: np.random.Generator) -> Problem:
    """Return a map_f32 problem: n float32 to map in place."""
    return in_place("map_f32", float_input(n, rng))


def map_f32_reference(problem: Problem) -> F32:
    """Return `(x * x) * 0.25 + sqrt(x)` in float32, in the kernel's order."""
    x = problem.inputs["x"]
    out: F32 = (x * x) * np.float32(0.25) + np.sqrt(x)
    return out


def poly(n: int, rng: np.random.Generator, kernel: str = "poly_scalar") -> Problem:
    """Return a poly problem: n float32 in [0, 1) to step in place."""
    return in_place(kernel, rng.random(n, dtype=np.float32))


def poly_reference(problem: Problem) -> F32:
    """Return 64 float32 steps of `x * 1.0001 + 0.5`, each rounded as the kernels round it."""
    x: F32 = problem.inputs["x"]
    for _ in range(POLY_STEPS):
        x = x * POLY_MUL + POLY_ADD
    return x


# -- saxpy_simd ----------------------------------------------------------------


def saxpy(n: int, rng: np.random.Generator, a: float | None = None) -> Problem:
    """Return a saxpy problem: y = a * x + y over n float32, a from rng unless given."""
    a32 = np.float32(rng.uniform(-4.0, 4.0) if a is None else a)
    x = rng.standard_normal(n, dtype=np.float32)
    y = rng.standard_normal(n, dtype=np.float32)
    header = np.zeros(HEADER_BYTES, np.uint8)
    header[0:4].view(np.uint32)[0] = n
    header[4:8].view(np.float32)[0] = a32
    blob = np.concatenate([header, x.view(np.uint8), y.view(np.uint8)])
    return Problem(
        kernel="saxpy_simd",
        elements=n,
        element_size=4,
        blob=blob,
        output_offset=HEADER_BYTES + 4 * n,
        output_dtype=np.dtype(np.float32),
        output_shape=(n,),
        output_stride=None,
        inputs={"x": x, "y": y},
        params={"n": n, "a": float(a32)},
        units=n,
        bytes_moved=12 * n,
    )


def saxpy_reference(problem: Problem) -> F32:
    """Return `a * x + y` in float32."""
    a = np.float32(problem.params["a"])
    out: F32 = a * problem.inputs["x"] + problem.inputs["y"]
    return out


# -- mandelbrot ----------------------------------------------------------------


def mandelbrot(
    height: int,
    rng: np.random.Generator,
    *,
    width: int | None = None,
    max_iter: int = MANDELBROT_MAX_ITER,
) -> Problem:
    """Return a Mandelbrot problem: `height` rows of `width` pixels (default: square).

    The window is `MANDELBROT_WINDOW` nudged by up to 1 % of its size by `rng`,
    so that different seeds hit different points.
    """
    width = height if width is None else width
    x_min, x_max, y_min, y_max = MANDELBROT_WINDOW
    shift_x, shift_y = rng.uniform(-0.01, 0.01, 2)
    x0 = x_min + shift_x * (x_max - x_min)
    y0 = y_min + shift_y * (y_max - y_min)
    dx = (x_max - x_min) / max(width, 1)
    dy = (y_max - y_min) / max(height, 1)
    header = np.zeros(HEADER_BYTES, np.uint8)
    header[0:12].view(np.uint32)[:] = (width, height, max_iter)
    header[16:48].view(np.float64)[:] = (x0, dx, y0, dy)
    pixels = width * height
    return Problem(
        kernel="mandelbrot",
        elements=height,
        element_size=4 * max(width, 1),
        blob=np.concatenate([header, np.zeros(4 * pixels, np.uint8)]),
        output_offset=HEADER_BYTES,
        output_dtype=np.dtype(np.int32),
        output_shape=(height, width),
        output_stride=None,
        inputs={},
        params={
            "width": width,
            "height": height,
            "max_iter": max_iter,
            "x0": x0,
            "dx": dx,
            "y0": y0,
            "dy": dy,
        },
        units=pixels,
        bytes_moved=4 * pixels,
    )


def mandelbrot_reference(problem: Problem) -> npt.NDArray[np.int32]:
    """Return the escape counts of a mandelbrot problem, computed by numpy."""
    p = problem.params
    return escape_counts(
        int(p["width"]),
        int(p["height"]),
        int(p["max_iter"]),
        (float(p["x0"]), float(p["dx"]), float(p["y0"]), float(p["dy"])),
    )


def escape_counts(
    width: int, height: int, max_iter: int, grid: tuple[float, float, float, float]
) -> npt.NDArray[np.int32]:
    """Return the escape counts over the pixel grid `(x0, dx, y0, dy)`, row-major.

    The float64 steps and their order are those of the kernels (this one and
    benchmarks/kernels/mandelbrot_rows.wat), so the counts are exact. Only
    the pixels still iterating are carried along, so the cost is about the
    total iteration count rather than `width * height * max_iter`.
    """
    x0, dx, y0, dy = grid
    cr = x0 + np.arange(width, dtype=np.float64) * dx
    ci = y0 + np.arange(height, dtype=np.float64) * dy
    counts = np.full(width * height, max_iter, dtype=np.int32)
    idx = np.arange(width * height)
    c_re = np.tile(cr, height)
    c_im = np.repeat(ci, width)
    zr = np.zeros(width * height)
    zi = np.zeros(width * height)
    for n in range(max_iter):
        if idx.size == 0:
            break
        zr2 = zr * zr
        zi2 = zi * zi
        escaped = (zr2 + zi2) > 4.0
        if escaped.any():
            counts[idx[escaped]] = n
            keep = ~escaped
            idx, zr, zi, zr2, zi2 = idx[keep], zr[keep], zi[keep], zr2[keep], zi2[keep]
            c_re, c_im = c_re[keep], c_im[keep]
        zi = (zr + zr) * zi + c_im
        zr = (zr2 - zi2) + c_re
    return counts.reshape(height, width)


# -- histogram -----------------------------------------------------------------


def histogram(n: int, rng: np.random.Generator) -> Problem:
    """Return a histogram problem: n bytes, binomially distributed, so some bins stay empty."""
    data = rng.binomial(255, 0.4, n).astype(np.uint8)
    bins = np.zeros(4 * HISTOGRAM_BINS, np.uint8)
    return Problem(
        kernel="histogram",
        elements=n,
        element_size=1,
        blob=np.concatenate([bins, data]),
        output_offset=0,
        output_dtype=np.dtype(np.uint32),
        output_shape=(HISTOGRAM_BINS,),
        output_stride=None,
        inputs={"data": data},
        params={"n": n},
        units=n,
        bytes_moved=n,
    )


def histogram_reference(problem: Problem) -> U32:
    """Return `np.bincount` of the input over 256 bins, as uint32."""
    counts = np.bincount(problem.inputs["data"], minlength=HISTOGRAM_BINS)
    return counts.astype(np.uint32)


# -- box_blur ------------------------------------------------------------------


def box_blur(
    height: int, rng: np.random.Generator, *, width: int | None = None, image: U8 | None = None
) -> Problem:
    """Return a box blur problem: a random `height` x `width` uint8 image (default: square).

    With `image`, blur that one instead (its shape overrides height and width).
    """
    if image is None:
        width = height if width is None else width
        image = rng.integers(0, 256, (height, width), dtype=np.uint8)
    image = np.ascontiguousarray(image, dtype=np.uint8)
    height, width = image.shape
    pixels = height * width
    header = np.zeros(HEADER_BYTES, np.uint8)
    header[0:8].view(np.uint32)[:] = (width, height)
    padded = np.zeros(_pad64(pixels), np.uint8)
    padded[:pixels] = image.reshape(-1)
    return Problem(
        kernel="box_blur",
        elements=height,
        element_size=max(width, 1),
        blob=np.concatenate([header, padded, np.zeros(pixels, np.uint8)]),
        output_offset=HEADER_BYTES + _pad64(pixels),
        output_dtype=np.dtype(np.uint8),
        output_shape=(height, width),
        output_stride=None,
        inputs={"image": image},
        params={"width": width, "height": height},
        units=pixels,
        bytes_moved=2 * pixels,
    )


def box_blur_reference(problem: Problem) -> U8:
    """Return the 3x3 mean of the edge-padded image, rounded to nearest: (sum + 4) // 9."""
    image = problem.inputs["image"]
    height, width = image.shape
    if image.size == 0:
        return np.zeros((height, width), np.uint8)
    padded = np.pad(image.astype(np.uint32), 1, mode="edge")
    total = np.zeros((height, width), np.uint32)
    for dy in range(3):
        for dx in range(3):
            total += padded[dy : dy + height, dx : dx + width]
    return ((total + 4) // 9).astype(np.uint8)


# -- stack_heavy ---------------------------------------------------------------


def stack_heavy(
    n: int,
    rng: np.random.Generator,
    *,
    max_depth: int = STACK_SAFE_DEPTH,
    depths: npt.ArrayLike | None = None,
) -> Problem:
    """Return a stack_heavy problem: n records with random seeds and depths in [1, max_depth].

    `depths`, if given, sets every record's depth instead: a depth of
    `STACK_OVERFLOW_DEPTH` makes that record overflow its worker's stack.
    """
    seeds = rng.integers(0, 2**32, n, dtype=np.uint32)
    if depths is None:
        depth = rng.integers(1, max_depth + 1, n).astype(np.uint32)
    else:
        depth = np.asarray(depths, dtype=np.uint32).reshape(-1)
        if depth.size != n:
            raise ValueError(f"depths must have {n} entries (got {depth.size})")
    records = np.zeros((n, STACK_RECORD // 4), np.uint32)
    records[:, 0] = seeds
    records[:, 1] = depth
    return Problem(
        kernel="stack_heavy",
        elements=n,
        element_size=STACK_RECORD,
        blob=records.reshape(-1).view(np.uint8),
        output_offset=8,
        output_dtype=np.dtype(np.uint32),
        output_shape=(n,),
        output_stride=STACK_RECORD,
        inputs={"seeds": seeds, "depths": depth},
        params={"n": n},
        units=n,
        bytes_moved=STACK_RECORD * n,
    )


def _mix(x: U32) -> U32:
    """lowbias32, the kernel's integer hash, over uint32 arrays (wrapping)."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def stack_heavy_reference(problem: Problem) -> U32:
    """Return the records' checksums, computed level by level for every record at once.

    A frame's checksum folds its 256 words into its child's checksum c as
    `c * 31**256 + sum(word[k] * 31**(255 - k))` modulo 2**32, which is what
    the kernel's `acc = acc * 31 + word[k]` loop computes.
    """
    seeds, depths = problem.inputs["seeds"], problem.inputs["depths"]
    n = seeds.size
    levels = int(depths.max()) if n else 0
    k = np.arange(STACK_WORDS, dtype=np.uint32)
    spread = k * np.uint32(0x9E3779B9)
    parent_index = (k * np.uint32(7) + np.uint32(3)) & np.uint32(STACK_WORDS - 1)
    powers = np.array(
        [pow(31, STACK_WORDS - 1 - i, 2**32) for i in range(STACK_WORDS)], dtype=np.uint64
    )
    fold = np.uint64(pow(31, STACK_WORDS, 2**32))
    contributions = []
    seed = seeds.copy()
    parent: U32 | None = None
    for level in range(levels):
        words = _mix(seed[:, None] + spread[None, :])
        if parent is not None:
            words ^= parent[:, parent_index]
        # uint64 products and sums wrap modulo 2**64, which keeps them right modulo 2**32.
        contributions.append((words.astype(np.uint64) * powers).sum(axis=1, dtype=np.uint64))
        seed = _mix(seed ^ np.uint32(level + 1))
        parent = words
    acc = np.zeros(n, np.uint64)
    mask = np.uint64(0xFFFFFFFF)
    for level in reversed(range(levels)):
        folded = (acc * fold + contributions[level]) & mask
        acc = np.where(level < depths, folded, acc)
    return acc.astype(np.uint32)


# -- the library ---------------------------------------------------------------

SPECS: dict[str, KernelSpec] = {
    spec.name: spec
    for spec in (
        KernelSpec(
            "map_f32",
            "x = (x*x)*0.25 + sqrt(x), float32 in place",
            map_f32,
            map_f32_reference,
            "elements",
        ),
        KernelSpec(
            "poly_scalar",
            "64 x (x = x*1.0001 + 0.5), float32 in place",
            functools.partial(poly, kernel="poly_scalar"),
            poly_reference,
            "elements",
        ),
        KernelSpec(
            "poly_simd",
            "poly_scalar with f32x4",
            functools.partial(poly, kernel="poly_simd"),
            poly_reference,
            "elements",
        ),
        KernelSpec("saxpy_simd", "y = a*x + y with f32x4", saxpy, saxpy_reference, "elements"),
        KernelSpec(
            "mandelbrot",
            "Mandelbrot escape counts, one row per element",
            mandelbrot,
            mandelbrot_reference,
            "pixels",
            ("static", "dynamic"),
        ),
        KernelSpec(
            "histogram",
            "256-bin byte histogram, atomic adds of per-call counts",
            histogram,
            histogram_reference,
            "bytes",
            ("static", "dynamic"),
        ),
        KernelSpec(
            "box_blur",
            "3x3 box blur of a uint8 image, one output row per element",
            box_blur,
            box_blur_reference,
            "pixels",
        ),
        KernelSpec(
            "stack_heavy",
            "recursive checksum with a 1 KiB array per frame",
            stack_heavy,
            stack_heavy_reference,
            "elements",
        ),
    )
}
"""Every library kernel, by name (the stem of its `.c` and `.wasm`)."""
