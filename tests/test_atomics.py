"""Tests for `sharedwasm.atomics`: JavaScript `Atomics` semantics on views of a shared memory.

Test262 (`built-ins/Atomics`) is the reference for values and results. Every
wait that could block has a bounded timeout, waiters that must be woken run in
daemon threads, and a test that needs a waiter parked notifies in a bounded
loop until `notify` reports a wake.
"""

from __future__ import annotations

import asyncio
import functools
import math
import operator
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sharedwasm as sw
from conftest import TIMEOUT
from sharedwasm import atomics
from sharedwasm.testing import join_or_dump, wait_until
from strategies import INT_DTYPES

Array = npt.NDArray[Any]

WAITABLE_DTYPES: tuple[type[np.integer[Any]], ...] = (np.int32, np.int64)
SETTLE = 0.1
"""Seconds given to waiter threads that have started to park, where a test needs them all parked."""


def _wrap(value: int, dtype: npt.DTypeLike) -> int:
    """Wrap `value` to `dtype`'s range, as a store to an integer typed array does."""
    info = np.iinfo(dtype)
    v = value & ((1 << info.bits) - 1)
    if info.min < 0 and v > info.max:
        v -= 1 << info.bits
    return v


def _view(mem: sw.Memory, dtype: npt.DTypeLike, count: int = 16, offset: int = 0) -> Array:
    return mem.view(dtype, offset=offset, count=count)


@pytest.fixture
def mem() -> sw.Memory:
    """A fresh one-page shared memory."""
    return sw.Memory(1, 4)


@pytest.fixture(scope="module")
def module_mem() -> sw.Memory:
    """A shared memory reused by the property tests (fixtures there must not be per-test)."""
    return sw.Memory(1, 1)


class Waiter:
    """Run `atomics.wait` in a daemon thread and keep its result or exception."""

    def __init__(self, arr: Array, index: int, value: int, timeout: float | None = TIMEOUT) -> None:
        self.result: str | None = None
        self.error: BaseException | None = None
        self._started = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(arr, index, value, timeout), name="atomics-waiter", daemon=True
        )
        self.thread.start()
        wait_until(self._started.is_set, TIMEOUT, what="waiter thread started")

    def _run(self, arr: Array, index: int, value: int, timeout: float | None) -> None:
        try:
            # Create this thread's helper instance first, so the wait itself parks quickly.
            atomics.load(arr, index)
            self._started.set()
            self.result = atomics.wait(arr, index, value, timeout)
        except BaseException as exc:  # re-raised in the test by finish()
            self.error = exc
            self._started.set()

    @property
    def done(self) -> bool:
        return not self.thread.is_alive()

    def finish(self) -> str | None:
        """Join the thread (bounded) and return the wait's result."""
        join_or_dump(self.thread, TIMEOUT)
        if self.error is not None:
            raise self.error
        return self.result


def _wake_one(arr: Array, index: int) -> None:
    """Notify one waiter on `arr[index]`, retrying until one was actually parked."""
    wait_until(
        lambda: atomics.notify(arr, index, 1) == 1,
        TIMEOUT,
        what=f"a waiter parked on index {index}",
    )


