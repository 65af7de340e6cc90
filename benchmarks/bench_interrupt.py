"""What making kernels stoppable costs: stop checks against epoch interruption.

Every entry of the C kernel library (`kernels/library.py`), plus the scalar
WAT kernels `benchmarks/kernels/poly_scalar.wat` and `saxpy_scalar.wat`, runs
on a 2-worker pool (`--workers`) in these versions:

* `plain`: the module as it is, on the plain engine: nothing can stop it;
* `all-loops`: with a stop check at the top of every loop and at the entry of
  every function that calls (`sharedwasm._instrument.add_stop_checks`), on
  the plain engine, each check reading the stop byte's address from the
  exported global; the byte stays 0;
* `outer-loops`: the same, but only loops that no other loop encloses;
* `all-loops/fixed`, `outer-loops/fixed`: the same two with the address
  built into each check (`settable=False`);
* `epoch`: the module as it is on an interruptible memory (wasmtime's epoch
  checks at every loop back-edge and function entry), as `Memory(...,
  interruptible=True)` gives today.

Every version gets the same layout: the stop byte sits 32 bytes past the
kernel's statics, and the status board 64 bytes past them. All pools of a
kernel live side by side, each with the problem's arrays in its heap; each
pool's first run is checked against numpy (byte for byte; the float64 sum
within its tolerance). Then, round after round, each version in turn does one
untimed run (which also absorbs the previous pool's spinning) and `runs`
timed runs back to back, so that whatever else the machine is doing falls on
every version alike. Samples are pooled per version.

Lines: `<kernel>/<version>` with the median time, `ratio_vs_plain` (of the
medians), `min_ratio_vs_plain` (of the fastest runs) and the checks
inserted; with `--workers 1` also `cpu_median_us` and `cpu_ratio_vs_plain`,
from the calling thread's CPU time (it computes the whole run then), the
figure least disturbed by other load. `summary/<version>`: the geometric mean
and the worst of those ratios over the library's entries (`geomean_ratio`,
`worst_ratio`, `worst_kernel`, `geomean_min_ratio`, `worst_min_ratio`, and
`geomean_cpu_ratio`, `worst_cpu_ratio`), and the geometric mean over the
library plus the two WAT kernels (`geomean_ratio_all`).

`stop/<mode>`: how long a run of `benchmarks/kernels/hang_on_flag.wat`, which
spins forever in every share, takes to raise `KernelTrap` once the host stores
1 to the stop byte (all-loops, settable and fixed address).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import wasmtime
from _harness import HERE, ROOT, emit, main_guard, parser, summarize

import sharedwasm as sw
from sharedwasm import atomics
from sharedwasm._instrument import StopChecks, add_stop_checks

sys.path.insert(0, str(ROOT / "kernels"))

import library

BENCH = "interrupt"
VERSIONS = (
    "plain",
    "all-loops",
    "outer-loops",
    "all-loops/fixed",
    "outer-loops/fixed",
    "epoch",
)
STOP_TIMEOUT = 10.0


@dataclasses.dataclass(frozen=True)
class Case:
    """A kernel to measure: its module, entry and problem maker."""

    name: str
    path: Path
    """A `.wasm` or `.wat` file."""
    entry: str
    make: Callable[[int, np.random.Generator], library.Problem]
    size: int
    quick_size: int
    runs: int
    library: bool = True

    def wasm(self) -> bytes:
        return read_module(self.path)


def read_module(path: Path) -> bytes:
    if path.suffix == ".wat":
        return bytes(wasmtime.wat2wasm(path.read_text()))
    return path.read_bytes()


def _poly_wat(n: int, rng: np.random.Generator) -> library.Problem:
    return library.poly("poly_scalar", rng.random(n, np.float32))


def _saxpy_wat(n: int, rng: np.random.Generator) -> library.Problem:
    """saxpy_scalar.wat's argument order: x, y, a."""
    problem = library.saxpy(n, rng)
    args = {name: problem.args[name] for name in ("x", "y", "a")}
    return dataclasses.replace(problem, kernel="saxpy_scalar", args=args)


