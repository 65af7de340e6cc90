"""Host-side atomics on numpy views of a shared memory, through a wasm helper.

The wasmtime C API has no atomic operations on host memory and no futex-style
wait/notify. So the host runs its atomics as WebAssembly: a helper module
imports the same shared memory and exports one function per operation and
width. A host `store` is then the same `i32.atomic.store` a kernel executes,
and a host `wait` parks in the same wasmtime waiter table that a kernel's
`memory.atomic.notify` walks, so host and kernels interoperate exactly.

The semantics, argument set and return values follow JavaScript's `Atomics`
(Test262 is the reference), in Python terms: the array is a 1-D numpy view of
a `Memory`; the index must be in `range(len(arr))` (no negative indexing, as
in JS); values are Python ints, wrapped to the element type; timeouts are in
seconds.

Guarantees:
    Every operation is sequentially consistent, as wasm atomics are: a plain
    numpy write made before an atomic store is visible to a worker that
    observes the store with an atomic load, and vice versa.

    Any function here may be called from any thread at any time. Each thread
    gets its own store and helper instance per memory, created on first use
    (about a millisecond) and dropped with the thread or the memory.

    `wait` never returns "ok" unless a `notify` (from the host or from wasm)
    woke it: there are no spurious wake-ups to guard against. A blocking
    `wait(timeout=None)` cannot be interrupted by Ctrl-C; give a timeout when
    that matters.

    Cancelling the task awaiting `wait_async` does not withdraw the waiter,
    exactly as a JavaScript `waitAsync` promise cannot be withdrawn: it stays
    parked, and counts in `notify`'s return value, until notified or timed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import math
import operator
import threading
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import wasmtime

from . import _cache, _wasmtime
from ._errors import LayoutError
from ._memory import Memory, memory_of

WaitResult = Literal["ok", "not-equal", "timed-out"]
_WAIT_RESULTS: tuple[WaitResult, ...] = ("ok", "not-equal", "timed-out")

_RMW_OPS = ("add", "sub", "and", "or", "xor", "xchg")
# (width in bits, value type, load op, store op, rmw prefix, rmw suffix)
_WIDTHS = (
    (8, "i32", "i32.atomic.load8_u", "i32.atomic.store8", "i32.atomic.rmw8.", "_u"),
    (16, "i32", "i32.atomic.load16_u", "i32.atomic.store16", "i32.atomic.rmw16.", "_u"),
    (32, "i32", "i32.atomic.load", "i32.atomic.store", "i32.atomic.rmw.", ""),
    (64, "i64", "i64.atomic.load", "i64.atomic.store", "i64.atomic.rmw.", ""),
)


def _helper_wat() -> str:
    funcs = []
    for bits, vt, load, store, rmw, suffix in _WIDTHS:
        funcs.append(
            f'(func (export "load{bits}") (param i32) (result {vt}) (local.get 0) ({load}))'
        )
        funcs.append(
            f'(func (export "store{bits}") (param i32 {vt}) (local.get 0) (local.get 1) ({store}))'
        )
        for op in _RMW_OPS:
            funcs.append(
                f'(func (export "{op}{bits}") (param i32 {vt}) (result {vt}) '
                f"(local.get 0) (local.get 1) ({rmw}{op}{suffix}))"
            )
        funcs.append(
            f'(func (export "cmpxchg{bits}") (param i32 {vt} {vt}) (result {vt}) '
            f"(local.get 0) (local.get 1) (local.get 2) ({rmw}cmpxchg{suffix}))"
        )
    funcs.append(
        '(func (export "wait32") (param i32 i32 i64) (result i32) '
        "(local.get 0) (local.get 1) (local.get 2) (memory.atomic.wait32))"
    )
    funcs.append(
        '(func (export "wait64") (param i32 i64 i64) (result i32) '
        "(local.get 0) (local.get 1) (local.get 2) (memory.atomic.wait64))"
    )
    funcs.append(
        '(func (export "notify") (param i32 i32) (result i32) '
        "(local.get 0) (local.get 1) (memory.atomic.notify))"
    )
    body = "\n  ".join(funcs)
    # min 0 / max 65536 accepts every shared memory under import subtyping.
    return f'(module\n  (import "env" "memory" (memory 0 65536 shared))\n  {body})'


@functools.cache
def _module(interruptible: bool) -> wasmtime.Module:
    return _cache.compile_module(_helper_wat(), interruptible=interruptible)


class Helper:
    """One thread's helper instance over one memory: raw callers by export name."""

    def __init__(self, memory: Memory) -> None:
        self.store = _wasmtime.new_store(memory.interruptible)
        instance = wasmtime.Instance(self.store, _module(memory.interruptible), [memory._shared])
        self.funcs: dict[str, _wasmtime.RawFunc] = {}
        for name, func in instance.exports(self.store)._extern_map.items():
            assert isinstance(func, wasmtime.Func)
            ty = func.type(self.store)
            slots = max(len(ty.params), len(ty.results))
            self.funcs[name] = _wasmtime.RawFunc(self.store, func, slots)


