"""Idle cost: the CPU a pool burns while it waits for work.

A pool of 2 workers runs one job (the library's `map_f32` entry over a 1 MiB
array of its heap) and is then
left alone for 2 s (0.2 s with --quick). The process's CPU time over that
window (`time.process_time`, every thread of the process) is reported as a
percentage of one CPU, with the context switches per second
(`getrusage`), which count wake-ups. For comparison, the same for a
`concurrent.futures.ThreadPoolExecutor` of 2 threads left idle after two
tasks, and for a `baseline` with no pool at all.

Process CPU time covers every thread, so only one contender exists at a time:
each measurement creates its pool, runs, idles, measures and closes it. Each
line's `cpu_percent` is the median over the repeats; `metric` names it as the
figure to plot. `threads_cpu_percent` is the CPU time of the contender's own
threads alone (the kernel's count for each task, from /proc), the figure that
other processes' load and this process's other threads do not disturb; it is
what tests/test_schedule.py bounds.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from _harness import ROOT, emit, main_guard, parser

import sharedwasm as sw
from sharedwasm.testing import thread_cpu_seconds

sys.path.insert(0, str(ROOT / "kernels"))

import library

BENCH = "idle"
WORKERS = 2
JOB_BYTES = 1024 * 1024
SETTLE_S = 0.5

Setup = Callable[[], contextlib.AbstractContextManager[list[threading.Thread]]]


@contextlib.contextmanager
def baseline() -> Iterator[list[threading.Thread]]:
    """Nothing at all: the floor of the measurement."""
    yield []


@contextlib.contextmanager
def sharedwasm_pool() -> Iterator[list[threading.Thread]]:
    """A 2-worker pool that has just finished a run."""
    with sw.WorkerPool(library.SPECS["map_f32"].kernel(), workers=WORKERS) as pool:
        pool.run(BENCH, pool.full(JOB_BYTES // 4, 2.0, np.float32))
        yield [t for t in threading.enumerate() if t.name.startswith(f"{pool.name}-w")]


@contextlib.contextmanager
def thread_pool() -> Iterator[list[threading.Thread]]:
    """A 2-thread ThreadPoolExecutor that has just finished two tasks."""
    before = set(threading.enumerate())
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as executor:
        x = np.full(JOB_BYTES // 4, 2.0, dtype=np.float32)
        for f in [executor.submit(np.sqrt, x) for _ in range(WORKERS)]:
            f.result()
        yield [t for t in threading.enumerate() if t not in before]


def measure_idle(seconds: float, threads: list[threading.Thread]) -> tuple[float, float, float]:
    """Sleep `seconds`; return CPU % of one CPU, that of `threads`, and context switches per s."""
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0 = time.process_time()
    t0 = time.perf_counter()
    own0 = sum(thread_cpu_seconds(t) for t in threads)
    time.sleep(seconds)
    own = sum(thread_cpu_seconds(t) for t in threads) - own0
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    switches = (r1.ru_nvcsw - r0.ru_nvcsw) + (r1.ru_nivcsw - r0.ru_nivcsw)
    return 100.0 * cpu / wall, 100.0 * own / wall, switches / wall


def main() -> int:
    p = parser(str(__doc__).partition("\n")[0])
    p.add_argument("--seconds", type=float, default=None, help="idle window per measurement")
    p.add_argument("--repeat", type=int, default=None, help="measurements per contender")
    args = p.parse_args()
    seconds = args.seconds or (0.2 if args.quick else 2.0)
    repeat = args.repeat or (1 if args.quick else 3)

    contenders: dict[str, Setup] = {
        "baseline": baseline,
        "threadpool": thread_pool,
        "sharedwasm": sharedwasm_pool,
    }
    # Right after `import numpy`, OpenBLAS's threads spin for a moment; let
    # them settle so that they do not count against whoever goes first.
    time.sleep(SETTLE_S)
    cpu: dict[str, list[float]] = {name: [] for name in contenders}
    own: dict[str, list[float]] = {name: [] for name in contenders}
    switches: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, setup in contenders.items():
            with setup() as threads:
                percent, own_percent, rate = measure_idle(seconds, threads)
            cpu[name].append(percent)
            own[name].append(own_percent)
            switches[name].append(rate)

    for name in contenders:
        fields: dict[str, Any] = {
            "workers": 0 if name == "baseline" else WORKERS,
            "idle_s": seconds,
            "metric": "cpu_percent",
            "unit": "% of one CPU",
            "cpu_percent": statistics.median(cpu[name]),
            "cpu_percent_max": max(cpu[name]),
            "threads_cpu_percent": statistics.median(own[name]),
            "context_switches_per_s": statistics.median(switches[name]),
            "n": repeat,
        }
        emit(BENCH, name, **fields)
    return 0


if __name__ == "__main__":
    main_guard(main)
