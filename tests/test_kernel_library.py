"""The C kernel library in `kernels/`: each entry equals its numpy reference, bit for bit.

Every entry runs on 1 to 4 workers over sizes that do not divide evenly (down
to one element and none), under the static and the dynamic schedule, with its
arrays in the pool's heap, and its output is compared byte for byte with
`kernels/library.py`'s reference (sum_f32: within its stated tolerance, and
bit for bit with its exact static result). Runs go through `InThread`, so a
hang fails within `TIMEOUT` with a thread dump. The suite turns warnings into
errors, so a run that copied an array (`sw.CopyWarning`) fails too.
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
    "sum_f32": [0, 1, 2, 3, 5, 17, 1001, 65537, 1_000_003],
    "max_f32": [0, 1, 2, 3, 5, 17, 1001, 65537],
    "mandelbrot": [0, 1, 2, 3, 7, 33, 97],
    "histogram": [0, 1, 2, 3, 255, 1001, 65537],
    "box_blur": [0, 1, 2, 3, 5, 13, 64, 257],
    "stack_heavy": [0, 1, 2, 3, 5, 37, 301],
}
"""Element counts each entry is checked at: none, one, fewer than the workers, uneven many."""

RUNS: list[dict[str, Any]] = [
    {"schedule": "static"},
    *({"schedule": "dynamic", "chunk": chunk} for chunk in (None, 1, 3)),
]
"""The schedules of every check (chunk None: the pool's default)."""


def run(
    pool: sw.WorkerPool,
    problem: library.Problem,
    args: dict[str, Any] | None = None,
    **kw: Any,
) -> tuple[dict[str, Any], sw.RunResult]:
    """Run `problem` once on `pool`, bound afresh unless `args` are given; return both.

    A hang fails after TIMEOUT with a dump.
    """
    spec = library.SPECS[problem.kernel]
    args = library.bind(pool, problem) if args is None else args
    result: sw.RunResult = InThread(
        lambda: pool.run(problem.kernel, *args.values(), entry=spec.entry, **kw)
    ).join(pool)
    return args, result


def assert_same(got: npt.NDArray[Any], expected: npt.NDArray[Any], what: str) -> None:
    """Assert equal dtype, shape and bytes (so NaN, -0.0 and every float bit count)."""
    assert got.dtype == expected.dtype, what
    assert got.shape == expected.shape, what
    got_bytes = np.ascontiguousarray(got).view(np.uint8).reshape(-1)
    want_bytes = np.ascontiguousarray(expected).view(np.uint8).reshape(-1)
    if not np.array_equal(got_bytes, want_bytes):
        flat_got, flat_want = got.reshape(-1), expected.reshape(-1)
        bad = int(np.flatnonzero(got_bytes != want_bytes)[0]) // got.dtype.itemsize
        pytest.fail(
            f"{what}: element {bad} of {got.size} is {flat_got[bad]!r}, numpy says "
            f"{flat_want[bad]!r}"
        )


def assert_result(got: npt.NDArray[Any], problem: library.Problem, what: str) -> None:
    """Assert that `got` is the problem's reference: bit for bit, or within its tolerance."""
    expected = problem.expected()
    if not problem.tolerance:
        assert_same(got, expected, what)
        return
    assert (got.dtype, got.shape) == (expected.dtype, expected.shape), what
    assert abs(float(got) - float(expected)) <= problem.tolerance, what


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("name", sorted(library.SPECS))
def test_kernel_matches_numpy(name, workers):
    """Every library entry equals its numpy reference at every size, under each schedule."""
    spec = library.SPECS[name]
    problems = [spec.make(n, np.random.default_rng([workers, n])) for n in SIZES[name]]
    with sw.WorkerPool(spec.kernel(), workers=workers) as pool:
        for problem in problems:
            for kw in RUNS:
                args, result = run(pool, problem, **kw)
                what = f"{name} n={problem.elements} workers={workers} {kw}"
                assert_result(problem.result(args), problem, what)
                assert sum(d.elements for d in result.done) == problem.elements


@pytest.mark.parametrize("name", sorted(library.SPECS))
def test_problems_name_the_entrys_parameters(name):
    """A problem's arguments are the entry's parameters, in order, with matching dtypes."""
    spec = library.SPECS[name]
    entry = spec.kernel().entries[spec.entry]
    problem = spec.make(10, np.random.default_rng(0))
    assert list(problem.args) == [p.name for p in entry.params]
    assert problem.output in problem.args
    for param in entry.params:
        value = problem.args[param.name]
        if param.pointer:
            assert isinstance(value, np.ndarray | library.Zeros | library.Partials), param.name
            assert np.dtype(value.dtype) == param.dtype, param.name
            assert isinstance(value, np.ndarray) or not param.const, param.name
        else:
            assert isinstance(value, int | float), param.name


@pytest.mark.parametrize("workers", WORKERS)
def test_kernels_agree_with_each_other(workers):
    """poly_scalar and poly_simd give the same bits, and map_f32 matches the built-in WAT kernel."""
    x = library.float_input(1003, np.random.default_rng(7))
    outputs = {}
    for problem in (library.poly("poly_scalar", x), library.poly("poly_simd", x)):
        with sw.WorkerPool(library.SPECS[problem.kernel].kernel(), workers=workers) as pool:
            args, _ = run(pool, problem)
            outputs[problem.kernel] = problem.result(args).copy()
    assert_same(outputs["poly_simd"], outputs["poly_scalar"], "poly_simd vs poly_scalar")
    problem = library.map_f32(x)
    with sw.WorkerPool(library.SPECS["map_f32"].kernel(), workers=workers) as pool:
        args, _ = run(pool, problem)
        mapped = problem.result(args).copy()
    # The built-in kernel is a compute_partition over the data region, in place.
    builtin = sw.Kernel.from_file(KERNEL_DIR / "map_f32.wat")
    with sw.WorkerPool(builtin, sw.Memory(2, 2), workers) as pool:
        pool.data(np.float32)[: x.size] = x
        InThread(lambda: pool.run("builtin", elements=x.size)).join(pool)
        assert_same(pool.data(np.float32)[: x.size], mapped, "map_f32 vs WAT")


# -- reductions ------------------------------------------------------------------


@pytest.mark.parametrize("workers", WORKERS)
def test_sum_is_deterministic_for_static_runs(workers):
    """A static sum is the same bits on every run: each worker's share added in order."""
    problem = library.SPECS["sum_f32"].make(1_000_003, np.random.default_rng(workers))
    x = problem.array("x")
    with sw.WorkerPool(library.SPECS["sum_f32"].kernel(), workers=workers) as pool:
        args = library.bind(pool, problem)
        totals = [problem.result(run(pool, problem, args)[0]).copy() for _ in range(3)]
    for total in totals:
        assert_same(total, library.sum_f32_static(x, workers), "static sum")
    expected = problem.expected()
    assert abs(float(totals[0]) - float(expected)) <= problem.tolerance
    # The bound is tight enough to mean something: adding in float32 would miss it.
    assert abs(float(np.cumsum(x)[-1]) - float(expected)) > problem.tolerance


@pytest.mark.parametrize("chunk", [None, 1, 997])
def test_dynamic_sum_and_max_are_within_tolerance_run_after_run(chunk):
    """Dynamic sums stay within the tolerance, and the max is exact, with no reset between runs."""
    rng = np.random.default_rng(5)
    total = library.SPECS["sum_f32"].make(200_003, rng)
    peak = library.SPECS["max_f32"].make(200_003, rng)
    with sw.WorkerPool(library.SPECS["sum_f32"].kernel(), workers=3) as pool:
        sums, maxima = library.bind(pool, total), library.bind(pool, peak)
        for _ in range(4):
            for problem, args in ((total, sums), (peak, maxima)):
                run(pool, problem, args, schedule="dynamic", chunk=chunk)
                assert_result(problem.result(args), problem, f"{problem.kernel} chunk={chunk}")


# -- histogram -----------------------------------------------------------------


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("schedule", ["static", "dynamic"])
def test_histogram_counts_every_byte_once(workers, schedule):
    """The bins sum to the input length, and a second run without zeroing adds the counts again."""
    problem = library.SPECS["histogram"].make(100_003, np.random.default_rng(workers))
    expected = problem.expected()
    with sw.WorkerPool(library.SPECS["histogram"].kernel(), workers=workers) as pool:
        args, _ = run(pool, problem, schedule=schedule)
        bins = problem.result(args)
        assert int(bins.sum()) == problem.elements
        assert_same(bins, expected, "histogram")
        assert (bins == 0).any(), "some bins must stay empty, so the zero skip is exercised"
        run(pool, problem, args, schedule=schedule)
        assert_same(bins, 2 * expected, "histogram counted twice")


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
    expected = problem.expected()
    with sw.WorkerPool(library.SPECS["box_blur"].kernel(), workers=workers) as pool:
        args, result = run(pool, problem)
        got = problem.result(args)
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
    shapes = [(1, 1), (1, 2), (2, 1), (2, 2), (1, 7), (7, 1), (3, 2), (2, 3), (5, 4), (3, 0)]
    problems = [library.box_blur(h, np.random.default_rng([h, w]), width=w) for h, w in shapes]
    flat = library.box_blur(6, np.random.default_rng(0), image=np.full((6, 5), 200, np.uint8))
    with sw.WorkerPool(library.SPECS["box_blur"].kernel(), workers=workers) as pool:
        for problem in [*problems, flat]:
            args, _ = run(pool, problem)
            got = problem.result(args)
            assert_same(got, problem.expected(), f"shape {got.shape}")
        assert_same(got, flat.array("image"), "a constant image")
        single = problems[0]
        args, _ = run(pool, single)
        assert_same(single.result(args), single.array("image"), "1x1 image")


def test_box_blur_on_wide_and_tall_images():
    """Non-square images blur correctly, including widths that are not a multiple of 16."""
    problems = [
        library.box_blur(h, np.random.default_rng([h, w]), width=w)
        for h, w in [(3, 250), (250, 3), (17, 33), (64, 129)]
    ]
    with sw.WorkerPool(library.SPECS["box_blur"].kernel(), workers=3) as pool:
        for problem in problems:
            args, _ = run(pool, problem, schedule="dynamic", chunk=2)
            got = problem.result(args)
            assert_same(got, problem.expected(), f"shape {got.shape}")


# -- mandelbrot ----------------------------------------------------------------


def test_mandelbrot_non_square_and_deep():
    """Non-square images and a large max_iter still match numpy's float64 steps exactly."""
    problems = [
        library.mandelbrot(h, np.random.default_rng([h, w]), width=w, max_iter=m)
        for h, w, m in [(5, 61, 1000), (40, 3, 50), (1, 1, 1), (9, 9, 0)]
    ]
    with sw.WorkerPool(library.SPECS["mandelbrot"].kernel(), workers=2) as pool:
        for problem in problems:
            for schedule in ("static", "dynamic"):
                args, _ = run(pool, problem, schedule=schedule)
                what = f"mandelbrot {problem.params} {schedule}"
                assert_same(problem.result(args), problem.expected(), what)


# -- stack_heavy ---------------------------------------------------------------


def test_stack_heavy_is_correct_on_four_workers_run_after_run():
    """Four workers recursing at once with 1 KiB frames get every checksum right, run after run."""
    spec = library.SPECS["stack_heavy"]
    problems = [spec.make(203, np.random.default_rng(seed)) for seed in range(6)]
    with sw.WorkerPool(spec.kernel(), workers=4) as pool:
        for i, problem in enumerate(problems):
            schedule = "dynamic" if i % 2 else "static"
            args, _ = run(pool, problem, schedule=schedule, chunk=1 if i % 2 else None)
            assert_same(problem.result(args), problem.expected(), f"run {i} ({schedule})")


def test_stack_heavy_reference_depends_on_every_frame():
    """The reference's checksums change with the seed and with the depth, so they test something."""
    seeds = np.random.default_rng(1).integers(0, 2**32, 4, dtype=np.uint32)
    a = library.checksums(seeds, np.array([1, 2, 3, library.STACK_SAFE_DEPTH], np.uint32))
    b = library.checksums(seeds, np.array([2, 3, 4, library.STACK_SAFE_DEPTH - 1], np.uint32))
    c = library.checksums(seeds + np.uint32(1), np.array([1, 2, 3, 4], np.uint32))
    assert len(set(a.tolist())) == 4
    assert not np.any(a == b)
    assert not np.any(a[:3] == c[:3])


@pytest.mark.parametrize("timeout", [None, TIMEOUT])
@pytest.mark.parametrize("bad", [0, 27, 39])
def test_stack_overflow_is_a_kernel_trap_and_the_pool_recovers(bad, timeout):
    """An element too deep for the stack traps its worker only; the next run is correct."""
    spec = library.SPECS["stack_heavy"]
    n, workers = 40, 4
    depths = np.full(n, 6, np.uint32)
    depths[bad] = library.STACK_OVERFLOW_DEPTH
    rng = np.random.default_rng(bad)
    deep = library.stack_heavy(n, rng, depths=depths)
    fine = spec.make(n, rng)
    with sw.WorkerPool(spec.kernel(), workers=workers) as pool:
        args = library.bind(pool, deep)
        with pytest.raises(sw.KernelTrap, match="stack overflow") as info:
            run(pool, deep, args, timeout=timeout)
        trap = info.value
        owner = bad // 10  # static chunks of 40 / 4
        assert trap.worker_index == owner
        assert trap.start <= bad < trap.end
        assert trap.traps == (trap,)
        assert statuses(pool) == [-1 if i == owner else 1 for i in range(workers)]
        # The other workers finished their shares.
        got = deep.result(args)
        expected = library.checksums(deep.array("seeds"), depths)
        mine = np.arange(n) // 10 == owner
        assert_same(got[~mine], expected[~mine], "the shares that did not trap")
        for _ in range(2):
            args, _ = run(pool, fine, timeout=timeout)
            assert_same(fine.result(args), fine.expected(), "after the trap")


# -- the library itself ----------------------------------------------------------


def test_every_module_has_specs_and_build_options():
    """Every kernels/*.c has build options and at least one spec, and every spec names an entry."""
    stems = {p.stem for p in KERNELS.glob("*.c")}
    assert stems == set(library.BUILD_OPTIONS)
    assert stems == {spec.module for spec in library.SPECS.values()}
    for name, spec in library.SPECS.items():
        assert spec.name == name
        assert spec.source.is_file()
        assert spec.entry in spec.kernel().entries
        assert "compute_partition" not in spec.kernel().entries
    # Several entries in one module: the reductions.
    assert set(library.SPECS["sum_f32"].kernel().entries) == {"sum_f32", "max_f32"}


@pytest.mark.parametrize("module", sorted(library.BUILD_OPTIONS))
def test_wasm_is_current(module):
    """Each checked-in .wasm was built from its .c as it is, with its BUILD_OPTIONS."""
    source, wasm = KERNELS / f"{module}.c", KERNELS / f"{module}.wasm"
    assert build_is_current(source, wasm, **library.BUILD_OPTIONS[module]), (
        f"{wasm.name} is stale: run `python scripts/build_kernels.py`"
    )


def test_sources_lay_out_no_data_region():
    """No library kernel reads a header or an offset of the data region: arguments only."""
    for source in KERNELS.glob("*.c"):
        text = source.read_text()
        for old in ("SW_DATA", "sw_data_offset", "SW_KERNEL(start, end)", "HEADER"):
            assert old not in text, f"{source.name} uses {old}"
