"""The heap: blocks never overlap, stay aligned, are reused after free, and grow with the memory."""

from __future__ import annotations

import gc
import itertools
import threading

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import sharedwasm as sw
from sharedwasm._heap import ALIGN, Heap

START = 1024
EMPTY_WAT = """(module (import "env" "memory" (memory 1 MAX shared))
  (func (export "entry:touch") (param i32 i32 i32)))"""


class HeapMachine(RuleBasedStateMachine):
    """Random allocations, frees and growth against the invariants of a first-fit heap."""

    def __init__(self) -> None:
        super().__init__()
        self.memory = sw.Memory(2, 64)
        self.heap = Heap(self.memory, START)
        self.blocks: list[object] = []

    @rule(nbytes=st.integers(0, 70_000))
    def allocate(self, nbytes: int) -> None:
        block = self.heap.allocate(nbytes)
        if block is None:
            # Nothing fits: then no free range is large enough.
            assert self.heap.largest_free < max(nbytes, 1)
            return
        assert block.start % ALIGN == 0
        assert block.size >= max(nbytes, 1)
        assert block.size % ALIGN == 0
        self.blocks.append(block)

    @precondition(lambda self: self.blocks)
    @rule(data=st.data())
    def free(self, data: st.DataObject) -> None:
        block = self.blocks.pop(data.draw(st.integers(0, len(self.blocks) - 1)))
        self.heap.free(block)  # type: ignore[arg-type]
        self.heap.free(block)  # type: ignore[arg-type]  # twice: a no-op

    @precondition(lambda self: self.blocks)
    @rule(data=st.data())
    def release_later(self, data: st.DataObject) -> None:
        """The path of a dropped array: queued, freed by the next operation."""
        block = self.blocks.pop(data.draw(st.integers(0, len(self.blocks) - 1)))
        self.heap.release_later(block)  # type: ignore[arg-type]

    @precondition(lambda self: self.memory.pages < self.memory.maximum)
    @rule(pages=st.integers(1, 4))
    def grow(self, pages: int) -> None:
        pages = min(pages, self.memory.maximum - self.memory.pages)
        self.memory.grow(pages)
        self.heap.extend(self.memory.byte_length)

    @rule(data=st.data())
    def reuse_after_free(self, data: st.DataObject) -> None:
        """A freed block's bytes are given out again to a request of the same size."""
        block = self.heap.allocate(data.draw(st.integers(1, 4096)))
        if block is None:
            return
        self.heap.free(block)
        again = self.heap.allocate(block.size)
        assert again is not None
        assert again.start <= block.start
        self.blocks.append(again)

    @invariant()
    def ranges_tile_the_heap(self) -> None:
        live, free = self.heap.snapshot()
        assert self.heap.end == self.memory.byte_length
        pieces = sorted(live + free)
        position = START
        for lo, hi in pieces:
            assert lo == position, f"gap or overlap at {position}: {pieces}"
            assert hi > lo
            position = hi
        assert position == self.heap.end
        # Free ranges are coalesced: no two touch.
        for (_, hi), (lo, _) in itertools.pairwise(free):
            assert hi < lo
        live_starts = {lo for lo, _ in live}
        assert all(b.start in live_starts for b in self.blocks)  # type: ignore[attr-defined]


TestHeapMachine = HeapMachine.TestCase
TestHeapMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


@pytest.fixture
def pool():
    kernel = sw.Kernel.from_wat(EMPTY_WAT.replace("MAX", "65536"))
    with sw.WorkerPool(kernel, workers=2) as p:
        yield p


def test_arrays_are_numpy_arrays_in_the_shared_memory(pool: sw.WorkerPool) -> None:
    a = pool.empty((3, 5), np.float64)
    z = pool.zeros(7, np.int16)
    f = pool.full(4, 2.5, np.float32)
    like = pool.empty_like(np.ones((2, 2), np.uint8))
    copied = pool.asarray([[1, 2], [3, 4]])
    assert type(a) is np.ndarray
    assert a.shape == (3, 5)
    assert a.dtype == np.float64
    assert a.flags.c_contiguous
    assert a.flags.writeable
    np.testing.assert_array_equal(z, np.zeros(7, np.int16))
    np.testing.assert_array_equal(f, [2.5] * 4)
    assert like.shape == (2, 2)
    assert like.dtype == np.uint8
    np.testing.assert_array_equal(copied, [[1, 2], [3, 4]])
    whole = pool.memory.view(np.uint8)
    base = whole.__array_interface__["data"][0]
    for arr in (a, z, f, like, copied):
        address = arr.__array_interface__["data"][0]
        assert (address - base) % 64 == 0
        assert np.shares_memory(arr, whole)
        assert address - base >= pool.data_offset
    assert pool.asarray(a) is a  # already in the heap: no copy
    assert pool.asarray(a, np.float32) is not a