def _run_bounded(fn: Callable[[], object]) -> Callable[[], object]:
    """Start `fn` in a daemon thread; return a bounded join that returns its result."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # re-raised by the joiner
            box["error"] = exc

    thread = threading.Thread(target=target, name="atomics-background", daemon=True)
    thread.start()

    def join() -> object:
        join_or_dump(thread, 3 * TIMEOUT)
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["result"]

    return join


# Loads, stores and read-modify-write


@pytest.mark.parametrize("dtype", INT_DTYPES)
def test_load_reads_what_numpy_wrote(mem: sw.Memory, dtype: type[np.integer[Any]]) -> None:
    """`load` returns a Python int equal to the element written with a plain numpy store."""
    arr = _view(mem, dtype)
    info = np.iinfo(dtype)
    arr[3] = info.min
    arr[4] = info.max
    assert atomics.load(arr, 3) == info.min
    assert atomics.load(arr, 4) == info.max
    assert type(atomics.load(arr, 4)) is int


@pytest.mark.parametrize(
    ("dtype", "value", "stored"),
    [
        (np.int8, 1000, -24),
        (np.int8, 128, -128),
        (np.uint8, 256, 0),
        (np.uint8, -1, 255),
        (np.int16, 2**15, -(2**15)),
        (np.uint16, -2, 2**16 - 2),
        (np.int32, 2**40 + 7, 7),
        (np.uint32, -1, 2**32 - 1),
        (np.int64, 2**63, -(2**63)),
        (np.uint64, -1, 2**64 - 1),
        (np.uint64, 2**64 + 3, 3),
    ],
)
def test_store_wraps_and_returns_value_as_given(
    mem: sw.Memory, dtype: type[np.integer[Any]], value: int, stored: int
) -> None:
    """`store` wraps the value to the element type but returns the value as given."""
    arr = _view(mem, dtype)
    assert atomics.store(arr, 1, value) == value
    assert int(arr[1]) == stored
    assert atomics.load(arr, 1) == stored


def test_store_returns_a_plain_int_for_index_like_values(mem: sw.Memory) -> None:
    """`store` accepts numpy integers and bools and returns them as plain ints."""
    arr = _view(mem, np.int32)
    result = atomics.store(arr, 0, np.int64(-3))  # type: ignore[arg-type]
    assert result == -3
    assert type(result) is int
    assert atomics.store(arr, 0, True) == 1
    assert arr[0] == 1


@pytest.mark.parametrize(
    ("dtype", "op", "initial", "operand", "old", "new"),
    [
        (np.int8, atomics.add, 127, 1, 127, -128),
        (np.uint8, atomics.add, 255, 1, 255, 0),
        (np.uint8, atomics.sub, 0, 1, 0, 255),
        (np.int16, atomics.sub, -(2**15), 1, -(2**15), 2**15 - 1),
        (np.int32, atomics.add, 2**31 - 1, 1, 2**31 - 1, -(2**31)),
        (np.uint32, atomics.add, 2**32 - 1, 2, 2**32 - 1, 1),
        (np.int64, atomics.add, 2**63 - 1, 1, 2**63 - 1, -(2**63)),
        (np.uint64, atomics.sub, 0, 1, 0, 2**64 - 1),
        (np.int8, atomics.and_, -1, 0x0F, -1, 0x0F),
        (np.uint16, atomics.or_, 0x0F00, 0x00F0, 0x0F00, 0x0FF0),
        (np.int32, atomics.xor, -1, 1, -1, -2),
        (np.uint8, atomics.exchange, 7, 300, 7, 44),
        (np.int64, atomics.exchange, -1, 2**64 + 9, -1, 9),
    ],
)
def test_rmw_returns_old_value_and_wraps(
    mem: sw.Memory,
    dtype: type[np.integer[Any]],
    op: Callable[[Array, int, int], int],
    initial: int,
    operand: int,
    old: int,
    new: int,
) -> None:
    """Read-modify-write operations return the old value and leave the wrapped result."""
    arr = _view(mem, dtype)
    arr[2] = initial
    assert op(arr, 2, operand) == old
    assert atomics.load(arr, 2) == new


def test_compare_exchange_wraps_expected_before_comparing(mem: sw.Memory) -> None:
    """`compare_exchange` compares the element with `expected` wrapped to the element type."""
    i8 = _view(mem, np.int8)
    i8[0] = -1
    assert atomics.compare_exchange(i8, 0, 255, 5) == -1
    assert i8[0] == 5
    u8 = _view(mem, np.uint8)
    u8[1] = 255
    assert atomics.compare_exchange(u8, 1, -1, 256 + 9) == 255
    assert u8[1] == 9
    i32 = _view(mem, np.int32, offset=64)
    i32[0] = 5
    assert atomics.compare_exchange(i32, 0, 2**32 + 5, -(2**32) - 1) == 5
    assert i32[0] == -1
    u64 = _view(mem, np.uint64, offset=128)
    u64[0] = 2**64 - 1
    assert atomics.compare_exchange(u64, 0, -1, 2**64 + 1) == 2**64 - 1
    assert u64[0] == 1


def test_compare_exchange_leaves_a_mismatch_alone(mem: sw.Memory) -> None:
    """`compare_exchange` returns the old value and changes nothing when it does not match."""
    arr = _view(mem, np.int16)
    arr[3] = 42
    assert atomics.compare_exchange(arr, 3, 41, 7) == 42
    assert atomics.compare_exchange(arr, 3, 42 + 2**15, 7) == 42
    assert arr[3] == 42


_RMW_MODEL: dict[str, tuple[Callable[[Array, int, int], int], Callable[[int, int], int]]] = {
    "add": (atomics.add, operator.add),
    "sub": (atomics.sub, operator.sub),
    "and_": (atomics.and_, operator.and_),
    "or_": (atomics.or_, operator.or_),
    "xor": (atomics.xor, operator.xor),
    "exchange": (atomics.exchange, lambda _old, value: value),
}
_SENTINEL = 0xA5


def _operands(dtype: type[np.integer[Any]]) -> st.SearchStrategy[int]:
    info = np.iinfo(dtype)
    return st.one_of(
        st.integers(info.min, info.max),
        st.integers(-(2**70), 2**70),
        st.sampled_from([0, 1, -1, info.min, info.max, 1 << info.bits, (1 << info.bits) + 1]),
    )


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_rmw_ops_match_a_wrapping_model(module_mem: sw.Memory, data: st.DataObject) -> None:
    """Every read-modify-write op returns the old value and stores the model's wrapped result."""
    dtype = data.draw(st.sampled_from(INT_DTYPES), label="dtype")
    name = data.draw(st.sampled_from(sorted(_RMW_MODEL)), label="op")
    info = np.iinfo(dtype)
    initial = data.draw(st.integers(info.min, info.max), label="initial")
    operand = data.draw(_operands(dtype), label="operand")
    index = data.draw(st.integers(0, 7), label="index")
    op, model = _RMW_MODEL[name]
    module_mem.view(np.uint8, count=64)[:] = _SENTINEL
    arr = _view(module_mem, dtype, count=8)
    arr[index] = initial
    before = arr.copy()

    assert op(arr, index, operand) == initial
    expected = before.copy()
    expected[index] = _wrap(model(initial, operand), dtype)
    assert atomics.load(arr, index) == int(expected[index])
    # Narrow operations must not touch the neighbouring elements of their word.
    np.testing.assert_array_equal(arr, expected)
    # arr covers 8 elements of bits // 8 bytes each, so bytes [bits, 64) lie past it.
    assert (module_mem.view(np.uint8, offset=info.bits, count=64 - info.bits) == _SENTINEL).all()


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_store_and_compare_exchange_match_a_wrapping_model(
    module_mem: sw.Memory, data: st.DataObject
) -> None:
    """`store` and `compare_exchange` agree with a model that wraps every value first."""
    dtype = data.draw(st.sampled_from(INT_DTYPES), label="dtype")
    info = np.iinfo(dtype)
    initial = data.draw(st.integers(info.min, info.max), label="initial")
    aliases = st.integers(-2, 2).map(lambda k: initial + k * (1 << info.bits))
    expected = data.draw(st.one_of(aliases, _operands(dtype)), label="expected")
    replacement = data.draw(_operands(dtype), label="replacement")
    arr = _view(module_mem, dtype, count=8)

    assert atomics.store(arr, 5, initial) == initial
    assert atomics.compare_exchange(arr, 5, expected, replacement) == initial
    matched = _wrap(expected, dtype) == initial
    assert atomics.load(arr, 5) == (_wrap(replacement, dtype) if matched else initial)
    assert atomics.store(arr, 5, replacement) == replacement
    assert int(arr[5]) == _wrap(replacement, dtype)


