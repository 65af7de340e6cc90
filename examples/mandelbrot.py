"""Render the Mandelbrot set with a C kernel on a sharedwasm pool, and time N workers vs 1.

    python examples/mandelbrot.py OUT.png [--width W] [--height H] [--max-iter M] [--workers N]
                                          [--center RE IM] [--span S]

The kernel is examples/mandelbrot.c, one element per image row; it is built
into examples/mandelbrot.wasm when that is missing or stale (clang, lld and
binaryen must be installed). Rows cost very different amounts of work, so the
pool runs with the dynamic schedule; a static run is timed beside it for
comparison, and a one-worker run as the baseline. The three renders must be
identical. The kernel writes iteration counts into an array of the pool's heap
(no copy); the colour map is applied with numpy. Writing PNG needs Pillow:
pip install 'sharedwasm[examples]'.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

import sharedwasm as sw

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "mandelbrot.c"
WASM = HERE / "mandelbrot.wasm"
OPTIMIZE = "3"
"""As mandelbrot.c's header says: `sharedwasm build examples/mandelbrot.c -O3`."""

UNWRITTEN = 0xFFFFFFFF
"""What the counts hold before a run: no row may keep it."""

Counts = npt.NDArray[np.uint32]


def load_kernel() -> sw.Kernel:
    """Return the kernel, building mandelbrot.c first if mandelbrot.wasm is missing or stale.

    Raises:
        ToolchainNotFoundError: clang, wasm-ld or wasm-opt is not installed.
        BuildError: the build failed.
    """
    if not sw.build_is_current(SOURCE, WASM, optimize=OPTIMIZE):
        t0 = time.perf_counter()
        sw.build(SOURCE, WASM, optimize=OPTIMIZE)
        print(f"build   {WASM.name} from {SOURCE.name} in {time.perf_counter() - t0:.2f} s")
    return sw.Kernel.from_file(WASM)


def viewport(
    width: int, height: int, center: tuple[float, float], span: float
) -> tuple[float, float, float]:
    """Return x_min, y_max and step for `span` real units across `center`, square pixels."""
    step = span / width
    return center[0] - step * (width - 1) / 2, center[1] + step * (height - 1) / 2, step


class View(NamedTuple):
    """What to render: the image's size, the iteration limit and its place in the plane."""

    width: int
    height: int
    max_iter: int
    x_min: float
    """Real part of column 0."""
    y_max: float
    """Imaginary part of row 0."""
    step: float
    """Distance between neighbouring pixels, both axes."""


def render(
    kernel: sw.Kernel, view: View, workers: int | None, schedule: Literal["static", "dynamic"]
) -> tuple[Counts, sw.RunResult]:
    """Render on a new pool; return the (height, width) counts and the run's result."""
    with sw.WorkerPool(kernel, workers=workers) as pool:  # a memory that grows as needed
        counts = pool.full((view.height, view.width), UNWRITTEN, np.uint32)
        # One element per row (the first axis of counts). Chunks of one row: a
        # row is hundreds of pixels, claiming it one compare-exchange.
        result = pool.run(
            f"{schedule}-{pool.workers}",
            counts,
            width=view.width,
            max_iter=view.max_iter,
            x_min=view.x_min,
            y_max=view.y_max,
            step=view.step,
            schedule=schedule,
            chunk=1 if schedule == "dynamic" else None,
        )
        return counts.copy(), result


def colour(counts: Counts, max_iter: int) -> npt.NDArray[np.uint8]:
    """Map iteration counts to RGB: the set black, the outside from dark blue to white to gold."""
    t = np.log1p(counts.astype(np.float64)) / np.log1p(max_iter)
    stops = np.array([0.0, 0.35, 0.7, 0.85, 1.0])
    palette = np.array(
        [[0, 7, 40], [32, 107, 203], [237, 255, 255], [255, 170, 0], [80, 20, 0]],
        dtype=np.float64,
    )
    rgb: npt.NDArray[np.float64] = np.stack(
        [np.interp(t, stops, palette[:, c]) for c in range(3)], axis=-1
    )
    rgb[counts >= max_iter] = 0
    return np.rint(rgb).astype(np.uint8)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {value})")
    return value


