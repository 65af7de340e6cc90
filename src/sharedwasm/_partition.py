"""Split `[0, total)` into one contiguous, disjoint range per worker.

This is the rule stated in Python. Runs use the runner's own copy of it, in
wasm (`_runner`); the tests hold the two equal, range for range.

The reference design's rule: `chunk = ceil(total / workers)`, worker `i` owns
`[i*chunk, min((i+1)*chunk, total))`. Unlike the reference, `start` is
clamped to `total`: with 5 elements and 4 workers the last worker's naive
start (6) would pass its end (5) and hand the kernel a negative range.
"""

from __future__ import annotations

import operator


def chunk_size(total: int, workers: int) -> int:
    """Return `ceil(total / workers)`."""
    return -(-total // workers)


def _check(total: int, workers: int) -> tuple[int, int]:
    total = operator.index(total)
    workers = operator.index(workers)
    if total < 0:
        raise ValueError(f"total must be >= 0 (got {total!r})")
    if workers < 1:
        raise ValueError(f"workers must be at least 1 (got {workers!r})")
    return total, workers


def partition(total: int, workers: int, index: int) -> tuple[int, int]:
    """Return worker `index`'s half-open range of `[0, total)`.

    Raises:
        TypeError: an argument is not an integer.
        ValueError: `total` is negative, `workers` is not positive, or
            `index` is not in `range(workers)`.
    """
    total, workers = _check(total, workers)
    index = operator.index(index)
    if not 0 <= index < workers:
        raise ValueError(f"index must be in range(0, {workers}) (got {index!r})")
    chunk = chunk_size(total, workers)
    start = min(index * chunk, total)
    return start, min(start + chunk, total)


def partitions(total: int, workers: int) -> list[tuple[int, int]]:
    """Return every worker's range, in worker order."""
    total, workers = _check(total, workers)
    return [partition(total, workers, i) for i in range(workers)]
