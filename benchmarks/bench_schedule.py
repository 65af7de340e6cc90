"""Static versus dynamic scheduling of uneven work: Mandelbrot rows.

One element is one row of a W x H Mandelbrot image (`kernels/mandelbrot_rows.wat`,
an entry that writes an int32 image of the pool's heap),
and a row costs anything from a few to W * max_iter iterations: the window is
chosen so that the top half of the image holds most of the work. So the
static schedule (one contiguous range per worker) leaves one worker idle
while the other finishes, and the dynamic one (workers claim `chunk` rows at a
time from an atomic counter) should come close to a perfect split.

Cases: `w1_static` (one worker, the baseline), `w2_static`, `w2_dynamic`
(default chunk) and `w2_dynamic_chunk1` (one row per claim). "Perfect" is
`t(w1) / 2`; each 2-worker line reports `ratio_vs_perfect` = its median over
that. From `RunResult.done` of its median run, each line also gives every
worker's busy time, the elements (rows) it did and the chunks it claimed.
Every case's image is checked against a numpy float64 reference (identical
iteration counts) before anything is timed. Contenders alternate within each
round; the 1- and 2-worker pools each have their own memory and image.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from _harness import ROOT, emit, main_guard, parser, summarize

import sharedwasm as sw

sys.path.insert(0, str(ROOT / "kernels"))

import library

BENCH = "schedule"
KERNEL = Path(__file__).resolve().parent / "kernels" / "mandelbrot_rows.wat"
Schedule = Literal["static", "dynamic"]

WINDOW = (-2.0, 0.6, -0.7, 1.3)
"""x_min, x_max, y_min, y_max: off-centre in y, so the rows' costs are lopsided."""


def window(width: int, height: int) -> tuple[float, float, float, float]:
    """Return x0, dx, y0, dy of the image's pixel grid."""
    x_min, x_max, y_min, y_max = WINDOW
    return x_min, (x_max - x_min) / width, y_min, (y_max - y_min) / height


def reference(width: int, height: int, max_iter: int) -> npt.NDArray[np.int32]:
    """Return the kernel's image computed by numpy, with the same float64 steps."""
    return library.escape_counts(width, height, max_iter, window(width, height))


class Image:
    """A pool over its own memory, holding one Mandelbrot job."""

    def __init__(self, kernel: sw.Kernel, workers: int, width: int, height: int, max_iter: int):
        self.pool = sw.WorkerPool(kernel, workers=workers)
        self.pixels = self.pool.empty((height, width), np.int32)
        self.args = (self.pixels, width, max_iter, *window(width, height))

    def run(self, schedule: Schedule, chunk: int | None) -> sw.RunResult:
        # One element per row: the image's first axis.
        return self.pool.run(BENCH, *self.args, schedule=schedule, chunk=chunk)

    def image(self) -> npt.NDArray[np.int32]:
        return self.pixels


def main() -> int:
    p = parser(str(__doc__).partition("\n")[0])
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per case")
    args = p.parse_args()
    if args.quick:
        width, height, max_iter, rounds = 160, 120, 200, 5
    else:
        width, height, max_iter, rounds = 800, 600, 500, 15
    rounds = args.rounds or rounds

    expected = reference(width, height, max_iter)
    row_cost = expected.sum(axis=1, dtype=np.int64)
    half = -(-height // 2)
    top_share = float(row_cost[:half].sum() / row_cost.sum())

    kernel = sw.Kernel.from_file(KERNEL)
    one = Image(kernel, 1, width, height, max_iter)
    two = Image(kernel, 2, width, height, max_iter)
    cases: dict[str, tuple[Image, Schedule, int | None]] = {
        "w1_static": (one, "static", None),
        "w2_static": (two, "static", None),
        "w2_dynamic": (two, "dynamic", None),
        "w2_dynamic_chunk1": (two, "dynamic", 1),
    }
    try:
        for name, (img, schedule, chunk) in cases.items():
            img.pixels[...] = -1
            img.run(schedule, chunk)
            got = img.image()
            if not np.array_equal(got, expected):
                bad = int(np.count_nonzero(got != expected))
                print(f"{name}: {bad} of {width * height} pixels differ", file=sys.stderr)
                return 1
            img.run(schedule, chunk)  # warm up

        names = list(cases)
        times: dict[str, list[float]] = {name: [] for name in names}
        busy: dict[str, list[list[float]]] = {name: [] for name in names}
        rows: dict[str, list[list[int]]] = {name: [] for name in names}
        claims: dict[str, list[list[int]]] = {name: [] for name in names}
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                img, schedule, chunk = cases[name]
                t0 = time.perf_counter()
                result = img.run(schedule, chunk)
                times[name].append(time.perf_counter() - t0)
                busy[name].append([d.elapsed for d in result.done])
                rows[name].append([d.elements for d in result.done])
                claims[name].append([d.chunks for d in result.done])

        perfect_us = summarize(times["w1_static"])["median_us"] / 2
        for name in names:
            img, schedule, chunk = cases[name]
            stats = summarize(times[name])
            # Per worker figures come from one run, the median one, so they add up.
            median_run = sorted(range(len(times[name])), key=times[name].__getitem__)[
                len(times[name]) // 2
            ]
            per_worker_busy = [round(t * 1e6, 1) for t in busy[name][median_run]]
            per_worker_rows = rows[name][median_run]
            fields: dict[str, Any] = {
                "workers": img.pool.workers,
                "schedule": schedule,
                "chunk": chunk,
                "width": width,
                "height": height,
                "max_iter": max_iter,
                "top_half_work_share": top_share,
                **stats,
                "perfect_us": perfect_us,
                "ratio_vs_perfect": stats["median_us"] / perfect_us,
                "busy_us": per_worker_busy,
                "elements": per_worker_rows,
                "chunks": claims[name][median_run],
                "imbalance": max(per_worker_busy) / statistics.mean(per_worker_busy),
            }
            emit(BENCH, name, **fields)
    finally:
        one.pool.close()
        two.pool.close()
    return 0


if __name__ == "__main__":
    main_guard(main)
