"""The heap: numpy arrays placed in a pool's data region, so that kernels use them in place.

`WorkerPool.empty`, `zeros`, `full`, `empty_like`, `asarray` and `partials`
allocate a block here and return an ordinary ndarray over it. A block is
`ALIGN`-byte aligned (any dtype, and a cache line, so that two arrays never
share one) and is freed when the array and every view of it are gone, or at
`free`. The heap covers `[start, end)` of the memory and grows with it; the
pool decides when the memory may grow (never during a run).

Frees come from weak-reference callbacks, which run whenever the last view
drops, on any thread, possibly in the middle of an allocation on the same
thread. So a callback only appends the block to a queue (one atomic deque
operation), and every operation under the lock drains the queue first.
"""

from __future__ import annotations

import abc
import bisect
import collections
import math
import operator
import threading
import weakref
from typing import Any

import numpy as np
import numpy.typing as npt

from ._errors import OutOfMemory, describe
from ._layout import DATA_ALIGN, align_up
from ._memory import Memory, memory_of
from ._wasmtime import PAGE_SIZE

ALIGN = DATA_ALIGN

GROWTH = 8
"""When the heap grows the memory, it adds at least 1/GROWTH of its pages, so
that many small arrays cost few grows."""


class Block:
    """One allocation: bytes `[start, start + size)` of the memory."""

    __slots__ = ("fill", "live", "owner", "size", "start")

    def __init__(self, start: int, size: int) -> None:
        self.start = start
        self.size = size
        self.live = True
        self.fill: Any = None
        """For `WorkerPool.partials`: the value every run that is passed the
        block writes over it first; None for an ordinary array."""
        self.owner: weakref.ref[npt.NDArray[np.uint8]] | None = None

    def __repr__(self) -> str:
        return (
            f"<Block [{self.start}, {self.start + self.size}) {'live' if self.live else 'freed'}>"
        )


