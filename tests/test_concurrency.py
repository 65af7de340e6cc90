"""Concurrency: atomics across workers and the host, lost updates, thread lifecycle."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import pytest

import sharedwasm as sw
from conftest import KERNELS, TIMEOUT, InThread, pool_threads
from sharedwasm import atomics
from sharedwasm._layout import Control
from sharedwasm.testing import join_or_dump, wait_until

MakePool = Callable[..., sw.WorkerPool]
LoadKernel = Callable[[str], sw.Kernel]

INCREMENTS = 1_000_000
"""Increments of the shared counter per worker."""

CPUS = len(os.sched_getaffinity(0))


def control_word(pool: sw.WorkerPool, word: Control) -> int:
    """Return an atomic read of one of the pool's control words."""
    control = pool.memory.view(np.int32, offset=pool.layout.control_offset, count=32)
    return atomics.load(control, int(word))


# -- atomic and plain increments of one counter ------------------------------------


@pytest.mark.parametrize("schedule", ["static", "dynamic"])
@pytest.mark.parametrize("workers", [2, 4])
def test_atomic_increments_of_one_counter_are_exact(
    make_pool: MakePool,
    kernel: LoadKernel,
    workers: int,
    schedule: Literal["static", "dynamic"],
) -> None:
    """N workers doing a million i32.atomic.rmw.add each on one counter lose none of them."""
    total = workers * INCREMENTS
    # One-byte elements: the run's element count is the increment count, not data.
    pool = make_pool(kernel("conc_atomic_add"), sw.Memory(64, 64), workers)
    counter = pool.data(np.int32)[:1]
    for run in range(2):
        counter[0] = 0
        result = pool.run(
            f"add-{run}", elements=total, element_size=1, schedule=schedule, timeout=TIMEOUT
        )
        assert atomics.load(counter, 0) == total
        assert sum(d.elements for d in result.done) == total
        if schedule == "static":
            assert [d.elements for d in result.done] == [INCREMENTS] * workers
    assert list(pool.status) == [sw.Status.DONE] * workers


