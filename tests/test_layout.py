"""Tests for `sharedwasm._layout`: the status board, control block and data region."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sharedwasm as sw
from sharedwasm._layout import (
    CACHE_LINE,
    CONTROL_BYTES,
    CONTROL_WORDS,
    DATA_ALIGN,
    RECORD_BYTES,
    STATUS_SLOT_BYTES,
    Command,
    Control,
    Layout,
    Status,
    align_up,
)
from strategies import MAX_WORKERS, status_offsets

BIG = 1 << 32
"""A byte length (4 GiB, the largest memory) that leaves room for any board the tests draw."""


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def test_layout_is_exported() -> None:
    """`sharedwasm.Layout` and `sharedwasm.Status` are the `_layout` classes."""
    assert sw.Layout is Layout
    assert sw.Status is Status


def test_status_values_match_reference() -> None:
    """A status slot holds 0 while its worker runs and 1 once it is done, as in the reference."""
    assert Status.RUNNING.value == 0
    assert Status.DONE.value == 1
    assert len({int(s) for s in Status}) == len(Status)


def test_control_words_are_distinct_and_fit() -> None:
    """Every control word has its own index inside the control block."""
    indices = [int(word) for word in Control]
    assert len(set(indices)) == len(indices)
    assert all(0 <= i < CONTROL_WORDS for i in indices)
    assert CONTROL_BYTES == CONTROL_WORDS * 4


def test_command_values_are_distinct_and_nonzero() -> None:
    """Command values differ from each other and from the zeroed initial word."""
    values = [int(c) for c in Command]
    assert len(set(values)) == len(values)
    assert 0 not in values


def test_constants_are_powers_of_two() -> None:
    """The alignments are powers of two, as `align_up` requires, and fit a status slot."""
    for alignment in (CACHE_LINE, DATA_ALIGN):
        assert alignment > 0
        assert alignment & (alignment - 1) == 0
    assert STATUS_SLOT_BYTES == 4
    assert CACHE_LINE % STATUS_SLOT_BYTES == 0


@pytest.mark.parametrize(
    ("value", "alignment", "expected"),
    [(0, 64, 0), (1, 64, 64), (63, 64, 64), (64, 64, 64), (65, 64, 128), (5, 4, 8)],
)
def test_align_up(value: int, alignment: int, expected: int) -> None:
    """`align_up` rounds up to the next multiple of the alignment."""
    assert align_up(value, alignment) == expected


def test_reference_layout_for_four_workers() -> None:
    """Four workers at offset 0: a 16-byte board, control at 64, records at 448, data at 704."""
    layout = Layout.build(workers=4, status_offset=0, byte_length=65536)
    assert layout == Layout(
        workers=4,
        status_offset=0,
        control_offset=64,
        records_offset=448,
        data_offset=704,
        threads_offset=704,
    )
    assert layout.status_end == 16
    assert layout.control_end == 448
    assert layout.records_end == 448 + 4 * RECORD_BYTES
    assert [layout.record_address(i) for i in range(4)] == [448, 512, 576, 640]
    assert layout.regions() == {
        "status board": (0, 16),
        "control block": (64, 448),
        "worker records": (448, 704),
        "data region": (704, -1),
    }


def test_addresses_of_slots_and_words() -> None:
    """Status slots are consecutive int32s from the board start; control words from its start."""
    layout = Layout.build(workers=3, status_offset=1024, byte_length=65536)
    assert [layout.status_address(i) for i in range(3)] == [1024, 1028, 1032]
    assert layout.control_address(Control.GENERATION) == layout.control_offset
    assert layout.control_address(Control.PENDING) == layout.control_offset + 16


def test_layout_is_frozen() -> None:
    """A built layout cannot be modified."""
    layout = Layout.build(workers=2, status_offset=0, byte_length=65536)
    with pytest.raises(AttributeError, match="data_offset"):
        layout.data_offset = 0  # type: ignore[misc]


@settings(max_examples=200, deadline=None)
@given(
    workers=st.integers(1, MAX_WORKERS),
    status_offset=status_offsets(),
    byte_length=st.sampled_from([BIG, 1 << 24]),
)
def test_regions_are_placed_aligned_and_disjoint(
    workers: int, status_offset: int, byte_length: int
) -> None:
    """The board, control block and data region are aligned, ordered, tight and disjoint."""
    layout = Layout.build(workers=workers, status_offset=status_offset, byte_length=byte_length)
    assert layout.workers == workers
    assert layout.status_offset == status_offset
    assert layout.status_end == status_offset + workers * STATUS_SLOT_BYTES

    assert layout.control_offset % CACHE_LINE == 0
    assert layout.status_end <= layout.control_offset < layout.status_end + CACHE_LINE
    assert layout.control_end == layout.control_offset + CONTROL_BYTES

    assert layout.records_offset % CACHE_LINE == 0
    assert layout.records_offset == layout.control_end
    assert layout.records_end == layout.records_offset + workers * RECORD_BYTES

    assert layout.data_offset % DATA_ALIGN == 0
    assert layout.records_end <= layout.data_offset < layout.records_end + DATA_ALIGN
    assert layout.data_offset < byte_length

    regions = {**layout.regions(), "data region": (layout.data_offset, byte_length)}
    for (name_a, a), (name_b, b) in itertools.combinations(regions.items(), 2):
        assert not _overlap(a, b), f"{name_a} {a} overlaps {name_b} {b}"

    for i in range(workers):
        assert layout.status_offset <= layout.status_address(i) < layout.status_end
    for word in Control:
        address = layout.control_address(word)
        assert layout.control_offset <= address
        assert address + 4 <= layout.control_end


@settings(max_examples=100, deadline=None)
@given(workers=st.integers(1, MAX_WORKERS), status_offset=status_offsets())
def test_data_region_needs_at_least_one_byte(workers: int, status_offset: int) -> None:
    """A memory that ends exactly at the data offset is refused; one byte more is enough."""
    data_offset = Layout.build(
        workers=workers, status_offset=status_offset, byte_length=BIG
    ).data_offset
    with pytest.raises(sw.LayoutError, match=r"status_offset must leave room for data"):
        Layout.build(workers=workers, status_offset=status_offset, byte_length=data_offset)
    layout = Layout.build(workers=workers, status_offset=status_offset, byte_length=data_offset + 1)
    assert layout.data_offset == data_offset


@pytest.mark.parametrize("status_offset", [-4, -1, -(1 << 20)])
def test_negative_status_offset_is_rejected(status_offset: int) -> None:
    """A negative status offset raises LayoutError naming status_offset."""
    with pytest.raises(sw.LayoutError, match=r"status_offset must be >= 0 \(got -\d+\)"):
        Layout.build(workers=2, status_offset=status_offset, byte_length=65536)


@pytest.mark.parametrize("status_offset", [1, 2, 3, 6, 1025])
def test_misaligned_status_offset_is_rejected(status_offset: int) -> None:
    """A status offset that is not a multiple of 4 raises LayoutError naming status_offset."""
    with pytest.raises(sw.LayoutError, match=r"status_offset must be a multiple of 4 \(got \d+\)"):
        Layout.build(workers=2, status_offset=status_offset, byte_length=65536)


@pytest.mark.parametrize(
    ("workers", "status_offset", "byte_length"),
    [(1, 0, 0), (1, 0, 128), (4, 65536, 65536), (16384, 0, 65536), (1, 65440, 65536)],
)
def test_no_room_for_data_is_rejected(workers: int, status_offset: int, byte_length: int) -> None:
    """Regions that leave no byte for data raise LayoutError saying where data would start."""
    with pytest.raises(
        sw.LayoutError,
        match=rf"status_offset must leave room for data: a board for {workers} workers "
        rf"at {status_offset} puts the data region at \d+, but the memory is {byte_length} bytes",
    ):
        Layout.build(workers=workers, status_offset=status_offset, byte_length=byte_length)


@pytest.mark.parametrize("workers", [0, -1])
def test_workers_below_one_are_rejected(workers: int) -> None:
    """A worker count below 1 raises a plain ValueError, not a LayoutError."""
    with pytest.raises(ValueError, match=r"workers must be at least 1 \(got -?\d+\)") as info:
        Layout.build(workers=workers, status_offset=0, byte_length=65536)
    assert not isinstance(info.value, sw.LayoutError)


@pytest.mark.parametrize(("workers", "status_offset"), [(2.0, 0), ("2", 0), (2, 0.0), (2, None)])
def test_non_integer_workers_or_offset_are_rejected(workers: object, status_offset: object) -> None:
    """A non-integer worker count or status offset raises TypeError."""
    with pytest.raises(TypeError, match=r"cannot be interpreted as an integer"):
        Layout.build(workers=workers, status_offset=status_offset, byte_length=65536)  # type: ignore[arg-type]


def test_non_integer_byte_length_is_rejected() -> None:
    """A float byte length raises TypeError, as the docstring promises for every argument."""
    with pytest.raises(TypeError, match=r"cannot be interpreted as an integer"):
        Layout.build(workers=1, status_offset=0, byte_length=65536.0)  # type: ignore[arg-type]