# Which element an operation reaches


def test_operations_address_the_element_of_any_view(mem: sw.Memory) -> None:
    """Atomics follow a view's offset and strides, including negative ones and `buffer` views."""
    base = _view(mem, np.int32, count=32)
    atomics.store(base[::2], 3, 11)
    assert base[6] == 11
    atomics.store(base[::-1], 0, 12)
    assert base[31] == 12
    atomics.store(_view(mem, np.int32, count=4, offset=40), 1, 13)
    assert base[11] == 13
    atomics.store(np.frombuffer(mem.buffer, dtype=np.int32), 20, 14)
    assert base[20] == 14
    assert atomics.add(base[4:8], 0, 1) == 0
    assert base[4] == 1


def test_views_of_different_dtypes_share_bytes(mem: sw.Memory) -> None:
    """A store through an int32 view is seen, byte for byte, through a uint8 view."""
    i32 = _view(mem, np.int32)
    atomics.store(i32, 1, 0x01020304)
    expected = np.array([0x01020304], dtype=np.int32).view(np.uint8)
    u8 = _view(mem, np.uint8)
    assert [atomics.load(u8, 4 + k) for k in range(4)] == expected.tolist()


def test_operations_reach_pages_added_by_grow(mem: sw.Memory) -> None:
    """After `grow`, a fresh view reaches the new pages, even from a thread that used atomics."""
    old = mem.view(np.int32)
    atomics.store(old, 0, 1)
    mem.grow(1)
    new = mem.view(np.int32)
    assert len(new) == 2 * len(old)
    assert atomics.store(new, len(old) + 5, 77) == 77
    assert atomics.add(new, len(new) - 1, 3) == 0
    assert atomics.load(new, len(new) - 1) == 3


def test_view_made_before_grow_keeps_its_length(mem: sw.Memory) -> None:
    """A view made before `grow` still refuses indexes past its own length."""
    old = mem.view(np.int32)
    mem.grow(1)
    with pytest.raises(IndexError, match=r"index must be in range\(0, 16384\) \(got 16384\)"):
        atomics.load(old, len(old))


def test_operations_work_above_2_gib() -> None:
    """Byte offsets at and above 2**31, which wasm's i32 address carries as negative, work."""
    big = sw.Memory(32769, 32769)
    arr = big.view(np.int32, offset=2**31, count=16)
    assert atomics.store(arr, 1, 7) == 7
    assert atomics.add(arr, 1, 1) == 7
    assert int(arr[1]) == 8
    tail = big.view(np.int64, offset=big.byte_length - 8, count=1)
    assert atomics.exchange(tail, 0, -5) == 0
    assert atomics.load(tail, 0) == -5
    assert atomics.wait(arr, 1, 8, 0) == "timed-out"
    assert atomics.notify(arr, 1) == 0


# Argument errors


_ALL_OPS: list[tuple[str, Callable[[Any, Any], object]]] = [
    ("load", lambda a, i: atomics.load(a, i)),
    ("store", lambda a, i: atomics.store(a, i, 1)),
    ("add", lambda a, i: atomics.add(a, i, 1)),
    ("sub", lambda a, i: atomics.sub(a, i, 1)),
    ("and_", lambda a, i: atomics.and_(a, i, 1)),
    ("or_", lambda a, i: atomics.or_(a, i, 1)),
    ("xor", lambda a, i: atomics.xor(a, i, 1)),
    ("exchange", lambda a, i: atomics.exchange(a, i, 1)),
    ("compare_exchange", lambda a, i: atomics.compare_exchange(a, i, 0, 1)),
    ("wait", lambda a, i: atomics.wait(a, i, 1, 0)),
    ("notify", lambda a, i: atomics.notify(a, i)),
]
_OP_IDS = [name for name, _ in _ALL_OPS]
_OPS = [fn for _, fn in _ALL_OPS]


@pytest.mark.parametrize("op", _OPS, ids=_OP_IDS)
@pytest.mark.parametrize("arr", [[0, 1, 2], memoryview(bytearray(16)), None])
def test_non_arrays_are_rejected(op: Callable[[Any, Any], object], arr: object) -> None:
    """Anything but a numpy array raises TypeError."""
    with pytest.raises(
        TypeError, match=r"arr must be a numpy view of a shared sharedwasm\.Memory \(got \w+\)"
    ):
        op(arr, 0)


