"""Our binding layer over the `wasmtime` package.

This is the one place that knows about wasmtime-py's internals:

* the engine every sharedwasm object is built on (threads and shared memory
  enabled, explicit bounds checks; a shared memory can only be imported by
  modules of its own engine);
* `SharedMemory`, a subclass that repairs two bugs of wasmtime-py 50's binding
  (bytecodealliance/wasmtime-py#318): `_as_extern` wraps the pointer twice, so
  instantiating a module with a shared memory fails, and `size()` passes a
  pointer to the pointer, so it raises `ctypes.ArgumentError`;
* `RawFunc`, a call path through `wasmtime_func_call_unchecked` with a
  preallocated argument array: about 1 µs a call instead of the 13-20 µs of
  `Func.__call__`, and, like every call into the C library, it releases the GIL.

`tests/test_wasmtime_binding.py` fails if upstream behaviour changes, so the
repairs can be dropped when they are no longer needed.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import wasmtime
from wasmtime import _bindings as _b
from wasmtime import _ffi as ffi

PAGE_SIZE = 65536
"""Bytes in one WebAssembly page."""

MAX_PAGES = 65536
"""Pages in the largest 32-bit memory (4 GiB)."""


@functools.cache
def engine() -> wasmtime.Engine:
    """Return the process-wide engine all memories and kernels share."""
    config = wasmtime.Config()
    config.wasm_threads = True
    config.shared_memory = True
    # Each worker's store holds two instances that import the one shared
    # memory, the kernel and the runner. With signal-based traps, a kernel's
    # out-of-bounds access faults in a memory that wasmtime 50 then finds
    # twice in the store, and it aborts the whole process (store.rs
    # "assertion failed: fault.is_none()"). Explicit bounds checks turn the
    # same access into an ordinary trap, at a cost on memory-bound kernels
    # (about 1.4-1.7x on SAXPY, none measurable on compute-bound ones).
    config.signals_based_traps = False
    return wasmtime.Engine(config)


class SharedMemory(wasmtime.SharedMemory):
    """`wasmtime.SharedMemory` with the extern and size bindings repaired."""

    def size(self) -> int:
        """Return the current size in pages."""
        return int(ffi.wasmtime_sharedmemory_size(self.ptr()))

    def _as_extern(self) -> Any:
        # The extern union stores a `wasmtime_sharedmemory_t *`, which is what
        # `ptr()` already is; upstream wraps it in one more `ctypes.pointer`.
        union = ffi.wasmtime_extern_union(sharedmemory=self.ptr())
        return ffi.wasmtime_extern_t(ffi.WASMTIME_EXTERN_SHAREDMEMORY, union)

    def base_address(self) -> int:
        """Return the address of byte 0; wasmtime never moves a shared memory."""
        return ctypes.cast(self.data_ptr(), ctypes.c_void_p).value or 0


_call_unchecked = _b._wasmtime_func_call_unchecked


def as_i32(value: int) -> int:
    """Return the signed i32 with the bit pattern of the u32 `value`.

    Addresses, offsets and counts are unsigned in wasm but travel in signed
    i32 slots and globals; above 2 GiB they go as their bit pattern.
    """
    return value - (1 << 32) if value >= 1 << 31 else value


def i32_global(store: wasmtime.Store, value: int) -> wasmtime.Global:
    """Return an immutable i32 global holding the u32 `value`, for an import."""
    ty = wasmtime.GlobalType(wasmtime.ValType.i32(), False)
    return wasmtime.Global(store, ty, wasmtime.Val.i32(as_i32(value)))


class RawFunc:
    """A fast, non-reentrant caller for one exported function of one instance.

    Not thread-safe: a `RawFunc` belongs to the thread that owns its store, as
    the store itself does.
    """

    __slots__ = ("_args", "_ctx", "_func_ref", "_n", "_store", "_trap", "_trap_ref")

    def __init__(self, store: wasmtime.Store, func: wasmtime.Func, slots: int) -> None:
        self._store = store  # keeps the context pointer valid
        self._ctx = store._context()
        self._func_ref = ctypes.byref(func._func)
        self._n = max(slots, 1)
        self._args = (ffi.wasmtime_val_raw_t * self._n)()
        self._trap = ctypes.POINTER(ffi.wasm_trap_t)()
        self._trap_ref = ctypes.byref(self._trap)

    @property
    def args(self) -> Any:
        """The argument-and-result array: set params before `call`, read results after."""
        return self._args

    def call(self) -> None:
        """Call the function with the arguments already in `args`.

        Raises:
            wasmtime.Trap: the call trapped.
            wasmtime.WasmtimeError: the call failed for another reason.
        """
        error = _call_unchecked(self._ctx, self._func_ref, self._args, self._n, self._trap_ref)
        if error:
            raise wasmtime.WasmtimeError._from_ptr(error)
        if self._trap:
            trap = wasmtime.Trap._from_ptr(self._trap)
            # The Trap object now owns the pointer; start the next call from NULL.
            self._trap = ctypes.POINTER(ffi.wasm_trap_t)()
            self._trap_ref = ctypes.byref(self._trap)
            raise trap