SIZES = {
    "map_f32": (8 * 2**20, 4096, 8),
    "poly_scalar": (2**20, 1024, 3),
    "poly_simd": (4 * 2**20, 4096, 3),
    "saxpy_simd": (4 * 2**20, 4096, 8),
    "sum_f32": (8 * 2**20, 4096, 8),
    "max_f32": (8 * 2**20, 4096, 8),
    "mandelbrot": (512, 32, 3),
    "histogram": (16 * 2**20, 65536, 5),
    "box_blur": (2048, 64, 8),
    "stack_heavy": (4000, 64, 3),
}
"""Elements (rows for the image kernels) per problem, with --quick, and timed runs per round."""

KERNELS = HERE / "kernels"
CASES = [
    *(
        Case(name, spec.wasm, spec.entry, spec.make, *SIZES[name])
        for name, spec in library.SPECS.items()
    ),
    Case(
        "poly_scalar.wat",
        KERNELS / "poly_scalar.wat",
        "poly",
        _poly_wat,
        2**20,
        1024,
        3,
        library=False,
    ),
    Case(
        "saxpy_scalar.wat",
        KERNELS / "saxpy_scalar.wat",
        "saxpy",
        _saxpy_wat,
        4 * 2**20,
        4096,
        8,
        library=False,
    ),
]


