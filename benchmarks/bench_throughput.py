"""Measure how fast a pool streams through memory and scales with workers.

Two kernels, each scalar and SIMD (f32x4), over the data region of a memory
created at 128 pages (8 MiB) with a maximum of 512: first as created, then
after `pool.grow` to 512 pages (32 MiB).

* poly: per float32 element, 64 times `x = x * 1.0001 + 0.5` (compute-bound),
  `entry:poly(start, end, float *x)`.
* saxpy: `y = 2 * x + y`, x and y each about half the data region
  (memory-bound), `entry:saxpy(start, end, const float *x, float *y, float a)`.

In sharedwasm the arrays are made in the pool's heap (`pool.asarray`) and
passed to `pool.run` with no copy; they are freed before the pool grows, and
made again, larger, after. The Node peers get the same bytes at the start of
their data region and the arrays' addresses as the entry's arguments.

Contenders, on 1 and 2 workers: sharedwasm, the same .wasm in a Node.js pool
from peers/ (the Atomics-only one by default) and numpy on one thread
(`y += a * x`; the float32 loop, in place). Before anything is timed every
output is checked against numpy: bit for bit for poly, `allclose` for saxpy
(for Node, through the full output it dumps and its checksums). Each round
runs sharedwasm, then Node, then numpy, and the samples of all rounds are
pooled. One JSON line per case gives the median time, GB/s moved (bytes
read + written) and elements/s; ratio lines give the 2-worker speed-up,
sharedwasm's median time over Node's, and saxpy SIMD on 2 workers against
numpy.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt
from _harness import build_wasm, emit, main_guard, parser, run_node_peer, summarize, timeit

import sharedwasm as sw

BENCH = "throughput"
KERNELS = ("poly_scalar", "poly_simd", "saxpy_scalar", "saxpy_simd")
WORKERS = (1, 2)
MUL, ADD, STEPS = np.float32(1.0001), np.float32(0.5), 64
A = np.float32(2.0)
HEADROOM = 4096
"""Bytes left for what precedes the data region, in sharedwasm and in the Node peer alike."""
NODE_TIMEOUT = 300.0
F32 = npt.NDArray[np.float32]


@dataclasses.dataclass(frozen=True)
class Size:
    """One memory size a case runs at: pages created, pages grown by, maximum pages."""

    pages: int
    grow: int
    maximum: int

    @property
    def label(self) -> str:
        kib = self.total_pages * 64
        return f"{kib // 1024}MiB" if kib >= 1024 else f"{kib}KiB"

    @property
    def total_pages(self) -> int:
        return self.pages + self.grow


@dataclasses.dataclass
class Workload:
    """A kernel's input and reference output at one size."""

    family: str
    n: int
    x: F32
    y: F32 | None
    expected: F32

    @property
    def blob(self) -> bytes:
        """The Node peers' data region, from its start: x, then y."""
        return self.x.tobytes() + (b"" if self.y is None else self.y.tobytes())

    @property
    def output_offset(self) -> int:
        """Byte offset of the output in the Node peers' data region."""
        return 0 if self.y is None else 4 * self.n

    @property
    def node_args(self) -> list[object]:
        """The entry's arguments for a Node peer: data-region offsets and numbers."""
        if self.y is None:
            return [{"offset": 0}]
        return [{"offset": 0}, {"offset": 4 * self.n}, float(A)]

    @property
    def bytes_moved(self) -> int:
        """Bytes a run reads and writes: x in and out for poly; x, y in and y out for saxpy."""
        return (8 if self.family == "poly" else 12) * self.n

    def check(self, got: F32, who: str) -> None:
        """Raise if `got` differs from numpy: any bit for poly, beyond allclose for saxpy."""
        if self.family == "poly":
            ok = np.array_equal(got.view(np.uint32), self.expected.view(np.uint32))
        else:
            ok = bool(np.allclose(got, self.expected, rtol=1e-6, atol=0.0))
        if not ok:
            bad = int(np.flatnonzero(got != self.expected)[0])
            raise RuntimeError(
                f"{who}: {self.family} output differs from numpy at element {bad} of {self.n}: "
                f"{got[bad]!r} != {self.expected[bad]!r}"
            )


