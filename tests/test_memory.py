"""Tests for `sharedwasm.Memory`: sizes, validation, zero-copy views and growth."""

from __future__ import annotations

import gc
import threading
import weakref
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sharedwasm as sw
from conftest import TIMEOUT
from sharedwasm.testing import join_or_dump
from strategies import ViewSpec, view_specs

PAGE = sw.PAGE_SIZE


def _address(array: npt.NDArray[Any]) -> int:
    address: int = array.__array_interface__["data"][0]
    return address


# Construction and validation


def test_page_size_is_64_kib() -> None:
    """A WebAssembly page is 64 KiB."""
    assert PAGE == 65536


def test_sizes_are_reported() -> None:
    """`pages`, `maximum` and `byte_length` describe the memory as created."""
    mem = sw.Memory(2, 5)
    assert mem.pages == 2
    assert mem.maximum == 5
    assert mem.byte_length == 2 * PAGE
    assert repr(mem) == "<sharedwasm.Memory pages=2 maximum=5 shared=True>"


def test_numpy_integer_sizes_are_accepted() -> None:
    """Page counts may be numpy integers."""
    mem = sw.Memory(np.int64(1), np.uint16(3))  # type: ignore[arg-type]
    assert (mem.pages, mem.maximum) == (1, 3)


def test_shared_memory_requires_maximum() -> None:
    """A shared memory without a maximum raises TypeError, as in the reference design."""
    with pytest.raises(TypeError, match=r"maximum is required for shared memory"):
        sw.Memory(1)
    with pytest.raises(TypeError, match=r"maximum is required for shared memory"):
        sw.Memory(1, None, shared=True)


@pytest.mark.parametrize("maximum", [None, 2])
def test_unshared_memory_is_rejected(maximum: int | None) -> None:
    """`shared=False` raises ValueError explaining that workers need a shared memory."""
    with pytest.raises(
        ValueError,
        match=r"shared must be True: a memory must be shared to be used by several workers "
        r"\(got False\)",
    ):
        sw.Memory(1, maximum, shared=False)


def test_initial_above_maximum_is_rejected() -> None:
    """An initial size above the maximum raises ValueError."""
    with pytest.raises(ValueError, match=r"initial must be <= maximum=2 pages \(got initial=3\)"):
        sw.Memory(3, 2)


@pytest.mark.parametrize(
    ("initial", "maximum", "name"), [(1, 65537, "maximum"), (65537, 65537, "initial")]
)
def test_sizes_above_4_gib_are_rejected(initial: int, maximum: int, name: str) -> None:
    """A size above 65536 pages raises ValueError naming the argument."""
    with pytest.raises(ValueError, match=rf"{name} must be <= 65536 pages, 4 GiB \(got 65537\)"):
        sw.Memory(initial, maximum)


@pytest.mark.parametrize(("initial", "maximum", "name"), [(-1, 2, "initial"), (0, -1, "maximum")])
def test_negative_sizes_are_rejected(initial: int, maximum: int, name: str) -> None:
    """A negative size raises ValueError naming the argument."""
    with pytest.raises(ValueError, match=rf"{name} must be >= 0 pages \(got -1\)"):
        sw.Memory(initial, maximum)


@pytest.mark.parametrize(
    ("initial", "maximum", "name", "got"),
    [
        (1.5, 2, "initial", "1.5"),
        ("2", 2, "initial", "'2'"),
        (True, 2, "initial", "True"),
        (1, 2.0, "maximum", "2.0"),
        (1, "2", "maximum", "'2'"),
        (1, True, "maximum", "True"),
    ],
)
def test_non_integer_sizes_are_rejected(
    initial: object, maximum: object, name: str, got: str
) -> None:
    """A size that is not an int (floats, strings and bools included) raises TypeError."""
    with pytest.raises(TypeError, match=rf"{name} must be an int number of pages \(got {got}\)"):
        sw.Memory(initial, maximum)  # type: ignore[arg-type]


