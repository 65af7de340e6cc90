"""Measure every entry of the C library (`kernels/`) on 1 and 2 workers, against numpy.

For each entry of `kernels/library.py` one problem, made from a seeded
generator at a size where a run takes milliseconds (`SIZES`; about 32 MiB of
data for the memory-bound kernels). Each round gives each worker count its own
pool: the problem's arrays are made in the pool's heap (`library.bind`), the
first run's result is checked against the numpy reference (byte for byte; the
float64 sum within its tolerance), then `runs` runs are timed back to back
over the same arrays, copying nothing (the in-place kernels step their own
output on, which costs the same). mandelbrot, whose rows cost anything from a few to
width * max_iter iterations, runs under both schedules; the other kernels
under the static one. Then the numpy reference itself (`library.py`, one
thread, temporaries and all) is timed on the same problem. Rounds alternate
the contenders, and their samples are pooled.

Lines: `<kernel>/<schedule>/w<N>` with the median time, elements/s, the
kernel's own unit per second (`unit`: elements, pixels or bytes) and GB/s
(bytes read plus written, each counted once: `bytes_moved`);
`numpy/<kernel>` with the same figures; `ratio/<kernel>/<schedule>` with the
2-worker speed-up and each worker count's speed over numpy.
"""

from __future__ import annotations

import collections
import sys
from typing import Any, Literal

import numpy as np
from _harness import ROOT, emit, main_guard, parser, summarize, timeit

import sharedwasm as sw

sys.path.insert(0, str(ROOT / "kernels"))

import library

BENCH = "kernels"
WORKERS = (1, 2)
Schedule = Literal["static", "dynamic"]

SIZES = {
    "map_f32": 8 * 2**20,
    "poly_scalar": 2**20,
    "poly_simd": 4 * 2**20,
    "saxpy_simd": 4 * 2**20,
    "sum_f32": 8 * 2**20,
    "max_f32": 8 * 2**20,
    "mandelbrot": 768,
    "histogram": 32 * 2**20,
    "box_blur": 4096,
    "stack_heavy": 4000,
}
"""Elements per problem (rows of a square image for mandelbrot and box_blur)."""

QUICK_SIZES = {
    "map_f32": 4096,
    "poly_scalar": 1024,
    "poly_simd": 4096,
    "saxpy_simd": 4096,
    "sum_f32": 4096,
    "max_f32": 4096,
    "mandelbrot": 32,
    "histogram": 65536,
    "box_blur": 64,
    "stack_heavy": 64,
}

RUNS = {
    "map_f32": 30,
    "poly_scalar": 5,
    "poly_simd": 10,
    "saxpy_simd": 30,
    "sum_f32": 30,
    "max_f32": 30,
    "mandelbrot": 5,
    "histogram": 20,
    "box_blur": 20,
    "stack_heavy": 10,
}
"""Timed runs per contender per round."""
NUMPY_RUNS = 5
"""At most this many timed calls of a numpy reference per round: some take 100 ms."""


def check(problem: library.Problem, args: dict[str, Any], who: str) -> None:
    """Raise if the result differs from numpy's: in any byte, or beyond its tolerance."""
    mismatch = problem.mismatch(args)
    if mismatch is not None:
        raise RuntimeError(f"{who}: {mismatch}")


def sharedwasm_batch(
    spec: library.KernelSpec,
    problem: library.Problem,
    workers: int,
    schedule: Schedule,
    runs: int,
    verify: bool,
) -> list[float]:
    """Time `runs` back-to-back runs on a fresh pool; return seconds per run."""
    with sw.WorkerPool(spec.kernel(), workers=workers) as pool:
        args = library.bind(pool, problem)
        values = list(args.values())

        def run() -> None:
            pool.run(spec.name, *values, entry=spec.entry, schedule=schedule)

        run()
        if verify:
            check(problem, args, f"{spec.name}/{schedule}/w{workers}")
        return timeit(run, repeat=runs, warmup=1)


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--only", nargs="+", metavar="KERNEL", help="measure only these kernels")
    args = p.parse_args()
    names = args.only or list(library.SPECS)
    unknown = sorted(set(names) - set(library.SPECS))
    if unknown:
        p.error(f"unknown kernels {unknown}; choose from {sorted(library.SPECS)}")
    if args.quick:
        sizes, rounds, runs = QUICK_SIZES, 1, dict.fromkeys(RUNS, 3)
    else:
        sizes, rounds, runs = SIZES, 3, RUNS

    for name in names:
        spec = library.SPECS[name]
        problem = spec.make(sizes[name], np.random.default_rng(2024))
        schedules: tuple[Schedule, ...] = (
            ("static", "dynamic") if name == "mandelbrot" else ("static",)
        )
        samples: dict[tuple[str, int], list[float]] = collections.defaultdict(list)
        for round_ in range(rounds):
            for schedule in schedules:
                for workers in WORKERS:
                    samples[schedule, workers] += sharedwasm_batch(
                        spec, problem, workers, schedule, runs[name], verify=round_ == 0
                    )
            reference = problem.expected
            samples["numpy", 1] += timeit(reference, repeat=min(runs[name], NUMPY_RUNS), warmup=1)

        medians: dict[tuple[str, int], float] = {}
        for (contender, workers), seconds in samples.items():
            stats = summarize(seconds)
            median = stats["median_us"] / 1e6
            medians[contender, workers] = median
            case = f"numpy/{name}" if contender == "numpy" else f"{name}/{contender}/w{workers}"
            emit(
                BENCH,
                case,
                kernel=name,
                contender="numpy" if contender == "numpy" else "sharedwasm",
                schedule=None if contender == "numpy" else contender,
                workers=workers,
                elements=problem.elements,
                unit=spec.unit,
                units=problem.units,
                bytes_moved=problem.bytes_moved,
                params=problem.params,
                elements_per_s=problem.elements / median,
                units_per_s=problem.units / median,
                gb_per_s=problem.bytes_moved / median / 1e9,
                rounds=rounds,
                **stats,
            )
        numpy = medians["numpy", 1]
        for schedule in schedules:
            one, two = (medians[schedule, w] for w in WORKERS)
            emit(
                BENCH,
                f"ratio/{name}/{schedule}",
                kernel=name,
                schedule=schedule,
                speedup_w2_over_w1=one / two,
                w1_speed_over_numpy=numpy / one,
                w2_speed_over_numpy=numpy / two,
            )
    return 0


if __name__ == "__main__":
    main_guard(main)