def sequential_sum(values: F32) -> float:
    """Sum float32 values into a float, in index order, as the Node peer does."""
    total = 0.0
    for v in values.tolist():
        total += v
    return total


def numpy_poly(x: F32) -> F32:
    """Return poly's reference output, computed as the kernels define it."""
    for _ in range(STEPS):
        x = x * MUL + ADD
    return x


def make_workload(family: str, capacity: int, rng: np.random.Generator) -> Workload:
    """Fill as much of a data region of `capacity` float32 as the kernel can use."""
    if family == "poly":
        n = capacity // 64 * 64
        x = rng.random(n, dtype=np.float32)
        return Workload(family, n, x, None, numpy_poly(x))
    # A multiple of 64, so that y starts on a cache line in Node too.
    n = capacity // 2 // 64 * 64
    x = rng.random(n, dtype=np.float32)
    y = rng.random(n, dtype=np.float32)
    expected = y.copy()
    expected += A * x
    return Workload(family, n, x, y, expected)


def sharedwasm_batch(
    kernel: sw.Kernel, workers: int, loads: dict[Size, Workload], runs: int, verify: bool
) -> dict[Size, list[float]]:
    """Time one pool at each size in turn, growing it between them; return seconds per run."""
    sizes = list(loads)
    out = {}
    mem = sw.Memory(sizes[0].pages, sizes[0].maximum)
    with sw.WorkerPool(kernel, mem, workers) as pool:
        if pool.data_offset > HEADROOM:
            raise RuntimeError(f"data_offset {pool.data_offset} is past HEADROOM ({HEADROOM})")
        for size, load in loads.items():
            if size.total_pages > mem.pages:
                pool.grow(size.total_pages - mem.pages)
            x = pool.asarray(load.x)
            if load.y is None:
                args: tuple[object, ...] = (x,)
                output = x
            else:
                output = pool.asarray(load.y)
                args = (x, output, float(A))
            if mem.pages != size.total_pages:
                raise RuntimeError(f"the arrays grew the memory to {mem.pages} pages")
            # Untimed, as users run: a run with a timeout takes the standby path.
            run = functools.partial(pool.run, load.family, *args)
            run()
            if verify:
                load.check(output, f"sharedwasm {kernel.name} w{workers}")
            out[size] = timeit(run, repeat=runs, warmup=1)
            # Freed before the pool grows, so that the next size's arrays fit.
            del run, args, output, x
    return out


def node_batch(
    peer: str,
    wasm: Path,
    workers: int,
    size: Size,
    load: Workload,
    runs: int,
    tmp: Path,
    verify: bool,
) -> list[float]:
    """Time the same .wasm in a Node peer, checking its output; return seconds per run."""
    source = tmp / "input.bin"
    source.write_bytes(load.blob)
    dump = tmp / "output.bin"
    options = ["--workers", str(workers), "--pages", str(size.pages), "--grow", str(size.grow)]
    options += ["--maximum", str(size.maximum), "--elements", str(load.n)]
    options += ["--runs", str(runs), "--warmup", "1", "--input", str(source)]
    options += ["--check-offset", str(load.output_offset), "--check-count", str(load.n)]
    options += ["--entry", f"entry:{load.family}", "--args", json.dumps(load.node_args)]
    if verify:
        options += ["--dump", str(dump)]
    result = run_node_peer(peer, wasm, options, timeout=NODE_TIMEOUT)
    who = f"node-{peer} {wasm.stem} w{workers}"
    expected = {
        "head": sequential_sum(load.expected[:1000]),
        "tail": sequential_sum(load.expected[-1000:]),
    }
    for key, want in expected.items():
        got = result["checksum"][key]
        if not (got == want if load.family == "poly" else math.isclose(got, want, rel_tol=1e-6)):
            raise RuntimeError(f"{who}: checksum {key} {got!r} != numpy's {want!r}")
    if verify:
        load.check(np.fromfile(dump, np.float32), who)
    return [us / 1e6 for us in result["durations_us"]]


