"""Native stack room for calls into wasm.

wasmtime lets wasm code use up to `WASM_STACK` bytes of the native stack of
the thread that calls it, and detects overflow against that limit, not
against the thread's real stack: on a thread with less room than that, deep
recursion in a kernel runs off the end of the stack and the process dies of
SIGSEGV instead of trapping. So every thread that runs kernel code must have
`NEEDED` bytes of room below the point where it calls in:

* the pool's own threads are started with `THREAD_STACK` bytes of stack,
  whatever `threading.stack_size()` or `ulimit -s` say;
* the caller's thread computes worker 0's share only when `caller_has_room()`
  (the stack it runs on is the caller's own); otherwise the share goes to the
  pool's standby thread.

The room is measured from the thread's stack bounds (`pthread_getattr_np`)
and the current stack pointer (`getcontext`), where the platform has them.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
import sys
import threading
from collections.abc import Iterator

WASM_STACK = 512 * 1024
"""Bytes of native stack wasm code may use (wasmtime's `max_wasm_stack`)."""

_HOST_MARGIN = 256 * 1024
"""Bytes for what runs on the stack besides wasm frames: the ctypes and
wasmtime entry frames, wasmtime's trap handling and the host calls it makes."""

NEEDED = WASM_STACK + _HOST_MARGIN
"""Bytes of native stack a thread needs below its call into wasm."""

THREAD_STACK = 2 * NEEDED
"""Stack size of the pool's threads: room for wasm plus the Python frames above."""

_SLACK = 1024 * 1024
"""A thread with this much more room than needed at its first run is taken to
have room for good: re-measuring costs about 1 µs a run, and the Python
frames of a caller do not grow its C stack by a megabyte between two runs."""

_thread_stack_lock = threading.Lock()
_known = threading.local()

# ucontext_t: the offset of the saved stack pointer in uc_mcontext.
_SP_OFFSET = {"x86_64": 160, "aarch64": 432}.get(platform.machine())


class _PthreadAttr(ctypes.Structure):
    _fields_ = [("opaque", ctypes.c_byte * 128)]  # larger than any libc's pthread_attr_t


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or _SP_OFFSET is None:
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.pthread_self.restype = ctypes.c_ulong
        libc.pthread_getattr_np.argtypes = [ctypes.c_ulong, ctypes.c_void_p]
        libc.pthread_attr_getstack.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
        libc.pthread_attr_destroy.argtypes = [ctypes.c_void_p]
        libc.getcontext.argtypes = [ctypes.c_void_p]
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _libc()
_CONTEXT = ctypes.create_string_buffer(4096) if _LIBC is not None else None


def _stack_low() -> int | None:
    """Return the lowest address of the calling thread's stack, if it can be read."""
    if _LIBC is None:
        return None
    attr = _PthreadAttr()
    if _LIBC.pthread_getattr_np(_LIBC.pthread_self(), ctypes.byref(attr)):
        return None
    try:
        address, size = ctypes.c_void_p(), ctypes.c_size_t()
        if _LIBC.pthread_attr_getstack(
            ctypes.byref(attr), ctypes.byref(address), ctypes.byref(size)
        ):
            return None
        return address.value
    finally:
        _LIBC.pthread_attr_destroy(ctypes.byref(attr))


def stack_room() -> int | None:
    """Return the bytes of stack left below the caller, or None if unknown."""
    low = getattr(_known, "low", 0)
    if low == 0:
        low = _stack_low()
        _known.low = low
    if low is None or _LIBC is None or _CONTEXT is None or _SP_OFFSET is None:
        return None
    # The context is this module's scratch buffer: the GIL serialises its use.
    if _LIBC.getcontext(_CONTEXT):
        return None
    sp = ctypes.c_uint64.from_buffer(_CONTEXT, _SP_OFFSET).value
    return sp - low


def caller_has_room() -> bool:
    """Whether the calling thread may run kernel code on its own stack."""
    if getattr(_known, "ample", False):
        return True
    room = stack_room()
    if room is None:
        # No way to measure on this platform: trust the caller's stack.
        _known.ample = True
        return True
    if room >= NEEDED + _SLACK:
        _known.ample = True
    return room >= NEEDED


@contextlib.contextmanager
def thread_stack_size() -> Iterator[None]:
    """Start threads, inside this block, with `THREAD_STACK` bytes of stack at least.

    `threading.stack_size` is process-wide: a thread another caller starts
    during the block gets at least as much stack as it asked for.
    """
    with _thread_stack_lock:
        previous = threading.stack_size()
        threading.stack_size(max(previous, THREAD_STACK))
        try:
            yield
        finally:
            threading.stack_size(previous)