def helper_for(memory: Memory) -> Helper:
    """Return the calling thread's helper for `memory`, creating it on first use."""
    state = memory._thread_state
    helper: Helper | None = getattr(state, "helper", None)
    if helper is None:
        helper = Helper(memory)
        state.helper = helper
    return helper


@dataclasses.dataclass(frozen=True, slots=True)
class _Kind:
    bits: int
    signed: bool

    @property
    def mask(self) -> int:
        return (1 << self.bits) - 1

    def raw(self, value: object, name: str) -> int:
        """Wrap `value` to the element type and encode it as a raw i32/i64 argument."""
        try:
            v = operator.index(value)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(f"{name} must be an int (got {value!r})") from None
        v &= self.mask
        if self.bits == 32 and v >= 1 << 31:
            return v - (1 << 32)
        if self.bits == 64 and v >= 1 << 63:
            return v - (1 << 64)
        return v

    def decode(self, raw: int) -> int:
        v = raw & self.mask
        if self.signed and v >= 1 << (self.bits - 1):
            v -= 1 << self.bits
        return v


_KINDS = {(kind, size): _Kind(size * 8, kind == "i") for kind in "iu" for size in (1, 2, 4, 8)}
_WAITABLE = ("int32", "int64")


@dataclasses.dataclass(frozen=True, slots=True)
class _Target:
    memory: Memory
    offset: int
    kind: _Kind

    @property
    def helper(self) -> Helper:
        return helper_for(self.memory)

    @property
    def address(self) -> int:
        """The byte offset as wasm's u32 address travels in a signed i32 slot."""
        return _wasmtime.as_i32(self.offset)