def numpy_batch(load: Workload, runs: int) -> list[float]:
    """Time numpy on one thread over the same input, after checking it."""
    x = load.x.copy()
    y = x if load.y is None else load.y.copy()

    def poly() -> None:
        # The reference loop without its temporaries: the same rounding.
        for _ in range(STEPS):
            np.multiply(x, MUL, out=x)
            np.add(x, ADD, out=x)

    def saxpy() -> None:
        y[:] += A * x

    fn = poly if load.family == "poly" else saxpy
    fn()
    load.check(y, "numpy")
    return timeit(fn, repeat=runs, warmup=1)


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--peer", choices=["atomics", "reference"], default="atomics")
    args = p.parse_args()
    if args.quick:
        sizes = [Size(2, 0, 8), Size(2, 6, 8)]
        rounds, runs = 1, {"poly": 2, "saxpy": 5}
    else:
        sizes = [Size(128, 0, 512), Size(128, 384, 512)]
        rounds, runs = 3, {"poly": 5, "saxpy": 100}

    rng = np.random.default_rng(2024)
    loads: dict[tuple[str, Size], Workload] = {}
    for family in ("poly", "saxpy"):
        for size in sizes:
            capacity = (size.total_pages * 65536 - HEADROOM) // 4
            loads[family, size] = make_workload(family, capacity, rng)

    samples: dict[tuple[str, str, Size, int], list[float]] = collections.defaultdict(list)
    node = f"node-{args.peer}"
    with tempfile.TemporaryDirectory(prefix="sharedwasm-bench-") as tmp_name:
        tmp = Path(tmp_name)
        wasm = {name: build_wasm(name, tmp) for name in KERNELS}
        kernels = {name: sw.Kernel.from_file(path) for name, path in wasm.items()}
        for round_ in range(rounds):
            verify = round_ == 0
            for name, workers in itertools.product(KERNELS, WORKERS):
                family = name.split("_")[0]
                case = {size: loads[family, size] for size in sizes}
                timed = sharedwasm_batch(kernels[name], workers, case, runs[family], verify)
                for size, seconds in timed.items():
                    samples["sharedwasm", name, size, workers] += seconds
                for size, load in case.items():
                    seconds = node_batch(
                        args.peer, wasm[name], workers, size, load, runs[family], tmp, verify
                    )
                    samples[node, name, size, workers] += seconds
            for family in ("poly", "saxpy"):
                for size in sizes:
                    samples["numpy", family, size, 1] += numpy_batch(
                        loads[family, size], runs[family]
                    )

    medians: dict[tuple[str, str, Size, int], float] = {}
    for (contender, kernel, size, workers), seconds in samples.items():
        load = loads[kernel.split("_")[0], size]
        stats = summarize(seconds)
        median = stats["median_us"] / 1e6
        medians[contender, kernel, size, workers] = median
        emit(
            BENCH,
            f"{contender}/{kernel}/{size.label}/w{workers}",
            contender=contender,
            kernel=kernel,
            size=size.label,
            pages=size.total_pages,
            grown=size.grow > 0,
            workers=workers,
            elements=load.n,
            bytes_moved=load.bytes_moved,
            gb_per_s=load.bytes_moved / median / 1e9,
            elements_per_s=load.n / median,
            rounds=rounds,
            **stats,
        )

    for name in KERNELS:
        for size in sizes:
            for contender in ("sharedwasm", node):
                one, two = (medians[contender, name, size, w] for w in WORKERS)
                emit(
                    BENCH,
                    f"ratio/speedup-w2/{contender}/{name}/{size.label}",
                    kernel=name,
                    size=size.label,
                    contender=contender,
                    speedup_w2_over_w1=one / two,
                )
            for workers in WORKERS:
                emit(
                    BENCH,
                    f"ratio/sharedwasm-vs-node/{name}/{size.label}/w{workers}",
                    kernel=name,
                    size=size.label,
                    workers=workers,
                    peer=node,
                    sharedwasm_time_over_node=medians["sharedwasm", name, size, workers]
                    / medians[node, name, size, workers],
                )
    for size in sizes:
        emit(
            BENCH,
            f"ratio/saxpy_simd-w2-vs-numpy/{size.label}",
            kernel="saxpy_simd",
            size=size.label,
            workers=2,
            speed_over_numpy=medians["numpy", "saxpy", size, 1]
            / medians["sharedwasm", "saxpy_simd", size, 2],
        )
    return 0


if __name__ == "__main__":
    main_guard(main)
