"""WorkerPool: results, partitions, the status board, zero copy, grow, async, errors."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import re
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import wasmtime

import sharedwasm as sw
from conftest import TIMEOUT, InThread, pool_threads, statuses
from sharedwasm import atomics
from sharedwasm._builtin import map_f32_reference
from sharedwasm.testing import join_or_dump, wait_until

MakePool = Callable[..., sw.WorkerPool]
LoadKernel = Callable[[str], sw.Kernel]

# Words of the pool_gate kernel, as int32 indices into the data region.
GATE, ENTERED, FINISHED = 0, 1, 2


def reference_partition(total: int, workers: int, index: int) -> tuple[int, int]:
    """Return the reference design's range for one worker, with start clamped to total."""
    chunk = -(-total // workers)
    start = min(index * chunk, total)
    return start, min((index + 1) * chunk, total)


def gate_words(pool: sw.WorkerPool) -> np.ndarray[Any, np.dtype[np.int32]]:
    """Return the pool_gate kernel's gate and counters."""
    return pool.data(np.int32)[:3]


def open_gate(words: np.ndarray[Any, np.dtype[np.int32]]) -> None:
    """Let every worker blocked in pool_gate go."""
    atomics.store(words, GATE, 1)
    atomics.notify(words, GATE)


@contextlib.contextmanager
def blocked_run(pool: sw.WorkerPool) -> Iterator[InThread]:
    """Start a run of pool_gate in a thread and hold it until the block exits.

    On exit the gate opens, whatever happened, so no worker stays parked.
    """
    words = gate_words(pool)
    for word in (GATE, ENTERED, FINISHED):
        atomics.store(words, word, 0)
    caller = InThread(lambda: pool.run("blocked", timeout=TIMEOUT))
    try:
        wait_until(
            lambda: atomics.load(words, ENTERED) == pool.workers,
            TIMEOUT,
            what="every worker parked in pool_gate",
            pool=pool,
        )
        yield caller
    finally:
        open_gate(words)
        join_or_dump(caller.thread, TIMEOUT, pool)


# -- results -----------------------------------------------------------------


def f32_input(n: int, seed: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Return non-negative float32 values with zero, one, infinity and a subnormal."""
    rng = np.random.default_rng(seed)
    x = (rng.random(n) * 1000.0).astype(np.float32)
    x[:4] = np.array([0.0, 1.0, np.inf, 1e-40], dtype=np.float32)
    return x


@pytest.mark.parametrize("workers", range(1, 9))
def test_map_f32_matches_numpy_bit_for_bit(
    make_pool: MakePool, kernel: LoadKernel, workers: int
) -> None:
    """map_f32 over the whole data region equals the numpy reference bit for bit for N workers."""
    pool = make_pool(kernel("map_f32"), sw.Memory(1, 4), workers)
    data = pool.data()
    x = f32_input(len(data), seed=workers)
    data[:] = x
    result = pool.run("map", timeout=TIMEOUT)
    assert result.run_id == "map"
    assert len(result.done) == workers
    assert result.done[-1].end == len(data)
    np.testing.assert_array_equal(data.view(np.uint32), map_f32_reference(x).view(np.uint32))


@pytest.mark.parametrize("workers", [1, 3, 8])
@pytest.mark.parametrize("elements", [0, 1, 5, 1001])
def test_map_f32_partial_elements_leave_the_rest_untouched(
    make_pool: MakePool, kernel: LoadKernel, workers: int, elements: int
) -> None:
    """A run over the first `elements` elements computes them and leaves the rest bit for bit."""
    pool = make_pool(kernel("map_f32"), sw.Memory(1, 4), workers)
    data = pool.data()
    x = f32_input(len(data), seed=elements)
    data[:] = x
    pool.run(elements=elements, timeout=TIMEOUT)
    np.testing.assert_array_equal(
        data[:elements].view(np.uint32), map_f32_reference(x[:elements]).view(np.uint32)
    )
    np.testing.assert_array_equal(data[elements:].view(np.uint32), x[elements:].view(np.uint32))


# -- partitions --------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "workers"),
    [(0, 1), (0, 3), (1, 1), (1, 4), (3, 4), (5, 4), (7, 7), (8, 3), (100, 8), (1001, 6)],
)
def test_record_partitions_tile_and_match_the_reference(
    make_pool: MakePool, kernel: LoadKernel, total: int, workers: int
) -> None:
    """Each element below total is written once, by the worker whose reported range holds it."""
    pool = make_pool(kernel("record"), sw.Memory(1, 4), workers)
    data = pool.data(np.int32)
    data[:] = -1
    result = pool.run("record", elements=total, timeout=TIMEOUT)

    assert [d.worker_index for d in result.done] == list(range(workers))
    assert [(d.start, d.end) for d in result.done] == [
        reference_partition(total, workers, i) for i in range(workers)
    ]
    cursor = 0
    for done in result.done:
        assert done.start == cursor
        assert done.start <= done.end
        assert done.elapsed >= 0
        cursor = done.end
    assert cursor == total

    expected = np.full(len(data), -1, dtype=np.int32)
    for done in result.done:
        expected[done.start : done.end] = workers * 1000 + done.worker_index + 1
    np.testing.assert_array_equal(data, expected)


def test_record_default_elements_cover_the_whole_data_region(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """Without `elements`, a run covers every 4-byte element of the data region."""
    pool = make_pool(kernel("record"), sw.Memory(1, 4), 3)
    result = pool.run(timeout=TIMEOUT)
    capacity = (sw.PAGE_SIZE - pool.data_offset) // 4
    assert result.done[-1].end == capacity
    assert (pool.data(np.int32) > 3000).all()


def test_element_size_sets_the_default_element_count(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """With element_size=8 the default run covers half as many elements as with 4."""
    pool = make_pool(kernel("record"), sw.Memory(1, 4), 2)
    result = pool.run(element_size=8, timeout=TIMEOUT)
    assert result.done[-1].end == (sw.PAGE_SIZE - pool.data_offset) // 8


# -- status board ------------------------------------------------------------


def test_status_slots_read_running_before_the_first_run_and_done_after(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """Every slot reads 0 before the first run and sw.Status.DONE after it."""
    pool = make_pool(kernel("empty"), sw.Memory(1, 4), 4)
    assert pool.status.dtype == np.int32
    assert len(pool.status) == 4
    assert statuses(pool) == [sw.Status.RUNNING] * 4 == [0] * 4
    pool.run(timeout=TIMEOUT)
    assert statuses(pool) == [sw.Status.DONE] * 4 == [1] * 4


def test_status_slots_read_running_while_workers_block(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """Slots read RUNNING while the kernel blocks on a data word, and DONE once it is released."""
    pool = make_pool(kernel("pool_gate"), sw.Memory(1, 4), 2)
    words = gate_words(pool)
    open_gate(words)
    pool.run("warm-up", timeout=TIMEOUT)
    assert statuses(pool) == [sw.Status.DONE] * 2

    with blocked_run(pool) as caller:
        assert statuses(pool) == [sw.Status.RUNNING] * 2
        assert atomics.load(words, FINISHED) == 0
    result = caller.join(pool)
    assert result.run_id == "blocked"
    assert atomics.load(words, FINISHED) == 2
    assert statuses(pool) == [sw.Status.DONE] * 2


@pytest.mark.parametrize("workers", [1, 2, 15, 16, 17])
@pytest.mark.parametrize("status_offset", [0, 4, 60, 256])
def test_layout_regions_never_overlap(
    make_pool: MakePool, kernel: LoadKernel, workers: int, status_offset: int
) -> None:
    """The board, control block and data region are disjoint and the data region is 64-aligned."""
    memory = sw.Memory(1, 4)
    pool = make_pool(kernel("empty"), memory, workers, status_offset=status_offset)
    layout = pool.layout
    assert layout.workers == workers
    assert layout.status_offset == status_offset
    assert layout.status_end == status_offset + 4 * workers
    assert layout.status_end <= layout.control_offset < layout.control_end <= layout.data_offset
    assert pool.data_offset == layout.data_offset
    assert pool.data_offset % 64 == 0
    assert pool.data_offset < memory.byte_length
    board = memory.view(np.int32, offset=status_offset, count=workers)
    assert np.shares_memory(pool.status, board)
    assert not np.shares_memory(pool.status, pool.data())


def test_custom_status_offset_moves_board_and_data_and_spares_the_bytes_before(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """A status_offset moves the board and the data region and spares the bytes before it."""
    memory = sw.Memory(1, 4)
    prefix = memory.view(np.uint8, count=256)
    prefix[:] = np.arange(256, dtype=np.uint8)
    pool = make_pool(kernel("record"), memory, 2, status_offset=256)
    assert pool.layout.status_offset == 256
    assert pool.data_offset >= 256 + 2 * 4
    assert pool.data_offset % 64 == 0

    pool.run(timeout=TIMEOUT)
    np.testing.assert_array_equal(prefix, np.arange(256, dtype=np.uint8))
    board = memory.view(np.int32, offset=256, count=2)
    assert [atomics.load(board, i) for i in range(2)] == [sw.Status.DONE] * 2
    written = memory.view(np.int32, offset=pool.data_offset)
    assert ((written == 2001) | (written == 2002)).all()


def test_status_offset_at_the_last_fitting_position_leaves_one_cache_line_of_data(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """The largest status_offset that still fits leaves a 64-byte data region that a run fills."""
    memory = sw.Memory(1, 4)
    # Two slots at 64896 end at 64904; the control block (with the argument
    # slots) sits at 64960, the two worker records at 65344, the data at 65472.
    pool = make_pool(kernel("record"), memory, 2, status_offset=sw.PAGE_SIZE - 640)
    assert pool.data_offset == sw.PAGE_SIZE - 64
    result = pool.run(timeout=TIMEOUT)
    assert [(d.start, d.end) for d in result.done] == [(0, 8), (8, 16)]
    np.testing.assert_array_equal(pool.data(np.int32), [2001] * 8 + [2002] * 8)


# -- zero copy ----------------------------------------------------------------


def test_data_view_shares_memory_with_a_memory_view(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """pool.data() is a zero-copy view of the memory from data_offset on."""
    memory = sw.Memory(1, 4)
    pool = make_pool(kernel("map_f32"), memory, 2)
    data = pool.data(np.float32)
    view = memory.view(np.float32, offset=pool.data_offset)
    assert np.shares_memory(data, view)
    assert len(data) == len(view) == (memory.byte_length - pool.data_offset) // 4
    data[7] = 3.5
    assert view[7] == np.float32(3.5)


def test_write_through_buffer_is_seen_by_the_kernel(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """Bytes written through memory.buffer are the kernel's input."""
    memory = sw.Memory(1, 4)
    pool = make_pool(kernel("map_f32"), memory, 2)
    buffer = memory.buffer
    buffer[pool.data_offset : pool.data_offset + 8] = struct.pack("<ff", 4.0, 16.0)
    pool.run(elements=2, timeout=TIMEOUT)
    # 4*4/4 + 2 and 16*16/4 + 4
    assert struct.unpack("<ff", memory.buffer[pool.data_offset : pool.data_offset + 8]) == (
        6.0,
        68.0,
    )


def test_result_is_visible_in_a_view_taken_before_the_run(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """A view made before the run sees the kernel's output without being refreshed."""
    memory = sw.Memory(1, 4)
    pool = make_pool(kernel("record"), memory, 3)
    before = memory.view(np.int32, offset=pool.data_offset, count=30)
    before[:] = 0
    pool.run(elements=30, timeout=TIMEOUT)
    np.testing.assert_array_equal(before, np.repeat([3001, 3002, 3003], 10))


# -- grow ----------------------------------------------------------------------


def test_run_after_grow_covers_the_new_data_region(make_pool: MakePool, kernel: LoadKernel) -> None:
    """After grow(k) the default run spans the grown data region; old views keep their length."""
    memory = sw.Memory(1, 4)
    pool = make_pool(kernel("record"), memory, 2)
    old = pool.data(np.int32)
    old_len = len(old)
    pool.run(timeout=TIMEOUT)

    assert pool.grow(2) == 1
    assert memory.pages == 3
    result = pool.run(timeout=TIMEOUT)
    capacity = (3 * sw.PAGE_SIZE - pool.data_offset) // 4
    assert result.done[-1].end == capacity
    assert len(old) == old_len
    fresh = pool.data(np.int32)
    assert len(fresh) == capacity
    assert np.shares_memory(old, fresh)
    assert ((fresh == 2001) | (fresh == 2002)).all()
    np.testing.assert_array_equal(fresh[capacity // 2 :], 2002)


def test_grow_past_maximum_raises_and_changes_nothing(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """Growing past the maximum raises ValueError and leaves the pages and the runs unchanged."""
    memory = sw.Memory(1, 4)
    pool = make_pool(kernel("record"), memory, 2)
    capacity = len(pool.data(np.int32))
    with pytest.raises(ValueError, match=r"delta_pages must be <= 3 .*\(got 4\)"):
        pool.grow(4)
    assert memory.pages == 1
    assert len(pool.data(np.int32)) == capacity
    assert pool.run(timeout=TIMEOUT).done[-1].end == capacity


# -- async ---------------------------------------------------------------------


def test_run_async_returns_the_run_result(make_pool: MakePool, kernel: LoadKernel) -> None:
    """Awaiting run_async gives the same result a blocking run would."""
    pool = make_pool(kernel("record"), sw.Memory(1, 4), 3)
    data = pool.data(np.int32)
    data[:] = 0
    result = asyncio.run(pool.run_async("async", elements=9, timeout=TIMEOUT))
    assert isinstance(result, sw.RunResult)
    assert result.run_id == "async"
    assert [(d.start, d.end) for d in result.done] == [(0, 3), (3, 6), (6, 9)]
    np.testing.assert_array_equal(data[:9], np.repeat([3001, 3002, 3003], 3))
    assert (data[9:] == 0).all()


def test_event_loop_keeps_running_while_a_run_is_in_flight(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """A concurrent task keeps ticking while run_async waits for a blocked kernel."""
    pool = make_pool(kernel("pool_gate"), sw.Memory(1, 4), 2)
    words = gate_words(pool)

    async def main() -> tuple[int, int, sw.RunResult]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        tick_task = asyncio.create_task(ticker())
        run = asyncio.create_task(pool.run_async("async-blocked", timeout=TIMEOUT))
        try:
            async with asyncio.timeout(TIMEOUT):
                while atomics.load(words, ENTERED) < pool.workers:
                    await asyncio.sleep(0.001)
                parked_at = ticks
                while ticks < parked_at + 20:
                    await asyncio.sleep(0.001)
            assert not run.done()
            ticks_while_blocked = ticks - parked_at
        finally:
            open_gate(words)
            result = await asyncio.wait_for(run, TIMEOUT)
            tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tick_task
        return ticks_while_blocked, atomics.load(words, FINISHED), result

    ticks_while_blocked, finished, result = asyncio.run(main())
    assert ticks_while_blocked >= 20
    assert finished == 2
    assert result.run_id == "async-blocked"


# -- errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workers", "error", "match"),
    [
        (0, ValueError, r"workers must be in \[1, 1024\] \(got 0\)"),
        (-1, ValueError, r"workers must be in \[1, 1024\] \(got -1\)"),
        (2000, ValueError, r"workers must be in \[1, 1024\] \(got 2000\)"),
        (1.5, TypeError, r"'float' object cannot be interpreted as an integer"),
        (True, TypeError, r"workers must be an int \(got True\)"),
    ],
)
def test_bad_worker_counts_are_refused(
    make_pool: MakePool, kernel: LoadKernel, workers: object, error: type, match: str
) -> None:
    """A worker count that is not an int in [1, 1024] raises before any thread starts."""
    before = set(threading.enumerate())
    with pytest.raises(error, match=match):
        make_pool(kernel("empty"), sw.Memory(1, 4), workers)
    assert set(threading.enumerate()) <= before


def test_kernel_and_memory_of_the_wrong_type_are_refused(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """Passing something other than a Kernel or a Memory raises TypeError naming the argument."""
    with pytest.raises(TypeError, match=r"kernel must be a sharedwasm.Kernel \(got bytes\)"):
        make_pool(b"\0asm", sw.Memory(1, 4))
    with pytest.raises(
        TypeError, match=r"memory must be a sharedwasm.Memory or None \(got bytearray\)"
    ):
        make_pool(kernel("empty"), bytearray(sw.PAGE_SIZE))


@pytest.mark.parametrize(
    ("status_offset", "match"),
    [
        (2, r"status_offset must be a multiple of 4 \(got 2\)"),
        (-4, r"status_offset must be >= 0 \(got -4\)"),
        (sw.PAGE_SIZE - 128, r"status_offset must leave room for data"),
        (sw.PAGE_SIZE, r"status_offset must leave room for data"),
        (10 * sw.PAGE_SIZE, r"status_offset must leave room for data"),
    ],
)
def test_bad_status_offsets_raise_layout_error(
    make_pool: MakePool, kernel: LoadKernel, status_offset: int, match: str
) -> None:
    """A status_offset that is misaligned, negative or leaves no data region raises LayoutError."""
    memory = sw.Memory(1, 4)
    with pytest.raises(sw.LayoutError, match=match):
        make_pool(kernel("empty"), memory, 2, status_offset=status_offset)
    # The failed pool did not claim the memory.
    make_pool(kernel("empty"), memory, 2)


def test_elements_past_the_data_region_raise_layout_error(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """Asking for more elements than the data region holds raises LayoutError and runs nothing."""
    pool = make_pool(kernel("record"), sw.Memory(1, 4), 2)
    data = pool.data(np.int32)
    data[:] = 0
    capacity = len(data)
    with pytest.raises(
        sw.LayoutError, match=rf"elements must be <= {capacity}, .*\(got {capacity + 1}\)"
    ):
        pool.run(elements=capacity + 1, timeout=TIMEOUT)
    assert (data == 0).all()
    assert pool.run(elements=capacity, timeout=TIMEOUT).done[-1].end == capacity


def test_negative_elements_raise_value_error(make_pool: MakePool, kernel: LoadKernel) -> None:
    """A negative element count raises ValueError."""
    pool = make_pool(kernel("empty"), sw.Memory(1, 4), 2)
    with pytest.raises(ValueError, match=r"elements must be >= 0 \(got -1\)"):
        pool.run(elements=-1, timeout=TIMEOUT)


def test_second_pool_on_an_open_memory_is_refused_until_the_first_closes(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """A memory carries one open pool at a time; closing it frees the memory for another."""
    memory = sw.Memory(1, 4)
    first = make_pool(kernel("empty"), memory, 2)
    with pytest.raises(sw.LayoutError, match=rf"memory is already used by {first.name}\b"):
        make_pool(kernel("record"), memory, 2)
    first.close()
    second = make_pool(kernel("record"), memory, 2)
    assert second.run(elements=4, timeout=TIMEOUT).done[-1].end == 4


def test_run_and_grow_after_close_raise_pool_closed_error(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """A closed pool refuses run, run_async and grow with PoolClosedError."""
    memory = sw.Memory(1, 4)
    pool = make_pool(kernel("empty"), memory, 2)
    pool.close()
    closed = rf"{pool.name} is closed"
    with pytest.raises(sw.PoolClosedError, match=closed):
        pool.run(timeout=TIMEOUT)
    with pytest.raises(sw.PoolClosedError, match=closed):
        asyncio.run(pool.run_async(timeout=TIMEOUT))
    with pytest.raises(sw.PoolClosedError, match=closed):
        pool.grow(1)
    assert memory.pages == 1
    assert isinstance(sw.PoolClosedError(), RuntimeError)


def test_close_is_idempotent_and_ends_the_workers(make_pool: MakePool, kernel: LoadKernel) -> None:
    """close() may be called repeatedly, also through the context manager, and its threads exit."""
    pool = make_pool(kernel("empty"), sw.Memory(1, 4), 3)
    assert len(pool_threads(pool.name)) == 3
    with pool:
        pool.run(timeout=TIMEOUT)
    pool.close()
    pool.close()
    wait_until(lambda: not pool_threads(pool.name), TIMEOUT, what="workers exited", pool=pool)
    assert "closed" in repr(pool)


def test_kernel_trap_names_the_partition_and_the_pool_recovers(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """A trap in one partition raises KernelTrap with that worker's range; the next run succeeds."""
    pool = make_pool(kernel("pool_increment"), sw.Memory(1, 4), 2)
    data = pool.data(np.int32)
    data[:] = 0
    data[70] = -1
    with pytest.raises(
        sw.KernelTrap, match=r"worker 1 trapped in compute_partition\(50, 100\): .*unreachable"
    ) as info:
        pool.run(elements=100, timeout=TIMEOUT)
    trap = info.value
    assert (trap.worker_index, trap.start, trap.end) == (1, 50, 100)
    assert trap.traps == (trap,)
    assert isinstance(trap.__cause__, wasmtime.Trap)
    assert statuses(pool) == [sw.Status.DONE, sw.Status.TRAPPED]
    # Worker 0 finished its partition; worker 1 stopped at the trapping element.
    assert (data[:70] == 1).all()
    assert data[70] == -1
    assert (data[71:] == 0).all()

    data[:] = 0
    result = pool.run(elements=100, timeout=TIMEOUT)
    assert [(d.start, d.end) for d in result.done] == [(0, 50), (50, 100)]
    assert (data[:100] == 1).all()
    assert (data[100:] == 0).all()
    assert statuses(pool) == [sw.Status.DONE] * 2


def test_kernel_trap_in_several_partitions_lists_every_trap(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """When several workers trap, the error is the first worker's and .traps holds them all."""
    pool = make_pool(kernel("pool_increment"), sw.Memory(1, 4), 3)
    data = pool.data(np.int32)
    data[:] = 0
    data[[1, 25]] = -1
    with pytest.raises(
        sw.KernelTrap, match=r"worker 0 trapped in compute_partition\(0, 10\)"
    ) as info:
        pool.run(elements=30, timeout=TIMEOUT)
    assert [(t.worker_index, t.start, t.end) for t in info.value.traps] == [(0, 0, 10), (2, 20, 30)]
    assert statuses(pool) == [sw.Status.TRAPPED, sw.Status.DONE, sw.Status.TRAPPED]


def test_timeout_raises_run_timeout_and_the_next_run_waits_for_the_blocked_one(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """A run that outlasts its timeout raises RunTimeout; once released, the next run succeeds."""
    pool = make_pool(kernel("pool_gate"), sw.Memory(1, 4), 2)
    words = gate_words(pool)
    atomics.store(words, GATE, 0)
    try:
        with pytest.raises(
            sw.RunTimeout, match=re.escape("run 'stuck' did not finish within 0.2 s")
        ) as info:
            pool.run("stuck", timeout=0.2)
        assert isinstance(info.value, TimeoutError)
        assert statuses(pool) == [sw.Status.RUNNING] * 2
        with pytest.raises(sw.RunTimeout, match=r"an earlier run of .* was still in flight"):
            pool.run("queued", timeout=0.05)
    finally:
        open_gate(words)
    result = pool.run("next", timeout=TIMEOUT)
    assert result.run_id == "next"
    assert atomics.load(words, FINISHED) == 4
    assert statuses(pool) == [sw.Status.DONE] * 2


# -- concurrency -------------------------------------------------------------------


def test_concurrent_runs_from_several_threads_are_serialised(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """Runs called from several threads at once each complete whole, one after another."""
    pool = make_pool(kernel("pool_increment"), sw.Memory(1, 4), 2)
    data = pool.data(np.int32)
    data[:] = 0
    callers, runs = 4, 25

    def caller(c: int) -> list[sw.RunResult]:
        return [pool.run(f"{c}-{r}", elements=999, timeout=TIMEOUT) for r in range(runs)]

    threads = [InThread(lambda c=c: caller(c)) for c in range(callers)]  # type: ignore[misc]
    results = [t.join(pool) for t in threads]

    for c, mine in enumerate(results):
        assert [r.run_id for r in mine] == [f"{c}-{r}" for r in range(runs)]
        for r in mine:
            assert [(d.start, d.end) for d in r.done] == [(0, 500), (500, 999)]
    # A lost or overlapping run would leave some element short of the count.
    np.testing.assert_array_equal(data[:999], callers * runs)
    assert (data[999:] == 0).all()


def test_pool_dropped_without_close_ends_its_workers(kernel: LoadKernel) -> None:
    """Collecting an unclosed pool tells its workers to exit."""
    memory = sw.Memory(1, 4)
    pool = sw.WorkerPool(kernel("empty"), memory, 2)
    name = pool.name
    try:
        pool.run(timeout=TIMEOUT)
        assert len(pool_threads(name)) == 2
    except BaseException:
        pool.close()
        raise
    del pool
    gc.collect()
    wait_until(lambda: not pool_threads(name), TIMEOUT, what=f"workers of dropped {name} exited")
    # The memory is free for a new pool.
    with sw.WorkerPool(kernel("empty"), memory, 1) as again:
        again.run(timeout=TIMEOUT)


def test_kernel_is_reusable_across_pools_at_once(kernel: LoadKernel, make_pool: MakePool) -> None:
    """One compiled kernel drives two open pools over two memories independently."""
    k = kernel("map_f32")
    pools = [make_pool(k, sw.Memory(1, 4), n) for n in (2, 3)]
    inputs = [f32_input(len(p.data()), seed=n) for n, p in enumerate(pools)]
    for p, x in zip(pools, inputs, strict=True):
        p.data()[:] = x
    for p in pools:
        p.run(timeout=TIMEOUT)
    for p, x in zip(pools, inputs, strict=True):
        np.testing.assert_array_equal(
            p.data().view(np.uint32), map_f32_reference(x).view(np.uint32)
        )


# -- defaults ----------------------------------------------------------------------


def test_default_worker_count_is_the_cpus_this_process_may_use(kernel: LoadKernel) -> None:
    """WorkerPool(kernel, memory) starts one worker per CPU in the affinity mask."""
    expected = len(os.sched_getaffinity(0))
    with sw.WorkerPool(kernel("record"), sw.Memory(1, 4)) as pool:
        name = pool.name
        assert pool.workers == expected
        assert len(pool.status) == expected
        assert len(pool.run(timeout=TIMEOUT).done) == expected
    wait_until(lambda: not pool_threads(name), TIMEOUT, what=f"workers of {name} exited")


def test_control_block_describes_the_current_run(make_pool: MakePool, kernel: LoadKernel) -> None:
    """The control words give observers the run's element count, size, workers and data offset."""
    from sharedwasm._layout import CONTROL_WORDS, Control

    pool = make_pool(kernel("empty"), sw.Memory(2, 4), 2)
    pool.run(elements=100, element_size=8)
    control = pool.memory.view(np.int32, offset=pool.layout.control_offset, count=CONTROL_WORDS)
    words = [atomics.load(control, int(w)) for w in Control]
    seen = dict(zip([w.name for w in Control], words, strict=False))
    assert (seen["ELEMENTS"], seen["ELEMENT_SIZE"], seen["PENDING"]) == (100, 8, 0)
    assert (seen["WORKERS"], seen["DATA_OFFSET"]) == (2, pool.data_offset)
