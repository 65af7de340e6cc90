"""Measure what one run costs when the kernel does nothing: pure dispatch overhead.

The empty kernel (kernels/empty.wat) runs on 1 and 2 workers, back to back and
after 1 ms of idle between runs (the pause itself is not timed; it lets the
workers park, so a run also pays for waking them). Three contenders time the
same .wasm: sharedwasm's `WorkerPool.run`, and two Node.js pools from
peers/: the reference design's postMessage protocol and an Atomics-only
pool. Each round runs one batch of every contender in turn, and the samples
of all rounds are pooled. One JSON line per (contender, workers, mode) gives
the median and p99 in microseconds; ratio lines give sharedwasm's median
over each Node peer's (below 1: sharedwasm dispatches faster).

In the same run, what arguments cost: the module's second entry, `four`,
takes two arrays of the pool's heap and two scalars (`const float *x,
float *y, float a, int32_t n`) and does nothing either. On one pool per
worker count, runs of the empty entry and of `four` alternate in blocks of
`BLOCK`, back to back; `sharedwasm-empty/w<N>/interleaved` and
`sharedwasm-four/w<N>/interleaved` give their times, and
`four-minus-empty/w<N>` the difference of the medians in microseconds, with
the targets (at most `ARGUMENTS_TARGET_US` more than the empty entry, and a
median under `FOUR_TARGET_US` on 2 workers). `alloc/w<N>` times
`pool.empty(1000, np.float32)` followed by `pool.free` of it, in
microseconds per pair (target: `ALLOC_TARGET_US`).
"""

from __future__ import annotations

import collections
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _harness import build_wasm, emit, main_guard, parser, run_node_peer, summarize, timeit

import sharedwasm as sw

BENCH = "dispatch"
PEERS = ("reference", "atomics")
PAGES, MAXIMUM = 1, 16
MODES = {"back-to-back": 0, "idle-1ms": 1}
"""Mode name -> milliseconds of idle before each timed run."""
WORKERS = (1, 2)
BLOCK = 10
"""Runs of one entry before switching to the other, in the interleaved batches."""
ARGUMENTS_TARGET_US = 1.5
FOUR_TARGET_US = 10.0
ALLOC_TARGET_US = 20.0


