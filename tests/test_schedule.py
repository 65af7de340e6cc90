"""Scheduling: dynamic runs, WorkerDone accounting, statistics(), spin, timed runs, threads."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import wasmtime

import sharedwasm as sw
from conftest import TIMEOUT, pool_threads, statuses
from sharedwasm import PoolStatistics, atomics
from sharedwasm._builtin import map_f32_reference
from sharedwasm.testing import join_or_dump, thread_cpu_seconds, wait_until

MakePool = Callable[..., sw.WorkerPool]
LoadKernel = Callable[[str], sw.Kernel]
Int32s = np.ndarray[Any, np.dtype[np.int32]]

MAX_CHUNK = 2**31 - 1
"""The largest chunk a run accepts; larger than any element count a test uses."""

CHUNKS = [1, 7, None, MAX_CHUNK]
"""Chunk sizes every dynamic-schedule property is checked with (None: the default)."""

TOTALS = [0, 2, 1001]
"""Element counts: none, fewer than most worker counts, and an uneven many."""

# The schedule_* kernels keep their bookkeeping from element BOOK of the data
# region on (byte data_offset + 65536): see tests/kernels/schedule_*.wat.
BOOK = 16384
TALLY, CALLS, LOG = 0, 1, 4
GATE, ENTERED, GAVE_UP = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Call:
    """One compute_partition call, as schedule_count logged it."""

    start: int
    end: int
    worker: int
    returned: bool


def count_pool(make_pool: MakePool, kernel: LoadKernel, workers: int, **kw: Any) -> sw.WorkerPool:
    """Return a pool of schedule_count over a zeroed two-page memory."""
    pool = make_pool(kernel("schedule_count"), sw.Memory(2, 4), workers, **kw)
    pool.data(np.int32)[:] = 0
    return pool


def book(pool: sw.WorkerPool) -> Int32s:
    """Return the bookkeeping words of a schedule_* kernel."""
    return pool.data(np.int32)[BOOK:]


def reset_counts(pool: sw.WorkerPool) -> Int32s:
    """Zero the element counters and the bookkeeping; return the element counters."""
    data = pool.data(np.int32)
    data[:] = 0
    return data[:BOOK]


def calls(pool: sw.WorkerPool) -> list[Call]:
    """Return schedule_count's log of the last run, in the order the calls began."""
    words = book(pool)
    n = int(words[CALLS])
    log = words[LOG : LOG + 4 * n].reshape(n, 4).tolist()
    return [Call(s, e, w, bool(r)) for s, e, w, r in log]


def dynamic_chunks(total: int, chunk: int) -> list[tuple[int, int]]:
    """Return the ranges a dynamic run with this chunk size claims, in order."""
    return [(s, min(s + chunk, total)) for s in range(0, total, chunk)]


