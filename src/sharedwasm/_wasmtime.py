"""Our binding layer over the `wasmtime` package.

This is the one place that knows about wasmtime-py's internals:

* the two engines sharedwasm objects are built on (threads and shared memory
  enabled, signal-based traps), one of them with epoch interruption; a
  shared memory can only be imported by modules of its own engine. They
  compile on the calling thread (or one it waits for, see `new_module`),
  never on a thread pool, so a child made by `os.fork()` inherits engines,
  kernels and memories that keep working; `engine_settings` lists everything
  they are configured with, which keys their compiled-code cache;
* keeping wasmtime's signal handlers on top: `faulthandler.enable()` called
  after they were installed would put Python's handler over them, and every
  trap of a kernel would then kill the process;
* `process_id`, kept current by an at-fork hook, so that a pool can tell it
  was inherited by a child of fork() without its worker threads;
* `new_store` and `interrupt_when`, the per-store half of interruption: a
  native epoch-deadline callback that traps only when asked to;
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
import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime import _bindings as _b
from wasmtime import _ffi as ffi

from . import _signals, _stack

PAGE_SIZE = 65536
"""Bytes in one WebAssembly page."""

MAX_PAGES = 65536
"""Pages in the largest 32-bit memory (4 GiB)."""


def engine(interruptible: bool = False) -> wasmtime.Engine:
    """Return the process-wide engine for plain or for interruptible code.

    Code compiled for the interruptible engine checks an epoch counter at
    every function entry and loop back-edge, so another thread can stop it;
    those checks cost 2.5-3x on tight compute loops, hence two engines.
    """
    return _engine(bool(interruptible))


def engine_settings(interruptible: bool) -> dict[str, bool | int]:
    """Return the `wasmtime.Config` settings of the plain or the interruptible engine.

    They are all the engine is given, so they also name its code in the
    compiled-code cache (see `_cache`).
    """
    return {
        "wasm_threads": True,
        "shared_memory": True,
        # Out-of-bounds accesses fault on guard pages and wasmtime's signal
        # handler turns the fault into a trap: no bounds check in the code. The
        # handler needs exactly one instance of the faulting store to hold the
        # memory, and each import of a SharedMemory into a store makes one; so
        # a store instantiates one module, the kernel with the runner merged in
        # (_merge), and a second importer would bring back wasmtime 50's abort
        # (store.rs "assertion failed: fault.is_none()").
        "signals_based_traps": True,
        "epoch_interruption": bool(interruptible),
        # Stated, not left to the default: the pool gives every thread that runs
        # kernel code at least this much native stack and more (see _stack).
        "max_wasm_stack": _stack.WASM_STACK,
        # Parallel compilation runs on rayon's process-wide thread pool, which
        # starts with the first compile and is never restarted: in a child of
        # fork() its threads do not exist, and the next compile waits for them
        # forever. Compiling on the calling thread keeps fork() safe and the
        # process free of idle threads, for up to twice the time per compile on
        # 2 CPUs (a millisecond or two for a kernel).
        "parallel_compilation": False,
    }


@functools.cache
def engine_key(interruptible: bool) -> str:
    """Return `engine_settings` as canonical JSON: the engine's part of a cache key."""
    return json.dumps(engine_settings(interruptible), sort_keys=True, separators=(",", ":"))


@functools.cache
def _engine(interruptible: bool) -> wasmtime.Engine:
    config = wasmtime.Config()
    for name, value in engine_settings(interruptible).items():
        # A misspelt name would only add an attribute, so it must be a setter.
        assert isinstance(getattr(wasmtime.Config, name, None), property), name
        setattr(config, name, value)
    return wasmtime.Engine(config)


def native_library() -> Path | None:
    """Return the path of the wasmtime library that wasmtime-py loaded, if it says."""
    filename = getattr(ffi, "filename", None)
    return Path(filename) if filename is not None else None