def test_empty_memory() -> None:
    """`Memory(0, 0)` works and has an empty buffer and empty views."""
    mem = sw.Memory(0, 0)
    assert (mem.pages, mem.maximum, mem.byte_length) == (0, 0, 0)
    assert len(mem.buffer) == 0
    assert not mem.buffer.readonly
    assert mem.view(np.float64).shape == (0,)
    assert mem.grow(0) == 0
    with pytest.raises(sw.LayoutError, match=r"count must be in \[0, 0\]"):
        mem.view(np.uint8, count=1)
    with pytest.raises(ValueError, match=r"delta_pages must be <= 0"):
        mem.grow(1)


# buffer and view


def test_buffer_is_a_writable_byte_view_of_the_current_length() -> None:
    """`buffer` is a writable, contiguous memoryview of bytes covering the whole memory."""
    mem = sw.Memory(2, 4)
    buf = mem.buffer
    assert isinstance(buf, memoryview)
    assert not buf.readonly
    assert buf.format == "B"
    assert buf.contiguous
    assert len(buf) == buf.nbytes == mem.byte_length
    buf[PAGE + 7] = 0xAB
    assert mem.buffer[PAGE + 7] == 0xAB
    assert mem.view(np.uint8)[PAGE + 7] == 0xAB


def test_memory_starts_zeroed() -> None:
    """A new memory reads as zeros."""
    mem = sw.Memory(1, 1)
    assert not mem.view(np.uint64).any()


def test_views_are_zero_copy() -> None:
    """Views of one region share memory: a write via one shows in the other and in `buffer`."""
    mem = sw.Memory(1, 2)
    a = mem.view(np.int32, offset=64, count=16)
    b = mem.view(np.int32, offset=64, count=16)
    assert a is not b
    assert np.shares_memory(a, b)
    assert np.shares_memory(a, np.frombuffer(mem.buffer, dtype=np.uint8))
    assert a.flags.writeable
    assert a.flags.c_contiguous

    a[3] = -123456
    assert b[3] == -123456
    assert bytes(mem.buffer[64 + 12 : 64 + 16]) == np.int32(-123456).tobytes()

    mem.buffer[64:68] = np.int32(42).tobytes()
    assert a[0] == b[0] == 42


def test_views_of_different_dtypes_alias() -> None:
    """Views with different dtypes over the same bytes see each other's writes."""
    mem = sw.Memory(1, 1)
    as_u32 = mem.view(np.uint32, offset=128, count=1)
    as_u8 = mem.view(np.uint8, offset=128, count=4)
    as_u32[0] = 0x04030201
    assert as_u8.tolist() == list(np.uint32(0x04030201).tobytes())


def test_disjoint_views_do_not_share_memory() -> None:
    """Adjacent views that do not overlap are reported as not sharing memory."""
    mem = sw.Memory(1, 1)
    a = mem.view(np.float32, offset=0, count=8)
    b = mem.view(np.float32, offset=32, count=8)
    assert not np.shares_memory(a, b)