def stop_layout(kernel: sw.Kernel) -> tuple[int, int]:
    """Return the stop byte's address and the status board's offset for `kernel`.

    The byte sits between the kernel's statics and the board, which moves
    past it; not at the statics' first byte, where some test kernels keep a
    header of their own.
    """
    base = -(-kernel.static_end // 64) * 64
    return base + 32, base + 64


class Version:
    """One version of a kernel, and how to make a pool for it."""

    def __init__(self, wasm: bytes, version: str, name: str, workers: int) -> None:
        self.version = version
        self.workers = workers
        original = sw.Kernel.from_bytes(wasm, name=name)
        self.address, self.status_offset = stop_layout(original)
        self.info: StopChecks | None = None
        self.kernel = original
        if version not in ("plain", "epoch"):
            policy, _, fixed = version.partition("/")
            wasm, self.info = add_stop_checks(
                wasm,
                policy=policy,  # type: ignore[arg-type]
                address=self.address,
                settable=not fixed,
            )
            self.kernel = sw.Kernel.from_bytes(wasm, name=f"{name}+{version}")

    def pool(self) -> sw.WorkerPool:
        memory = None
        if self.version == "epoch":
            pages = sw.WorkerPool.pages_needed(
                self.kernel, 2**20, self.workers, status_offset=self.status_offset
            )
            memory = sw.Memory(pages, self.kernel.memory_maximum, interruptible=True)
        return sw.WorkerPool(self.kernel, memory, self.workers, status_offset=self.status_offset)


def check(problem: library.Problem, args: dict[str, Any], who: str) -> None:
    """Raise if the result differs from numpy's: in any byte, or beyond its tolerance."""
    mismatch = problem.mismatch(args)
    if mismatch is not None:
        raise RuntimeError(f"{who}: {mismatch}")


class Running:
    """A version's pool with the problem bound in its heap, checked once."""

    def __init__(self, version: Version, case: Case, problem: library.Problem) -> None:
        self.version = version
        self.pool = version.pool()
        args = library.bind(self.pool, problem)
        self.values = list(args.values())
        self.entry = case.entry
        self.run()
        check(problem, args, f"{case.name}/{version.version}")
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def run(self) -> None:
        self.pool.run("bench", *self.values, entry=self.entry)

    def batch(self, runs: int) -> None:
        """One untimed run, then `runs` timed ones."""
        self.run()
        for _ in range(runs):
            t0, c0 = time.perf_counter(), time.thread_time()
            self.run()
            self.cpu.append(time.thread_time() - c0)
            self.wall.append(time.perf_counter() - t0)


def geomean(values: list[float]) -> float:
    return math.exp(sum(map(math.log, values)) / len(values))


def measure_case(case: Case, quick: bool, rounds: int, workers: int) -> dict[str, dict[str, float]]:
    """Measure every version of one case; print its lines and return its ratios."""
    size = case.quick_size if quick else case.size
    runs = 2 if quick else case.runs
    problem = case.make(size, np.random.default_rng(2024))
    wasm = case.wasm()
    running = [Running(Version(wasm, v, case.name, workers), case, problem) for v in VERSIONS]
    try:
        for _ in range(rounds):
            for r in running:
                r.batch(runs)
    finally:
        for r in running:
            r.pool.close()
    plain = running[0]
    base = summarize(plain.wall)
    base_cpu = statistics.median(plain.cpu)
    ratios: dict[str, dict[str, float]] = {}
    for r in running:
        stats, info = summarize(r.wall), r.version.info
        ratio = {
            "median": stats["median_us"] / base["median_us"],
            "min": stats["min_us"] / base["min_us"],
        }
        extra: dict[str, Any] = {}
        if workers == 1:
            ratio["cpu"] = statistics.median(r.cpu) / base_cpu
            extra = {
                "cpu_median_us": statistics.median(r.cpu) * 1e6,
                "cpu_ratio_vs_plain": ratio["cpu"],
            }
        ratios[r.version.version] = ratio
        emit(
            BENCH,
            f"{case.name}/{r.version.version}",
            kernel=case.name,
            version=r.version.version,
            workers=workers,
            elements=problem.elements,
            ratio_vs_plain=ratio["median"],
            min_ratio_vs_plain=ratio["min"],
            loops=None if info is None else info.loops,
            checked_loops=None if info is None else info.checked_loops,
            checked_entries=None if info is None else info.checked_entries,
            rounds=rounds,
            **extra,
            **stats,
        )
    return ratios


def stop_latency(settable: bool, repeat: int) -> list[float]:
    """Seconds from storing 1 to the stop byte to the hung run raising KernelTrap."""
    wasm = read_module(KERNELS / "hang_on_flag.wat")
    version = Version(wasm, "all-loops" if settable else "all-loops/fixed", "hang", 2)
    samples = []
    with version.pool() as pool:
        flag = pool.full(1, 1, np.int32)
        stop = pool.memory.view(np.int32, offset=version.address, count=1)
        for _ in range(repeat):
            atomics.store(stop, 0, 0)
            raised = threading.Event()
            stamp: list[float] = []

            def call(raised: threading.Event = raised, stamp: list[float] = stamp) -> None:
                try:
                    pool.run("hang", flag, elements=2)
                except sw.KernelTrap:
                    stamp.append(time.perf_counter())
                raised.set()

            caller = threading.Thread(target=call, daemon=True)
            caller.start()
            time.sleep(0.02)  # let both shares reach their loop
            t0 = time.perf_counter()
            atomics.store(stop, 0, 1)
            if not raised.wait(STOP_TIMEOUT) or not stamp:
                raise RuntimeError("the hung run did not stop")
            caller.join(STOP_TIMEOUT)
            samples.append(stamp[0] - t0)
    return samples


def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--only", nargs="+", metavar="KERNEL", help="measure only these kernels")
    p.add_argument("--rounds", type=int, default=8, help="rounds of every version (default 8)")
    p.add_argument("--workers", type=int, default=2, help="workers per pool (default 2)")
    args = p.parse_args()
    cases = [c for c in CASES if not args.only or c.name in args.only]
    rounds = 1 if args.quick else args.rounds
    ratios: dict[str, dict[str, dict[str, float]]] = collections.defaultdict(dict)
    for case in cases:
        for version, ratio in measure_case(case, args.quick, rounds, args.workers).items():
            ratios[version][case.name] = ratio
    in_library = {c.name for c in cases if c.library}
    for version in VERSIONS[1:]:
        every = ratios[version]
        lib = {k: v for k, v in every.items() if k in in_library}
        if not lib:
            continue
        worst = max(lib, key=lambda k: lib[k]["median"])
        figures: dict[str, Any] = {
            "geomean_ratio": geomean([r["median"] for r in lib.values()]),
            "worst_ratio": lib[worst]["median"],
            "worst_kernel": worst,
            "geomean_min_ratio": geomean([r["min"] for r in lib.values()]),
            "worst_min_ratio": max(r["min"] for r in lib.values()),
            "geomean_ratio_all": geomean([r["median"] for r in every.values()]),
        }
        if args.workers == 1:
            figures["geomean_cpu_ratio"] = geomean([r["cpu"] for r in lib.values()])
            figures["worst_cpu_ratio"] = max(r["cpu"] for r in lib.values())
        emit(BENCH, f"summary/{version}", version=version, kernels=len(lib), **figures)
    if not args.only:
        for settable in (True, False):
            samples = stop_latency(settable, 3 if args.quick else 20)
            mode = "settable" if settable else "fixed"
            emit(BENCH, f"stop/{mode}", workers=2, **summarize(samples))
    return 0


if __name__ == "__main__":
    main_guard(main)
