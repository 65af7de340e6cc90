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
"""

from __future__ import annotations

import collections
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import build_wasm, emit, main_guard, parser, run_node_peer, summarize, timeit

import sharedwasm as sw

BENCH = "dispatch"
PEERS = ("reference", "atomics")
PAGES, MAXIMUM = 1, 16
MODES = {"back-to-back": 0, "idle-1ms": 1}
"""Mode name -> milliseconds of idle before each timed run."""
WORKERS = (1, 2)


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
    return 0


if __name__ == "__main__":
    main_guard(main)