@pytest.mark.parametrize("op", _OPS, ids=_OP_IDS)
def test_arrays_outside_a_memory_are_rejected(op: Callable[[Any, Any], object]) -> None:
    """A plain numpy array, not a view of a `Memory`, raises TypeError."""
    with pytest.raises(TypeError, match=r"arr must be a view of a shared sharedwasm\.Memory"):
        op(np.zeros(16, dtype=np.int32), 0)


@pytest.mark.parametrize(
    "dtype",
    [np.float32, np.float64, np.bool_, np.complex64, np.dtype("m8"), np.dtype("i4").newbyteorder()],
)
@pytest.mark.parametrize("op", _OPS[:9], ids=_OP_IDS[:9])
def test_non_integer_or_foreign_endian_dtypes_are_rejected(
    mem: sw.Memory, op: Callable[[Any, Any], object], dtype: npt.DTypeLike
) -> None:
    """Float, bool, complex, timedelta and byte-swapped dtypes raise TypeError."""
    arr = _view(mem, dtype)
    with pytest.raises(
        TypeError, match=r"arr must have a native-endian integer dtype of 1, 2, 4 or 8 bytes"
    ):
        op(arr, 0)


@pytest.mark.parametrize("op", _OPS, ids=_OP_IDS)
def test_arrays_that_are_not_1d_are_rejected(
    mem: sw.Memory, op: Callable[[Any, Any], object]
) -> None:
    """A 2-D or 0-D view raises TypeError."""
    arr = _view(mem, np.int32)
    with pytest.raises(TypeError, match=r"arr must be 1-D \(got a 2-D array\)"):
        op(arr.reshape(4, 4), 0)
    with pytest.raises(TypeError, match=r"arr must be 1-D \(got a 0-D array\)"):
        op(arr[:1].reshape(()), 0)


@pytest.mark.parametrize("op", _OPS, ids=_OP_IDS)
@pytest.mark.parametrize("index", [16, -1, -16, 2**70])
def test_out_of_range_indexes_raise_index_error(
    mem: sw.Memory, op: Callable[[Any, Any], object], index: int
) -> None:
    """An index outside `range(len(arr))`, negative ones included, raises IndexError."""
    arr = _view(mem, np.int32)
    with pytest.raises(IndexError, match=rf"index must be in range\(0, 16\) \(got {index}\)"):
        op(arr, index)


@pytest.mark.parametrize("op", _OPS, ids=_OP_IDS)
@pytest.mark.parametrize("index", [1.0, "0", None, np.float64(2)])
def test_non_integer_indexes_raise_type_error(
    mem: sw.Memory, op: Callable[[Any, Any], object], index: object
) -> None:
    """A float, string or None index raises TypeError."""
    arr = _view(mem, np.int32)
    with pytest.raises(TypeError, match=r"index must be an int \(got "):
        op(arr, index)


def test_numpy_integer_indexes_are_accepted(mem: sw.Memory) -> None:
    """A numpy integer index works like a Python int."""
    arr = _view(mem, np.int64)
    atomics.store(arr, np.uint8(3), 9)  # type: ignore[arg-type]
    assert atomics.load(arr, np.int64(3)) == 9  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [1.5, 1.0, "1", None, np.float32(1)])
@pytest.mark.parametrize(
    "op",
    [
        atomics.store,
        atomics.add,
        atomics.sub,
        atomics.and_,
        atomics.or_,
        atomics.xor,
        atomics.exchange,
    ],
)
def test_non_integer_values_raise_type_error(
    mem: sw.Memory, op: Callable[[Any, Any, Any], object], value: object
) -> None:
    """A value that is not an int raises TypeError and leaves the element unchanged."""
    arr = _view(mem, np.int32)
    arr[0] = 3
    with pytest.raises(TypeError, match=r"value must be an int \(got "):
        op(arr, 0, value)
    assert arr[0] == 3


def test_compare_exchange_names_the_bad_argument(mem: sw.Memory) -> None:
    """`compare_exchange` says whether `expected` or `replacement` is not an int."""
    arr = _view(mem, np.int32)
    with pytest.raises(TypeError, match=r"expected must be an int \(got 0\.5\)"):
        atomics.compare_exchange(arr, 0, 0.5, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"replacement must be an int \(got '1'\)"):
        atomics.compare_exchange(arr, 0, 0, "1")  # type: ignore[arg-type]
    assert arr[0] == 0


@pytest.mark.parametrize(
    "dtype", [np.int8, np.uint8, np.int16, np.uint16, np.uint32, np.uint64, np.float32]
)
def test_wait_and_notify_need_int32_or_int64(mem: sw.Memory, dtype: npt.DTypeLike) -> None:
    """`wait`, `wait_async` and `notify` on any dtype but int32 or int64 raise TypeError."""
    arr = _view(mem, dtype)
    message = r"arr must have dtype int32 or int64 to wait or notify \(got "
    with pytest.raises(TypeError, match=message):
        atomics.wait(arr, 0, 0, 0)
    with pytest.raises(TypeError, match=message):
        atomics.notify(arr, 0)
    with pytest.raises(TypeError, match=message):
        asyncio.run(atomics.wait_async(arr, 0, 1, 0))


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint16])
def test_misaligned_views_raise_layout_error(mem: sw.Memory, dtype: type[np.integer[Any]]) -> None:
    """A view whose elements are not aligned to their size raises `LayoutError`."""
    size = np.dtype(dtype).itemsize
    arr = mem.view(np.uint8)[1 : 1 + 4 * size].view(dtype)
    with pytest.raises(
        sw.LayoutError,
        match=rf"arr must be aligned to {size} bytes for atomic operations "
        r"\(element 0 is at byte offset 1\)",
    ):
        atomics.load(arr, 0)
    with pytest.raises(sw.LayoutError, match=r"element 2 is at byte offset "):
        atomics.add(arr, 2, 1)
    if dtype is not np.uint16:
        with pytest.raises(sw.LayoutError, match=rf"aligned to {size} bytes"):
            atomics.notify(arr, 0)


