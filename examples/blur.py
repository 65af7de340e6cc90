"""Blur a PNG with a C kernel on a sharedwasm pool, and time it against numpy.

    python examples/blur.py IN.png OUT.png [--workers N] [--passes K]
    python examples/blur.py --demo OUT.png [--size 1920x1080]

The kernel is examples/blur.c, a 3x3 box blur with one element per output
row; it is built into examples/blur.wasm when that is missing or stale
(clang, lld and binaryen must be installed). The parameters, the input image
and the output image all live in the pool's data region; see blur.c for the
layout. Greyscale, RGB and RGBA images keep their channels; other modes are
converted to one of those. With --demo a test image is generated instead of
read. Reading and writing PNG needs Pillow: pip install 'sharedwasm[examples]'.
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

HEADER_BYTES = 64
"""Bytes reserved at the start of the data region for struct blur_params."""

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


def open_pool(kernel: sw.Kernel, workers: int | None, data_bytes: int) -> sw.WorkerPool:
    """Open a pool whose data region holds `data_bytes` bytes."""
    # The pool places the kernel's statics, its board and a stack per worker
    # before the data region; pages_needed adds them up.
    pages = sw.WorkerPool.pages_needed(kernel, data_bytes, workers)
    return sw.WorkerPool(kernel, sw.Memory(pages, pages), workers)


def image_layout(image: Pixels) -> tuple[int, int, int]:
    """Return where the input and the output go in the data region, and the bytes needed."""
    src = HEADER_BYTES
    dst = src + -(-image.size // 64) * 64
    return src, dst, dst + image.size


def blur_on(pool: sw.WorkerPool, image: Pixels, passes: int) -> tuple[Pixels, float]:
    """Blur `image` `passes` times on `pool`; return the result and the pool's run time."""
    height, width, channels = image.shape
    size = image.size
    src, dst, _ = image_layout(image)
    data = pool.data(np.uint8)
    params = pool.data(np.uint32)[:5]  # struct blur_params: width, height, channels, src, dst
    params[:] = (width, height, channels, src, dst)
    data[src : src + size] = image.reshape(-1)
    elapsed = 0.0
    for k in range(passes):
        result = pool.run(f"pass-{k + 1}", elements=height)
        elapsed += result.elapsed
        # This pass's output is the next one's input.
        src, dst = dst, src
        params[3:5] = (src, dst)
    return data[src : src + size].reshape(image.shape).copy(), elapsed


def blur_numpy(image: Pixels, passes: int) -> Pixels:
    """Return the same blur as blur.c, computed with numpy."""
    out = image
    for _ in range(passes):
        padded = np.pad(out, ((1, 1), (1, 1), (0, 0)), mode="edge").astype(np.uint16)
        rows = padded[:-2] + padded[1:-1] + padded[2:]
        total = rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]
        out = ((total + 4) // 9).astype(np.uint8)
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
            "%(prog)s [--workers N] [--passes K] IN.png OUT.png\n"
            "       %(prog)s --demo [--size WxH] [--workers N] [--passes K] OUT.png"
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

    src, dst, data_bytes = image_layout(image)
    with open_pool(kernel, args.workers, data_bytes) as pool:
        workers = f"{pool.workers} {_plural(pool.workers, 'worker')}"
        print(
            f"pool    {workers} running {kernel.name}; data region from byte {pool.data_offset}: "
            f"parameters +0, input +{src}, output +{dst}"
        )
        blurred, pool_time = blur_on(pool, image, args.passes)
    passes = f"{args.passes} {_plural(args.passes, 'pass')}"
    print(
        f"run     {passes} over {height} rows: {pool_time * 1e3:.2f} ms "
        f"({pool_time / args.passes * 1e3:.2f} ms a pass)"
    )

    t0 = time.perf_counter()
    expected = blur_numpy(image, args.passes)
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