def default_chunk(total: int, workers: int) -> int:
    """Return the documented default chunk: 64 claims per worker, at least one element."""
    return max(1, -(-total // (workers * 64)))


def reference_partition(total: int, workers: int, index: int) -> tuple[int, int]:
    """Return the static range of one worker, with start clamped to total."""
    chunk = -(-total // workers)
    start = min(index * chunk, total)
    return start, min((index + 1) * chunk, total)


def f32_input(n: int, seed: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Return non-negative float32 values with zero, one, infinity and a subnormal."""
    rng = np.random.default_rng(seed)
    x = (rng.random(n) * 1000.0).astype(np.float32)
    x[:4] = np.array([0.0, 1.0, np.inf, 1e-40], dtype=np.float32)[: min(n, 4)]
    return x


def check_dynamic_accounting(
    result: sw.RunResult, log: list[Call], total: int, chunk: int, workers: int
) -> None:
    """Assert that a dynamic run's WorkerDone records agree with the calls the kernel saw."""
    assert [d.worker_index for d in result.done] == list(range(workers))
    assert all(c.returned for c in log)
    assert sorted((c.start, c.end) for c in log) == dynamic_chunks(total, chunk)
    assert sum(d.elements for d in result.done) == total
    assert sum(d.chunks for d in result.done) == len(log)
    for done in result.done:
        mine = [c for c in log if c.worker == done.worker_index]
        assert done.chunks == len(mine)
        assert done.elements == sum(c.end - c.start for c in mine)
        assert done.elapsed >= 0
        if not mine:
            assert (done.start, done.end, done.elements) == (total, total, 0)
            continue
        assert all(c.end - c.start <= chunk for c in mine)
        assert done.start == min(c.start for c in mine)
        # Exact equality is test_dynamic_end_is_the_end_of_the_last_chunk_the_worker_processed.
        assert max(c.end for c in mine) <= done.end <= total
        assert all(done.start <= c.start < c.end <= done.end for c in mine)


# -- dynamic output equals static output -------------------------------------------


@pytest.mark.parametrize("total", TOTALS)
@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("workers", range(1, 5))
def test_dynamic_map_f32_matches_static_and_numpy_bit_for_bit(
    make_pool: MakePool, kernel: LoadKernel, workers: int, chunk: int | None, total: int
) -> None:
    """A dynamic map_f32 run writes the same bits as a static run and the numpy reference."""
    pool = make_pool(kernel("map_f32"), sw.Memory(1, 4), workers)
    data = pool.data()
    x = f32_input(len(data), seed=workers * 10 + total)
    data[:] = x
    pool.run("static", elements=total, timeout=TIMEOUT)
    static = data.copy()
    data[:] = x
    result = pool.run("dynamic", elements=total, schedule="dynamic", chunk=chunk, timeout=TIMEOUT)
    assert result.run_id == "dynamic"
    assert sum(d.elements for d in result.done) == total
    np.testing.assert_array_equal(data.view(np.uint32), static.view(np.uint32))
    np.testing.assert_array_equal(
        data[:total].view(np.uint32), map_f32_reference(x[:total]).view(np.uint32)
    )
    np.testing.assert_array_equal(data[total:].view(np.uint32), x[total:].view(np.uint32))


@pytest.mark.parametrize("workers", [1, 3])
def test_dynamic_map_f32_over_the_whole_region_without_a_timeout(
    make_pool: MakePool, kernel: LoadKernel, workers: int
) -> None:
    """An untimed dynamic run, where the caller claims chunks too, covers the region bit for bit."""
    pool = make_pool(kernel("map_f32"), sw.Memory(1, 4), workers)
    data = pool.data()
    x = f32_input(len(data), seed=workers)
    data[:] = x
    result = pool.run(schedule="dynamic", chunk=5)
    assert sum(d.elements for d in result.done) == len(data)
    assert sum(d.chunks for d in result.done) == -(-len(data) // 5)
    np.testing.assert_array_equal(data.view(np.uint32), map_f32_reference(x).view(np.uint32))


@pytest.mark.parametrize("total", TOTALS)
@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("workers", range(1, 5))
def test_dynamic_record_writes_the_same_elements_as_static(
    make_pool: MakePool, kernel: LoadKernel, workers: int, chunk: int | None, total: int
) -> None:
    """Dynamic record writes the static run's elements, each stamped by a worker that claimed it."""
    pool = make_pool(kernel("record"), sw.Memory(1, 4), workers)
    data = pool.data(np.int32)
    data[:] = -1
    pool.run("static", elements=total, timeout=TIMEOUT)
    written_by_static = data != -1
    data[:] = -1
    result = pool.run("dynamic", elements=total, schedule="dynamic", chunk=chunk, timeout=TIMEOUT)
    np.testing.assert_array_equal(data != -1, written_by_static)
    assert written_by_static.sum() == total
    stamps = data[:total] - workers * 1000 - 1
    assert ((stamps >= 0) & (stamps < workers)).all()
    for done in result.done:
        mine = np.flatnonzero(stamps == done.worker_index)
        assert len(mine) == done.elements
        if len(mine):
            assert done.start <= mine.min()
            assert mine.max() < done.end


# -- every element exactly once ----------------------------------------------------


@pytest.mark.parametrize("total", TOTALS)
@pytest.mark.parametrize("chunk", CHUNKS)
@pytest.mark.parametrize("workers", range(1, 5))
def test_dynamic_run_processes_every_element_exactly_once(
    make_pool: MakePool, kernel: LoadKernel, workers: int, chunk: int | None, total: int
) -> None:
    """Each element below total is counted once, and the calls are the chunks of the schedule."""
    pool = count_pool(make_pool, kernel, workers)
    counts = reset_counts(pool)
    result = pool.run(elements=total, schedule="dynamic", chunk=chunk, timeout=TIMEOUT)
    np.testing.assert_array_equal(counts[:total], 1)
    assert (counts[total:] == 0).all()
    assert book(pool)[TALLY] == total
    size = default_chunk(total, workers) if chunk is None else chunk
    check_dynamic_accounting(result, calls(pool), total, size, workers)


@pytest.mark.parametrize("timed", [True, False])
def test_many_contended_dynamic_runs_each_count_every_element_once(
    make_pool: MakePool, kernel: LoadKernel, timed: bool
) -> None:
    """Back-to-back runs of one-element chunks on four workers never lose or repeat an element."""
    pool = count_pool(make_pool, kernel, 4)
    for r in range(100):
        total = 1500 + r
        counts = reset_counts(pool)
        result = pool.run(
            elements=total,
            schedule="dynamic",
            chunk=1,
            timeout=TIMEOUT if timed else None,
        )
        np.testing.assert_array_equal(counts[:total], 1)
        assert (counts[total:] == 0).all()
        log = calls(pool)
        assert len(log) == total
        check_dynamic_accounting(result, log, total, 1, 4)


# -- WorkerDone ----------------------------------------------------------------------


@pytest.mark.parametrize("total", [0, 2, 1001])
@pytest.mark.parametrize("workers", range(1, 5))
def test_static_workers_report_one_call_over_their_whole_range(
    make_pool: MakePool, kernel: LoadKernel, workers: int, total: int
) -> None:
    """In a static run each worker makes one call and reports elements == end - start."""
    pool = count_pool(make_pool, kernel, workers)
    result = pool.run(elements=total, timeout=TIMEOUT)
    for done in result.done:
        assert (done.start, done.end) == reference_partition(total, workers, done.worker_index)
        assert done.elements == done.end - done.start
        assert done.chunks == 1
    assert sorted((c.start, c.end, c.worker) for c in calls(pool)) == sorted(
        (d.start, d.end, d.worker_index) for d in result.done
    )


@pytest.mark.parametrize(("total", "workers"), [(10_000, 2), (10_000, 3), (127, 2), (1, 4)])
def test_default_chunk_gives_each_worker_about_64_claims(
    make_pool: MakePool, kernel: LoadKernel, total: int, workers: int
) -> None:
    """Without a chunk, a dynamic run claims ceil(total / (workers * 64)) elements at a time."""
    pool = count_pool(make_pool, kernel, workers)
    result = pool.run(elements=total, schedule="dynamic", timeout=TIMEOUT)
    size = default_chunk(total, workers)
    assert sorted((c.start, c.end) for c in calls(pool)) == dynamic_chunks(total, size)
    assert sum(d.chunks for d in result.done) == -(-total // size)


def test_workers_that_claim_nothing_report_an_empty_range_at_total(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """With fewer chunks than workers, the idle workers report start == end == total."""
    pool = count_pool(make_pool, kernel, 4)
    result = pool.run(elements=2, schedule="dynamic", chunk=MAX_CHUNK, timeout=TIMEOUT)
    claimed = [d for d in result.done if d.chunks]
    assert len(claimed) == 1
    assert (claimed[0].start, claimed[0].end, claimed[0].elements) == (0, 2, 2)
    idle = [d for d in result.done if not d.chunks]
    assert len(idle) == 3
    assert all((d.start, d.end, d.elements) == (2, 2, 0) for d in idle)


def test_dynamic_end_is_the_end_of_the_last_chunk_the_worker_processed(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """In a dynamic run a worker's end is the end of its last processed chunk, never one it lost."""
    pool = count_pool(make_pool, kernel, 4)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        reset_counts(pool)
        result = pool.run(elements=200, schedule="dynamic", chunk=1, timeout=TIMEOUT)
        log = calls(pool)
        for done in result.done:
            ends = [c.end for c in log if c.worker == done.worker_index]
            if ends:
                assert done.end == max(ends), (done, sorted(ends)[-3:])


def test_run_async_passes_the_schedule_and_chunk(make_pool: MakePool, kernel: LoadKernel) -> None:
    """run_async with schedule='dynamic' and a chunk runs the same claims as run."""
    pool = count_pool(make_pool, kernel, 3)
    counts = reset_counts(pool)
    result = asyncio.run(
        pool.run_async("async", elements=100, schedule="dynamic", chunk=3, timeout=TIMEOUT)
    )
    assert result.run_id == "async"
    np.testing.assert_array_equal(counts[:100], 1)
    check_dynamic_accounting(result, calls(pool), 100, 3, 3)


# -- argument errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"chunk": 4},
            ValueError,
            r"chunk must be None with schedule='static', which makes one range per worker "
            r"\(got 4\)",
        ),
        (
            {"schedule": "static", "chunk": 0},
            ValueError,
            r"chunk must be None with schedule='static'.*\(got 0\)",
        ),
        (
            {"schedule": "dynamic", "chunk": 0},
            ValueError,
            r"chunk must be in \[1, 2147483647\] elements \(got 0\)",
        ),
        (
            {"schedule": "dynamic", "chunk": -1},
            ValueError,
            r"chunk must be in \[1, 2147483647\] elements \(got -1\)",
        ),
        (
            {"schedule": "dynamic", "chunk": 2**31},
            ValueError,
            r"chunk must be in \[1, 2147483647\] elements \(got 2147483648\)",
        ),
        (
            {"schedule": "dynamic", "chunk": 1.5},
            TypeError,
            r"'float' object cannot be interpreted as an integer",
        ),
        (
            {"schedule": "dynamic", "chunk": True},
            TypeError,
            r"chunk must be an int or None \(got True\)",
        ),
        (
            {"schedule": "guided"},
            ValueError,
            r"schedule must be 'static' or 'dynamic' \(got 'guided'\)",
        ),
        (
            {"schedule": "guided", "chunk": 4},
            ValueError,
            r"schedule must be 'static' or 'dynamic' \(got 'guided'\)",
        ),
    ],
)
def test_bad_schedules_and_chunks_are_refused_and_run_nothing(
    make_pool: MakePool, kernel: LoadKernel, kwargs: dict[str, Any], error: type, match: str
) -> None:
    """A bad schedule or chunk raises before anything runs, and the pool stays usable."""
    pool = count_pool(make_pool, kernel, 2)
    counts = reset_counts(pool)
    with pytest.raises(error, match=match):
        pool.run(elements=10, timeout=TIMEOUT, **kwargs)
    with pytest.raises(error, match=match):
        pool.run(elements=10, **kwargs)
    assert (counts == 0).all()
    assert book(pool)[CALLS] == 0
    result = pool.run(elements=10, schedule="dynamic", chunk=3, timeout=TIMEOUT)
    np.testing.assert_array_equal(counts[:10], 1)
    assert sum(d.chunks for d in result.done) == 4


def test_numpy_integer_chunk_is_accepted(make_pool: MakePool, kernel: LoadKernel) -> None:
    """A numpy integer is a valid chunk size."""
    pool = count_pool(make_pool, kernel, 2)
    result = pool.run(elements=10, schedule="dynamic", chunk=np.int64(4), timeout=TIMEOUT)  # type: ignore[arg-type]
    assert sorted((c.start, c.end) for c in calls(pool)) == [(0, 4), (4, 8), (8, 10)]
    assert sum(d.chunks for d in result.done) == 3


# -- statistics() ------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 3])
def test_statistics_before_any_run_are_empty(
    make_pool: MakePool, kernel: LoadKernel, workers: int
) -> None:
    """A fresh pool reports no runs, zero busy time and elements, and no latency."""
    pool = count_pool(make_pool, kernel, workers)
    stats = pool.statistics()
    assert isinstance(stats, PoolStatistics)
    assert stats == PoolStatistics(
        workers=workers,
        runs=0,
        busy=(0.0,) * workers,
        elements=(0,) * workers,
        dispatch_latency_median=None,
        dispatch_latency_p99=None,
    )


@pytest.mark.parametrize("workers", [2, 3])
def test_statistics_sum_busy_time_and_elements_over_runs(
    make_pool: MakePool, kernel: LoadKernel, workers: int
) -> None:
    """After k runs, runs == k and busy and elements are the per-worker sums of the results."""
    pool = count_pool(make_pool, kernel, workers)
    results = [
        pool.run(elements=3000, timeout=TIMEOUT),
        pool.run(elements=3000),
        pool.run(elements=3000, schedule="dynamic", chunk=7, timeout=TIMEOUT),
        pool.run(elements=1000, schedule="dynamic"),
    ]
    stats = pool.statistics()
    assert stats.workers == workers
    assert stats.runs == len(results)
    assert stats.elements == tuple(sum(r.done[i].elements for r in results) for i in range(workers))
    assert sum(stats.elements) == 3 * 3000 + 1000
    assert stats.busy == pytest.approx(
        tuple(sum(r.done[i].elapsed for r in results) for i in range(workers))
    )
    # The static runs alone give every worker a share of elements to be busy with.
    assert all(b > 0 for b in stats.busy)
    median, p99 = stats.dispatch_latency_median, stats.dispatch_latency_p99
    assert isinstance(median, float)
    assert isinstance(p99, float)
    assert 0 <= median <= p99 < TIMEOUT


def test_statistics_of_one_worker_have_no_latency(make_pool: MakePool, kernel: LoadKernel) -> None:
    """A single-worker pool counts its runs but has no dispatch latency to report."""
    pool = count_pool(make_pool, kernel, 1)
    pool.run(elements=500, timeout=TIMEOUT)
    pool.run(elements=500, schedule="dynamic")
    stats = pool.statistics()
    assert stats.runs == 2
    assert stats.elements == (1000,)
    assert stats.busy[0] > 0
    assert stats.dispatch_latency_median is None
    assert stats.dispatch_latency_p99 is None


def test_statistics_leave_out_failed_runs(make_pool: MakePool, kernel: LoadKernel) -> None:
    """A run that traps adds nothing to runs, busy or elements."""
    pool = count_pool(make_pool, kernel, 2)
    pool.run(elements=100, timeout=TIMEOUT)
    before = pool.statistics()
    counts = reset_counts(pool)
    counts[60] = -1
    with pytest.raises(sw.KernelTrap):
        pool.run(elements=100, timeout=TIMEOUT)
    after = pool.statistics()
    assert (after.runs, after.busy, after.elements) == (
        before.runs,
        before.busy,
        before.elements,
    )


def test_statistics_snapshot_is_frozen_and_does_not_follow_later_runs(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """The snapshot refuses assignment and keeps its values while the pool goes on running."""
    pool = count_pool(make_pool, kernel, 2)
    pool.run(elements=100, timeout=TIMEOUT)
    stats = pool.statistics()
    frozen = dataclasses.astuple(stats)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.runs = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.dispatch_latency_median = 0.0  # type: ignore[misc]
    assert isinstance(stats.busy, tuple)
    assert isinstance(stats.elements, tuple)
    pool.run(elements=100, timeout=TIMEOUT)
    pool.run(elements=100, schedule="dynamic")
    assert dataclasses.astuple(stats) == frozen
    assert stats.runs == 1
    assert pool.statistics().runs == 3
    assert sum(pool.statistics().elements) == 300


# -- spin ---------------------------------------------------------------------------


@pytest.mark.parametrize("spin", [0, 0.0, np.float64(0.0)])
@pytest.mark.parametrize("workers", [2, 3])
def test_pool_without_spinning_gives_correct_results(
    make_pool: MakePool, kernel: LoadKernel, workers: int, spin: float
) -> None:
    """A pool with spin=0 parks between runs and still computes map_f32 exactly, however run."""
    pool = make_pool(kernel("map_f32"), sw.Memory(1, 4), workers, spin=spin)
    data = pool.data()
    runs: list[dict[str, Any]] = [
        {"timeout": TIMEOUT},
        {},
        {"schedule": "dynamic", "chunk": 3, "timeout": TIMEOUT},
        {"schedule": "dynamic"},
    ]
    for r, kwargs in enumerate(runs):
        x = f32_input(len(data), seed=r)
        data[:] = x
        pool.run(f"spin0-{r}", **kwargs)
        np.testing.assert_array_equal(data.view(np.uint32), map_f32_reference(x).view(np.uint32))
    assert pool.statistics().runs == 4


@pytest.mark.parametrize(
    ("spin", "error", "match"),
    [
        (-1, ValueError, r"spin must be >= 0 seconds or None \(got -1\)"),
        (-1e-9, ValueError, r"spin must be >= 0 seconds or None \(got -1e-09\)"),
        (math.nan, ValueError, r"spin must be >= 0 seconds or None \(got nan\)"),
        ("0", TypeError, r"spin must be a number of seconds or None \(got '0'\)"),
        (True, TypeError, r"spin must be a number of seconds or None \(got True\)"),
        ([0.001], TypeError, r"spin must be a number of seconds or None \(got \[0\.001\]\)"),
    ],
)
def test_bad_spin_values_are_refused_before_any_thread_starts(
    make_pool: MakePool, kernel: LoadKernel, spin: object, error: type, match: str
) -> None:
    """A negative, NaN or non-number spin raises, starts no thread and leaves the memory free."""
    memory = sw.Memory(2, 4)
    before = set(threading.enumerate())
    with pytest.raises(error, match=match):
        make_pool(kernel("schedule_count"), memory, 2, spin=spin)
    assert set(threading.enumerate()) <= before
    make_pool(kernel("schedule_count"), memory, 2)


def test_infinite_spin_is_capped(make_pool: MakePool, kernel: LoadKernel) -> None:
    """spin=inf builds a working pool: the spin window is capped, not overflowed."""
    pool = make_pool(kernel("schedule_count"), sw.Memory(2, 4), 2, spin=math.inf)
    assert pool.run(elements=10, timeout=TIMEOUT).done[-1].end == 10


# -- idle pools park ---------------------------------------------------------------

IDLE_WINDOW = 0.3
"""Seconds of idling over which each of a pool's threads is measured."""

PARKED_CPU_SHARE = 0.01
"""Most CPU time a parked thread may use, as a share of the window's wall time.

Each thread is measured on its own (the kernel's count for its task), so other
processes and this process's other threads cannot count against it. A parked
thread sleeps in a futex wait and uses nothing; a spinning one gets its fair
share of a CPU, about CPUs / (load + threads), which is 18 % of the window at
load 8 on 2 CPUs and stays above this bound up to a load of about 200.
"""


def idle_cpu_shares(threads: list[threading.Thread], window: float) -> list[float]:
    """Sleep `window` seconds; return each thread's CPU time over it, as a share of it."""
    t0 = time.monotonic()
    before = [thread_cpu_seconds(t) for t in threads]
    time.sleep(window)
    after = [thread_cpu_seconds(t) for t in threads]
    wall = time.monotonic() - t0
    return [(a - b) / wall for a, b in zip(after, before, strict=True)]


@pytest.mark.parametrize(
    ("workers", "spin", "settle"),
    [(2, None, 0.1), (3, None, 0.1), (2, 0.05, 0.15), (2, 0, 0.1)],
)
def test_idle_pool_uses_no_cpu_once_the_spin_window_has_passed(
    make_pool: MakePool, kernel: LoadKernel, workers: int, spin: float | None, settle: float
) -> None:
    """After its runs, and past the spin window, an idle pool's threads burn no CPU time.

    Bound: each thread uses under PARKED_CPU_SHARE (1 %) of a 0.3 s window,
    whatever the machine's load; the next test shows a spinning thread above it.
    """
    pool = make_pool(kernel("map_f32"), sw.Memory(1, 4), workers, spin=spin)
    pool.run(timeout=TIMEOUT)
    pool.run()
    pool.run(schedule="dynamic", timeout=TIMEOUT)
    threads = pool_threads(pool)
    assert len(threads) == workers
    # The quietest of three windows: on a busy machine a thread that had no CPU
    # when its spin window ran out parks when it next runs, in the first one.
    shares: list[float] = []
    for _ in range(3):
        time.sleep(settle)
        shares = idle_cpu_shares(threads, IDLE_WINDOW)
        if max(shares) < PARKED_CPU_SHARE:
            break
    assert max(shares) < PARKED_CPU_SHARE, (
        f"idle pool threads used {', '.join(f'{100 * s:.2f} %' for s in shares)} "
        f"of a CPU over {IDLE_WINDOW} s"
    )
    # Parked workers still wake for the next run.
    pool.data()[:4] = np.float32(4.0)
    pool.run(elements=4, timeout=TIMEOUT)
    np.testing.assert_array_equal(pool.data()[:4], np.float32(6.0))


def test_a_pool_inside_its_spin_window_is_seen_using_cpu(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """The measure of the test above sees a worker that is still spinning.

    Bound: the spinning thread gets its fair share of a CPU, 18 % at load 8 on
    2 CPUs; it must show more than PARKED_CPU_SHARE (1 %).
    """
    pool = make_pool(kernel("map_f32"), sw.Memory(1, 4), 2, spin=5.0)
    pool.run()
    # Worker 1 spins for 5 s after the run; worker 0's thread, the standby, parks at once.
    threads = {t.name: t for t in pool_threads(pool)}
    spinner, standby = threads[f"{pool.name}-w1"], threads[f"{pool.name}-w0"]
    shares = idle_cpu_shares([spinner, standby], IDLE_WINDOW)
    assert shares[0] > PARKED_CPU_SHARE, f"a spinning worker used {100 * shares[0]:.2f} %"
    assert shares[1] < PARKED_CPU_SHARE, f"the parked standby used {100 * shares[1]:.2f} %"


# -- timed runs: worker 0's share goes to the standby thread -------------------------


def gate(pool: sw.WorkerPool) -> Int32s:
    """Return schedule_gate's gate, entered and gave-up words."""
    return book(pool)[:3]


def open_gate(words: Int32s) -> None:
    """Let worker 0 of schedule_gate go."""
    atomics.store(words, GATE, 1)
    atomics.notify(words, GATE)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_timed_run_leaves_the_caller_free_while_worker_0_blocks(
    make_pool: MakePool, kernel: LoadKernel, workers: int
) -> None:
    """With a timeout the caller computes nothing, so a blocked worker 0 still yields RunTimeout."""
    pool = make_pool(kernel("schedule_gate"), sw.Memory(2, 4), workers)
    counts = reset_counts(pool)
    words = gate(pool)
    try:
        t0 = time.monotonic()
        with pytest.raises(
            sw.RunTimeout, match=re.escape("run 'stuck' did not finish within 0.2 s")
        ):
            pool.run("stuck", elements=90, timeout=0.2)
        assert time.monotonic() - t0 < TIMEOUT / 4
        wait_until(
            lambda: atomics.load(words, ENTERED) == 1,
            TIMEOUT,
            what="worker 0 blocked at the gate",
            pool=pool,
        )
        # Only worker 0's share is held up; the others finish theirs.
        wait_until(
            lambda: statuses(pool)[1:] == [sw.Status.DONE] * (workers - 1),
            TIMEOUT,
            what="workers 1.. done",
            pool=pool,
        )
        assert statuses(pool)[0] == sw.Status.RUNNING
        end0 = reference_partition(90, workers, 0)[1]
        assert (counts[:end0] == 0).all()
        assert (counts[end0:90] == 1).all()
    finally:
        open_gate(words)
    result = pool.run("next", elements=90, timeout=TIMEOUT)
    assert result.run_id == "next"
    np.testing.assert_array_equal(counts[:90], 2)
    result = pool.run("untimed", elements=90)
    assert [(d.start, d.end) for d in result.done] == [
        reference_partition(90, workers, i) for i in range(workers)
    ]
    np.testing.assert_array_equal(counts[:90], 3)
    assert (counts[90:] == 0).all()
    assert atomics.load(words, ENTERED) == 3
    assert atomics.load(words, GAVE_UP) == 0
    assert statuses(pool) == [sw.Status.DONE] * workers


def test_infinite_timeout_runs_without_limit(make_pool: MakePool, kernel: LoadKernel) -> None:
    """timeout=inf runs like timeout=None."""
    pool = count_pool(make_pool, kernel, 2)
    counts = reset_counts(pool)
    pool.run(elements=10, timeout=math.inf)
    np.testing.assert_array_equal(counts[:10], 1)


@pytest.mark.parametrize("timed", [True, False])
def test_trap_in_worker_0s_share_is_reported_and_the_pool_recovers(
    make_pool: MakePool, kernel: LoadKernel, timed: bool
) -> None:
    """A trap in worker 0's share, on the standby or the caller, is KernelTrap(worker_index=0)."""
    pool = count_pool(make_pool, kernel, 2)
    timeout = TIMEOUT if timed else None
    counts = reset_counts(pool)
    counts[10] = -1
    with pytest.raises(
        sw.KernelTrap, match=r"worker 0 trapped in compute_partition\(0, 50\): .*unreachable"
    ) as info:
        pool.run(elements=100, timeout=timeout)
    trap = info.value
    assert (trap.worker_index, trap.start, trap.end) == (0, 0, 50)
    assert trap.traps == (trap,)
    assert isinstance(trap.__cause__, wasmtime.Trap)
    assert statuses(pool) == [sw.Status.TRAPPED, sw.Status.DONE]
    assert (counts[:10] == 1).all()
    assert counts[10] == -1
    assert (counts[11:50] == 0).all()
    assert (counts[50:100] == 1).all()

    timeouts: list[dict[str, Any]] = [{"timeout": TIMEOUT}, {}]
    for kwargs in timeouts:
        counts = reset_counts(pool)
        result = pool.run(elements=100, **kwargs)
        assert [(d.start, d.end, d.chunks) for d in result.done] == [(0, 50, 1), (50, 100, 1)]
        np.testing.assert_array_equal(counts[:100], 1)
        assert statuses(pool) == [sw.Status.DONE] * 2


# -- traps in dynamic runs ---------------------------------------------------------


@pytest.mark.parametrize("timed", [True, False])
@pytest.mark.parametrize("workers", [2, 3])
def test_trap_in_a_dynamic_chunk_spares_the_other_chunks(
    make_pool: MakePool, kernel: LoadKernel, workers: int, timed: bool
) -> None:
    """A trapping chunk is named by KernelTrap; every other chunk is processed exactly once."""
    pool = count_pool(make_pool, kernel, workers)
    timeout = TIMEOUT if timed else None
    total, chunk, marked = 1000, 7, 500
    counts = reset_counts(pool)
    counts[marked] = -1
    first = marked // chunk * chunk
    with pytest.raises(
        sw.KernelTrap, match=rf"trapped in compute_partition\({first}, {first + chunk}\)"
    ) as info:
        pool.run(elements=total, schedule="dynamic", chunk=chunk, timeout=timeout)
    trap = info.value
    assert (trap.start, trap.end) == (first, first + chunk)
    assert trap.traps == (trap,)

    log = calls(pool)
    assert sorted((c.start, c.end) for c in log) == dynamic_chunks(total, chunk)
    unfinished = [c for c in log if not c.returned]
    assert unfinished == [Call(first, first + chunk, trap.worker_index, False)]
    assert book(pool)[TALLY] == total - chunk
    # Before the marked element the trapping call counted; after it, nothing did.
    expected = np.ones(total, dtype=np.int32)
    expected[marked] = -1
    expected[marked + 1 : first + chunk] = 0
    np.testing.assert_array_equal(counts[:total], expected)
    assert (counts[total:] == 0).all()
    assert statuses(pool)[trap.worker_index] == sw.Status.TRAPPED

    counts = reset_counts(pool)
    result = pool.run(elements=total, schedule="dynamic", chunk=chunk, timeout=timeout)
    np.testing.assert_array_equal(counts[:total], 1)
    check_dynamic_accounting(result, calls(pool), total, chunk, workers)
    assert statuses(pool) == [sw.Status.DONE] * workers


# -- threads -----------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_pool_has_one_named_thread_per_worker_and_they_exit_on_close(
    make_pool: MakePool, kernel: LoadKernel, workers: int
) -> None:
    """A pool of N has N daemon threads <name>-w0..w{N-1}, kept across runs and ended on close."""
    pool = count_pool(make_pool, kernel, workers)
    expected = {f"{pool.name}-w{i}" for i in range(workers)}
    threads = pool_threads(pool)
    assert len(threads) == workers
    assert {t.name for t in threads} == expected
    assert all(t.daemon and t.is_alive() for t in threads)
    pool.run(elements=100, timeout=TIMEOUT)
    pool.run(elements=100)
    pool.run(elements=100, schedule="dynamic", chunk=1, timeout=TIMEOUT)
    assert set(pool_threads(pool)) == set(threads)
    pool.close()
    for thread in threads:
        join_or_dump(thread, TIMEOUT, pool)
    assert not pool_threads(pool)