@pytest.mark.parametrize("timeout", ["1", b"1", [1], True, 1j])
def test_wait_rejects_non_number_timeouts(mem: sw.Memory, timeout: object) -> None:
    """A timeout that is not a real number of seconds raises TypeError."""
    arr = _view(mem, np.int32)
    with pytest.raises(TypeError, match=r"timeout must be a number of seconds or None \(got "):
        atomics.wait(arr, 0, 0, timeout)  # type: ignore[arg-type]


def test_wait_rejects_nan_timeout(mem: sw.Memory) -> None:
    """A NaN timeout raises ValueError, even when the value differs."""
    arr = _view(mem, np.int32)
    with pytest.raises(
        ValueError, match=r"timeout must be a number of seconds or None \(got nan\)"
    ):
        atomics.wait(arr, 0, 0, math.nan)
    with pytest.raises(ValueError, match=r"\(got .*nan\)"):
        atomics.wait(arr, 0, 1, np.float32("nan"))  # type: ignore[arg-type]


@pytest.mark.parametrize("count", [1.5, "1", 1.0])
def test_notify_rejects_non_integer_counts(mem: sw.Memory, count: object) -> None:
    """A count that is neither an int nor None raises TypeError."""
    arr = _view(mem, np.int32)
    with pytest.raises(TypeError, match=r"count must be an int or None \(got "):
        atomics.notify(arr, 0, count)  # type: ignore[arg-type]


# wait and notify


@pytest.mark.parametrize("dtype", WAITABLE_DTYPES)
@pytest.mark.parametrize("timeout", [TIMEOUT, 0, -1, None])
def test_wait_returns_not_equal_when_value_differs(
    mem: sw.Memory, dtype: type[np.integer[Any]], timeout: float | None
) -> None:
    """`wait` returns "not-equal" at once when the element differs, whatever the timeout."""
    arr = _view(mem, dtype)
    arr[1] = 7
    t0 = time.monotonic()
    waiter = Waiter(arr, 1, 8, timeout)
    assert waiter.finish() == "not-equal"
    assert time.monotonic() - t0 < TIMEOUT / 2


@pytest.mark.parametrize("dtype", WAITABLE_DTYPES)
def test_wait_times_out_after_the_timeout(mem: sw.Memory, dtype: type[np.integer[Any]]) -> None:
    """`wait` on an equal value with nobody notifying returns "timed-out" after the timeout."""
    arr = _view(mem, dtype)
    t0 = time.monotonic()
    assert atomics.wait(arr, 0, 0, 0.05) == "timed-out"
    assert time.monotonic() - t0 >= 0.05


@pytest.mark.parametrize("timeout", [0, 0.0, -0.0, -1, -0.5, -1e9, np.float64(-3), np.int32(0)])
def test_zero_or_negative_timeout_does_not_wait(mem: sw.Memory, timeout: float) -> None:
    """A zero or negative timeout returns "timed-out" without waiting, as in JavaScript."""
    arr = _view(mem, np.int32)
    t0 = time.monotonic()
    assert atomics.wait(arr, 0, 0, timeout) == "timed-out"
    assert time.monotonic() - t0 < 1.0


def test_wait_compares_the_wrapped_value(mem: sw.Memory) -> None:
    """`wait` wraps `value` to the element type before comparing."""
    i32 = _view(mem, np.int32)
    i32[0] = 5
    assert atomics.wait(i32, 0, 2**32 + 5, 0) == "timed-out"
    assert atomics.wait(i32, 0, 2**32 + 6, 0) == "not-equal"
    i32[1] = -1
    assert atomics.wait(i32, 1, 2**32 - 1, 0) == "timed-out"
    i64 = _view(mem, np.int64, offset=64)
    i64[0] = 5
    assert atomics.wait(i64, 0, 2**64 + 5, 0) == "timed-out"
    assert atomics.wait(i64, 0, -(2**64) + 5, 0) == "timed-out"
    assert atomics.wait(i64, 0, 2**63 + 5, 0) == "not-equal"


@pytest.mark.parametrize("dtype", WAITABLE_DTYPES)
def test_notify_wakes_a_waiter(mem: sw.Memory, dtype: type[np.integer[Any]]) -> None:
    """`notify` wakes a parked waiter, which returns "ok"."""
    arr = _view(mem, dtype)
    waiter = Waiter(arr, 3, 0)
    _wake_one(arr, 3)
    assert waiter.finish() == "ok"


@pytest.mark.parametrize("timeout", [None, math.inf])
def test_wait_without_timeout_is_woken_by_notify(mem: sw.Memory, timeout: float | None) -> None:
    """A wait with no timeout (None or infinity) returns "ok" once notified."""
    arr = _view(mem, np.int32)
    waiter = Waiter(arr, 0, 0, timeout)
    _wake_one(arr, 0)
    assert waiter.finish() == "ok"


def test_main_thread_wait_is_woken_by_another_thread(mem: sw.Memory) -> None:
    """A wait on the main thread is woken by a `notify` from another thread."""
    arr = _view(mem, np.int64)
    join = _run_bounded(lambda: _wake_one(arr, 2))
    assert atomics.wait(arr, 2, 0, TIMEOUT) == "ok"
    join()