def node_batch(peer: str, wasm: Path, workers: int, idle_ms: int, runs: int) -> dict[str, Any]:
    """Time `runs` runs in a Node peer; return its JSON result."""
    options = ["--workers", str(workers), "--pages", str(PAGES), "--maximum", str(MAXIMUM)]
    options += ["--runs", str(runs), "--warmup", str(max(1, runs // 10)), "--idle-ms", str(idle_ms)]
    return run_node_peer(peer, wasm, options)


def sharedwasm_batch(kernel: sw.Kernel, workers: int, idle_ms: int, runs: int) -> list[float]:
    """Time `runs` runs of a fresh pool; return each duration in seconds."""
    with sw.WorkerPool(kernel, sw.Memory(PAGES, MAXIMUM), workers) as pool:

        def run() -> None:
            # Untimed, as users run: a run with a timeout takes the standby path.
            pool.run("dispatch")

        warmup = max(1, runs // 10)
        if not idle_ms:
            return timeit(run, repeat=runs, warmup=warmup)
        for _ in range(warmup):
            run()
        samples = []
        for _ in range(runs):
            time.sleep(idle_ms / 1000)
            samples += timeit(run, repeat=1, warmup=0)
        return samples


def arguments_batch(kernel: sw.Kernel, workers: int, runs: int) -> dict[str, list[float]]:
    """Time the empty entry and `four`, interleaved, then allocations; seconds per call."""
    samples: dict[str, list[float]] = {"empty": [], "four": [], "alloc": []}
    with sw.WorkerPool(kernel, workers=workers) as pool:
        x, y = pool.zeros(1000, np.float32), pool.zeros(1000, np.float32)

        def empty() -> None:
            pool.run("dispatch")

        def four() -> None:
            pool.run("four", x, y, 1.5, 7, entry="four")

        def alloc() -> None:
            pool.free(pool.empty(1000, np.float32))

        for fn in (empty, four, alloc):
            timeit(fn, repeat=0, warmup=max(BLOCK, runs // 10))
        for _ in range(max(1, runs // BLOCK)):
            samples["empty"] += timeit(empty, repeat=BLOCK, warmup=0)
            samples["four"] += timeit(four, repeat=BLOCK, warmup=0)
        samples["alloc"] = timeit(alloc, repeat=runs, warmup=0)
    return samples


def main() -> int:
    args = parser(__doc__ or "").parse_args()
    rounds = 1 if args.quick else 5
    runs = (
        {"back-to-back": 40, "idle-1ms": 10}
        if args.quick
        else {
            "back-to-back": 2000,
            "idle-1ms": 300,
        }
    )
    batches: dict[tuple[str, int, str], list[list[float]]] = collections.defaultdict(list)
    arguments: dict[tuple[str, int], list[list[float]]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="sharedwasm-bench-") as tmp:
        wasm = build_wasm("empty", Path(tmp))
        kernel = sw.Kernel.from_file(wasm)
        for _ in range(rounds):
            for workers in WORKERS:
                for mode, idle_ms in MODES.items():
                    batches["sharedwasm", workers, mode].append(
                        sharedwasm_batch(kernel, workers, idle_ms, runs[mode])
                    )
                    for peer in PEERS:
                        result = node_batch(peer, wasm, workers, idle_ms, runs[mode])
                        batches[f"node-{peer}", workers, mode].append(
                            [us / 1e6 for us in result["durations_us"]]
                        )
                for what, seconds in arguments_batch(kernel, workers, runs["back-to-back"]).items():
                    arguments[what, workers].append(seconds)

    medians = {}
    for (contender, workers, mode), taken in batches.items():
        line = emit(
            BENCH,
            f"{contender}/w{workers}/{mode}",
            contender=contender,
            workers=workers,
            mode=mode,
            rounds=rounds,
            **summarize([s for batch in taken for s in batch]),
            # Whole batches can sit apart (thread placement on a VM): show each one.
            batch_medians_us=[statistics.median(batch) * 1e6 for batch in taken],
        )
        medians[contender, workers, mode] = line["median_us"]
    for workers in WORKERS:
        for mode in MODES:
            ours = medians["sharedwasm", workers, mode]
            emit(
                BENCH,
                f"ratio/w{workers}/{mode}",
                workers=workers,
                mode=mode,
                sharedwasm_over_node_atomics=ours / medians["node-atomics", workers, mode],
                sharedwasm_over_node_reference=ours / medians["node-reference", workers, mode],
            )
    for workers in WORKERS:
        entry_medians = {}
        for what in ("empty", "four"):
            taken = arguments[what, workers]
            line = emit(
                BENCH,
                f"sharedwasm-{what}/w{workers}/interleaved",
                contender="sharedwasm",
                entry="compute_partition" if what == "empty" else "four",
                arguments=0 if what == "empty" else 4,
                workers=workers,
                mode="back-to-back",
                rounds=rounds,
                **summarize([s for batch in taken for s in batch]),
                batch_medians_us=[statistics.median(batch) * 1e6 for batch in taken],
            )
            entry_medians[what] = line["median_us"]
        difference = entry_medians["four"] - entry_medians["empty"]
        emit(
            BENCH,
            f"four-minus-empty/w{workers}",
            workers=workers,
            difference_us=difference,
            empty_median_us=entry_medians["empty"],
            four_median_us=entry_medians["four"],
            target_difference_us=ARGUMENTS_TARGET_US,
            difference_within_target=difference <= ARGUMENTS_TARGET_US,
            target_four_median_us=FOUR_TARGET_US if workers == 2 else None,
            four_within_target=entry_medians["four"] < FOUR_TARGET_US if workers == 2 else None,
        )
        allocs = [s for batch in arguments["alloc", workers] for s in batch]
        emit(
            BENCH,
            f"alloc/w{workers}",
            workers=workers,
            what="pool.empty(1000, np.float32) then pool.free",
            target_us=ALLOC_TARGET_US,
            **summarize(allocs),
        )
    return 0


if __name__ == "__main__":
    main_guard(main)
