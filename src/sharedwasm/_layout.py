"""The memory contract: where the status board, the control block and the data live.

This module is the single source of truth for every word the pool and its
workers share. Nothing else hard-codes an offset.

::

    0 ........... status_offset                                                 byte_length
    | user/kernel | status board | pad | control block | worker records | data region ... |
    |   static    | N x int32    |     | CONTROL_WORDS | N x RECORD_BYTES | data_offset ...|
                                  ^ CACHE_LINE          ^ CACHE_LINE       ^ DATA_ALIGN

The status board is the reference design's: one int32 per worker, `RUNNING`
(0) while the worker has not finished the current run, `DONE` (1) once it has.
The control block holds the words the host and the workers coordinate
through; it sits on its own cache line so that workers polling it do not
share a line with the status slots they write. Each worker then has a
cache line of its own, its record, where it reports what it did in the last
run (range, element count, timestamps). The data region starts on a
`DATA_ALIGN` boundary so any numpy dtype, and 128-bit SIMD loads, are aligned.
The regions never overlap; `Layout.build` refuses anything else.
"""

from __future__ import annotations

import dataclasses
import enum
import operator

from ._errors import LayoutError

STATUS_SLOT_BYTES = 4
CACHE_LINE = 64
DATA_ALIGN = 64
CONTROL_WORDS = 32
CONTROL_BYTES = CONTROL_WORDS * 4
RECORD_BYTES = 64


class Status(enum.IntEnum):
    """Values of a worker's status slot."""

    RUNNING = 0
    """The worker has not finished the current run (the reference's 'idle' reset value)."""
    DONE = 1
    """The worker finished its partition of the current run."""
    TRAPPED = -1
    """The worker's partition trapped; the run reports a `KernelTrap`."""
    CANCELLED = -2
    """The run was cancelled before this worker finished its share: it was
    interrupted, or it stopped claiming work, or it never started."""


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
    SCHEDULE = 7
    """A `Schedule` value for the current run."""
    CHUNK = 8
    """Elements per chunk of a dynamic run."""
    NEXT = 9
    """First element not yet claimed in a dynamic run; never passes ELEMENTS."""
    SLEEPERS = 10
    """Workers parked on GENERATION; the host notifies only when it is non-zero."""
    HOST_PARKED = 11
    """1 while the host is parked on PENDING; the last worker notifies only then."""
    PUBLISH_TIME = 12
    """Wall-clock ns when the current command was published (int64: words 12-13)."""
    STANDBY_GENERATION = 14
    """Bumped, after GENERATION, when worker 0's share goes to the standby thread
    instead of the caller (a run with a timeout); the standby thread waits on it."""
    CANCEL = 15
    """The generation of the run to cancel: a worker starts no more work for
    that run once this equals GENERATION. Reset to the previous generation
    before each run is published."""
    HOST_SCRATCH = 16
    """Where the clock writes the host's readings (int64: words 16-17), apart from
    worker 0's record, which the standby thread may be using at the same time."""
    HOST_BUSY = 18
    """1 while the caller's thread is inside the kernel (worker 0's share of an
    untimed run): only then may an interrupt stop the caller's call."""


class Schedule(enum.IntEnum):
    """Values of `Control.SCHEDULE`."""

    STATIC = 0
    """The reference partitioning: one contiguous range per worker."""
    DYNAMIC = 1
    """Workers claim CHUNK elements at a time from NEXT until none are left."""


class Record(enum.IntEnum):
    """Byte offsets of the fields of a worker's record."""

    START = 0
    """i32: first element this worker processed (its range in a static run)."""
    END = 4
    """i32: one past the last element it processed."""
    ELEMENTS = 8
    """i32: how many elements it processed."""
    CHUNKS = 12
    """i32: how many calls to compute_partition it made."""
    CUR_START = 16
    """i32: start of the call in progress, to name the range of a trap."""
    CUR_END = 20
    """i32: end of the call in progress."""
    BUSY = 24
    """i32: 1 while the worker's thread is inside the kernel; only then may an
    interrupt stop it (never while it waits for work or counts itself out)."""
    WAKE_TIME = 32
    """i64: wall-clock ns when the worker saw the command."""
    T_START = 40
    """i64: monotonic ns when it started its share."""
    T_END = 48
    """i64: monotonic ns when it finished its share."""
    SCRATCH = 56
    """i64: where the clock writes its reading."""


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
    records_offset: int
    data_offset: int

    @property
    def status_end(self) -> int:
        """One past the last byte of the status board."""
        return self.status_offset + self.workers * STATUS_SLOT_BYTES

    @property
    def control_end(self) -> int:
        """One past the last byte of the control block."""
        return self.control_offset + CONTROL_BYTES

    @property
    def records_end(self) -> int:
        """One past the last byte of the worker records."""
        return self.records_offset + self.workers * RECORD_BYTES

    def record_address(self, worker_index: int) -> int:
        """Byte address of a worker's record."""
        return self.records_offset + worker_index * RECORD_BYTES

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
            "worker records": (self.records_offset, self.records_end),
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
        records_offset = align_up(control_offset + CONTROL_BYTES, CACHE_LINE)
        data_offset = align_up(records_offset + workers * RECORD_BYTES, DATA_ALIGN)
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
            records_offset=records_offset,
            data_offset=data_offset,
        )