@pytest.mark.parametrize(
    ("dtype", "offset", "expected"),
    [
        (np.uint8, 0, PAGE),
        (np.uint8, 100, PAGE - 100),
        (np.float32, 0, PAGE // 4),
        (np.float32, 8, PAGE // 4 - 2),
        (np.float64, 8, PAGE // 8 - 1),
        (np.complex128, PAGE, 0),
        (np.dtype("V3"), 1, (PAGE - 1) // 3),
    ],
)
def test_default_count_fills_to_the_end(dtype: npt.DTypeLike, offset: int, expected: int) -> None:
    """Without `count`, a view holds as many whole elements as fit before the end of memory."""
    mem = sw.Memory(1, 2)
    view = mem.view(dtype, offset=offset)
    assert view.shape == (expected,)
    assert view.dtype == np.dtype(dtype)


def test_default_dtype_is_bytes_of_the_whole_memory() -> None:
    """`view()` with no arguments is a uint8 view of the whole memory."""
    mem = sw.Memory(1, 1)
    view = mem.view()
    assert view.dtype == np.uint8
    assert view.shape == (mem.byte_length,)


def test_explicit_count_and_last_element() -> None:
    """An explicit count gives exactly that many elements, up to the last whole one."""
    mem = sw.Memory(1, 1)
    assert mem.view(np.int16, offset=2, count=5).shape == (5,)
    last = mem.view(np.int64, offset=PAGE - 8, count=1)
    last[0] = -1
    assert mem.buffer[PAGE - 1] == 0xFF
    assert mem.view(np.int64, offset=PAGE - 8, count=0).shape == (0,)


@pytest.mark.parametrize(
    ("dtype", "offset", "alignment", "name"),
    [
        (np.int32, 2, 4, "int32"),
        (np.float64, 4, 8, "float64"),
        (np.uint16, 1, 2, "uint16"),
        (np.complex128, 12, 8, "complex128"),
    ],
)
def test_misaligned_offset_is_rejected(
    dtype: npt.DTypeLike, offset: int, alignment: int, name: str
) -> None:
    """An offset that is not a multiple of the dtype's alignment raises LayoutError."""
    mem = sw.Memory(1, 1)
    with pytest.raises(
        sw.LayoutError,
        match=rf"offset must be a multiple of {alignment} for dtype {name} \(got {offset}\)",
    ):
        mem.view(dtype, offset=offset)


@pytest.mark.parametrize("offset", [-1, -8, PAGE + 1, PAGE + 8, 10 * PAGE])
def test_offset_out_of_bounds_is_rejected(offset: int) -> None:
    """An offset below 0 or past the end raises LayoutError."""
    mem = sw.Memory(1, 2)
    with pytest.raises(sw.LayoutError, match=rf"offset must be in \[0, {PAGE}\] \(got {offset}\)"):
        mem.view(np.uint8, offset=offset)


@pytest.mark.parametrize(
    ("dtype", "offset", "count", "available"),
    [
        (np.uint8, 0, PAGE + 1, PAGE),
        (np.float32, 0, PAGE // 4 + 1, PAGE // 4),
        (np.float64, PAGE - 8, 2, 1),
        (np.int32, PAGE, 1, 0),
        (np.int32, 0, -1, PAGE // 4),
    ],
)
def test_count_out_of_bounds_is_rejected(
    dtype: npt.DTypeLike, offset: int, count: int, available: int
) -> None:
    """A count that is negative or runs past the end of memory raises LayoutError."""
    mem = sw.Memory(1, 2)
    with pytest.raises(
        sw.LayoutError,
        match=rf"count must be in \[0, {available}\] for dtype .* at offset {offset} "
        rf"in a memory of {PAGE} bytes \(got {count}\)",
    ):
        mem.view(dtype, offset=offset, count=count)


def test_layout_error_is_a_value_error() -> None:
    """A bad view raises an error that `except ValueError` also catches."""
    mem = sw.Memory(1, 1)
    with pytest.raises(ValueError, match=r"offset must be a multiple of 4"):
        mem.view(np.int32, offset=1)


@pytest.mark.parametrize(
    "dtype", [object, np.dtype([("a", np.int32), ("b", object)]), np.dtype("V0")]
)
def test_object_or_empty_dtype_is_rejected(dtype: npt.DTypeLike) -> None:
    """A dtype holding Python objects, or of size 0, raises TypeError."""
    mem = sw.Memory(1, 1)
    with pytest.raises(TypeError, match=r"dtype must be a fixed-size dtype without objects"):
        mem.view(dtype)


@pytest.mark.parametrize(("offset", "count"), [(1.0, None), ("0", None), (0, 2.0), (0, "1")])
def test_non_integer_offset_or_count_is_rejected(offset: object, count: object) -> None:
    """A non-integer offset or count raises TypeError."""
    mem = sw.Memory(1, 1)
    with pytest.raises(TypeError, match=r"cannot be interpreted as an integer"):
        mem.view(np.uint8, offset=offset, count=count)  # type: ignore[arg-type]


def test_subarray_dtype_is_refused() -> None:
    """A subarray dtype, which would make a view that is not 1-D, is a TypeError."""
    mem = sw.Memory(1, 1)
    with pytest.raises(
        TypeError, match="dtype must be a fixed-size dtype without objects or subarrays"
    ):
        mem.view(np.dtype((np.int32, 3)), count=2)


@settings(max_examples=150, deadline=None)
@given(pages=st.integers(0, 2), data=st.data())
def test_view_round_trips_and_shares_memory(pages: int, data: st.DataObject) -> None:
    """A view at any aligned offset and fitting count holds what is written and aliases `buffer`."""
    mem = sw.Memory(pages, 2)
    spec: ViewSpec = data.draw(view_specs(mem.byte_length), label="spec")
    nbytes = spec.count * spec.dtype.itemsize
    raw = data.draw(st.binary(min_size=nbytes, max_size=nbytes), label="raw")
    values = np.frombuffer(raw, dtype=spec.dtype, count=spec.count)

    view = mem.view(spec.dtype, offset=spec.offset, count=spec.count)
    assert view.shape == (spec.count,)
    assert view.dtype == spec.dtype
    view[:] = values

    assert view.tobytes() == raw
    assert bytes(mem.buffer[spec.offset : spec.offset + nbytes]) == raw
    again = mem.view(spec.dtype, offset=spec.offset, count=spec.count)
    assert again.tobytes() == raw
    if spec.count:
        assert _address(view) == _address(np.frombuffer(mem.buffer, np.uint8)) + spec.offset
        assert np.shares_memory(view, np.frombuffer(mem.buffer, dtype=np.uint8))
        assert np.shares_memory(view, again)


# grow


def test_grow_returns_previous_pages_and_grows() -> None:
    """`grow` returns the size before growing and adds the pages to `byte_length`."""
    mem = sw.Memory(1, 8)
    assert mem.grow(2) == 1
    assert mem.pages == 3
    assert mem.byte_length == 3 * PAGE
    assert mem.grow(5) == 3
    assert mem.pages == mem.maximum == 8
    assert len(mem.buffer) == 8 * PAGE


def test_grow_zero_is_allowed() -> None:
    """`grow(0)` returns the current size and changes nothing."""
    mem = sw.Memory(2, 2)
    assert mem.grow(0) == 2
    assert mem.pages == 2


def test_old_views_keep_their_length_after_grow() -> None:
    """Views made before a grow keep their length and stay usable; fresh views see the new size."""
    mem = sw.Memory(1, 3)
    old = mem.view(np.float32)
    old_buffer = mem.buffer
    mem.grow(2)
    assert old.shape == (PAGE // 4,)
    assert len(old_buffer) == PAGE
    fresh = mem.view(np.float32)
    assert fresh.shape == (3 * PAGE // 4,)
    assert len(mem.buffer) == 3 * PAGE

    old[-1] = 2.5
    assert fresh[PAGE // 4 - 1] == 2.5
    fresh[-1] = 7.0
    assert mem.view(np.float32, offset=3 * PAGE - 4, count=1)[0] == 7.0


def test_data_persists_across_grow() -> None:
    """Bytes written before a grow are still there after it, and new pages read as zeros."""
    mem = sw.Memory(1, 4)
    before = mem.view(np.uint32)
    before[:] = np.arange(before.size, dtype=np.uint32)
    mem.grow(3)
    after = mem.view(np.uint32)
    np.testing.assert_array_equal(after[: before.size], np.arange(before.size, dtype=np.uint32))
    assert not after[before.size :].any()


def test_base_address_never_moves() -> None:
    """Views made before and after each grow start at the same address."""
    mem = sw.Memory(1, 16)
    first = mem.view(np.uint8)
    addresses = {_address(first)}
    for delta in (1, 4, 0, 10):
        mem.grow(delta)
        addresses.add(_address(mem.view(np.uint8)))
        addresses.add(_address(np.frombuffer(mem.buffer, dtype=np.uint8)))
    assert addresses == {_address(first)}


def test_memory_grown_from_zero_pages_is_usable() -> None:
    """A memory created with no pages can be grown and then viewed and written."""
    mem = sw.Memory(0, 2)
    assert mem.grow(1) == 0
    view = mem.view(np.int64)
    view[:] = 3
    assert mem.view(np.int64, offset=PAGE - 8, count=1)[0] == 3


@pytest.mark.parametrize("delta", [2, 65536])
def test_grow_past_maximum_changes_nothing(delta: int) -> None:
    """Growing past the maximum raises ValueError and leaves the size and data as they were."""
    mem = sw.Memory(2, 3)
    mem.view(np.uint8)[-1] = 9
    with pytest.raises(
        ValueError,
        match=rf"delta_pages must be <= 1 to stay within maximum=3 pages from 2 "
        rf"\(got {delta}\)",
    ):
        mem.grow(delta)
    assert mem.pages == 2
    assert mem.byte_length == 2 * PAGE
    assert mem.view(np.uint8)[-1] == 9
    assert mem.grow(1) == 2


def test_grow_above_4_gib_is_rejected() -> None:
    """A delta above 65536 pages raises ValueError before looking at the maximum."""
    mem = sw.Memory(1, 2)
    with pytest.raises(ValueError, match=r"delta_pages must be <= 65536 pages, 4 GiB"):
        mem.grow(65537)
    assert mem.pages == 1


@pytest.mark.parametrize("delta", [-1, -5])
def test_negative_grow_is_rejected(delta: int) -> None:
    """A negative delta raises ValueError and does not shrink the memory."""
    mem = sw.Memory(2, 4)
    with pytest.raises(ValueError, match=rf"delta_pages must be >= 0 pages \(got {delta}\)"):
        mem.grow(delta)
    assert mem.pages == 2


@pytest.mark.parametrize("delta", [1.0, "1", True, None])
def test_non_integer_grow_is_rejected(delta: object) -> None:
    """A delta that is not an int raises TypeError."""
    mem = sw.Memory(1, 4)
    with pytest.raises(TypeError, match=r"delta_pages must be an int number of pages"):
        mem.grow(delta)  # type: ignore[arg-type]
    assert mem.pages == 1


def test_concurrent_grows_are_serialised() -> None:
    """Grows from several threads each see a distinct previous size and never pass the maximum."""
    mem = sw.Memory(0, 6)
    results: list[int | BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(8)

    def grow() -> None:
        start.wait(TIMEOUT)
        try:
            result: int | BaseException = mem.grow(1)
        except ValueError as exc:
            result = exc
        with lock:
            results.append(result)

    threads = [threading.Thread(target=grow, name=f"grow-{i}") for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        join_or_dump(thread, TIMEOUT)
    previous = sorted(r for r in results if isinstance(r, int))
    assert previous == list(range(6))
    assert sum(isinstance(r, ValueError) for r in results) == 2
    assert mem.pages == 6


# lifetime


def test_view_keeps_memory_alive() -> None:
    """A view keeps its memory mapped after the last reference to the `Memory` is dropped."""
    mem = sw.Memory(1, 1)
    view = mem.view(np.float64, offset=PAGE - 64)
    view[:] = np.arange(8.0)
    ref = weakref.ref(mem)
    del mem
    gc.collect()
    assert ref() is not None
    np.testing.assert_array_equal(view, np.arange(8.0))
    view[0] = 11.0
    assert view[0] == 11.0


def test_buffer_keeps_memory_alive() -> None:
    """`buffer` keeps its memory mapped after the `Memory` itself is dropped."""
    mem = sw.Memory(1, 1)
    buf = mem.buffer
    buf[10] = 77
    ref = weakref.ref(mem)
    del mem
    gc.collect()
    assert ref() is not None
    assert buf[10] == 77


def test_memory_is_released_with_its_last_view() -> None:
    """Once the memory and all its views are dropped, the `Memory` is freed."""
    mem = sw.Memory(1, 1)
    view = mem.view(np.uint8, count=4)
    derived = view[1:3]
    ref = weakref.ref(mem)
    del mem, view
    gc.collect()
    assert ref() is not None
    derived[0] = 1
    del derived
    gc.collect()
    assert ref() is None
