"""Keeping wasmtime's signal handlers in front of faulthandler's.

A kernel's out-of-bounds access (SIGSEGV), `unreachable` (SIGILL) and, on
x86, integer division trap (SIGFPE) reach wasmtime as signals. wasmtime
installs its handlers once per process, when the first engine with
signal-based traps is made; they turn a signal raised in wasm code into a
trap and pass any other to the handler they replaced. Python's faulthandler
does not pass signals on that way: enabled *after* wasmtime, it sits in
front, dumps a traceback for the trap and kills the process.

So `install` makes the engine (installing wasmtime's handlers now, not at
some later first use), records wasmtime's handlers, and wraps
`faulthandler.enable` and `faulthandler.disable` so that, where wasmtime's
handler was in front before the call, it is put back in front after it.
Enabled before wasmtime (`python -X faulthandler`, `PYTHONFAULTHANDLER`),
faulthandler needs nothing: wasmtime then passes a crash outside wasm on to
it. Enabled after, it still reports fatal signals wasmtime does not handle
(SIGABRT, SIGBUS on Linux) and hangs (`dump_traceback_later`), but a crash
outside wasm goes wherever wasmtime's handler passes it, usually to the
default action, without a traceback. `faulthandler.register` needs no
wrapping: it refuses the signals `enable` handles.

One case stays bad: enabled before wasmtime and disabled after, faulthandler
keeps receiving what wasmtime passes on, and its handler, disabled, returns
at once, so a crash outside wasm runs the faulting instruction again for
ever instead of killing the process. Traps in wasm are still traps; left
alone, `disable` would remove wasmtime's handler and every trap would kill
the process, which is the worse of the two for a pool of kernels.

The first `faulthandler.enable` also gives its thread an alternate signal
stack of `2 * SIGSTKSZ` bytes (about 16 KiB on x86-64 Linux) in place of the one
wasmtime gave that thread for its handlers (wasmtime wants 64 KiB at
least, and makes 256 KiB): a larger stack it replaced is put back.

Only on POSIX systems, where both install their handlers with `sigaction`.
"""

from __future__ import annotations

import ctypes
import faulthandler
import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

_SIGNALS = tuple(
    getattr(signal, name)
    for name in ("SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE")
    if hasattr(signal, name)
)
# Copied as opaque bytes: more than any platform's `struct sigaction` needs.
_SIGACTION_BYTES = 512


class _StackT(ctypes.Structure):
    """Linux's `stack_t`."""

    _fields_ = (
        ("ss_sp", ctypes.c_void_p),
        ("ss_flags", ctypes.c_int),
        ("ss_size", ctypes.c_size_t),
    )


class _DlInfo(ctypes.Structure):
    _fields_ = (
        ("dli_fname", ctypes.c_char_p),
        ("dli_fbase", ctypes.c_void_p),
        ("dli_sname", ctypes.c_char_p),
        ("dli_saddr", ctypes.c_void_p),
    )


_libc: Any = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None
_wasmtime_actions: dict[int, ctypes.Array[ctypes.c_char]] = {}
"""wasmtime's `struct sigaction` per signal it handles, as installed."""


def _action(signum: int) -> ctypes.Array[ctypes.c_char]:
    action = ctypes.create_string_buffer(_SIGACTION_BYTES)
    if _libc.sigaction(signum, None, action) != 0:
        raise OSError(ctypes.get_errno(), f"sigaction({signum}) failed")
    return action


def _handler(action: ctypes.Array[ctypes.c_char]) -> int:
    # The handler (a union of sa_handler and sa_sigaction) is the first field
    # of `struct sigaction` on Linux, macOS and the BSDs.
    return ctypes.c_void_p.from_buffer(action).value or 0


def _library_base(address: int) -> int | None:
    """Return the load address of the shared library holding `address`, if dladdr knows."""
    dladdr = getattr(_libc, "dladdr", None)
    if dladdr is None:
        return None
    info = _DlInfo()
    if not dladdr(ctypes.c_void_p(address), ctypes.byref(info)):
        return None
    return info.dli_fbase or None


def _alternate_stack() -> _StackT | None:
    if not sys.platform.startswith("linux"):
        return None
    stack = _StackT()
    if _libc.sigaltstack(None, ctypes.byref(stack)) != 0:
        return None
    return stack


def install(make_engine: Callable[[], object], wasmtime_function: int) -> None:
    """Have wasmtime install its handlers now, record them, and wrap faulthandler.

    `make_engine` makes an engine with signal-based traps; `wasmtime_function`
    is the address of any function of wasmtime's library, which tells its
    handlers from others. Idempotent.
    """
    if _libc is None:
        make_engine()
        return
    try:
        before = {signum: _handler(_action(signum)) for signum in _SIGNALS}
        make_engine()
        base = _library_base(wasmtime_function)
        for signum in _SIGNALS:
            action = _action(signum)
            handler = _handler(action)
            # Changed by the engine, or (wasmtime-py used before sharedwasm
            # was imported) already in wasmtime's library.
            if handler and (handler != before[signum] or (base and _library_base(handler) == base)):
                _wasmtime_actions[signum] = action
    except (OSError, AttributeError):  # no sigaction to call: nothing to keep in front
        make_engine()
        return
    for name in ("enable", "disable"):
        original = getattr(faulthandler, name)
        if not getattr(original, "_sharedwasm_keeps_wasmtime", False):
            setattr(faulthandler, name, _keeping_wasmtime_in_front(original))


def _keeping_wasmtime_in_front(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        in_front = [
            signum
            for signum, action in _wasmtime_actions.items()
            if _handler(_action(signum)) == _handler(action)
        ]
        stack = _alternate_stack()
        try:
            return function(*args, **kwargs)
        finally:
            for signum in in_front:
                action = _wasmtime_actions[signum]
                if _handler(_action(signum)) != _handler(action):
                    _libc.sigaction(signum, action, None)
            now = _alternate_stack()
            if (
                stack is not None
                and now is not None
                and stack.ss_sp
                and not stack.ss_flags & 2  # SS_DISABLE
                and now.ss_sp != stack.ss_sp
                and now.ss_size < stack.ss_size
            ):
                _libc.sigaltstack(ctypes.byref(stack), None)

    wrapper._sharedwasm_keeps_wasmtime = True  # type: ignore[attr-defined]
    return wrapper


def wasmtime_in_front() -> bool:
    """Return whether every handler wasmtime installed is still the one in front."""
    return all(
        _handler(_action(signum)) == _handler(action)
        for signum, action in _wasmtime_actions.items()
    )
