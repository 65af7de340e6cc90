"""Soak: grows from the kernel and the host, traps, timed and untimed, static and dynamic runs."""

from __future__ import annotations

import gc
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

import sharedwasm as sw
from conftest import TIMEOUT, statuses
from sharedwasm import atomics
from sharedwasm._layout import Control
from sharedwasm.testing import wait_until

MakePool = Callable[..., sw.WorkerPool]
LoadKernel = Callable[[str], sw.Kernel]
Int32s = np.ndarray[Any, np.dtype[np.int32]]
ScheduleName = Literal["static", "dynamic"]
SCHEDULES: tuple[ScheduleName, ...] = ("static", "dynamic")

# The soak_grow_write header: int32 words at absolute bytes 0..15 (tests/kernels/).
GROW, GROWN_FROM, RUN, TRAP_AT, HANG_AT, HUNG = 0, 1, 2, 3, 4, 5
HEADER_BYTES = 64
"""The pool's status_offset: the header lives in the bytes the pool leaves alone."""
NO_ELEMENT = -1

WORKERS = 2
WARMUP_RUNS = 1_000
RSS_SLACK = 64 << 20
"""Bytes RSS may gain between the end of the warm-up and the end of the soak."""
SLOW_SOAK_SECONDS = 45.0
"""Most wall time of one 50,000-run soak. An idle 2-CPU machine makes the
50,000 runs in about 25 s; at load 8 on 2 CPUs each run waits for a CPU and
takes about 20 times as long, and the soak stops here with the runs it made."""


