"""The memory contract: where the status board, the control block and the data live.

This module is the single source of truth for every word the pool and its
workers share. Nothing else hard-codes an offset.

::

    0 ......... static_end ... status_offset                                         byte_length
    | kernel's static data | pad | status board | pad | control block | worker records |
    | (data, bss: wasm-ld  |     | N x int32    |     | CONTROL_WORDS | N x RECORD_BYTES |
    |  up to __heap_base)  |     |              |     ^ CACHE_LINE    ^ CACHE_LINE       |

        ... | worker 0: TLS block, stack | ... | worker N-1: TLS, stack | data region ... |
            ^ threads_offset, N x thread_area bytes (0 without a stack)  ^ DATA_ALIGN

The control block ends with the run's arguments, one 8-byte slot per
parameter of the entry being run.

The status board is the reference design's: one int32 per worker, `RUNNING`
(0) while the worker has not finished the current run, `DONE` (1) once it has.
The control block holds the words the host and the workers coordinate
through; it sits on its own cache line so that workers polling it do not
share a line with the status slots they write. Each worker then has a
cache line of its own, its record, where it reports what it did in the last
run (range, element count, timestamps). The data region starts on a
`DATA_ALIGN` boundary so any numpy dtype, and 128-bit SIMD loads, are aligned.

A kernel compiled from C keeps its static and global variables in the same
memory, below `__heap_base`, and needs a stack per worker (and a block for
its `_Thread_local` variables): the status board goes after the static data,
and each worker gets a thread area of its own, its TLS block at the bottom
and its stack growing down from the top. A kernel written in WAT has neither
(`static_end` and `thread_area` are 0) and the layout is the bare one.

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
ARGUMENT_SLOTS = 32
"""Arguments an entry may take besides its range: one 8-byte slot each."""
ARGUMENT_SLOT_BYTES = 8
ARGUMENTS_WORD = 32
"""Index of the control word where the run's argument slots begin (words 32-95)."""
CONTROL_WORDS = ARGUMENTS_WORD + ARGUMENT_SLOTS * ARGUMENT_SLOT_BYTES // 4
CONTROL_BYTES = CONTROL_WORDS * 4
RECORD_BYTES = 64
STACK_ALIGN = 16
DEFAULT_STACK_SIZE = 64 * 1024
"""Bytes of stack per worker for a kernel that uses one: wasm-ld's own default."""


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
    ENTRY = 19
    """Index of the entry the current run calls, in the kernel's export order."""
    ARGUMENTS = ARGUMENTS_WORD
    """First word of the run's arguments: ARGUMENT_SLOTS slots of 8 bytes, one per
    parameter after (start, end), each holding an i32 or f32 in its low 4 bytes or
    an i64 or f64 (little-endian). The host writes them with plain stores before
    it publishes the run; the publish (a seq-cst bump of GENERATION) orders them
    before any worker that sees the new generation reads them."""


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
    static_end: int = 0
    """One past the last byte of the kernel's static data (0: it has none)."""
    threads_offset: int = 0
    """First byte of worker 0's thread area (equal to `records_end` when there are none)."""
    thread_area: int = 0
    """Bytes per worker thread area: its TLS block, then its stack (0: none)."""
    tls_block: int = 0
    """Bytes at the bottom of each thread area reserved for thread-local variables."""

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

    @property
    def threads_end(self) -> int:
        """One past the last byte of the thread areas."""
        return self.threads_offset + self.workers * self.thread_area

    def tls_address(self, worker_index: int) -> int:
        """Byte address of a worker's thread-local block."""
        return self.threads_offset + worker_index * self.thread_area

    def stack_bottom(self, worker_index: int) -> int:
        """Lowest byte address a worker's stack may use."""
        return self.tls_address(worker_index) + self.tls_block

    def stack_top(self, worker_index: int) -> int:
        """A worker's initial stack pointer: the stack grows down from here."""
        return self.tls_address(worker_index) + self.thread_area

    def record_address(self, worker_index: int) -> int:
        """Byte address of a worker's record."""
        return self.records_offset + worker_index * RECORD_BYTES

    def status_address(self, worker_index: int) -> int:
        """Byte address of a worker's status slot."""
        return self.status_offset + worker_index * STATUS_SLOT_BYTES

    def control_address(self, word: Control) -> int:
        """Byte address of a control word."""
        return self.control_offset + int(word) * 4

    def argument_address(self, slot: int) -> int:
        """Byte address of the run's argument slot `slot` (8-byte aligned)."""
        return self.control_address(Control.ARGUMENTS) + slot * ARGUMENT_SLOT_BYTES

    def regions(self) -> dict[str, tuple[int, int]]:
        """Return each region as a half-open byte range, for messages and checks."""
        regions = {
            "status board": (self.status_offset, self.status_end),
            "control block": (self.control_offset, self.control_end),
            "worker records": (self.records_offset, self.records_end),
            "data region": (self.data_offset, -1),
        }
        if self.static_end:
            regions = {"kernel static data": (0, self.static_end), **regions}
        if self.thread_area:
            regions["worker stacks"] = (self.threads_offset, self.threads_end)
        return dict(sorted(regions.items(), key=lambda item: item[1][0]))

    @classmethod
    def build(
        cls,
        *,
        workers: int,
        status_offset: int,
        byte_length: int,
        static_end: int = 0,
        stack_size: int = 0,
        tls_size: int = 0,
        tls_align: int = 1,
    ) -> Layout:
        """Place the regions for `workers` workers in a memory of `byte_length` bytes.

        `static_end` is where the kernel's static data ends (the board may not
        start before it); `stack_size` and `tls_size` are the bytes of stack
        and of thread-local data each worker gets (0 for a kernel without).

        Raises:
            TypeError: an argument is not an integer.
            ValueError: `workers` is not positive.
            LayoutError: the status offset is negative, misaligned or inside
                the kernel's static data, or the regions do not leave room
                for any data.
        """
        workers = operator.index(workers)
        status_offset = operator.index(status_offset)
        byte_length = operator.index(byte_length)
        static_end = operator.index(static_end)
        stack_size = operator.index(stack_size)
        tls_size = operator.index(tls_size)
        tls_align = operator.index(tls_align)
        if workers < 1:
            raise ValueError(f"workers must be at least 1 (got {workers!r})")
        if stack_size < 0 or stack_size % STACK_ALIGN:
            raise ValueError(
                f"stack_size must be a non-negative multiple of {STACK_ALIGN} bytes "
                f"(got {stack_size!r})"
            )
        if tls_size < 0 or tls_align < 1 or tls_align & (tls_align - 1):
            raise ValueError(
                "tls_size must be >= 0 and tls_align a power of two "
                f"(got {tls_size!r}, {tls_align!r})"
            )
        if status_offset < 0:
            raise LayoutError(f"status_offset must be >= 0 (got {status_offset!r})")
        if status_offset % STATUS_SLOT_BYTES:
            raise LayoutError(
                f"status_offset must be a multiple of {STATUS_SLOT_BYTES} (got {status_offset!r})"
            )
        if status_offset < static_end:
            raise LayoutError(
                f"status_offset must be >= {static_end}: the kernel's static data (its data "
                f"segments, up to __heap_base) ends there, and a status board inside it "
                f"would be overwritten (got status_offset={status_offset!r})"
            )
        status_end = status_offset + workers * STATUS_SLOT_BYTES
        control_offset = align_up(status_end, CACHE_LINE)
        records_offset = align_up(control_offset + CONTROL_BYTES, CACHE_LINE)
        threads_offset = records_offset + workers * RECORD_BYTES
        # Each area starts aligned for its TLS block and for the stack, whose
        # top (the area's end) must keep the 16-byte alignment clang assumes.
        area_align = max(STACK_ALIGN, tls_align)
        tls_block = align_up(tls_size, STACK_ALIGN) if tls_size else 0
        thread_area = align_up(tls_block + stack_size, area_align) if stack_size else 0
        threads_offset = align_up(threads_offset, area_align) if thread_area else threads_offset
        data_offset = align_up(threads_offset + workers * thread_area, DATA_ALIGN)
        if data_offset >= byte_length:
            areas = f" and {workers} thread areas of {thread_area} bytes" if thread_area else ""
            raise LayoutError(
                f"status_offset must leave room for data: a board for {workers} workers at "
                f"{status_offset}{areas} puts the data region at {data_offset}, but the memory "
                f"is {byte_length} bytes (got status_offset={status_offset!r})"
            )
        return cls(
            workers=workers,
            status_offset=status_offset,
            control_offset=control_offset,
            records_offset=records_offset,
            data_offset=data_offset,
            static_end=static_end,
            threads_offset=threads_offset,
            thread_area=thread_area,
            tls_block=tls_block if thread_area else 0,
        )
