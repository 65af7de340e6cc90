"""`Memory`: one shared WebAssembly linear memory, seen from Python as numpy views.

A `Memory` owns a wasmtime shared memory. wasmtime reserves the address range
for `maximum` pages up front and never moves the base, so a numpy view stays
valid for the life of the memory; after a grow it simply keeps the length it
was made with, and a fresh view sees the new size.

Every view holds a strong reference to its `Memory`, so the mapping cannot be
unmapped under a live array. Live memories are also registered by address
range, which is how `sharedwasm.atomics` tells a view of a shared memory from
any other array.
"""

from __future__ import annotations

import ctypes
import operator
import threading
import weakref
from typing import Any

import numpy as np
import numpy.typing as npt
import wasmtime

from . import _wasmtime
from ._errors import LayoutError
from ._wasmtime import MAX_PAGES, PAGE_SIZE

_registry_lock = threading.Lock()
_registry: weakref.WeakSet[Memory] = weakref.WeakSet()


def _check_pages(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an int number of pages (got {value!r})")
    pages = int(value)
    if pages < 0:
        raise ValueError(f"{name} must be >= 0 pages (got {pages!r})")
    if pages > MAX_PAGES:
        raise ValueError(f"{name} must be <= {MAX_PAGES} pages, 4 GiB (got {pages!r})")
    return pages


class Memory:
    """A shared WebAssembly memory that several workers use at once.

    Args:
        initial: size in 64 KiB pages.
        maximum: the most pages the memory may grow to; required, because a
            shared memory reserves its whole range up front.
        shared: must be True.
        interruptible: compile the code that runs on this memory so that a
            run can be stopped part-way: `WorkerPool.cancel()`, a run's
            timeout and `close()` then interrupt a kernel that is still
            computing, at the price of an epoch check at every loop
            back-edge (2.5-3x slower on tight compute loops). Without it a
            cancelled run stops only between chunks of work.

    Raises:
        TypeError: `maximum` is missing, or a size is not an int.
        ValueError: a size is negative or above 65536 pages, `initial` exceeds
            `maximum`, or `shared` is False.

    All methods may be called from any thread.
    """

    def __init__(
        self,
        initial: int,
        maximum: int | None = None,
        *,
        shared: bool = True,
        interruptible: bool = False,
    ) -> None:
        if shared is not True:
            raise ValueError(
                "shared must be True: a memory must be shared to be used by several "
                f"workers (got {shared!r})"
            )
        if not isinstance(interruptible, bool):
            raise TypeError(f"interruptible must be a bool (got {interruptible!r})")
        initial = _check_pages("initial", initial)
        if maximum is None:
            raise TypeError(
                "maximum is required for shared memory: pass maximum=<pages>, the "
                "ceiling the memory may grow to"
            )
        maximum = _check_pages("maximum", maximum)
        if initial > maximum:
            raise ValueError(
                f"initial must be <= maximum={maximum} pages (got initial={initial!r})"
            )
        ty = wasmtime.MemoryType(wasmtime.Limits(initial, maximum), shared=True)
        try:
            self._shared = _wasmtime.SharedMemory(_wasmtime.engine(interruptible), ty)
        except wasmtime.WasmtimeError as exc:
            raise MemoryError(
                f"could not reserve a shared memory of maximum={maximum} pages: {exc}"
            ) from exc
        self._maximum = maximum
        self._interruptible = interruptible
        self._base = self._shared.base_address()
        self._grow_lock = threading.Lock()
        # Per-thread helper instances for host atomics (see _atomics); they
        # die with the thread or with this memory, whichever goes first.
        self._thread_state = threading.local()
        # What holds this memory, per pool name: at most one pool at a time,
        # since two pools' boards and data regions would overlap. A closed
        # pool's claim lasts until the last thread that can still touch its
        # board (a worker stuck in a kernel call, a caller inside one) is gone.
        self._claims: dict[str, Claim] = {}
        self._claims_lock = threading.Lock()
        with _registry_lock:
            _registry.add(self)

    def __repr__(self) -> str:
        extra = " interruptible=True" if self._interruptible else ""
        return f"<sharedwasm.Memory pages={self.pages} maximum={self._maximum} shared=True{extra}>"

    @property
    def interruptible(self) -> bool:
        """Whether code running on this memory can be interrupted part-way."""
        return self._interruptible

    @property
    def pages(self) -> int:
        """Current size in 64 KiB pages."""
        return self._shared.size()

    @property
    def maximum(self) -> int:
        """The most pages this memory may grow to."""
        return self._maximum

    @property
    def byte_length(self) -> int:
        """Current size in bytes."""
        return int(self._shared.data_len())

    @property
    def buffer(self) -> memoryview:
        """A writable memoryview of the whole memory at its current length.

        The view keeps its length after a grow: read `buffer` again to see the
        new bytes.
        """
        return memoryview(self._raw(0, self.byte_length)).cast("B")

    def view(
        self,
        dtype: npt.DTypeLike = np.uint8,
        *,
        offset: int = 0,
        count: int | None = None,
    ) -> npt.NDArray[Any]:
        """Return a zero-copy 1-D numpy view of part of the memory.

        Args:
            dtype: element type; any numpy dtype without Python objects.
            offset: first byte; must be a multiple of the dtype's alignment.
            count: number of elements; by default, as many as fit before the
                current end of memory.

        Returns:
            A writable array sharing memory with every worker. It keeps its
            length after a grow.

        Raises:
            TypeError: `dtype` holds Python objects or has no size, or
                `offset`/`count` is not an int.
            LayoutError: the view is misaligned or does not fit in the memory.
        """
        try:
            dt = np.dtype(dtype)
        except (TypeError, ValueError, SyntaxError) as exc:  # numpy's parser raises all three
            raise TypeError(f"dtype must be a numpy dtype (got {dtype!r}): {exc}") from None
        if dt.hasobject or dt.itemsize == 0 or dt.subdtype is not None:
            raise TypeError(
                f"dtype must be a fixed-size dtype without objects or subarrays (got {dt!r})"
            )
        offset = operator.index(offset)
        length = self.byte_length
        if offset < 0 or offset > length:
            raise LayoutError(f"offset must be in [0, {length}] (got {offset!r})")
        if offset % dt.alignment:
            raise LayoutError(
                f"offset must be a multiple of {dt.alignment} for dtype {dt} (got {offset!r})"
            )
        available = (length - offset) // dt.itemsize
        if count is None:
            count = available
        count = operator.index(count)
        if count < 0 or count > available:
            raise LayoutError(
                f"count must be in [0, {available}] for dtype {dt} at offset {offset} "
                f"in a memory of {length} bytes (got {count!r})"
            )
        raw = self._raw(offset, count * dt.itemsize)
        array: npt.NDArray[Any] = np.frombuffer(memoryview(raw).cast("B"), dtype=dt, count=count)
        return array

    def grow(self, delta_pages: int) -> int:
        """Grow the memory by `delta_pages` pages and return the previous size.

        Existing views keep their length; make fresh ones to see the new pages.
        Growing while workers write is a data race: `WorkerPool.grow` waits for
        the run in flight first.

        Raises:
            TypeError: `delta_pages` is not an int.
            ValueError: `delta_pages` is negative or would pass `maximum`; the
                memory is left unchanged.
        """
        delta = _check_pages("delta_pages", delta_pages)
        with self._grow_lock:
            current = self.pages
            if current + delta > self._maximum:
                raise ValueError(
                    f"delta_pages must be <= {self._maximum - current} to stay within "
                    f"maximum={self._maximum} pages from {current} (got {delta!r})"
                )
            try:
                return int(self._shared.grow(delta))
            except wasmtime.WasmtimeError as exc:
                # A kernel's own memory.grow may have raced the check above:
                # then the memory is full, which is the ValueError case.
                now = self.pages
                if now + delta > self._maximum:
                    raise ValueError(
                        f"delta_pages must be <= {self._maximum - now} to stay within "
                        f"maximum={self._maximum} pages from {now} (got {delta!r})"
                    ) from None
                raise MemoryError(f"could not grow the memory by {delta} pages: {exc}") from exc

    def _claim(self, name: str) -> Claim:
        """Reserve this memory for the pool `name`, or say who still holds it.

        Raises:
            LayoutError: another pool holds the memory, or a thread of a
                closed one may still write to its board.
        """
        with self._claims_lock:
            for other, claim in list(self._claims.items()):
                holders = claim.holders()
                if claim.closed and not holders:
                    del self._claims[other]
                elif claim.closed:
                    raise LayoutError(
                        f"memory is still used by closed pool {other}: its thread(s) "
                        f"{', '.join(holders)} are inside a kernel call that could not be "
                        "interrupted, and would write over a new pool's board when it "
                        "returns; wait for that call to end, or use another Memory"
                    )
                else:
                    raise LayoutError(
                        f"memory is already used by {other}: two pools' boards and data "
                        "regions would overlap; close the other pool first"
                    )
            claim = Claim()
            self._claims[name] = claim
            return claim

    def _raw(self, offset: int, size: int) -> ctypes.Array[ctypes.c_ubyte]:
        if size == 0:
            # ctypes cannot make a zero-length array at an address; an empty
            # writable buffer gives numpy and memoryview the same behaviour.
            empty = (ctypes.c_ubyte * 0)()
            empty._sharedwasm_memory = self  # type: ignore[attr-defined]
            return empty
        raw = (ctypes.c_ubyte * size).from_address(self._base + offset)
        # The attribute is the keep-alive: numpy views hold `raw`, `raw` holds us.
        raw._sharedwasm_memory = self  # type: ignore[attr-defined]
        return raw

    def _contains(self, address: int, size: int) -> bool:
        return self._base <= address and address + size <= self._base + self.byte_length

    def _owns(self, address: int) -> bool:
        return self._base <= address < self._base + self._maximum * PAGE_SIZE


class Claim:
    """One pool's hold on a memory: released once it is closed and no holder is alive."""

    def __init__(self) -> None:
        self.closed = False
        self.threads: list[threading.Thread] = []
        """The pool's worker threads."""
        self.callers: dict[int, threading.Thread] = {}
        """Threads inside a call into the pool's runner (worker 0's share), by
        ident. Each store and pop is one dict operation, atomic under the GIL."""

    def holders(self) -> list[str]:
        """Names of the threads that may still touch the pool's board."""
        callers = list(self.callers.values())
        return [t.name for t in callers] + [t.name for t in self.threads if t.is_alive()]


def memory_of(address: int) -> Memory | None:
    """Return the live `Memory` whose reserved range holds `address`, if any."""
    with _registry_lock:
        memories = list(_registry)
    for memory in memories:
        if memory._owns(address):
            return memory
    return None