@pytest.mark.parametrize("count", [0, -1, -(2**40)])
def test_notify_with_zero_or_negative_count_wakes_nobody(mem: sw.Memory, count: int) -> None:
    """`notify` with a count of 0 or less returns 0 and leaves the waiter parked."""
    arr = _view(mem, np.int32)
    waiter = Waiter(arr, 0, 0)
    time.sleep(SETTLE)
    assert atomics.notify(arr, 0, count) == 0
    time.sleep(SETTLE)
    assert not waiter.done
    _wake_one(arr, 0)
    assert waiter.finish() == "ok"


@pytest.mark.parametrize("dtype", WAITABLE_DTYPES)
@pytest.mark.parametrize("count", [None, 0, 1, 5, 2**40])
def test_notify_without_waiters_returns_zero(
    mem: sw.Memory, dtype: type[np.integer[Any]], count: int | None
) -> None:
    """`notify` on an element nobody waits on returns 0."""
    arr = _view(mem, dtype)
    assert atomics.notify(arr, 4, count) == 0


def test_notify_count_one_wakes_exactly_one_of_two_waiters(mem: sw.Memory) -> None:
    """`notify(count=1)` with two waiters wakes one; a second notify wakes the other."""
    arr = _view(mem, np.int32)
    waiters = [Waiter(arr, 0, 0), Waiter(arr, 0, 0)]
    time.sleep(SETTLE)
    _wake_one(arr, 0)
    wait_until(lambda: any(w.done for w in waiters), TIMEOUT, what="one waiter woke")
    time.sleep(SETTLE)
    assert sum(w.done for w in waiters) == 1
    _wake_one(arr, 0)
    assert [w.finish() for w in waiters] == ["ok", "ok"]


def test_notify_on_another_index_does_not_wake(mem: sw.Memory) -> None:
    """A notify on a neighbouring element neither wakes nor counts a waiter."""
    arr = _view(mem, np.int32)
    waiter = Waiter(arr, 1, 0)
    time.sleep(SETTLE)
    assert atomics.notify(arr, 0) == 0
    assert atomics.notify(arr, 2) == 0
    assert atomics.notify(_view(mem, np.int64), 1) == 0  # bytes 8..16, past the waiter's 4..8
    time.sleep(SETTLE)
    assert not waiter.done
    _wake_one(arr, 1)
    assert waiter.finish() == "ok"


@pytest.mark.parametrize("dtype", WAITABLE_DTYPES)
def test_notify_all_wakes_every_waiter(mem: sw.Memory, dtype: type[np.integer[Any]]) -> None:
    """`notify(count=None)` wakes every parked waiter and returns how many, in any order."""
    arr = _view(mem, dtype)
    waiters = [Waiter(arr, 2, 0) for _ in range(3)]
    time.sleep(SETTLE)
    assert atomics.notify(arr, 2, None) == 3
    assert [w.finish() for w in waiters] == ["ok"] * 3
    assert atomics.notify(arr, 2, None) == 0


def test_notify_count_caps_the_wakes(mem: sw.Memory) -> None:
    """`notify(count=2)` with three waiters wakes two; a larger count wakes only the rest."""
    arr = _view(mem, np.int32)
    waiters = [Waiter(arr, 0, 0) for _ in range(3)]
    time.sleep(SETTLE)
    assert atomics.notify(arr, 0, 2) == 2
    wait_until(lambda: sum(w.done for w in waiters) == 2, TIMEOUT, what="two waiters woke")
    assert atomics.notify(arr, 0, 10) == 1
    assert [w.finish() for w in waiters] == ["ok"] * 3


def test_notify_finds_waiters_by_address_through_any_view(mem: sw.Memory) -> None:
    """A waiter on a byte address is woken by a notify through any view of that address."""
    base = _view(mem, np.int32)
    waiter = Waiter(base, 2, 0)
    _wake_one(_view(mem, np.int64), 1)  # bytes 8..16 start at the waiter's word
    assert waiter.finish() == "ok"
    waiter = Waiter(base, 2, 0)
    _wake_one(_view(mem, np.int32, count=4, offset=8), 0)
    assert waiter.finish() == "ok"


def test_int64_wait_compares_all_eight_bytes(mem: sw.Memory) -> None:
    """An int64 wait sees a difference in the high word that an int32 wait cannot."""
    i64 = _view(mem, np.int64)
    i64[0] = 2**32
    assert atomics.wait(i64, 0, 0, 0) == "not-equal"
    assert atomics.wait(_view(mem, np.int32), 0, 0, 0) == "timed-out"
    waiter = Waiter(i64, 0, 2**32)
    _wake_one(i64, 0)
    assert waiter.finish() == "ok"


def test_huge_timeout_is_accepted(mem: sw.Memory) -> None:
    """A huge finite timeout means 'practically forever' and still returns "not-equal"."""
    arr = _view(mem, np.int32)
    assert atomics.wait(arr, 0, 1, 1e300) == "not-equal"
    assert atomics.wait(arr, 0, 1, 10**400) == "not-equal"


@pytest.mark.parametrize("timeout", [-math.inf, -1e300])
def test_huge_negative_timeout_does_not_wait(mem: sw.Memory, timeout: float) -> None:
    """A timeout of minus infinity or a huge negative number acts like 0, as in JavaScript."""
    arr = _view(mem, np.int32)
    assert atomics.wait(arr, 0, 0, timeout) == "timed-out"


# wait_async


