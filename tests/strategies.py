"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from hypothesis import strategies as st

from sharedwasm._layout import STATUS_SLOT_BYTES

VIEW_DTYPES: tuple[np.dtype[np.generic], ...] = tuple(
    np.dtype(name)
    for name in (
        "u1",
        "i1",
        "<u2",
        ">i2",
        "<i4",
        ">u4",
        "<i8",
        "<u8",
        "<f2",
        "<f4",
        ">f4",
        "<f8",
        "<c8",
        "<c16",
    )
)
"""Fixed-size dtypes of every width and alignment a view supports, in both byte orders."""

INT_DTYPES: tuple[type[np.integer[Any]], ...] = (
    np.int8,
    np.uint8,
    np.int16,
    np.uint16,
    np.int32,
    np.uint32,
    np.int64,
    np.uint64,
)
"""Every integer type of 1, 2, 4 and 8 bytes, signed and unsigned."""

MAX_TOTAL = 10**7
"""Largest element count the partition properties try."""

MAX_WORKERS = 1024
"""Largest worker count the partition and layout properties try."""


@dataclasses.dataclass(frozen=True)
class ViewSpec:
    """Where to place a view: its dtype, a byte offset aligned for it, and an element count."""

    dtype: np.dtype[np.generic]
    offset: int
    count: int


@st.composite
def view_specs(draw: st.DrawFn, byte_length: int) -> ViewSpec:
    """Draw a dtype, an aligned offset and a count that fit in `byte_length` bytes."""
    dtype = draw(st.sampled_from(VIEW_DTYPES))
    slot = draw(st.integers(0, byte_length // dtype.alignment))
    offset = slot * dtype.alignment
    count = draw(st.integers(0, (byte_length - offset) // dtype.itemsize))
    return ViewSpec(dtype=dtype, offset=offset, count=count)


def totals() -> st.SearchStrategy[int]:
    """Draw element counts, with the small and edge cases drawn often."""
    return st.one_of(st.integers(0, 64), st.integers(0, MAX_TOTAL), st.just(MAX_TOTAL))


def worker_counts() -> st.SearchStrategy[int]:
    """Draw worker counts from 1 to `MAX_WORKERS`."""
    return st.one_of(st.integers(1, 16), st.integers(1, MAX_WORKERS))


def status_offsets(max_offset: int = 1 << 20) -> st.SearchStrategy[int]:
    """Draw status-board offsets that are valid: non-negative multiples of the slot size."""
    return st.integers(0, max_offset // STATUS_SLOT_BYTES).map(lambda k: k * STATUS_SLOT_BYTES)