def test_plain_increments_of_one_counter_lose_updates(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """Two workers doing plain load/add/store on one counter lose updates: memory is not atomic."""
    # Shares of milliseconds, so that the two workers overlap even when the
    # scheduler first puts both threads on one CPU, and a busy machine
    # preempts them between load and store; on a single CPU that preemption
    # is the only way to lose an update, so give them longer shares still.
    per_worker = 16 * INCREMENTS if CPUS >= 2 else 64 * INCREMENTS
    total = 2 * per_worker
    pages = -(-(total + 4096) // sw.PAGE_SIZE)
    pool = make_pool(kernel("conc_plain_add"), sw.Memory(pages, pages), 2)
    counter = pool.data(np.int32)[:1]
    # Near-certain in the first run; on a saturated machine it may take more,
    # so keep trying for a few seconds.
    deadline = time.monotonic() + 5.0
    seen: list[int] = []
    while not seen or (seen[-1] == total and time.monotonic() < deadline):
        counter[0] = 0
        pool.run(f"plain-{len(seen)}", elements=total, element_size=1, timeout=TIMEOUT)
        seen.append(int(counter[0]))
        # Every increment that survives was made by one of the workers.
        assert 0 < seen[-1] <= total
    assert seen[-1] < total, f"no update lost in {len(seen)} runs: {seen}"


# -- a spinlock shared by the host and the kernel ----------------------------------

# The conc_spinlock kernel's words (tests/kernels/conc_spinlock.wat).
LOCK, COUNTER, GO, ENTERED, STOP, K_WORD, CYCLES, STOPPED, GAVE_UP, FAILED = range(10)


@pytest.mark.parametrize("workers", [1, 2])
def test_host_and_kernel_share_a_spinlock_and_lose_no_increment(
    make_pool: MakePool, kernel: LoadKernel, workers: int
) -> None:
    """Kernel workers and two Python threads increment one plain counter under one spinlock."""
    k, host_threads = 5_000, 2
    # The range only caps a worker whose host never tells it to stop: make it
    # long enough that the kernel is still cycling when the host threads finish.
    cap = 30_000_000
    pages = -(-(workers * cap + 4096) // sw.PAGE_SIZE)
    pool = make_pool(kernel("conc_spinlock"), sw.Memory(pages, pages), workers)
    words = pool.data(np.int32)[:16]
    words[:] = 0
    words[K_WORD] = k
    deadline = time.monotonic() + TIMEOUT
    run = InThread(
        lambda: pool.run("spinlock", elements=workers * cap, element_size=1, timeout=TIMEOUT)
    )
    barrier = threading.Barrier(host_threads + 1, timeout=TIMEOUT)
    failed = [0] * host_threads

    def host(j: int) -> None:
        barrier.wait()
        for _ in range(k):
            while atomics.compare_exchange(words, LOCK, 0, 1) != 0:
                failed[j] += 1
                if time.monotonic() > deadline:
                    raise TimeoutError(f"host thread {j} could not take the lock")
            words[COUNTER] += 1  # plain numpy read-modify-write, under the lock
            atomics.store(words, LOCK, 0)

    hosts = [InThread(lambda j=j: host(j), name=f"test-host-{j}") for j in range(host_threads)]  # type: ignore[misc]
    try:
        wait_until(
            lambda: atomics.load(words, ENTERED) == workers,
            TIMEOUT,
            what="every kernel worker waiting for go",
            pool=pool,
        )
        barrier.wait()
        atomics.store(words, GO, 1)
        atomics.notify(words, GO)
        for thread in hosts:
            thread.join(pool)
    finally:
        # Whatever happened, let the kernel go and stop, so no worker stays busy.
        barrier.abort()
        atomics.store(words, STOP, 1)
        atomics.store(words, GO, 1)
        atomics.notify(words, GO)
        result = run.join(pool)
    cycles = atomics.load(words, CYCLES)
    assert atomics.load(words, GAVE_UP) == 0
    assert cycles >= workers * k
    assert atomics.load(words, LOCK) == 0
    assert atomics.load(words, COUNTER) == host_threads * k + cycles
    # Each kernel worker was still taking the lock when the host threads were done.
    assert atomics.load(words, STOPPED) == workers
    assert sum(failed) > 0
    assert atomics.load(words, FAILED) > 0
    assert len(result.done) == workers


# -- threads come and go ------------------------------------------------------------


def create_and_close_pools(kernel: sw.Kernel, count: int) -> None:
    """Create, run once and close `count` pools in turn; assert no thread outlives its pool."""
    # Not make_pool: it would keep every pool, and its memory, until teardown.
    baseline = threading.active_count()
    peak = baseline
    for i in range(count):
        with sw.WorkerPool(kernel, sw.Memory(1, 1), 2) as pool:
            assert len(pool_threads(pool)) == 2
            peak = max(peak, threading.active_count())
            pool.run(f"pool-{i}", timeout=TIMEOUT)
        wait_until(
            lambda: threading.active_count() <= baseline,
            TIMEOUT,
            what=f"the threads of pool {i} of {count} exited",
        )
    assert peak == baseline + 2
    assert threading.active_count() == baseline


def test_many_pools_created_and_closed_leak_no_threads(kernel: LoadKernel) -> None:
    """500 pools created, run once and closed in turn leave the thread count where it was."""
    create_and_close_pools(kernel("empty"), 500)


def run_script(script: str) -> subprocess.CompletedProcess[str]:
    """Run a Python script in a child process; give it at most 20 s to exit."""
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


SCRIPT_ENDINGS = {
    "kept": "",
    "deleted": "del pool\n",
    "several": "others = [sw.WorkerPool(kernel, sw.Memory(1, 4), 3) for _ in range(3)]\n",
    "trapped": (
        "pool.data(np.int32)[70] = -1\n"
        "try:\n"
        "    pool.run(elements=100, timeout=timeout)\n"
        "except sw.KernelTrap as exc:\n"
        "    print(exc)\n"
    ),
}
"""How each script ends, after one run of its pool: the pool still open."""


def unclosed_pool_cases() -> list[Any]:
    """Return the endings with each kind of run, and one with workers that spin at exit."""
    cases = [
        pytest.param(ending, timed, None, id=f"{ending}-{'timed' if timed else 'untimed'}")
        for ending in SCRIPT_ENDINGS
        for timed in (False, True)
    ]
    cases.append(pytest.param("kept", False, 5.0, id="kept-spinning"))
    return cases


@pytest.mark.parametrize(("ending", "timed", "spin"), unclosed_pool_cases())
def test_unclosed_pool_does_not_keep_the_process_alive(
    ending: str, timed: bool, spin: float | None
) -> None:
    """A script that never closes its pool exits with status 0 once its last line has run."""
    t0 = time.monotonic()
    script = textwrap.dedent(
        f"""\
        import numpy as np
        import sharedwasm as sw
        kernel = sw.Kernel.from_file({str(KERNELS / "pool_increment.wat")!r})
        pool = sw.WorkerPool(kernel, sw.Memory(1, 4), 2, spin={spin})
        timeout = {10.0 if timed else None}
        pool.run(elements=100, timeout=timeout)
        """
    )
    child = run_script(script + SCRIPT_ENDINGS[ending] + 'print("end of script", flush=True)\n')
    elapsed = time.monotonic() - t0
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stderr == ""
    assert child.stdout.splitlines()[-1] == "end of script"
    if ending == "trapped":
        assert "worker 1 trapped in compute_partition(50, 100)" in child.stdout
    assert elapsed < 20


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("spin", [0.0, 5.0], ids=["parked", "spinning"])
def test_close_while_workers_wait_for_a_run_is_prompt(
    make_pool: MakePool, kernel: LoadKernel, workers: int, spin: float
) -> None:
    """close() of a pool whose workers are parked (or spinning) returns, and they exit, in 1 s."""
    pool = make_pool(kernel("empty"), sw.Memory(1, 4), workers, spin=spin)
    pool.run(timeout=TIMEOUT)
    pool.run()
    threads = pool_threads(pool)
    assert len(threads) == workers
    if spin == 0.0:
        # Every worker thread, the standby included, has registered as a sleeper.
        wait_until(
            lambda: control_word(pool, Control.SLEEPERS) == workers,
            TIMEOUT,
            what="every worker parked",
            pool=pool,
        )
    t0 = time.monotonic()
    pool.close()
    returned = time.monotonic() - t0
    for thread in threads:
        join_or_dump(thread, TIMEOUT, pool)
    exited = time.monotonic() - t0
    assert returned < 1.0
    assert exited < 1.0
    assert not pool_threads(pool)
    assert control_word(pool, Control.SLEEPERS) == 0
    with pytest.raises(sw.PoolClosedError, match=f"{pool.name} is closed"):
        pool.run(timeout=TIMEOUT)