def _run_now(coro: Coroutine[Any, Any, str]) -> str:
    """Run `coro` to its first suspension; return its result if it finished without suspending."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return str(stop.value)
    coro.close()
    raise AssertionError("the coroutine suspended")


@pytest.mark.parametrize("dtype", WAITABLE_DTYPES)
def test_wait_async_returns_not_equal_without_suspending(
    mem: sw.Memory, dtype: type[np.integer[Any]]
) -> None:
    """`wait_async` on a differing value finishes on its first step, without an event loop."""
    arr = _view(mem, dtype)
    arr[0] = 1
    assert _run_now(atomics.wait_async(arr, 0, 2)) == "not-equal"
    assert _run_now(atomics.wait_async(arr, 0, 2**64 + 2 if dtype is np.int64 else 2**32 + 2)) == (
        "not-equal"
    )


@pytest.mark.parametrize("timeout", [0, -1])
def test_wait_async_with_no_time_left_does_not_suspend(mem: sw.Memory, timeout: float) -> None:
    """`wait_async` with a zero or negative timeout returns "timed-out" on its first step."""
    arr = _view(mem, np.int32)
    assert _run_now(atomics.wait_async(arr, 0, 0, timeout)) == "timed-out"


def test_wait_async_checks_arguments_before_suspending(mem: sw.Memory) -> None:
    """`wait_async` raises argument errors on its first step."""
    arr = _view(mem, np.int32)
    with pytest.raises(IndexError, match=r"index must be in range\(0, 16\) \(got 16\)"):
        _run_now(atomics.wait_async(arr, 16, 0))
    with pytest.raises(TypeError, match=r"value must be an int \(got 0\.5\)"):
        _run_now(atomics.wait_async(arr, 0, 0.5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"timeout must be a number of seconds or None"):
        _run_now(atomics.wait_async(arr, 0, 0, math.nan))
    with pytest.raises(TypeError, match=r"arr must be a view of a shared sharedwasm\.Memory"):
        _run_now(atomics.wait_async(np.zeros(4, np.int32), 0, 0))


@pytest.mark.parametrize("dtype", WAITABLE_DTYPES)
@pytest.mark.parametrize("timeout", [TIMEOUT, None])
def test_wait_async_is_woken_by_notify_while_the_loop_runs(
    mem: sw.Memory, dtype: type[np.integer[Any]], timeout: float | None
) -> None:
    """An awaited `wait_async` returns "ok" once notified, and the loop keeps running meanwhile."""
    arr = _view(mem, dtype)

    async def main() -> str:
        task = asyncio.ensure_future(atomics.wait_async(arr, 1, 0, timeout))
        # This loop runs on the same event loop, so the wait must not block it.
        while atomics.notify(arr, 1, 1) != 1:
            await asyncio.sleep(0.001)
        return await asyncio.wait_for(task, TIMEOUT)

    result = asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    assert result == "ok"


def test_wait_async_times_out_without_blocking_the_loop(mem: sw.Memory) -> None:
    """An awaited `wait_async` returns "timed-out" after its timeout while other tasks run."""
    arr = _view(mem, np.int64)
    ticks: list[float] = []

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.005)

    async def main() -> tuple[str, float]:
        tick = asyncio.ensure_future(ticker())
        t0 = time.monotonic()
        result = await atomics.wait_async(arr, 0, 0, 0.05)
        elapsed = time.monotonic() - t0
        tick.cancel()
        return result, elapsed

    result, elapsed = asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    assert result == "timed-out"
    assert elapsed >= 0.05
    assert len(ticks) >= 3


def _wait_async_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sharedwasm-wait-async"]


def test_cancelled_wait_async_stays_parked_until_notified(mem: sw.Memory) -> None:
    """Cancelling the awaiting task leaves its waiter parked, and a later notify counts it."""
    arr = _view(mem, np.int32)
    before = set(_wait_async_threads())

    async def main() -> None:
        task = asyncio.ensure_future(atomics.wait_async(arr, 0, 0, TIMEOUT))
        await asyncio.sleep(0)
        wait_until(
            lambda: bool(set(_wait_async_threads()) - before), TIMEOUT, what="wait_async parked"
        )
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(main(), TIMEOUT))
    # The loop is closed now; the parked thread must still be woken and exit quietly.
    _wake_one(arr, 0)
    for thread in set(_wait_async_threads()) - before:
        join_or_dump(thread, TIMEOUT)


# Contention between threads


def _start_together(n: int, body: Callable[[int], None]) -> list[Callable[[], object]]:
    barrier = threading.Barrier(n, timeout=TIMEOUT)

    def run(k: int) -> None:
        barrier.wait()
        body(k)

    return [_run_bounded(functools.partial(run, k)) for k in range(n)]


def test_threads_adding_to_one_counter_get_the_exact_total(mem: sw.Memory) -> None:
    """Concurrent `add` and `sub` from several threads lose no update."""
    i32 = _view(mem, np.int32)
    i64 = _view(mem, np.int64, offset=64)
    threads, rounds = 4, 5000

    def body(_k: int) -> None:
        for _ in range(rounds):
            atomics.add(i32, 0, 1)
            atomics.sub(i32, 1, 3)
            atomics.add(i64, 0, 2**40)

    for join in _start_together(threads, body):
        join()
    assert atomics.load(i32, 0) == threads * rounds
    assert atomics.load(i32, 1) == -3 * threads * rounds
    assert atomics.load(i64, 0) == threads * rounds * 2**40


def test_compare_exchange_loops_from_threads_count_exactly(mem: sw.Memory) -> None:
    """Compare-and-swap increment loops in several threads wrap a uint16 counter exactly."""
    arr = _view(mem, np.uint16)
    arr[0] = 65000
    threads, rounds = 4, 1000

    def body(_k: int) -> None:
        for _ in range(rounds):
            old = atomics.load(arr, 0)
            while (seen := atomics.compare_exchange(arr, 0, old, old + 1)) != old:
                old = seen

    for join in _start_together(threads, body):
        join()
    assert atomics.load(arr, 0) == (65000 + threads * rounds) % 2**16


# Interoperation with kernels


GO, WAIT_RESULT, DONE, WOKEN = 0, 1, 2, 3  # i32 word indexes of atomics_handshake.wat


def _handshake(
    make_pool: Callable[..., sw.WorkerPool],
    kernel: Callable[[str], sw.Kernel],
    wait_for_kernel: Callable[[Array], str],
) -> tuple[Array, str]:
    pool = make_pool(kernel("atomics_handshake"), workers=2)
    words = pool.data(np.int32)
    words[WAIT_RESULT] = -1
    words[WOKEN] = -1
    join = _run_bounded(lambda: pool.run("handshake", elements=2, timeout=3 * TIMEOUT))
    # Returns only once the kernel is parked in memory.atomic.wait32 and this notify woke it.
    _wake_one(words, GO)
    host_result = wait_for_kernel(words)
    join()
    return words, host_result


def test_host_notify_wakes_a_kernel_wait(
    make_pool: Callable[..., sw.WorkerPool], kernel: Callable[[str], sw.Kernel]
) -> None:
    """A host `notify` wakes a kernel parked in `memory.atomic.wait32`, which sees "ok" (0)."""
    words, _ = _handshake(make_pool, kernel, lambda words: atomics.wait(words, DONE, 0, TIMEOUT))
    assert atomics.load(words, WAIT_RESULT) == 0


def test_kernel_notify_wakes_a_host_wait(
    make_pool: Callable[..., sw.WorkerPool], kernel: Callable[[str], sw.Kernel]
) -> None:
    """A kernel's `memory.atomic.notify` wakes a host `wait`, and counts it as woken."""
    words, result = _handshake(
        make_pool, kernel, lambda words: atomics.wait(words, DONE, 0, TIMEOUT)
    )
    assert result == "ok"
    assert atomics.load(words, WOKEN) == 1