def _describe(label: str, result: sw.RunResult, baseline: float | None) -> str:
    rows = ", ".join(str(d.elements) for d in result.done)
    speedup = "" if baseline is None else f", speed-up {baseline / result.elapsed:.2f}"
    return f"run     {label:<19} {result.elapsed * 1e3:8.1f} ms{speedup}; rows per worker [{rows}]"


def main(argv: list[str] | None = None) -> int:
    """Run the example; return the exit status."""
    parser = argparse.ArgumentParser(
        description="Render the Mandelbrot set with a C kernel on a sharedwasm pool."
    )
    parser.add_argument("output", metavar="OUT.png", type=Path)
    parser.add_argument("--width", type=_positive, default=1200, metavar="W")
    parser.add_argument("--height", type=_positive, default=800, metavar="H")
    parser.add_argument(
        "--max-iter", type=_positive, default=256, metavar="M", help="iterations a pixel at most"
    )
    parser.add_argument(
        "--workers", type=_positive, default=None, metavar="N", help="default: one per CPU"
    )
    parser.add_argument(
        "--center",
        type=float,
        nargs=2,
        default=(-0.75, 0.5),
        metavar=("RE", "IM"),
        help="the point at the image's centre (default: -0.75 0.5, the upper half of the set)",
    )
    parser.add_argument(
        "--span",
        type=float,
        default=3.0,
        metavar="S",
        help="real units across the image (default 3)",
    )
    args = parser.parse_args(argv)
    if not args.span > 0:
        parser.error(f"--span must be > 0 (got {args.span})")
    if args.max_iter >= UNWRITTEN:
        parser.error(f"--max-iter must be < {UNWRITTEN} (got {args.max_iter})")
    if importlib.util.find_spec("PIL") is None:
        print(
            "mandelbrot.py writes PNG with Pillow, which is not installed: "
            "pip install 'sharedwasm[examples]'",
            file=sys.stderr,
        )
        return 1
    from PIL import Image

    try:
        kernel = load_kernel()
    except (sw.ToolchainNotFoundError, sw.BuildError) as exc:
        print(f"mandelbrot.py: cannot build {SOURCE.name}: {exc}", file=sys.stderr)
        return 1
    width, height, max_iter = args.width, args.height, args.max_iter
    x_min, y_max, step = viewport(width, height, args.center, args.span)
    view = View(width, height, max_iter, x_min, y_max, step)
    print(
        f"image   {width} x {height}, at most {max_iter} iterations a pixel, "
        f"re [{x_min:.4g}, {x_min + step * (width - 1):.4g}], "
        f"im [{y_max - step * (height - 1):.4g}, {y_max:.4g}]"
    )

    one, single = render(kernel, view, 1, "static")
    print(_describe("1 worker", single, None))
    static, by_range = render(kernel, view, args.workers, "static")
    workers = f"{len(by_range.done)} worker{'s' if len(by_range.done) > 1 else ''}"
    print(_describe(f"{workers}, static", by_range, single.elapsed))
    dynamic, claimed = render(kernel, view, args.workers, "dynamic")
    print(_describe(f"{workers}, dynamic", claimed, single.elapsed))

    renders = (one, static, dynamic)
    unwritten = sum(int(np.count_nonzero(r == UNWRITTEN)) for r in renders)
    if unwritten or not all(np.array_equal(one, r) for r in renders):
        print(f"check   the renders differ ({unwritten} pixels never written)  FAILED")
        return 1
    print("check   the three renders are identical")

    t0 = time.perf_counter()
    Image.fromarray(colour(dynamic, max_iter)).save(args.output, format="PNG")
    print(f"wrote   {args.output} (colour map and PNG: {(time.perf_counter() - t0) * 1e3:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