def _target(arr: object, index: object, *, waitable: bool = False) -> _Target:
    """Check an (array, index) pair and locate the element in its memory."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(
            f"arr must be a numpy view of a shared sharedwasm.Memory (got {type(arr).__name__})"
        )
    dt = arr.dtype
    if waitable:
        if dt.name not in _WAITABLE or not dt.isnative:
            raise TypeError(f"arr must have dtype int32 or int64 to wait or notify (got {dt})")
    elif (dt.kind, dt.itemsize) not in _KINDS or not dt.isnative:
        raise TypeError(
            "arr must have a native-endian integer dtype of 1, 2, 4 or 8 bytes "
            f"for atomic operations (got {dt})"
        )
    if arr.ndim != 1:
        raise TypeError(f"arr must be 1-D (got a {arr.ndim}-D array)")
    try:
        i = operator.index(index)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"index must be an int (got {index!r})") from None
    if not 0 <= i < arr.shape[0]:
        raise IndexError(f"index must be in range(0, {arr.shape[0]}) (got {i!r})")
    base = int(arr.__array_interface__["data"][0])
    address = base + i * int(arr.strides[0])
    memory = memory_of(address)
    if memory is None:
        raise TypeError("arr must be a view of a shared sharedwasm.Memory (it is not)")
    if not memory._contains(address, dt.itemsize):
        raise IndexError(
            f"index must address the memory's current {memory.byte_length} bytes "
            f"(got {i!r}, past the end of a view made before the memory shrank or was replaced)"
        )
    offset = address - memory._base
    if offset % dt.itemsize:
        raise LayoutError(
            f"arr must be aligned to {dt.itemsize} bytes for atomic operations "
            f"(element {i} is at byte offset {offset})"
        )
    return _Target(memory, offset, _KINDS[(dt.kind, dt.itemsize)])


def _call(target: _Target, name: str, *args: int) -> int:
    """Call `name` for the target's width with the address and raw `args`."""
    kind = target.kind
    func = target.helper.funcs[f"{name}{kind.bits}"]
    raw = func.args
    raw[0].i32 = target.address
    if kind.bits == 64:
        for i, value in enumerate(args, 1):
            raw[i].i64 = value
        func.call()
        return kind.decode(int(raw[0].i64))
    for i, value in enumerate(args, 1):
        raw[i].i32 = value
    func.call()
    return kind.decode(int(raw[0].i32))


def load(arr: npt.NDArray[Any], index: int) -> int:
    """Atomically read `arr[index]`.

    Raises:
        TypeError: `arr` is not a 1-D integer view of a shared memory, or
            `index` is not an int.
        IndexError: `index` is out of range.
    """
    return _call(_target(arr, index), "load")


def store(arr: npt.NDArray[Any], index: int, value: int) -> int:
    """Atomically write `value` (wrapped to the element type) and return `value`."""
    target = _target(arr, index)
    raw = target.kind.raw(value, "value")
    _call(target, "store", raw)
    # JavaScript returns the value as given, not as stored (Test262 store/good-views).
    return operator.index(value)


def _rmw(op: str, arr: npt.NDArray[Any], index: int, value: int) -> int:
    target = _target(arr, index)
    return _call(target, op, target.kind.raw(value, "value"))


def add(arr: npt.NDArray[Any], index: int, value: int) -> int:
    """Atomically add `value` to `arr[index]`, wrapping; return the old value."""
    return _rmw("add", arr, index, value)


def sub(arr: npt.NDArray[Any], index: int, value: int) -> int:
    """Atomically subtract `value` from `arr[index]`, wrapping; return the old value."""
    return _rmw("sub", arr, index, value)


def and_(arr: npt.NDArray[Any], index: int, value: int) -> int:
    """Atomically bitwise-AND `value` into `arr[index]`; return the old value."""
    return _rmw("and", arr, index, value)


def or_(arr: npt.NDArray[Any], index: int, value: int) -> int:
    """Atomically bitwise-OR `value` into `arr[index]`; return the old value."""
    return _rmw("or", arr, index, value)


def xor(arr: npt.NDArray[Any], index: int, value: int) -> int:
    """Atomically bitwise-XOR `value` into `arr[index]`; return the old value."""
    return _rmw("xor", arr, index, value)


def exchange(arr: npt.NDArray[Any], index: int, value: int) -> int:
    """Atomically replace `arr[index]` with `value`; return the old value."""
    return _rmw("xchg", arr, index, value)


def compare_exchange(arr: npt.NDArray[Any], index: int, expected: int, replacement: int) -> int:
    """Atomically set `arr[index]` to `replacement` if it equals `expected`.

    Both values are wrapped to the element type before the comparison, as in
    JavaScript. Returns the old value, whether or not it was replaced.
    """
    target = _target(arr, index)
    kind = target.kind
    return _call(
        target, "cmpxchg", kind.raw(expected, "expected"), kind.raw(replacement, "replacement")
    )


