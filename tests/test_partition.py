"""Tests for `sharedwasm._partition`: one contiguous, disjoint range per worker."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sharedwasm._partition import chunk_size, partition, partitions
from strategies import totals, worker_counts


@pytest.mark.parametrize(
    ("total", "workers", "expected"),
    [
        (0, 1, [(0, 0)]),
        (0, 3, [(0, 0), (0, 0), (0, 0)]),
        (1, 1, [(0, 1)]),
        (1, 3, [(0, 1), (1, 1), (1, 1)]),
        (8, 4, [(0, 2), (2, 4), (4, 6), (6, 8)]),
        (10, 3, [(0, 4), (4, 8), (8, 10)]),
        (5, 4, [(0, 2), (2, 4), (4, 5), (5, 5)]),
        (7, 10, [*[(i, i + 1) for i in range(7)], (7, 7), (7, 7), (7, 7)]),
    ],
)
def test_partitions_known_cases(total: int, workers: int, expected: list[tuple[int, int]]) -> None:
    """Ranges follow the reference rule with each start clamped to `total`."""
    assert partitions(total, workers) == expected


def test_last_worker_start_is_clamped() -> None:
    """With 5 elements and 4 workers the last worker gets the empty range (5, 5), not (6, 5)."""
    assert partition(5, 4, 3) == (5, 5)


def test_partition_matches_partitions() -> None:
    """`partition(total, workers, i)` is the `i`-th entry of `partitions(total, workers)`."""
    ranges = partitions(1000, 7)
    assert [partition(1000, 7, i) for i in range(7)] == ranges


@pytest.mark.parametrize(
    ("total", "workers", "chunk"), [(0, 4, 0), (1, 4, 1), (8, 4, 2), (9, 4, 3), (10**7, 1024, 9766)]
)
def test_chunk_size_is_ceiling(total: int, workers: int, chunk: int) -> None:
    """`chunk_size` is `ceil(total / workers)`."""
    assert chunk_size(total, workers) == chunk


@settings(max_examples=200, deadline=None)
@given(total=totals(), workers=worker_counts())
def test_partitions_tile_exactly(total: int, workers: int) -> None:
    """The ranges tile `[0, total)` in order, without gaps or overlap, each at most one chunk."""
    ranges = partitions(total, workers)
    chunk = math.ceil(total / workers)
    assert len(ranges) == workers
    assert ranges[0][0] == 0
    assert ranges[-1][1] == total
    for (_, end), (next_start, _) in itertools.pairwise(ranges):
        assert end == next_start
    for start, end in ranges:
        assert 0 <= start <= end <= total
        assert end - start <= chunk
    assert sum(end - start for start, end in ranges) == total


@settings(max_examples=200, deadline=None)
@given(total=totals(), workers=worker_counts(), data=st.data())
def test_partition_follows_reference_rule(total: int, workers: int, data: st.DataObject) -> None:
    """Worker `i` owns `[i*chunk, min((i+1)*chunk, total))`, with the start clamped to `total`."""
    index = data.draw(st.integers(0, workers - 1), label="index")
    chunk = math.ceil(total / workers)
    assert partition(total, workers, index) == (
        min(index * chunk, total),
        min((index + 1) * chunk, total),
    )


@pytest.mark.parametrize("total", [-1, -(10**9)])
def test_negative_total_is_rejected(total: int) -> None:
    """A negative `total` raises ValueError."""
    with pytest.raises(ValueError, match=r"total must be >= 0 \(got -\d+\)"):
        partition(total, 2, 0)
    with pytest.raises(ValueError, match=r"total must be >= 0"):
        partitions(total, 2)


@pytest.mark.parametrize("workers", [0, -1])
def test_workers_below_one_are_rejected(workers: int) -> None:
    """A worker count below 1 raises ValueError."""
    with pytest.raises(ValueError, match=r"workers must be at least 1 \(got -?\d+\)"):
        partition(10, workers, 0)


@pytest.mark.parametrize("workers", [0, -1])
def test_partitions_rejects_workers_below_one(workers: int) -> None:
    """`partitions` raises ValueError for a worker count below 1 instead of returning []."""
    with pytest.raises(ValueError, match=r"workers must be at least 1 \(got -?\d+\)"):
        partitions(10, workers)


@pytest.mark.parametrize("index", [-1, 4, 100])
def test_index_out_of_range_is_rejected(index: int) -> None:
    """An index outside `range(workers)` raises ValueError."""
    with pytest.raises(ValueError, match=r"index must be in range\(0, 4\) \(got -?\d+\)"):
        partition(10, 4, index)


@pytest.mark.parametrize(
    "args",
    [(10.0, 2, 0), ("10", 2, 0), (10, 2.0, 0), (10, "2", 0), (10, 2, 0.0), (10, 2, None)],
)
def test_non_integer_arguments_are_rejected(args: tuple[object, object, object]) -> None:
    """A non-integer total, worker count or index raises TypeError."""
    with pytest.raises(TypeError, match=r"cannot be interpreted as an integer"):
        partition(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize("args", [(10.0, 2), (10, 2.5), ("10", "2")])
def test_partitions_rejects_non_integers(args: tuple[object, object]) -> None:
    """`partitions` raises TypeError for a non-integer total or worker count."""
    with pytest.raises(TypeError, match=r"cannot be interpreted as an integer"):
        partitions(*args)  # type: ignore[arg-type]
