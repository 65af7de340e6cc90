"""The memory contract: where the status board, the control block and the data live.

This module is the single source of truth for every word the pool and its
workers share. Nothing else hard-codes an offset.

::

    0 ............ status_offset                                    byte_length
    | user/kernel  | status board | pad | control block | pad | data region ... |
    |   static     | N x int32    |     | CONTROL_WORDS  |     | data_offset ... |
                                   ^ CACHE_LINE aligned   ^ DATA_ALIGN aligned

The status board is the reference design's: one int32 per worker, `RUNNING`
(0) while the worker has not finished the current run, `DONE` (1) once it has.
The control block holds the words the host and the workers coordinate
through; it sits on its own cache line so that workers polling it do not
share a line with the status slots they write. The data region starts on a
`DATA_ALIGN` boundary so any numpy dtype, and 128-bit SIMD loads, are aligned.
The three never overlap; `Layout.build` refuses anything else.
"""

from __future__ import annotations

import dataclasses
import enum
import operator

from ._errors import LayoutError

STATUS_SLOT_BYTES = 4
CACHE_LINE = 64
DATA_ALIGN = 64
CONTROL_WORDS = 16
CONTROL_BYTES = CONTROL_WORDS * 4


class Status(enum.IntEnum):
    """Values of a worker's status slot."""

    RUNNING = 0
    """The worker has not finished the current run (the reference's 'idle' reset value)."""
    DONE = 1
    """The worker finished its partition of the current run."""
    TRAPPED = -1
    """The worker's partition trapped; the run reports a `KernelTrap`."""


class Control(enum.IntEnum):
    """Indices of the int32 words of the control block."""

    GENERATION = 0
    """Bumped once per command; workers wait on it."""
    COMMAND = 1
    """A `Command` value, valid once GENERATION has changed."""
    ELEMENTS = 2
    """Element count of the current run (unsigned)."""
    ELEMENT_SIZE = 3
    """Bytes per element of the current run."""
    PENDING = 4
    """Workers that have not finished the current run; the last one notifies it."""
    WORKERS = 5
    """Worker count, for observers that read the board without the pool."""
    DATA_OFFSET = 6
    """First byte of the data region, for the same observers."""


class Command(enum.IntEnum):
    """Values of `Control.COMMAND`."""

    RUN = 1
    EXIT = 2


def align_up(value: int, alignment: int) -> int:
    """Round `value` up to a multiple of `alignment` (a power of two)."""
    return (value + alignment - 1) & ~(alignment - 1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Layout:
    """Byte offsets of the pool's regions inside one shared memory."""

    workers: int
    status_offset: int
    control_offset: int
    data_offset: int

    @property
    def status_end(self) -> int:
        """One past the last byte of the status board."""
        return self.status_offset + self.workers * STATUS_SLOT_BYTES

    @property
    def control_end(self) -> int:
        """One past the last byte of the control block."""
        return self.control_offset + CONTROL_BYTES

    def status_address(self, worker_index: int) -> int:
        """Byte address of a worker's status slot."""
        return self.status_offset + worker_index * STATUS_SLOT_BYTES

    def control_address(self, word: Control) -> int:
        """Byte address of a control word."""
        return self.control_offset + int(word) * 4

    def regions(self) -> dict[str, tuple[int, int]]:
        """Return each region as a half-open byte range, for messages and checks."""
        return {
            "status board": (self.status_offset, self.status_end),
            "control block": (self.control_offset, self.control_end),
            "data region": (self.data_offset, -1),
        }

    @classmethod
    def build(cls, *, workers: int, status_offset: int, byte_length: int) -> Layout:
        """Place the regions for `workers` workers in a memory of `byte_length` bytes.

        Raises:
            TypeError: an argument is not an integer.
            ValueError: `workers` is not positive.
            LayoutError: the status offset is negative or misaligned, or the
                regions do not leave room for any data.
        """
        workers = operator.index(workers)
        status_offset = operator.index(status_offset)
        byte_length = operator.index(byte_length)
        if workers < 1:
            raise ValueError(f"workers must be at least 1 (got {workers!r})")
        if status_offset < 0:
            raise LayoutError(f"status_offset must be >= 0 (got {status_offset!r})")
        if status_offset % STATUS_SLOT_BYTES:
            raise LayoutError(
                f"status_offset must be a multiple of {STATUS_SLOT_BYTES} (got {status_offset!r})"
            )
        status_end = status_offset + workers * STATUS_SLOT_BYTES
        control_offset = align_up(status_end, CACHE_LINE)
        data_offset = align_up(control_offset + CONTROL_BYTES, DATA_ALIGN)
        if data_offset >= byte_length:
            raise LayoutError(
                f"status_offset must leave room for data: a board for {workers} workers at "
                f"{status_offset} puts the data region at {data_offset}, but the memory "
                f"is {byte_length} bytes (got status_offset={status_offset!r})"
            )
        return cls(
            workers=workers,
            status_offset=status_offset,
            control_offset=control_offset,
            data_offset=data_offset,
        )
