"""The C kernel library in `kernels/`: each kernel equals its numpy reference, bit for bit.

Every kernel runs on 1 to 4 workers over sizes that do not divide evenly
(down to one element and none), under the schedules it is meant for, and its
output is compared byte for byte with `kernels/library.py`'s reference. Runs
go through `InThread`, so a hang fails within `TIMEOUT` with a thread dump.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

import sharedwasm as sw
from conftest import TIMEOUT, InThread, statuses
from sharedwasm._build import build_is_current
from sharedwasm._builtin import KERNEL_DIR

KERNELS = Path(__file__).resolve().parent.parent / "kernels"
sys.path.insert(0, str(KERNELS))

import library  # noqa: E402

WORKERS = [1, 2, 3, 4]

SIZES: dict[str, list[int]] = {
    "map_f32": [0, 1, 2, 3, 5, 15, 16, 17, 1001, 4099, 65537],
    "poly_scalar": [0, 1, 2, 3, 5, 17, 1001, 4099],
    "poly_simd": [0, 1, 2, 3, 5, 15, 16, 17, 33, 1001, 4099, 65537],
    "saxpy_simd": [0, 1, 2, 3, 5, 15, 16, 17, 1001, 4099, 65537],
    "mandelbrot": [0, 1, 2, 3, 7, 33, 97],
    "histogram": [0, 1, 2, 3, 255, 1001, 65537],
    "box_blur": [0, 1, 2, 3, 5, 13, 64, 257],
    "stack_heavy": [0, 1, 2, 3, 5, 37, 301],
}
"""Element counts each kernel is checked at: none, one, fewer than the workers, uneven many."""

DYNAMIC_CHUNKS = [None, 1, 3]
"""Chunk sizes of the dynamic runs (None: the pool's default)."""


def run(pool: sw.WorkerPool, problem: library.Problem, **kw: Any) -> sw.RunResult:
    """Fill the data region with `problem` and run it; a hang fails after TIMEOUT with a dump."""
    problem.fill(pool.data(np.uint8))
    result: sw.RunResult = InThread(
        lambda: pool.run(
            problem.kernel, elements=problem.elements, element_size=problem.element_size, **kw
        )
    ).join(pool)
    return result


def assert_same(got: npt.NDArray[Any], expected: npt.NDArray[Any], what: str) -> None:
    """Assert equal dtype, shape and bytes (so NaN, -0.0 and every float bit count)."""
    assert got.dtype == expected.dtype, what
    assert got.shape == expected.shape, what
    got_bytes = np.ascontiguousarray(got).view(np.uint8).reshape(-1)
    want_bytes = np.ascontiguousarray(expected).view(np.uint8).reshape(-1)
    if not np.array_equal(got_bytes, want_bytes):
        flat_got, flat_want = got.reshape(-1), expected.reshape(-1)
        bad = (
            np.flatnonzero(
                np.ascontiguousarray(flat_got).view(np.uint8).reshape(flat_got.size, -1)
                != np.ascontiguousarray(flat_want).view(np.uint8).reshape(flat_want.size, -1)
            )[0]
            // got.dtype.itemsize
        )
        pytest.fail(
            f"{what}: element {bad} of {got.size} is {flat_got[bad]!r}, numpy says "
            f"{flat_want[bad]!r}"
        )


def pool_for(kernel: sw.Kernel, problems: list[library.Problem], workers: int) -> sw.WorkerPool:
    """Return a pool whose memory fits the largest of `problems`."""
    largest = max(problems, key=lambda p: p.nbytes)
    return sw.WorkerPool(
        kernel, sw.Memory(*library.memory_pages(kernel, largest, workers)), workers
    )


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("name", sorted(library.SPECS))
def test_kernel_matches_numpy(name, workers):
    """Every library kernel's output equals its numpy reference exactly at every size."""
    spec = library.SPECS[name]
    problems = [spec.make(n, np.random.default_rng([workers, n])) for n in SIZES[name]]
    with pool_for(spec.kernel(), problems, workers) as pool:
        for problem in problems:
            expected = spec.reference(problem)
            runs: list[dict[str, Any]] = [{"schedule": "static"}]
            if "dynamic" in spec.schedules:
                runs += [{"schedule": "dynamic", "chunk": chunk} for chunk in DYNAMIC_CHUNKS]
            for kw in runs:
                result = run(pool, problem, **kw)
                what = f"{name} n={problem.elements} workers={workers} {kw}"
                assert_same(problem.result(pool.data(np.uint8)), expected, what)
                assert sum(d.elements for d in result.done) == problem.elements


@pytest.mark.parametrize("workers", WORKERS)
def test_kernels_agree_with_each_other(workers):
    """poly_scalar and poly_simd give the same bits, and map_f32 matches the built-in WAT kernel."""
    x = library.float_input(1003, np.random.default_rng(7))
    outputs = {}
    for name in ("poly_scalar", "poly_simd", "map_f32"):
        spec = library.SPECS[name]
        problem = library.in_place(name, x)
        with pool_for(spec.kernel(), [problem], workers) as pool:
            run(pool, problem)
            outputs[name] = problem.result(pool.data(np.uint8)).copy()
    assert_same(outputs["poly_simd"], outputs["poly_scalar"], "poly_simd vs poly_scalar")
    builtin = sw.Kernel.from_file(KERNEL_DIR / "map_f32.wat")
    problem = library.in_place("map_f32", x)
    with pool_for(builtin, [problem], workers) as pool:
        run(pool, problem)
        assert_same(problem.result(pool.data(np.uint8)), outputs["map_f32"], "map_f32 vs WAT")


# -- histogram -----------------------------------------------------------------


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("schedule", ["static", "dynamic"])
def test_histogram_counts_every_byte_once(workers, schedule):
    """The bins sum to the input length, and a second run without zeroing adds the counts again."""
    spec = library.SPECS["histogram"]
    problem = spec.make(100_003, np.random.default_rng(workers))
    expected = spec.reference(problem)
    with pool_for(spec.kernel(), [problem], workers) as pool:
        data = pool.data(np.uint8)
        run(pool, problem, schedule=schedule)
        bins = problem.result(data)
        assert int(bins.sum()) == problem.elements
        assert_same(bins, expected, "histogram")
        assert (bins == 0).any(), "some bins must stay empty, so the zero skip is exercised"
        InThread(
            lambda: pool.run(elements=problem.elements, element_size=1, schedule=schedule)
        ).join(pool)
        assert_same(problem.result(data), 2 * expected, "histogram counted twice")


# -- box_blur ------------------------------------------------------------------


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_box_blur_reads_neighbour_rows_across_partition_boundaries(workers):
    """Rows next to a partition boundary are blurred with the other worker's input rows."""
    height, width = 13, 9
    # Every row differs sharply from its neighbours, so a row blurred without
    # the right neighbour (or with an output row instead of an input row) shows.
    rows = (np.arange(height) * 101 % 256).astype(np.uint8)
    image = np.repeat(rows[:, None], width, axis=1)
    image[:, ::2] ^= 0x55
    problem = library.box_blur(height, np.random.default_rng(0), image=image)
    expected = library.box_blur_reference(problem)
    with pool_for(library.SPECS["box_blur"].kernel(), [problem], workers) as pool:
        result = run(pool, problem)
        got = problem.result(pool.data(np.uint8))
        boundaries = sorted({d.start for d in result.done if 0 < d.start < height})
        assert len(boundaries) == workers - 1
        for row in boundaries:
            for r in (row - 1, row):
                assert not np.array_equal(expected[r], image[r]), "the test image is too smooth"
                assert_same(got[r], expected[r], f"row {r} at the boundary before row {row}")
        assert_same(got, expected, "box_blur")


@pytest.mark.parametrize("workers", WORKERS)
def test_box_blur_edges_clamp(workers):
    """Images one or two pixels wide or high clamp at every edge; a constant image stays put."""
    shapes = [(1, 1), (1, 2), (2, 1), (2, 2), (1, 7), (7, 1), (3, 2), (2, 3), (5, 4)]
    problems = [library.box_blur(h, np.random.default_rng([h, w]), width=w) for h, w in shapes]
    flat = library.box_blur(6, np.random.default_rng(0), image=np.full((6, 5), 200, np.uint8))
    with pool_for(library.SPECS["box_blur"].kernel(), problems, workers) as pool:
        for problem in [*problems, flat]:
            run(pool, problem)
            got = problem.result(pool.data(np.uint8))
            assert_same(got, library.box_blur_reference(problem), f"shape {got.shape}")
        assert_same(got, flat.inputs["image"], "a constant image")
        single = problems[0]
        run(pool, single)
        assert_same(single.result(pool.data(np.uint8)), single.inputs["image"], "1x1 image")


def test_box_blur_on_wide_and_tall_images():
    """Non-square images blur correctly, including widths that are not a multiple of 16."""
    problems = [
        library.box_blur(h, np.random.default_rng([h, w]), width=w)
        for h, w in [(3, 250), (250, 3), (17, 33), (64, 129)]
    ]
    with pool_for(library.SPECS["box_blur"].kernel(), problems, 3) as pool:
        for problem in problems:
            run(pool, problem, schedule="dynamic", chunk=2)
            got = problem.result(pool.data(np.uint8))
            assert_same(got, library.box_blur_reference(problem), f"shape {got.shape}")


# -- mandelbrot ----------------------------------------------------------------


def test_mandelbrot_non_square_and_deep():
    """Non-square images and a large max_iter still match numpy's float64 steps exactly."""
    problems = [
        library.mandelbrot(h, np.random.default_rng([h, w]), width=w, max_iter=m)
        for h, w, m in [(5, 61, 1000), (40, 3, 50), (1, 1, 1), (9, 9, 0)]
    ]
    with pool_for(library.SPECS["mandelbrot"].kernel(), problems, 2) as pool:
        for problem in problems:
            for schedule in ("static", "dynamic"):
                run(pool, problem, schedule=schedule, chunk=None)
                got = problem.result(pool.data(np.uint8))
                expected = library.mandelbrot_reference(problem)
                assert_same(got, expected, f"mandelbrot {problem.params} {schedule}")


# -- stack_heavy ---------------------------------------------------------------


def with_depths(problem: library.Problem, depths: list[int]) -> library.Problem:
    """Return `problem` with the same seeds and other depths."""
    seeds = problem.inputs["seeds"]
    rebuilt = library.stack_heavy(seeds.size, np.random.default_rng(0), depths=depths)
    rebuilt.inputs["seeds"][:] = seeds
    rebuilt.blob.view(np.uint32).reshape(-1, 4)[:, 0] = seeds
    return rebuilt


def test_stack_heavy_is_correct_on_four_workers_run_after_run():
    """Four workers recursing at once with 1 KiB frames get every checksum right, run after run."""
    spec = library.SPECS["stack_heavy"]
    problems = [spec.make(203, np.random.default_rng(seed)) for seed in range(6)]
    with pool_for(spec.kernel(), problems, 4) as pool:
        for i, problem in enumerate(problems):
            schedule = "dynamic" if i % 2 else "static"
            run(pool, problem, schedule=schedule, chunk=1 if i % 2 else None)
            expected = spec.reference(problem)
            assert_same(problem.result(pool.data(np.uint8)), expected, f"run {i} ({schedule})")


def test_stack_heavy_reference_depends_on_every_frame():
    """The reference's checksums change with the seed and with the depth, so they test something."""
    rng = np.random.default_rng(1)
    one = library.stack_heavy(4, rng, depths=[1, 2, 3, library.STACK_SAFE_DEPTH])
    other = with_depths(one, [2, 3, 4, library.STACK_SAFE_DEPTH - 1])
    a, b = library.stack_heavy_reference(one), library.stack_heavy_reference(other)
    assert len(set(a.tolist())) == 4
    assert not np.any(a == b)


@pytest.mark.parametrize("timeout", [None, TIMEOUT])
@pytest.mark.parametrize("bad", [0, 27, 39])
def test_stack_overflow_is_a_kernel_trap_and_the_pool_recovers(bad, timeout):
    """A record too deep for the stack traps its worker only; the next run is correct."""
    spec = library.SPECS["stack_heavy"]
    n, workers = 40, 4
    depths = np.full(n, 6)
    depths[bad] = library.STACK_OVERFLOW_DEPTH
    rng = np.random.default_rng(bad)
    deep = library.stack_heavy(n, rng, depths=depths)
    fine = spec.make(n, rng)
    with pool_for(spec.kernel(), [deep, fine], workers) as pool:
        with pytest.raises(sw.KernelTrap, match="stack overflow") as info:
            run(pool, deep, timeout=timeout)
        trap = info.value
        owner = bad // 10  # static chunks of 40 / 4
        assert trap.worker_index == owner
        assert trap.start <= bad < trap.end
        assert trap.traps == (trap,)
        assert statuses(pool) == [-1 if i == owner else 1 for i in range(workers)]
        # The other workers finished their shares.
        got = deep.result(pool.data(np.uint8))
        expected = spec.reference(with_depths(deep, [*depths[:bad], 0, *depths[bad + 1 :]]))
        mine = np.arange(n) // 10 == owner
        assert_same(got[~mine], expected[~mine], "the shares that did not trap")
        for _ in range(2):
            run(pool, fine, timeout=timeout)
            assert_same(fine.result(pool.data(np.uint8)), spec.reference(fine), "after the trap")


# -- the library itself ----------------------------------------------------------


def test_every_kernel_has_a_spec_and_build_options():
    """Every kernels/*.c has a spec and build options, and nothing names a missing source."""
    stems = {p.stem for p in KERNELS.glob("*.c")}
    assert stems == set(library.SPECS)
    assert stems == set(library.BUILD_OPTIONS)
    for name, spec in library.SPECS.items():
        assert spec.name == name
        assert spec.source.is_file()
        assert set(spec.schedules) <= {"static", "dynamic"}


@pytest.mark.parametrize("name", sorted(library.SPECS))
def test_wasm_is_current(name):
    """Each checked-in .wasm was built from its .c as it is, with its BUILD_OPTIONS."""
    spec = library.SPECS[name]
    assert build_is_current(spec.source, spec.wasm, **spec.build_options), (
        f"{spec.wasm.name} is stale: run `python scripts/build_kernels.py`"
    )


def test_fill_refuses_a_data_region_too_small():
    """Filling a problem into a region smaller than it names the sizes."""
    problem = library.SPECS["saxpy_simd"].make(100, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"data must hold at least 864 bytes .* \(got 10\)"):
        problem.fill(np.zeros(10, np.uint8))