def reference_partition(total: int, workers: int, index: int) -> tuple[int, int]:
    """Return the static range of one worker, with start clamped to total."""
    chunk = -(-total // workers)
    start = min(index * chunk, total)
    return start, min((index + 1) * chunk, total)


def expected(start: int, end: int, run: int) -> Int32s:
    """Return what soak_grow_write writes over [start, end) in run `run`: i * 31 + run * 1000003."""
    base = np.uint32((run * 1_000_003) & 0xFFFFFFFF)
    values = np.arange(start, end, dtype=np.uint32) * np.uint32(31) + base
    return values.view(np.int32)


def header(memory: sw.Memory) -> Int32s:
    """Return the soak_grow_write header words."""
    return memory.view(np.int32, count=6)


def capacity(pool: sw.WorkerPool) -> int:
    """Return the int32 elements the data region holds at the memory's current size."""
    return (pool.memory.byte_length - pool.data_offset) // 4


def proc_status(field: str) -> int:
    """Return a number from /proc/self/status, such as VmRSS (in bytes) or Threads."""
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == field:
            number, *unit = value.split()
            return int(number) * (1024 if unit == ["kB"] else 1)
    raise AssertionError(f"no {field} in /proc/self/status")


def check_result(
    pool: sw.WorkerPool, result: sw.RunResult, total: int, schedule: ScheduleName, run: int
) -> None:
    """Assert that a run of `total` elements partitioned them right and wrote f(i, run) to each."""
    workers = pool.workers
    assert [d.worker_index for d in result.done] == list(range(workers))
    assert sum(d.elements for d in result.done) == total
    if schedule == "static":
        assert [(d.start, d.end) for d in result.done] == [
            reference_partition(total, workers, i) for i in range(workers)
        ]
    elif total:
        busy = [d for d in result.done if d.elements]
        assert min(d.start for d in busy) == 0
        assert max(d.end for d in busy) == total
    out = pool.data(np.int32)
    np.testing.assert_array_equal(out[:total], expected(0, total, run))
    # Nothing past the run's range was written (run numbers are unique, so
    # f(i, run) there could only come from this run).
    after = min(total + 64, len(out))
    assert not (out[total:after] == expected(total, after, run)).any()


# -- grow from inside a run ---------------------------------------------------------


@pytest.mark.parametrize("timed", [False, True], ids=["untimed", "timed"])
@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_kernel_grow_inside_a_run_is_seen_by_the_next_run(
    make_pool: MakePool, kernel: LoadKernel, workers: int, schedule: ScheduleName, timed: bool
) -> None:
    """A run whose kernel grows the memory completes; the next default run spans the new pages."""
    memory = sw.Memory(2, 8)
    pool = make_pool(kernel("soak_grow_write"), memory, workers, status_offset=HEADER_BYTES)
    words = header(memory)
    timeout = TIMEOUT if timed else None
    words[GROW], words[GROWN_FROM], words[RUN], words[TRAP_AT] = 1, 0, 1, NO_ELEMENT
    words[HANG_AT] = NO_ELEMENT
    before = capacity(pool)

    result = pool.run("grows", schedule=schedule, timeout=timeout)
    assert memory.pages == 3
    assert memory.byte_length == 3 * sw.PAGE_SIZE
    assert (words[GROW], words[GROWN_FROM]) == (0, 2)
    check_result(pool, result, before, schedule, 1)
    # The new page is zero and the run wrote only the elements it was given.
    assert capacity(pool) == before + sw.PAGE_SIZE // 4
    assert not pool.data(np.int32)[before:].any()

    words[RUN] = 2
    result = pool.run("after", schedule=schedule, timeout=timeout)
    check_result(pool, result, capacity(pool), schedule, 2)
    assert memory.pages == 3

    assert pool.grow(2) == 3
    assert memory.pages == 5
    words[RUN] = 3
    result = pool.run("host grown", schedule=schedule, timeout=timeout)
    assert capacity(pool) == (5 * sw.PAGE_SIZE - pool.data_offset) // 4
    check_result(pool, result, capacity(pool), schedule, 3)
    assert (words[GROW], words[GROWN_FROM]) == (0, 2)


def test_kernel_grow_past_maximum_is_refused_and_the_run_completes(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """A kernel's memory.grow past the memory's maximum returns -1 and changes nothing."""
    memory = sw.Memory(2, 3)
    pool = make_pool(kernel("soak_grow_write"), memory, 2, status_offset=HEADER_BYTES)
    words = header(memory)
    words[GROW], words[GROWN_FROM], words[RUN], words[TRAP_AT] = 2, 0, 7, NO_ELEMENT
    words[HANG_AT] = NO_ELEMENT
    result = pool.run("too far", timeout=TIMEOUT)
    assert (words[GROW], words[GROWN_FROM]) == (0, -1)
    assert memory.pages == 2
    check_result(pool, result, capacity(pool), "static", 7)


# -- soak -------------------------------------------------------------------------


class Soak:
    """A deterministic pseudo-random mix of runs, grows, traps and cancels on one pool.

    Each run is checked.

    Cancels need an interruptible memory; on another, the soak makes none.
    """

    def __init__(self, pool: sw.WorkerPool, seed: int) -> None:
        self.pool = pool
        self.words = header(pool.memory)
        self.words[GROW], self.words[GROWN_FROM], self.words[TRAP_AT] = 0, 0, NO_ELEMENT
        self.words[HANG_AT], self.words[HUNG] = NO_ELEMENT, 0
        self.rng = random.Random(seed)
        self.runs = 0
        """Calls to run, trapping, cancelled or not."""
        self.traps = 0
        self.cancels = 0
        self.grows = 0
        self.refused_grows = 0
        self.counter = 0

    def grow(self) -> None:
        """Grow by one page from the host or, in the next run, from the kernel; check maximum."""
        memory = self.pool.memory
        pages = memory.pages
        if self.words[GROW]:
            return  # a kernel grow is still pending
        if pages == memory.maximum:
            with pytest.raises(ValueError, match="delta_pages must be <= 0"):
                self.pool.grow(1)
            assert memory.pages == pages
            self.refused_grows += 1
        elif self.rng.random() < 0.5:
            assert self.pool.grow(1) == pages
            assert memory.pages == pages + 1
            self.grows += 1
        else:
            self.words[GROW] = 1  # the next run grows the memory itself

    def step(self) -> None:
        """Do one run of a random kind and check its result or its trap."""
        rng, pool, words = self.rng, self.pool, self.words
        if rng.random() < 0.01:
            self.grow()
        pages = pool.memory.pages
        kernel_grows = bool(words[GROW])
        roll = rng.random()
        elements: int | None
        if roll < 0.05:
            elements = None
        elif roll < 0.1:
            elements = rng.randrange(capacity(pool) + 1)
        else:
            elements = rng.randrange(2_048)
        total = capacity(pool) if elements is None else elements
        schedule = rng.choice(SCHEDULES)
        chunk = rng.choice([None, 1, 7, 64, 1_000]) if schedule == "dynamic" else None
        timeout = rng.choice([None, TIMEOUT])
        self.counter += 1
        words[RUN] = self.counter
        trap_at = rng.randrange(total) if total and rng.random() < 0.05 else NO_ELEMENT
        words[TRAP_AT] = trap_at
        self.runs += 1
        run_id = f"soak-{self.runs}"
        stopped: list[int] | None = None  # the statuses of a cancelled run
        if trap_at == NO_ELEMENT and total and pool.memory.interruptible and rng.random() < 0.02:
            stopped = self.cancel(
                run_id, rng.randrange(total), total, schedule, chunk, timeout is None
            )
        elif trap_at != NO_ELEMENT:
            with pytest.raises(sw.KernelTrap) as info:
                pool.run(run_id, elements=elements, schedule=schedule, chunk=chunk, timeout=timeout)
            trap = info.value
            assert trap.traps == (trap,)
            assert trap.start <= trap_at < trap.end
            assert "unreachable" in trap.trap
            words[TRAP_AT] = NO_ELEMENT
            self.traps += 1
        else:
            result = pool.run(
                run_id,
                elements=elements,
                schedule=schedule,
                chunk=chunk,
                timeout=timeout,
            )
            assert result.run_id == run_id
            check_result(pool, result, total, schedule, self.counter)
        if kernel_grows:
            # The first compute_partition call grows; a static run makes one per
            # worker even when empty, a dynamic run none when there is nothing to claim.
            called = total > 0 or schedule == "static"
            if stopped is not None and words[GROW]:
                # Every share of the cancelled run stopped before its first
                # call (see check_stopped_shares); the next run grows.
                assert not words[HUNG]
                assert schedule == "dynamic" or int(sw.Status.DONE) not in stopped
                called = False
            assert words[GROW] == (0 if called else 1)
            if not called:
                assert pool.memory.pages == pages
            else:
                assert words[GROWN_FROM] == pages
                assert pool.memory.pages == pages + 1
                self.grows += 1

    def cancel(
        self,
        run_id: str,
        hang_at: int,
        total: int,
        schedule: ScheduleName,
        chunk: int | None,
        from_thread: bool,
    ) -> list[int]:
        """Hang a run at element `hang_at`, stop it (a cancel() or a timeout), check the rest.

        Returns:
            The run's statuses.
        """
        pool, words = self.pool, self.words
        words[HANG_AT], words[HUNG] = hang_at, 0
        t0 = time.monotonic()
        if from_thread:

            def cancel_when_hung() -> None:
                wait_until(lambda: bool(words[HUNG]), TIMEOUT, what="a worker hung", pool=pool)
                assert pool.cancel()

            canceller = threading.Thread(target=cancel_when_hung, name="soak-canceller")
            canceller.start()
            with pytest.raises(sw.RunCancelled):
                pool.run(run_id, elements=total, schedule=schedule, chunk=chunk)
            canceller.join(TIMEOUT)
        else:
            with pytest.raises(sw.RunTimeout, match="it was stopped"):
                pool.run(run_id, elements=total, schedule=schedule, chunk=chunk, timeout=0.005)
        assert time.monotonic() - t0 < TIMEOUT
        status = statuses(pool)
        assert int(sw.Status.CANCELLED) in status
        assert set(status) <= {int(sw.Status.DONE), int(sw.Status.CANCELLED)}
        # The canceller waited for the hang; a timeout may come first.
        assert words[HUNG] or not from_thread
        if schedule == "static":
            self.check_stopped_shares(status, hang_at, total)
        words[HANG_AT] = NO_ELEMENT
        self.cancels += 1
        return status

    def check_stopped_shares(self, status: list[int], hang_at: int, total: int) -> None:
        """Check each share of a stopped static run: how far it got, and that it got no further.

        A share writes its range in order, so it holds this run's values up to
        where it stopped and older ones after: all of its range (DONE), none
        (cancelled before it began: the 5 ms timeout often passes before a busy
        machine gives the worker a CPU), or a prefix (interrupted in the
        kernel). The share that holds hang_at never gets past it, and reaches
        it exactly when HUNG is set.
        """
        pool = self.pool
        out = pool.data(np.int32)
        for index, slot in enumerate(status):
            start, end = reference_partition(total, pool.workers, index)
            fresh = out[start:end] == expected(start, end, self.counter)
            written = end - start if fresh.all() else int(fresh.argmin())
            where = f"share {index} [{start}, {end}) of run {self.counter}, status {slot}"
            assert not fresh[written:].any(), f"{where}: wrote past element {start + written}"
            if slot == sw.Status.DONE:
                assert written == end - start, f"{where}: DONE but wrote only {written}"
            if start <= hang_at < end:
                assert slot != sw.Status.DONE, f"{where}: DONE past the hang at {hang_at}"
                assert written <= hang_at - start, f"{where}: wrote past the hang at {hang_at}"
                if self.words[HUNG]:
                    assert written == hang_at - start, f"{where}: hung at {hang_at}"


@pytest.mark.parametrize("timed", [False, True], ids=["untimed", "timed"])
def test_shares_cancelled_before_they_start_keep_the_old_output(
    make_pool: MakePool, kernel: LoadKernel, timed: bool
) -> None:
    """A static run cancelled before any share began reports them CANCELLED and calls nothing.

    On a busy machine the soak's 5 ms timeouts often end runs this way; here
    CANCEL names the run before it is published, as a cancel from another
    thread may, so every share sees it before it starts. The output keeps the
    previous run's values, and a kernel grow asked for waits for the next run.
    """
    memory = sw.Memory(1, 16, interruptible=True)
    pool = make_pool(kernel("soak_grow_write"), memory, WORKERS, status_offset=HEADER_BYTES)
    soak = Soak(pool, seed=0)
    total, hang_at = 1852, 1148  # the numbers of the first timed cancel of the soaks
    soak.counter = soak.words[RUN] = 1
    check_result(pool, pool.run("previous", elements=total, timeout=TIMEOUT), total, "static", 1)
    soak.counter = soak.words[RUN] = 2
    soak.words[HANG_AT], soak.words[GROW] = hang_at, 1
    control = memory.view(np.int32, offset=pool.layout.control_offset, count=32)
    atomics.store(control, Control.CANCEL, atomics.load(control, Control.GENERATION) + 1)
    with pytest.raises(sw.RunCancelled, match=r"worker\(s\) \[0, 1\]"):
        pool.run("cancelled", elements=total, timeout=TIMEOUT if timed else None)
    status = statuses(pool)
    assert status == [int(sw.Status.CANCELLED)] * WORKERS
    assert not soak.words[HUNG]
    assert (soak.words[GROW], memory.pages) == (1, 1)
    np.testing.assert_array_equal(pool.data(np.int32)[:total], expected(0, total, 1))
    soak.check_stopped_shares(status, hang_at, total)
    # The next run clears the cancel, and grows.
    soak.words[HANG_AT] = NO_ELEMENT
    soak.counter = soak.words[RUN] = 3
    check_result(pool, pool.run("next", elements=total), total, "static", 3)
    assert (soak.words[GROW], soak.words[GROWN_FROM], memory.pages) == (0, 1, 2)


def run_soak(
    make_pool: MakePool,
    kernel: LoadKernel,
    runs: int,
    seconds: float | None,
    interruptible: bool = False,
) -> None:
    """Soak one pool for `runs` runs or `seconds` seconds, then check threads and RSS."""
    memory = sw.Memory(1, 16, interruptible=interruptible)
    # Compile first: wasmtime's compiler threads stay for the life of the process.
    compiled = kernel("soak_grow_write")
    compiled._module_for(interruptible)
    baseline = set(threading.enumerate())
    pool = make_pool(compiled, memory, WORKERS, status_offset=HEADER_BYTES)
    soak = Soak(pool, seed=20240611)
    t0 = time.monotonic()
    for _ in range(WARMUP_RUNS):
        soak.step()
    gc.collect()
    rss_before = proc_status("VmRSS")
    # Native threads of earlier tests may still be exiting (none start here),
    # so the counts below bound growth rather than match a total.
    os_threads_before = proc_status("Threads")
    deadline = None if seconds is None else t0 + seconds
    while soak.runs < runs and (deadline is None or time.monotonic() < deadline):
        soak.step()
    elapsed = time.monotonic() - t0
    gc.collect()
    rss_after = proc_status("VmRSS")
    print(
        f"\nsoak: {soak.runs} runs in {elapsed:.2f} s, {soak.traps} traps, "
        f"{soak.cancels} cancels, {soak.grows} grows, "
        f"{soak.refused_grows} refused, {memory.pages} pages; RSS {rss_before / 2**20:.1f} MiB "
        f"after warm-up, {rss_after / 2**20:.1f} MiB after the soak"
    )
    assert soak.runs >= WARMUP_RUNS
    assert soak.traps > 0
    assert soak.grows > 0
    assert soak.cancels > 0 or not interruptible
    assert pool.statistics().runs == soak.runs - soak.traps - soak.cancels
    assert rss_after - rss_before <= RSS_SLACK

    new = set(threading.enumerate()) - baseline
    assert sorted(t.name for t in new) == sorted(f"{pool.name}-w{i}" for i in range(WORKERS))
    assert all(t.is_alive() for t in new)
    os_threads_after = proc_status("Threads")
    assert os_threads_after <= os_threads_before, "the soak leaked native threads"
    pool.close()
    wait_until(
        lambda: (
            not any(t.is_alive() for t in new)
            and proc_status("Threads") <= os_threads_after - WORKERS
        ),
        TIMEOUT,
        what="every worker thread exited",
    )


@pytest.mark.parametrize("interruptible", [False, True], ids=["plain", "interruptible"])
def test_soak_mixed_runs_stay_correct_and_leak_nothing(
    make_pool: MakePool, kernel: LoadKernel, interruptible: bool
) -> None:
    """About 5,000 mixed runs (or 10 s) are each exactly right and leak no thread or memory.

    On an interruptible memory about 2 % of the runs hang and are cancelled.
    """
    run_soak(make_pool, kernel, 5_000, 10.0, interruptible)


@pytest.mark.slow
@pytest.mark.parametrize("interruptible", [False, True], ids=["plain", "interruptible"])
def test_soak_50000_mixed_runs_stay_correct_and_leak_nothing(
    make_pool: MakePool, kernel: LoadKernel, interruptible: bool
) -> None:
    """50,000 mixed runs (fewer if SLOW_SOAK_SECONDS pass first) are each exactly right.

    Like the short soak, it also checks that they leak no thread or memory.
    """
    run_soak(make_pool, kernel, 50_000, SLOW_SOAK_SECONDS, interruptible)
