"""Cancellation: timeouts, cancel() and task cancellation stop a hung kernel; the pool recovers."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pytest

import sharedwasm as sw
from conftest import TIMEOUT, InThread, pool_threads, statuses
from sharedwasm import atomics
from sharedwasm._lifecycle import CLOSE_TIMEOUT
from sharedwasm.testing import wait_until

MakePool = Callable[..., sw.WorkerPool]
LoadKernel = Callable[[str], sw.Kernel]

# The hang kernel's header: int32 words of the data region (tests/kernels/hang.wat).
MASK, HOW, WORD, ENTERED, TAG = 0, 1, 2, 3, 4
SPIN_FOREVER, PARK_FOREVER, SPIN_UNTIL_RELEASED, SLOW_CHUNKS = 0, 1, 2, 3
HEADER = 16
ELEMENTS = 4000

BOUND = 2.0
"""How long past its timeout a hung run may take to raise, or a cancel or close to end it.

Generous, so that it holds at load 8 on 2 CPUs, where each wake-up waits its
turn for a CPU: it tells a prompt stop from one that never comes. How prompt
the stop is gets measured by benchmarks/bench_cancel.py, not asserted here.
"""

CANCELLED = int(sw.Status.CANCELLED)
DONE = int(sw.Status.DONE)


def words(pool: sw.WorkerPool) -> np.ndarray[Any, np.dtype[np.int32]]:
    # Through the memory: the tests also release kernels of closed pools.
    return pool.memory.view(np.int32, offset=pool.data_offset)


def arm(pool: sw.WorkerPool, mask: int, how: int = SPIN_FOREVER, tag: int = 0) -> None:
    """Set who hangs and how, before a run."""
    w = words(pool)
    for index, value in ((HOW, how), (WORD, 0), (ENTERED, 0), (TAG, tag), (MASK, mask)):
        atomics.store(w, index, value)


def check_run(pool: sw.WorkerPool, tag: int, schedule: Literal["static", "dynamic"]) -> None:
    """Run with nobody hanging and check every element and status."""
    arm(pool, 0, tag=tag)
    result = pool.run("check", elements=ELEMENTS, schedule=schedule, timeout=TIMEOUT)
    assert sum(d.elements for d in result.done) == ELEMENTS
    out = words(pool)[HEADER : HEADER + ELEMENTS]
    np.testing.assert_array_equal(out, np.arange(ELEMENTS, dtype=np.int32) + 1000 * tag)
    assert statuses(pool) == [DONE] * pool.workers
    assert len(pool_threads(pool)) == pool.workers


def wait_entered(pool: sw.WorkerPool, count: int = 1) -> None:
    wait_until(
        lambda: atomics.load(words(pool), ENTERED) >= count,
        TIMEOUT,
        what=f"{count} worker(s) entered the hang",
        pool=pool,
    )


@pytest.fixture
def interruptible() -> sw.Memory:
    return sw.Memory(16, 64, interruptible=True)


POSITIONS = ("first", "last")


def hung_worker(workers: int, position: str) -> int:
    return 0 if position == "first" else workers - 1


@pytest.mark.parametrize("schedule", ["static", "dynamic"])
@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_timeout_interrupts_a_hung_kernel(
    kernel: LoadKernel,
    make_pool: MakePool,
    interruptible: sw.Memory,
    workers: int,
    position: str,
    schedule: Literal["static", "dynamic"],
) -> None:
    pool = make_pool(kernel("hang"), interruptible, workers)
    threads_before = threading.active_count()
    hung = hung_worker(workers, position)
    mask = 1 << hung
    chunk = None
    if schedule == "dynamic":
        # Which worker claims which chunk is up to the race: all of them hang
        # on the first chunk they claim, and there is one chunk per worker.
        mask, chunk = (1 << workers) - 1, -(-ELEMENTS // workers)
    arm(pool, mask)
    t0 = time.monotonic()
    with pytest.raises(sw.RunTimeout, match="it was stopped") as info:
        pool.run(elements=ELEMENTS, schedule=schedule, chunk=chunk, timeout=0.2)
    took = time.monotonic() - t0
    assert took < 0.2 + BOUND, f"RunTimeout after {took:.3f} s"
    assert isinstance(info.value, TimeoutError)
    assert statuses(pool)[hung] == CANCELLED
    if schedule == "dynamic":
        assert statuses(pool) == [CANCELLED] * workers
    assert threading.active_count() == threads_before
    check_run(pool, 7, schedule)


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("workers", [1, 2, 4])
def test_cancel_from_another_thread_interrupts_the_run(
    kernel: LoadKernel, make_pool: MakePool, interruptible: sw.Memory, workers: int, position: str
) -> None:
    pool = make_pool(kernel("hang"), interruptible, workers)
    hung = hung_worker(workers, position)
    arm(pool, 1 << hung)
    # Untimed: worker 0's share runs on the caller's own thread.
    call = InThread(lambda: pool.run(elements=ELEMENTS))
    wait_entered(pool)
    t0 = time.monotonic()
    assert pool.cancel() is True
    with pytest.raises(sw.RunCancelled, match=r"worker\(s\) \[") as info:
        call.join(pool)
    assert time.monotonic() - t0 < BOUND
    assert isinstance(info.value, sw.SharedWasmError)
    assert statuses(pool)[hung] == CANCELLED
    # The other shares ran to their end, or (on a busy machine, with more
    # workers than CPUs) had not started when the cancel came and never did.
    assert set(statuses(pool)) <= {DONE, CANCELLED}
    check_run(pool, 3, "static")


def test_task_cancellation_interrupts_the_run(
    kernel: LoadKernel, make_pool: MakePool, interruptible: sw.Memory
) -> None:
    pool = make_pool(kernel("hang"), interruptible, 2)
    arm(pool, 0b10)

    async def main() -> float:
        task = asyncio.ensure_future(pool.run_async(elements=ELEMENTS))
        await asyncio.to_thread(wait_entered, pool)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - t0

    took = asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    assert took < BOUND
    assert statuses(pool) == [DONE, CANCELLED]
    check_run(pool, 5, "dynamic")


def test_cancel_reaches_only_the_run_it_names(
    kernel: LoadKernel, make_pool: MakePool, interruptible: sw.Memory
) -> None:
    """Cancelling a task still queued behind a hung run leaves the hung run alone."""
    pool = make_pool(kernel("hang"), interruptible, 2)
    arm(pool, 0b10)
    first = InThread(lambda: pool.run("first", elements=ELEMENTS))
    wait_entered(pool)

    async def queued() -> None:
        task = asyncio.ensure_future(pool.run_async("queued", elements=ELEMENTS))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(queued(), TIMEOUT))
    assert first.thread.is_alive()
    assert atomics.load(pool.status, 1) != CANCELLED
    assert pool.cancel() is True
    with pytest.raises(sw.RunCancelled):
        first.join(pool)
    check_run(pool, 9, "static")


def test_cancel_with_nothing_in_flight_returns_false(
    kernel: LoadKernel, make_pool: MakePool, interruptible: sw.Memory
) -> None:
    pool = make_pool(kernel("hang"), interruptible, 2)
    assert pool.cancel() is False
    check_run(pool, 1, "static")
    assert pool.cancel() is False
    pool.close()
    assert pool.cancel() is False


def test_close_interrupts_a_hung_run_and_joins_every_thread(
    kernel: LoadKernel, make_pool: MakePool, interruptible: sw.Memory
) -> None:
    pool = make_pool(kernel("hang"), interruptible, 3)
    threads_before = threading.active_count()
    arm(pool, 0b111)  # the caller's own share hangs too
    call = InThread(lambda: pool.run(elements=ELEMENTS))
    wait_entered(pool, 3)
    t0 = time.monotonic()
    pool.close()
    assert time.monotonic() - t0 < CLOSE_TIMEOUT + BOUND
    with pytest.raises(sw.PoolClosedError):
        call.join(pool)
    assert not pool_threads(pool)
    assert threading.active_count() == threads_before - 3
    with pytest.raises(sw.PoolClosedError):
        pool.run()


def test_kernel_parked_forever_is_reported_and_recovers_when_woken(
    kernel: LoadKernel, make_pool: MakePool, interruptible: sw.Memory
) -> None:
    """An interrupt cannot reach a thread parked in memory.atomic.wait; a notify can."""
    pool = make_pool(kernel("hang"), interruptible, 2)
    arm(pool, 0b10, PARK_FOREVER)
    t0 = time.monotonic()
    try:
        with pytest.raises(sw.RunTimeout, match="did not stop when interrupted"):
            pool.run(elements=ELEMENTS, timeout=0.1)
        assert time.monotonic() - t0 < 0.1 + BOUND
    finally:
        # Released whatever happened: neither an interrupt nor close() reaches it.
        atomics.store(words(pool), WORD, 1)
        woken = atomics.notify(words(pool), WORD)
    assert woken == 1
    # The next run waits for the woken one, which stops at its next check.
    check_run(pool, 2, "static")


@pytest.mark.parametrize("kind", range(5))
def test_traps_on_an_interruptible_memory_are_kernel_traps(
    kernel: LoadKernel, make_pool: MakePool, interruptible: sw.Memory, kind: int
) -> None:
    """Each trap kind of trap_kinds.wat (see test_traps.py) is a fault, not a cancel."""
    pool = make_pool(kernel("trap_kinds"), interruptible, 2)
    header = pool.data(np.int32)
    header[:3] = [0b10, kind << 4, -1]  # worker 1 traps mid-range
    with pytest.raises(sw.KernelTrap) as info:
        pool.run(elements=1000, timeout=TIMEOUT)
    assert info.value.worker_index == 1
    assert statuses(pool) == [DONE, int(sw.Status.TRAPPED)]
    header[0] = 0
    pool.run(elements=1000)
    assert statuses(pool) == [DONE, DONE]


# -- a memory made without interruptible=True --------------------------------------------


def test_timeout_without_interruption_leaves_the_run_to_finish(
    kernel: LoadKernel, make_pool: MakePool
) -> None:
    pool = make_pool(kernel("hang"), sw.Memory(16, 64), 2)
    arm(pool, 0b10, SPIN_UNTIL_RELEASED)
    t0 = time.monotonic()
    try:
        with pytest.raises(sw.RunTimeout, match="interruptible=True"):
            pool.run(elements=ELEMENTS, timeout=0.1)
        assert time.monotonic() - t0 < 0.1 + BOUND
        # Still in flight: a short wait for it times out too, and says why.
        with pytest.raises(sw.RunTimeout, match="still in flight"):
            pool.run(elements=ELEMENTS, timeout=0.05)
    finally:
        # Released whatever happened: close() cannot stop it.
        atomics.store(words(pool), WORD, 1)
    # Before check_run re-arms WORD: a spinner descheduled on a busy machine
    # must still see the release.
    wait_until(lambda: statuses(pool)[1] == DONE, TIMEOUT, what="the released worker", pool=pool)
    check_run(pool, 4, "static")


def test_cancel_without_interruption_stops_between_chunks(
    kernel: LoadKernel, make_pool: MakePool
) -> None:
    pool = make_pool(kernel("hang"), sw.Memory(16, 64), 2)
    arm(pool, 0, SLOW_CHUNKS)
    # 400 chunks of 1 ms each: 0.2 s on two workers without a cancel.
    call = InThread(lambda: pool.run(elements=ELEMENTS, schedule="dynamic", chunk=10))
    wait_entered(pool, 20)
    t0 = time.monotonic()
    assert pool.cancel() is True
    entered = atomics.load(words(pool), ENTERED)
    with pytest.raises(sw.RunCancelled):
        call.join(pool)
    assert time.monotonic() - t0 < BOUND
    # Of the 400 chunks, each worker enters at most the one it had already
    # claimed when the cancel came (however late a busy machine ran it).
    assert atomics.load(words(pool), ENTERED) <= entered + pool.workers
    assert statuses(pool) == [CANCELLED, CANCELLED]
    check_run(pool, 6, "dynamic")


def test_close_without_interruption_returns_within_a_second(kernel: LoadKernel) -> None:
    pool = sw.WorkerPool(kernel("hang"), sw.Memory(16, 64), 2)
    arm(pool, 0b10, SPIN_UNTIL_RELEASED)
    try:
        with pytest.raises(sw.RunTimeout):
            pool.run(elements=ELEMENTS, timeout=0.05)
        t0 = time.monotonic()
        pool.close()
        # close() gives up on the stuck worker after CLOSE_TIMEOUT (1 s).
        assert time.monotonic() - t0 < CLOSE_TIMEOUT + BOUND
        # The worker stuck in the kernel is a daemon; released, it exits on its own.
        assert len(pool_threads(pool)) == 1
    finally:
        pool.close()
        atomics.store(words(pool), WORD, 1)
    wait_until(lambda: not pool_threads(pool), TIMEOUT, what="the released worker exited")


def test_interruptible_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="interruptible must be a bool"):
        sw.Memory(1, 1, interruptible=1)  # type: ignore[arg-type]
    memory = sw.Memory(1, 1, interruptible=True)
    assert memory.interruptible
    assert "interruptible=True" in repr(memory)
