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

import bisect
import collections
import threading
import weakref
from typing import Any

import numpy as np
import numpy.typing as npt

from ._layout import DATA_ALIGN, align_up
from ._memory import Memory

ALIGN = DATA_ALIGN


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
        count = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return owner[:count].view(dtype).reshape(shape)