def new_module(engine_: wasmtime.Engine, wasm: bytes | str) -> wasmtime.Module:
    """Compile `wasm` (bytes, or WebAssembly text) for `engine_`; block until it is done.

    Cranelift needs more native stack than a small thread has: on a thread
    started with `threading.stack_size(64 * 1024)` compiling the runner runs
    off the end of the stack, and nothing turns that SIGSEGV into an error.
    So a caller without room for kernel code compiles on a thread of
    `_stack.THREAD_STACK` bytes, and waits for it.

    Raises:
        wasmtime.WasmtimeError: the module does not compile.
    """
    if _stack.caller_has_room():
        return wasmtime.Module(engine_, wasm)
    outcome: list[wasmtime.Module | BaseException] = []

    def compile_here() -> None:
        try:
            outcome.append(wasmtime.Module(engine_, wasm))
        except BaseException as exc:  # handed to the waiting caller
            outcome.append(exc)

    thread = threading.Thread(target=compile_here, name="sharedwasm-compile", daemon=True)
    with _stack.thread_stack_size():
        thread.start()
    thread.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


# Now, at import: wasmtime installs its signal handlers with the first engine
# that has signal-based traps, and _signals must know them before anyone can
# call faulthandler.enable() over them.
_signals.install(engine, ctypes.cast(ffi.dll.wasm_engine_new, ctypes.c_void_p).value or 0)


process_id = os.getpid()
"""The id of this process, kept current in a child of `os.fork()` (a pool's
worker threads exist only in the process that started them). Reading it costs
nothing, where `os.getpid()` is a system call."""


def _after_fork_in_child() -> None:
    global process_id
    process_id = os.getpid()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork()
    os.register_at_fork(after_in_child=_after_fork_in_child)


INTERRUPTED = "sharedwasm: interrupted"
"""The message of the error an interrupted call fails with."""


def is_interrupt(error: BaseException) -> bool:
    """Whether a failed call was stopped by `interrupt_when`, not by a fault of its own."""
    return INTERRUPTED in str(error)


_NEVER = 1 << 62
"""An epoch deadline no pool reaches: the engine's epoch moves only on cancels."""

_DeadlineCallback = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.POINTER(ffi.wasmtime_context_t),
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(ffi.wasmtime_update_deadline_kind_t),
)
_Finalizer = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_UPDATE_DEADLINE_CONTINUE = 0


def new_store(interruptible: bool) -> wasmtime.Store:
    """Return a store on the plain or the interruptible engine whose code runs until it returns.

    On the interruptible engine a store's deadline starts at the current
    epoch, so its first check would trap; this one's is out of reach.
    """
    store = wasmtime.Store(engine(interruptible))
    if interruptible:
        store.set_epoch_deadline(_NEVER)
    return store


def interrupt_when(store: wasmtime.Store, should_stop: Callable[[], bool]) -> object:
    """Make `store`'s code trap at its next epoch check after a bump if `should_stop()`.

    The store must be on the interruptible engine. The engine's epoch moves
    only when some pool cancels (`wasmtime.Engine.increment_epoch`), so the
    callback, which takes the GIL, runs only then and costs nothing
    otherwise. Returning False keeps the code running until the next bump.

    Returns the native callback: keep it alive as long as the store.
    """

    def callback(_ctx: Any, _data: Any, delta: Any, kind: Any) -> int:
        try:
            stop = should_stop()
        except BaseException:  # never let an exception unwind into wasmtime
            stop = False
        if stop:
            error = ffi.wasmtime_error_new(INTERRUPTED.encode())
            return ctypes.cast(error, ctypes.c_void_p).value or 0
        delta[0] = 1
        kind[0] = _UPDATE_DEADLINE_CONTINUE
        return 0

    native = _DeadlineCallback(callback)
    ffi.wasmtime_store_epoch_deadline_callback(store.ptr(), native, None, _Finalizer())
    store.set_epoch_deadline(1)
    return native


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


def _quiet_finalizers() -> None:
    """Make wasmtime-py's finalizers harmless while the interpreter shuts down.

    A wasmtime object that lives until the interpreter's last stage (a pool,
    kernel or memory kept in a module global) is freed after the module
    globals of `wasmtime._ffi` were cleared, and its `__del__` then fails
    with "'NoneType' object is not callable" once per object. By then the
    process is exiting and the OS reclaims everything, so the native free
    is skipped.
    """
    from wasmtime import _managed

    original = _managed.Managed.__del__
    if getattr(original, "_sharedwasm_quiet", False):
        return

    def __del__(self: Any, _finalizing: Callable[[], bool] = sys.is_finalizing) -> None:
        if not _finalizing():
            original(self)

    __del__._sharedwasm_quiet = True  # type: ignore[attr-defined]
    _managed.Managed.__del__ = __del__  # type: ignore[method-assign]


_quiet_finalizers()