def _timeout_ns(timeout: float | None) -> int:
    """Convert seconds to wasm's timeout in ns: negative in wasm means forever."""
    if timeout is None:
        return -1
    if isinstance(timeout, bool) or not isinstance(timeout, int | float | np.integer | np.floating):
        raise TypeError(f"timeout must be a number of seconds or None (got {timeout!r})")
    forever = (1 << 63) - 1
    if isinstance(timeout, int | np.integer):
        # Exact for ints of any size, which float() could overflow on.
        ns = int(timeout) * 1_000_000_000
    else:
        t = float(timeout)
        if math.isnan(t):
            raise ValueError(f"timeout must be a number of seconds or None (got {timeout!r})")
        if t <= 0:
            return 0
        if t * 1e9 >= forever:  # includes +inf
            return -1
        ns = round(t * 1e9)
    # As in JavaScript, a negative timeout means "do not wait".
    return -1 if ns >= forever else max(0, ns)


def _wait_raw(target: _Target, expected: int, ns: int) -> WaitResult:
    func = target.helper.funcs[f"wait{target.kind.bits}"]
    raw = func.args
    raw[0].i32 = target.address
    if target.kind.bits == 64:
        raw[1].i64 = expected
    else:
        raw[1].i32 = expected
    raw[2].i64 = ns
    func.call()
    return _WAIT_RESULTS[int(raw[0].i32)]


def wait(arr: npt.NDArray[Any], index: int, value: int, timeout: float | None = None) -> WaitResult:
    """Block while `arr[index] == value` until notified or `timeout` seconds pass.

    Blocks the calling thread (any thread, including the main one) with the GIL
    released.

    Returns:
        "not-equal" if `arr[index] != value` on entry, "ok" if a `notify` woke
        the waiter, "timed-out" otherwise.

    Raises:
        TypeError: `arr` is not an int32/int64 view of a shared memory, or an
            argument has the wrong type.
        IndexError: `index` is out of range.
        ValueError: `timeout` is NaN.
    """
    target = _target(arr, index, waitable=True)
    expected = target.kind.raw(value, "value")
    return _wait_raw(target, expected, _timeout_ns(timeout))


async def wait_async(
    arr: npt.NDArray[Any], index: int, value: int, timeout: float | None = None
) -> WaitResult:
    """Wait like `wait`, without blocking the event loop.

    Arguments are checked, and "not-equal" or a zero-timeout result returned,
    before the coroutine first suspends; otherwise one daemon thread parks on
    the word and hands the result back to the loop.
    """
    target = _target(arr, index, waitable=True)
    expected = target.kind.raw(value, "value")
    ns = _timeout_ns(timeout)
    first = _wait_raw(target, expected, 0)
    if first == "not-equal" or ns == 0:
        return first
    loop = asyncio.get_running_loop()
    future: asyncio.Future[WaitResult] = loop.create_future()

    def deliver(result: WaitResult | BaseException) -> None:
        if future.done():
            return
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)

    def park() -> None:
        try:
            # `target.helper` resolves to this thread's own helper instance.
            result: WaitResult | BaseException = _wait_raw(target, expected, ns)
        except BaseException as exc:  # handed to the awaiting task
            result = exc
        # RuntimeError: the loop closed while we were parked; nobody is awaiting.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(deliver, result)

    threading.Thread(target=park, name="sharedwasm-wait-async", daemon=True).start()
    return await future


def notify(arr: npt.NDArray[Any], index: int, count: int | None = None) -> int:
    """Wake up to `count` waiters on `arr[index]` (all if None); return how many woke.

    Never blocks. A negative count wakes nobody, as in JavaScript.
    """
    target = _target(arr, index, waitable=True)
    if count is None:
        n = (1 << 32) - 1
    else:
        try:
            n = operator.index(count)
        except TypeError:
            raise TypeError(f"count must be an int or None (got {count!r})") from None
        n = min(max(n, 0), (1 << 32) - 1)
    func = target.helper.funcs["notify"]
    func.args[0].i32 = target.address
    func.args[1].i32 = _wasmtime.as_i32(n)
    func.call()
    return int(func.args[0].i32)