def test_kernel_notify_wakes_a_host_wait_async(
    make_pool: Callable[..., sw.WorkerPool], kernel: Callable[[str], sw.Kernel]
) -> None:
    """A kernel's `memory.atomic.notify` resolves a host `wait_async`."""

    def wait_async(words: Array) -> str:
        return asyncio.run(asyncio.wait_for(atomics.wait_async(words, DONE, 0, TIMEOUT), TIMEOUT))

    words, result = _handshake(make_pool, kernel, wait_async)
    assert result == "ok"
    assert atomics.load(words, WOKEN) == 1


def test_host_and_kernel_play_ping_pong(
    make_pool: Callable[..., sw.WorkerPool], kernel: Callable[[str], sw.Kernel]
) -> None:
    """Host and kernel alternate through wait/notify, each seeing the other's plain writes."""
    pool = make_pool(kernel("atomics_pingpong"), workers=1)
    turn, payload, reply, error = 0, 1, 2, 3
    words = pool.data(np.int32)
    rounds = 200
    join = _run_bounded(lambda: pool.run("pingpong", elements=rounds, timeout=3 * TIMEOUT))
    for r in range(rounds):
        words[payload] = 3 * r  # plain write, published by the atomic store below
        atomics.store(words, turn, 2 * r + 1)
        atomics.notify(words, turn)
        deadline = time.monotonic() + TIMEOUT
        while (seen := atomics.load(words, turn)) != 2 * r + 2:
            assert time.monotonic() < deadline, f"kernel did not answer round {r}"
            assert atomics.load(words, error) == 0
            atomics.wait(words, turn, seen, TIMEOUT)
        assert words[reply] == 3 * r + 1
    join()
    assert atomics.load(words, error) == 0


def test_host_and_kernel_adds_give_the_exact_total(
    make_pool: Callable[..., sw.WorkerPool], kernel: Callable[[str], sw.Kernel]
) -> None:
    """Kernel `i32/i64.atomic.rmw.add` and host `add` from several threads lose no update."""
    pool = make_pool(kernel("atomics_counter"), workers=2)
    i32 = pool.data(np.int32)
    i64 = pool.data(np.int64)
    start_flag = 4  # i32 word at data + 16
    elements, threads, rounds = 500_000, 3, 3000
    run = _run_bounded(
        lambda: pool.run("counter", elements=elements, element_size=1, timeout=3 * TIMEOUT)
    )

    def body(_k: int) -> None:
        while atomics.load(i32, start_flag) == 0:
            atomics.wait(i32, start_flag, 0, 0.01)
        for _ in range(rounds):
            atomics.add(i32, 0, 1)
            atomics.add(i64, 1, 1)

    joins = [_run_bounded(functools.partial(body, k)) for k in range(threads)]
    # One store and notify releases the kernels and the host threads at once.
    atomics.store(i32, start_flag, 1)
    atomics.notify(i32, start_flag)
    for join in joins:
        join()
    run()
    total = elements + threads * rounds
    assert atomics.load(i32, 0) == total
    assert atomics.load(i64, 1) == total