class Heap:
    """A first-fit allocator with coalescing over part of one memory. Thread-safe."""

    def __init__(self, memory: Memory, start: int) -> None:
        self._memory = memory
        self.start = start
        self.end = start
        self._free_starts: list[int] = []
        self._free_ends: list[int] = []
        self._live: dict[int, Block] = {}
        self._live_starts: list[int] = []
        self._released: collections.deque[Block] = collections.deque()
        self._lock = threading.Lock()
        self.extend(memory.byte_length)

    # -- bookkeeping, under the lock ----------------------------------------

    def _drain(self) -> None:
        released = self._released
        while released:
            block = released.popleft()
            if block.live:
                self._release(block)

    def _release(self, block: Block) -> None:
        block.live = False
        del self._live[block.start]
        del self._live_starts[bisect.bisect_left(self._live_starts, block.start)]
        self._add_free(block.start, block.start + block.size)

    def _add_free(self, lo: int, hi: int) -> None:
        starts, ends = self._free_starts, self._free_ends
        i = bisect.bisect_left(starts, lo)
        # Coalesce with the free range just before and just after.
        if i and ends[i - 1] == lo:
            i -= 1
            lo = starts[i]
            del starts[i], ends[i]
        if i < len(starts) and starts[i] == hi:
            hi = ends[i]
            del starts[i], ends[i]
        starts.insert(i, lo)
        ends.insert(i, hi)

    # -- the allocator ------------------------------------------------------

    def extend(self, end: int) -> None:
        """Take `[self.end, end)` into the heap (the memory grew to `end`)."""
        with self._lock:
            if end > self.end:
                self._add_free(self.end, end)
                self.end = end

    def allocate(self, nbytes: int) -> Block | None:
        """Reserve `nbytes` (at least 1, rounded up to ALIGN); None if nothing fits now."""
        size = align_up(max(nbytes, 1), ALIGN)
        with self._lock:
            self._drain()
            starts, ends = self._free_starts, self._free_ends
            for i, lo in enumerate(starts):
                hi = ends[i]
                if hi - lo >= size:
                    if hi - lo == size:
                        del starts[i], ends[i]
                    else:
                        starts[i] = lo + size
                    block = Block(lo, size)
                    self._live[lo] = block
                    bisect.insort(self._live_starts, lo)
                    return block
        return None

    def shortfall(self, nbytes: int) -> int:
        """Bytes the heap must grow by at its end for `nbytes` to fit."""
        return max(0, align_up(max(nbytes, 1), ALIGN) - self.tail_free)

    @property
    def tail_free(self) -> int:
        """Bytes of the free range that ends where the heap ends (0 if the last block is live)."""
        with self._lock:
            self._drain()
            if self._free_ends and self._free_ends[-1] == self.end:
                return self.end - self._free_starts[-1]
            return 0

    def free(self, block: Block) -> None:
        """Return a live block to the heap at once."""
        with self._lock:
            self._drain()
            if block.live:
                self._release(block)

    def release_later(self, block: Block) -> None:
        """Queue a block to be freed by the next operation (safe from any callback)."""
        self._released.append(block)

    def find(self, start: int, nbytes: int) -> Block | None:
        """Return the live block that holds bytes `[start, start + nbytes)`, if one does."""
        with self._lock:
            self._drain()
            starts = self._live_starts
            i = bisect.bisect_right(starts, start) - 1
            if i < 0:
                return None
            block = self._live[starts[i]]
            if start + nbytes <= block.start + block.size:
                return block
            return None

    def snapshot(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Live and free ranges as `(start, end)` pairs in address order, for checks."""
        with self._lock:
            self._drain()
            live = [(s, s + self._live[s].size) for s in self._live_starts]
            free = list(zip(self._free_starts, self._free_ends, strict=True))
            return live, free

    @property
    def free_bytes(self) -> int:
        """Bytes not allocated (in however many pieces)."""
        with self._lock:
            self._drain()
            return sum(e - s for s, e in zip(self._free_starts, self._free_ends, strict=True))

    @property
    def largest_free(self) -> int:
        """Bytes of the largest free range."""
        with self._lock:
            self._drain()
            return max(
                (e - s for s, e in zip(self._free_starts, self._free_ends, strict=True)),
                default=0,
            )

    def array(self, block: Block, shape: tuple[int, ...], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
        """Return an array of `shape` and `dtype` over `block`, which it keeps allocated.

        Every view numpy makes of the result has the block's byte array as its
        base (numpy collapses chains of views to the first array that is not
        a view of another array), so the block is released exactly when the
        last of them is gone.
        """
        raw = self._memory._raw(block.start, block.size)
        owner: npt.NDArray[np.uint8] = np.frombuffer(memoryview(raw).cast("B"), np.uint8)
        release = self.release_later
        block.owner = weakref.ref(owner, lambda _ref: release(block))
        count = math.prod(shape) * dtype.itemsize
        return owner[:count].view(dtype).reshape(shape)


class Arrays:
    """What a pool knows about the arrays of its heap, for passing them without lookups.

    `known` maps `id(array)` to the array (weakly), its block and its wasm
    address, for each array the pool handed out; any other array (a slice,
    a reshape) is found by its address.
    """

    def __init__(self, memory: Memory, heap: Heap) -> None:
        self.memory = memory
        self.heap = heap
        self.known: dict[int, tuple[weakref.ref[Any], Block, int]] = {}

    def register(self, array: npt.NDArray[Any], block: Block) -> None:
        key = id(array)
        known = self.known

        def forget(ref: weakref.ref[Any]) -> None:
            hit = known.get(key)
            if hit is not None and hit[0] is ref:
                del known[key]

        known[key] = (weakref.ref(array, forget), block, block.start)

    def locate(self, array: npt.NDArray[Any]) -> tuple[Block | None, int]:
        """Return the live block holding `array` and its wasm address; (None, address) if none.

        Raises:
            ValueError: the array is in another memory, or in this one but
                not C-contiguous or not inside a live block of the heap.
        """
        hit = self.known.get(id(array))
        if hit is not None and hit[0]() is array:
            return hit[1], hit[2]
        address = int(array.__array_interface__["data"][0])
        memory = self.memory
        if not memory._owns(address):
            other = memory_of(address)
            if other is not None:
                raise ValueError("is an array of another sharedwasm memory")
            return None, address
        offset = address - memory._base
        if not array.flags.c_contiguous:
            raise ValueError(
                "is a non-contiguous view of the shared memory (a kernel sees bytes in a "
                "row): pass a C-contiguous array, or np.ascontiguousarray(...) of it"
            )
        block = self.heap.find(offset, array.nbytes)
        if block is None:
            raise ValueError(
                f"lies at byte {offset} of the pool's memory but not inside a live array of "
                "its heap (freed with pool.free, or a view of pool.data() or of the board): "
                "allocate it with pool.empty, zeros, full or asarray"
            )
        return block, offset


def _shape(shape: object) -> tuple[int, ...]:
    items = shape if isinstance(shape, tuple) else (shape,)
    if any(isinstance(d, bool) or not hasattr(d, "__index__") for d in items):
        raise TypeError(f"shape must be an int or a tuple of ints (got {shape!r})")
    dims = tuple(operator.index(d) for d in items)
    if any(d < 0 for d in dims):
        raise ValueError(f"shape must not have negative dimensions (got {shape!r})")
    return dims


def _dtype(dtype: npt.DTypeLike) -> np.dtype[Any]:
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError, SyntaxError) as exc:
        raise TypeError(f"dtype must be a numpy dtype (got {dtype!r}): {exc}") from None
    if dt.hasobject or dt.itemsize == 0 or dt.subdtype is not None:
        raise TypeError(
            f"dtype must be a fixed-size dtype without objects or subarrays (got {dt!r})"
        )
    return dt


class HeapArrays(abc.ABC):
    """The numpy-style array constructors of `WorkerPool`, over its heap.

    A mixin: the pool provides the heap, the registry of its arrays, its run
    lock and the three members below.
    """

    name: str
    _memory: Memory
    _heap: Heap
    _arrays: Arrays
    _lock: threading.Lock

    @property
    @abc.abstractmethod
    def workers(self) -> int:
        """The pool's worker count: the length of a `partials` array."""

    @abc.abstractmethod
    def _check_closed(self) -> None:
        """Raise `PoolClosedError` if the pool is closed."""

    @abc.abstractmethod
    def _quiesce(self) -> None:
        """With the run lock held, wait for a run left in flight to end, so
        that the memory never grows under a run."""

    def empty(
        self, shape: int | tuple[int, ...], dtype: npt.DTypeLike = np.float32
    ) -> npt.NDArray[Any]:
        """Return a new uninitialised C-order array in the pool's heap, like `numpy.empty`.

        The array lives in the shared memory (64-byte aligned), so it passes
        to a kernel with no copy. Its block is freed when the array and every
        view of it are gone, or at `free`. When the heap is full the memory
        grows (after the run in flight, if any), up to its maximum.

        Raises:
            TypeError: `shape` is not an int or a tuple of ints, or `dtype`
                is not a fixed-size dtype without Python objects.
            ValueError: a dimension is negative.
            OutOfMemory: the array does not fit, even at the memory's maximum.
            PoolClosedError: the pool is closed.
        """
        self._check_closed()
        dims, dt = _shape(shape), _dtype(dtype)
        nbytes = math.prod(dims) * dt.itemsize
        block = self._allocate(nbytes, locked=False)
        array = self._heap.array(block, dims, dt)
        self._arrays.register(array, block)
        return array

    def zeros(
        self, shape: int | tuple[int, ...], dtype: npt.DTypeLike = np.float32
    ) -> npt.NDArray[Any]:
        """Return a new array of zeros in the pool's heap, like `numpy.zeros` (see `empty`)."""
        array = self.empty(shape, dtype)
        array[...] = 0
        return array

    def full(
        self, shape: int | tuple[int, ...], fill_value: Any, dtype: npt.DTypeLike | None = None
    ) -> npt.NDArray[Any]:
        """Return a new array filled with `fill_value` in the pool's heap, like `numpy.full`.

        `dtype` defaults to that of `numpy.array(fill_value)`.
        """
        array = self.empty(shape, np.array(fill_value).dtype if dtype is None else dtype)
        array[...] = fill_value
        return array

    def empty_like(
        self, prototype: npt.ArrayLike, dtype: npt.DTypeLike | None = None
    ) -> npt.NDArray[Any]:
        """Return a new uninitialised array of `prototype`'s shape and dtype in the heap."""
        proto = np.asarray(prototype)
        return self.empty(proto.shape, proto.dtype if dtype is None else dtype)

    def zeros_like(
        self, prototype: npt.ArrayLike, dtype: npt.DTypeLike | None = None
    ) -> npt.NDArray[Any]:
        """Return a new array of zeros of `prototype`'s shape and dtype in the heap."""
        proto = np.asarray(prototype)
        return self.zeros(proto.shape, proto.dtype if dtype is None else dtype)

    def full_like(
        self, prototype: npt.ArrayLike, fill_value: Any, dtype: npt.DTypeLike | None = None
    ) -> npt.NDArray[Any]:
        """Return a new array of `prototype`'s shape and dtype filled with `fill_value`."""
        proto = np.asarray(prototype)
        return self.full(proto.shape, fill_value, proto.dtype if dtype is None else dtype)

    def asarray(self, a: npt.ArrayLike, dtype: npt.DTypeLike | None = None) -> npt.NDArray[Any]:
        """Return `a` as an array of the pool's heap: itself if it already is one, else a copy.

        Like `numpy.asarray`, a conversion happens only when it must: an
        array of this heap with the dtype asked for is returned as it is;
        anything else is copied once into a new block (in C order).
        """
        if isinstance(a, np.ndarray) and (dtype is None or a.dtype == np.dtype(dtype)):
            hit = self._arrays.known.get(id(a))
            if hit is not None and hit[0]() is a and hit[1].live:
                same: npt.NDArray[Any] = a
                return same
        source = np.asarray(a, dtype=dtype)
        array = self.empty(source.shape, source.dtype)
        array[...] = source
        return array

    def partials(self, dtype: npt.DTypeLike = np.float64, fill: Any = 0) -> npt.NDArray[Any]:
        """Return an array with one element per worker, reset to `fill` before each run it is in.

        For reductions: worker `i` adds its share's result into element
        `sw_worker_index()` (C: `SW_PARTIAL(p) += ...`), and the caller
        combines the N elements after the run, in worker order, so a static
        run's result is the same on every run. Use `fill=0` for a sum,
        `-inf` for a max, `inf` for a min. Nothing needs resetting by hand:
        the pool writes `fill` over the array as it binds it to a run.
        """
        dt = _dtype(dtype)
        array = self.empty(self.workers, dt)
        array[...] = fill
        hit = self._arrays.known[id(array)]
        hit[1].fill = (dt, fill)
        return array

    def free(self, a: npt.NDArray[Any]) -> None:
        """Free the heap block that `a` (an array of this pool's heap, or a view of one) is in.

        At once, whatever views still exist: using them afterwards reads and
        writes memory that a later array may own, and passing them to a run
        is refused. Freeing the same block twice is a no-op.

        Raises:
            TypeError: `a` is not a numpy array.
            ValueError: `a` is not in this pool's heap.
        """
        if not isinstance(a, np.ndarray):
            raise TypeError(f"a must be a numpy array of the pool's heap (got {describe(a)})")
        try:
            block, _ = self._arrays.locate(a)
        except ValueError as exc:
            raise ValueError(f"a must be an array of {self.name}'s heap: it {exc}") from None
        if block is None:
            raise ValueError(f"a must be an array of {self.name}'s heap (got {describe(a)})")
        self._heap.free(block)

    def _temporary(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
        """An array for one run's copy of an ordinary array; the run lock is held."""
        nbytes = max(1, math.prod(shape) * dtype.itemsize)
        block = self._allocate(nbytes, locked=True)
        return self._heap.array(block, shape, dtype)

    def _allocate(self, nbytes: int, *, locked: bool) -> Block:
        """Allocate `nbytes` in the heap, growing the memory when it must.

        The memory never grows while a run is in flight: growing takes the
        run lock (unless the caller holds it: `locked`) and waits for a run
        left in the background.
        """
        # The memory's size is a call into wasmtime: asked only when the heap
        # is full (then _grow_for first takes in what a kernel's own
        # memory.grow may have added).
        block = self._heap.allocate(nbytes)
        if block is not None:
            return block
        if locked:
            return self._grow_for(nbytes)
        with self._lock:
            self._quiesce()
            return self._grow_for(nbytes)

    def _grow_for(self, nbytes: int) -> Block:
        memory, heap = self._memory, self._heap
        heap.extend(memory.byte_length)
        block = heap.allocate(nbytes)
        if block is not None:
            return block
        short = heap.shortfall(nbytes)
        needed = -(-short // PAGE_SIZE)
        room = memory.maximum - memory.pages
        if needed > room:
            available = max(heap.largest_free, heap.tail_free + room * PAGE_SIZE)
            raise OutOfMemory(
                f"{self.name} cannot allocate {nbytes} bytes: its heap has {available} bytes "
                f"in one piece at most, with the memory grown to its maximum of "
                f"{memory.maximum} pages ({memory.maximum * PAGE_SIZE} bytes); free arrays "
                "or use a memory with a larger maximum",
                requested=nbytes,
                available=available,
            )
        memory.grow(min(room, max(needed, memory.pages // GROWTH)))
        heap.extend(memory.byte_length)
        block = heap.allocate(nbytes)
        assert block is not None
        return block
