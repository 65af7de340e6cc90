"""Blur a PNG with a C kernel on a sharedwasm pool, and time it against numpy.

    python examples/blur.py IN.png OUT.png [--workers N] [--passes K] [--threshold T]
    python examples/blur.py --demo OUT.png [--size 1920x1080]

The kernel module is examples/blur.c, with two entries: `blur`, a 3x3 box
blur with one element per output row, and `threshold`, one element per
byte. It is built into examples/blur.wasm when that is missing or stale
(clang, lld and binaryen must be installed). The image goes into an array of
the pool's heap once; the passes ping-pong between two such arrays, and with
--threshold T the blurred image is then thresholded into the other one: a
pipeline of two entries in which no step copies the image. Greyscale, RGB and RGBA images keep their
channels; other modes are converted to one of those. With --demo a test image
is generated instead of read. Reading and writing PNG needs Pillow:
pip install 'sharedwasm[examples]'.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

import sharedwasm as sw

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "blur.c"
WASM = HERE / "blur.wasm"
OPTIMIZE, SIMD = "3", True
"""As blur.c's header says: `sharedwasm build examples/blur.c -O3 --simd`."""

Pixels = npt.NDArray[np.uint8]
"""An image as (height, width, channels) bytes."""


def load_kernel() -> sw.Kernel:
    """Return the blur kernel, building blur.c first if blur.wasm is missing or stale.

    Raises:
        ToolchainNotFoundError: clang, wasm-ld or wasm-opt is not installed.
        BuildError: the build failed.
    """
    if not sw.build_is_current(SOURCE, WASM, optimize=OPTIMIZE, simd=SIMD):
        t0 = time.perf_counter()
        sw.build(SOURCE, WASM, optimize=OPTIMIZE, simd=SIMD)
        print(f"build   {WASM.name} from {SOURCE.name} in {time.perf_counter() - t0:.2f} s")
    return sw.Kernel.from_file(WASM)


def blur_on(
    pool: sw.WorkerPool, image: Pixels, passes: int, threshold: int | None = None
) -> tuple[Pixels, float, float]:
    """Blur `image` `passes` times on `pool`, then threshold it if asked.

    Returns the result and the pool's run time of the blur passes and of the
    threshold (0 without one).
    """
    height, width, channels = image.shape
    src = pool.asarray(image)  # the one copy into the shared memory
    dst = pool.empty_like(src)
    blurring = 0.0
    for k in range(passes):
        # Elements: the first array's first axis, the rows.
        result = pool.run(f"pass-{k + 1}", src, dst, width, height, channels, entry="blur")
        blurring += result.elapsed
        src, dst = dst, src  # this pass's output is the next one's input
    thresholding = 0.0
    if threshold is not None:
        # One element per byte: flat views of the same heap arrays.
        done = pool.run("threshold", src.reshape(-1), dst.reshape(-1), t=threshold,
                        entry="threshold")  # fmt: skip
        thresholding = done.elapsed
        src = dst
    return src.copy(), blurring, thresholding


