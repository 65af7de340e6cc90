"""What a run and a pool report: `RunResult`, `WorkerDone`, `PoolStatistics`."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerDone:
    """One worker's part of a run: its element range and how long its call took."""

    worker_index: int
    start: int
    """First element processed (in a dynamic run, of the first chunk claimed)."""
    end: int
    """One past the last element processed (of the last chunk claimed)."""
    elapsed: float
    """Seconds the worker spent on its share."""
    elements: int = 0
    """Elements processed; in a static run `end - start`."""
    chunks: int = 0
    """Calls to compute_partition; 1 in a static run."""


@dataclasses.dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of `WorkerPool.run`: one `WorkerDone` per worker, in worker order."""

    run_id: str
    elapsed: float
    done: list[WorkerDone]


@dataclasses.dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot of a pool's activity, from `WorkerPool.statistics()`."""

    workers: int
    runs: int
    """Runs completed without error."""
    busy: tuple[float, ...]
    """Seconds each worker spent in its shares, summed over those runs."""
    elements: tuple[int, ...]
    """Elements each worker processed, summed over those runs."""
    dispatch_latency_median: float | None
    """Median seconds from publishing a run to a worker thread starting it,
    over the last 1024 samples; None before any sample (or with one worker)."""
    dispatch_latency_p99: float | None
    """99th percentile of the same samples."""