def test_block_is_freed_when_the_last_view_is_gone(pool: sw.WorkerPool) -> None:
    heap = pool._heap
    before = heap.free_bytes
    a = pool.empty(10_000, np.float32)
    view = a[100:200]
    del a
    gc.collect()
    assert heap.free_bytes < before  # the view keeps the block
    view[:] = 1.0
    del view
    gc.collect()
    assert heap.free_bytes == before


def test_free_releases_at_once_and_the_array_is_refused_after(pool: sw.WorkerPool) -> None:
    a = pool.zeros(1000, np.float32)
    start = a.__array_interface__["data"][0]
    pool.free(a)
    pool.free(a)  # twice: a no-op
    b = pool.zeros(1000, np.float32)
    assert b.__array_interface__["data"][0] == start  # reused
    with pytest.raises(ValueError, match=r"'arg0' .* was freed with pool.free"):
        pool.run("r", a, entry="touch")
    with pytest.raises(ValueError, match=r"a must be an array of .*'s heap"):
        pool.free(np.zeros(3))
    with pytest.raises(TypeError, match="a must be a numpy array"):
        pool.free([1, 2])  # type: ignore[arg-type]


def test_heap_grows_the_memory_up_to_its_maximum_then_out_of_memory() -> None:
    """A kernel declaring 64 pages (4 MiB): the pool's memory grows to it, not past it."""
    kernel = sw.Kernel.from_wat(EMPTY_WAT.replace("MAX", "64"))
    with sw.WorkerPool(kernel, workers=1) as pool:
        start_pages = pool.memory.pages
        assert start_pages < 64
        big = pool.zeros(3 * 2**20, np.uint8)
        assert pool.memory.pages > start_pages
        big[:] = 7
        with pytest.raises(sw.OutOfMemory, match=r"cannot allocate 2097152 bytes") as info:
            pool.empty(2 * 2**20, np.uint8)
        assert isinstance(info.value, MemoryError)
        assert info.value.requested == 2 * 2**20
        assert 0 < info.value.available < 2 * 2**20
        assert (big == 7).all()  # nothing moved or changed
        del big
        gc.collect()
        assert pool.empty(2 * 2**20, np.uint8).size == 2 * 2**20


def test_growth_waits_for_the_run_in_flight(pool: sw.WorkerPool) -> None:
    """Allocating from another thread while a run is in flight grows only after it."""
    from sharedwasm.testing import join_or_dump

    gate = pool.zeros(1, np.int32)
    grown: list[int] = []
    pool._lock.acquire()  # stands in for a run holding the pool

    def allocate() -> None:
        grown.append(pool.zeros(16 * 2**20, np.uint8).size)

    thread = threading.Thread(target=allocate, daemon=True)
    thread.start()
    thread.join(0.3)
    assert thread.is_alive()
    assert not grown
    pool._lock.release()
    join_or_dump(thread, 10.0, pool)
    assert grown == [16 * 2**20]
    assert gate[0] == 0


@pytest.mark.parametrize(
    ("shape", "dtype", "error", "match"),
    [
        ((-1,), np.float32, ValueError, "negative dimensions"),
        ((2.5,), np.float32, TypeError, "shape must be an int or a tuple of ints"),
        (True, np.float32, TypeError, "shape must be an int or a tuple of ints"),
        (3, object, TypeError, "without objects"),
        (3, "not a dtype", TypeError, "dtype must be a numpy dtype"),
    ],
)
def test_bad_shapes_and_dtypes(pool: sw.WorkerPool, shape, dtype, error, match) -> None:
    with pytest.raises(error, match=match):
        pool.empty(shape, dtype)


def test_closed_pool_makes_no_arrays() -> None:
    kernel = sw.Kernel.from_wat(EMPTY_WAT.replace("MAX", "64"))
    pool = sw.WorkerPool(kernel, workers=1)
    kept = pool.full(3, 1.0)
    pool.close()
    with pytest.raises(sw.PoolClosedError):
        pool.empty(3)
    np.testing.assert_array_equal(kept, [1.0, 1.0, 1.0])  # arrays made before stay valid