def blur_numpy(image: Pixels, passes: int, threshold: int | None = None) -> Pixels:
    """Return the same blur (and threshold) as blur.c, computed with numpy."""
    out = image
    for _ in range(passes):
        padded = np.pad(out, ((1, 1), (1, 1), (0, 0)), mode="edge").astype(np.uint16)
        rows = padded[:-2] + padded[1:-1] + padded[2:]
        total = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]
        out = ((total + 4) // 9).astype(np.uint8)
    if threshold is not None:
        out = np.where(out >= threshold, 255, 0).astype(np.uint8)
    return out


def read_png(path: Path) -> tuple[Pixels, str]:
    """Read an image as (height, width, channels) bytes; return it and its mode."""
    from PIL import Image as PILImage

    with PILImage.open(path) as opened:
        picture: PILImage.Image = opened
        original = picture.mode
        if picture.mode not in ("L", "RGB", "RGBA"):
            bands = picture.getbands()
            if picture.mode == "P":
                target = "RGBA" if "transparency" in picture.info else "RGB"
            elif "A" in bands:
                target = "RGBA"
            else:
                target = "L" if len(bands) == 1 else "RGB"
            picture = picture.convert(target)
        pixels = np.asarray(picture, dtype=np.uint8)
        mode = original if picture.mode == original else f"{original}, read as {picture.mode}"
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    return np.ascontiguousarray(pixels), mode


def write_png(path: Path, image: Pixels) -> None:
    """Write (height, width, channels) bytes as a PNG."""
    from PIL import Image as PILImage

    pixels = image[:, :, 0] if image.shape[2] == 1 else image
    PILImage.fromarray(pixels).save(path, format="PNG")


def demo_image(width: int, height: int) -> Pixels:
    """Return a test RGB image: gradients, a checkerboard and noise, whose blur is visible."""
    y, x = np.mgrid[0:height, 0:width]
    checker = ((x // 32 + y // 32) % 2) * 255
    noise = np.random.default_rng(0).integers(0, 256, size=(height, width))
    red = x * 255 // max(width - 1, 1)
    green = y * 255 // max(height - 1, 1)
    blue = (checker + noise) // 2
    return np.stack([red, green, blue], axis=-1).astype(np.uint8)


def _plural(count: int, word: str) -> str:
    return word if count == 1 else word + ("es" if word.endswith("s") else "s")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {value})")
    return value


def _byte(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 255:
        raise argparse.ArgumentTypeError(f"must be in [0, 255] (got {value})")
    return value


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be WIDTHxHEIGHT (got {text!r})") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1x1 (got {text!r})")
    return width, height


def main(argv: list[str] | None = None) -> int:
    """Run the example; return the exit status."""
    parser = argparse.ArgumentParser(
        usage=(
            "%(prog)s [--workers N] [--passes K] [--threshold T] IN.png OUT.png\n"
            "       %(prog)s --demo [--size WxH] [--workers N] [--passes K] [--threshold T] "
            "OUT.png"
        ),
        description="Blur a PNG with a C kernel on a sharedwasm pool, and time it against numpy.",
    )
    parser.add_argument(
        "paths", nargs="+", metavar="PNG", help="IN.png OUT.png, or with --demo only OUT.png"
    )
    parser.add_argument(
        "--workers", type=_positive, default=None, metavar="N", help="default: one per CPU"
    )
    parser.add_argument(
        "--passes", type=_positive, default=1, metavar="K", help="blur K times (default 1)"
    )
    parser.add_argument(
        "--threshold",
        type=_byte,
        default=None,
        metavar="T",
        help="then threshold the blurred image: 255 where a byte is >= T, else 0",
    )
    parser.add_argument("--demo", action="store_true", help="blur a generated test image")
    parser.add_argument(
        "--size",
        type=_size,
        default=(1920, 1080),
        metavar="WxH",
        help="the --demo image's size (default 1920x1080)",
    )
    args = parser.parse_args(argv)
    if len(args.paths) != (1 if args.demo else 2):
        parser.error("give IN.png OUT.png, or --demo OUT.png")
    if importlib.util.find_spec("PIL") is None:
        print(
            "blur.py reads and writes PNG with Pillow, which is not installed: "
            "pip install 'sharedwasm[examples]'",
            file=sys.stderr,
        )
        return 1
    output = Path(args.paths[-1])
    if args.demo:
        image, mode, name = demo_image(*args.size), "RGB", "test image"
    else:
        try:
            image, mode = read_png(Path(args.paths[0]))
        except OSError as exc:  # missing, unreadable, or not an image Pillow knows
            print(f"blur.py: cannot read {args.paths[0]}: {exc}", file=sys.stderr)
            return 1
        name = args.paths[0]
    height, width, channels = image.shape
    print(f"image   {name}: {width} x {height}, {channels} {_plural(channels, 'channel')} ({mode})")

    try:
        kernel = load_kernel()
    except (sw.ToolchainNotFoundError, sw.BuildError) as exc:
        print(f"blur.py: cannot build {SOURCE.name}: {exc}", file=sys.stderr)
        return 1

    # No memory given: the pool makes one that grows with its arrays.
    with sw.WorkerPool(kernel, workers=args.workers) as pool:
        workers = f"{pool.workers} {_plural(pool.workers, 'worker')}"
        print(f"pool    {workers} running {kernel.name} (entries {', '.join(kernel.entries)})")
        blurred, blur_time, threshold_time = blur_on(pool, image, args.passes, args.threshold)
    passes = f"{args.passes} {_plural(args.passes, 'pass')}"
    print(
        f"run     {passes} over {height} rows: {blur_time * 1e3:.2f} ms "
        f"({blur_time / args.passes * 1e3:.2f} ms a pass)"
    )
    if args.threshold is not None:
        print(f"run     threshold {args.threshold} over {image.size} bytes: "
              f"{threshold_time * 1e3:.2f} ms")  # fmt: skip
        passes += " and a threshold"
    pool_time = blur_time + threshold_time

    t0 = time.perf_counter()
    expected = blur_numpy(image, args.passes, args.threshold)
    numpy_time = time.perf_counter() - t0
    print(
        f"numpy   {passes}: {numpy_time * 1e3:.2f} ms, "
        f"{numpy_time / pool_time:.1f} x the pool's time"
    )
    mismatched = int(np.count_nonzero(blurred != expected))
    if mismatched:
        print(f"check   {mismatched} of {blurred.size} bytes differ from numpy  FAILED")
        return 1
    print("check   output equals numpy")

    write_png(output, blurred)
    print(f"wrote   {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
