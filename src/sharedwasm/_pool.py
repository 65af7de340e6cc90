"""`WorkerPool`: one kernel run by N workers over one shared memory.

Worker 0 is whichever thread calls `run`; workers 1..N-1 are threads that live
inside the runner's wasm loop (`_worker`, `_runner`). A run is one raw call
that publishes it and does partition 0, then a wait that spins briefly and
parks; results are read back from the workers' records in the memory. The
pool owns the lifecycle (start, run, grow, close) and turns records and
failures into results or errors.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import operator
import os
import statistics as _statistics
import sys
import threading
import time
import warnings
import weakref
from typing import Any, Literal, NoReturn, Self

import numpy as np
import numpy.typing as npt
import wasmtime

from . import _stack, _wasmtime
from ._arguments import Binder, Slots
from ._board import StatusBoard
from ._entries import Entry
from ._errors import (
    BrokenPoolError,
    CopyWarning,
    KernelError,
    KernelTrap,
    LayoutError,
    PoolClosedError,
    RunCancelled,
    RunTimeout,
    StartTimeout,
    describe,
)
from ._heap import Arrays, Heap, HeapArrays
from ._kernel import Kernel
from ._layout import (
    CONTROL_BYTES,
    RECORD_BYTES,
    Control,
    Layout,
    Record,
    Schedule,
    Status,
)
from ._lifecycle import (
    AUTO_MEMORY_DATA,
    CLOSE_TIMEOUT,
    DEFAULT_SPIN,
    INTERRUPT_EVERY,
    START_TIMEOUT,
    State,
    check_timeout,
    check_workers,
    default_workers,
    interrupt,
    plan,
    shutdown,
)
from ._memory import Memory
from ._results import PoolStatistics, RunResult, WorkerDone
from ._runner import Runner
from ._wasmtime import MAX_PAGES, PAGE_SIZE, as_i32, is_interrupt
from ._worker import Worker

STUCK_GRACE = 2.0
"""Seconds a run may show every status slot final while PENDING stays above
zero before the pool is declared broken: a worker stores its status and
counts itself out with two adjacent atomics, so only a kernel that wrote over
PENDING keeps the two apart for long."""


_PARK_SLICE_NS = 100_000_000
"""The host parks in slices of 0.1 s, to notice close() and dead workers."""

CANCEL_GRACE = 0.15
"""Seconds a run that timed out, or whose task was cancelled, is given to
stop after it was cancelled: an interruptible kernel stops within
microseconds, and a run that ends in that time leaves the pool ready."""


_LATENCY_WINDOW = 1024
"""Dispatch-latency samples kept for `statistics()`."""

DYNAMIC_CHUNKS_PER_WORKER = 64
"""Default chunk count per worker of a dynamic run: fine enough to balance
uneven work, coarse enough that claiming a chunk (one compare-exchange)
costs nothing next to computing it."""

_DONE = int(Status.DONE)
_CANCELLED = int(Status.CANCELLED)
_RUNNING = int(Status.RUNNING)
_STATUSES = frozenset(int(s) for s in Status)
_I32 = RECORD_BYTES // 4
_I64 = RECORD_BYTES // 8
_START, _END = Record.START // 4, Record.END // 4
_ELEMENTS, _CHUNKS = Record.ELEMENTS // 4, Record.CHUNKS // 4
_CUR_START, _CUR_END = Record.CUR_START // 4, Record.CUR_END // 4
_WAKE, _T_START, _T_END = Record.WAKE_TIME // 8, Record.T_START // 8, Record.T_END // 8


_pool_ids = itertools.count(1)


class _Ticket:
    """One call of `run`, so that a cancel can name it and no other."""

    __slots__ = ("cancelled", "generation")

    def __init__(self) -> None:
        self.cancelled = False
        self.generation: int | None = None


def _discard_outcome(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


_PACKAGE = os.path.dirname(__file__) + os.sep


def _caller_stacklevel() -> int:
    """The `stacklevel` that makes a warning point at the first frame outside sharedwasm."""
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and (
        frame.f_code.co_filename.startswith(_PACKAGE)
        or frame.f_code.co_filename.startswith("<sharedwasm")
    ):
        frame = frame.f_back
        level += 1
    return level


class WorkerPool(HeapArrays):
    """Run one kernel on N threads over one shared memory.

    Args:
        kernel: the compiled kernel.
        memory: the shared memory every worker imports as `env.memory`.
        workers: worker count; default, the CPUs this process may use.
        status_offset: byte offset of the status board. The control block,
            the worker records, the workers' stacks and the data region
            follow it; bytes before it are left alone. Default: just past
            the kernel's static data (`Kernel.static_end`, 0 for most WAT
            kernels), rounded up to a cache line.
        stack_size: bytes of stack each worker gets, for a kernel that uses
            a stack (one compiled from C exports `__stack_pointer`); a
            multiple of 16. Default 64 KiB, wasm-ld's own default. Must be
            left out for a kernel without a stack.
        spin: seconds a worker polls for the next run before parking, and the
            caller polls for the end of a run. Default: 2 ms when every
            worker has a CPU of its own, else 0. Spinning turns the wake-up
            cost (tens of microseconds) into a few microseconds for runs that
            follow each other closely; an idle pool spins for no longer.
        start_timeout: seconds to wait for every worker to instantiate the
            kernel, which runs its start-up code (a start function,
            `__set_stack_limits`, `__wasm_init_tls`); 30 by default. On an
            interruptible memory start-up code still running then is
            stopped; otherwise its thread is left to finish as a daemon, and
            the memory cannot take a new pool until it has.

    Worker 0 is the thread that calls `run`, except in a run with a timeout,
    where a standby thread does its share so that the caller stays free to
    give up, and when the caller's thread has too little native stack left
    for wasm code (see `_stack`). Blocks until every worker has instantiated
    the kernel (READY), for at most `start_timeout` seconds.

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: `workers` is out of range.
        KernelError: the kernel's memory import does not fit `memory`, or
            instantiation failed.
        LayoutError: the regions do not fit, or `memory` already has a pool
            (or a thread of a closed one is still inside a kernel call).
        StartTimeout: the kernel's start-up code did not return in time.

    All methods may be called from any thread; runs are serialised.
    """

    def __init__(
        self,
        kernel: Kernel,
        memory: Memory | None = None,
        workers: int | None = None,
        *,
        status_offset: int | None = None,
        stack_size: int | None = None,
        spin: float | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        if not isinstance(kernel, Kernel):
            raise TypeError(f"kernel must be a sharedwasm.Kernel (got {type(kernel).__name__})")
        if memory is not None and not isinstance(memory, Memory):
            raise TypeError(
                f"memory must be a sharedwasm.Memory or None (got {type(memory).__name__})"
            )
        # The worker threads exist in this process only, not in a child of fork().
        self._pid = _wasmtime.process_id
        workers = check_workers(workers)
        if memory is None:
            # Room for the pool's own regions and a little data; the heap
            # grows it as arrays are made, up to what the kernel declares.
            initial = WorkerPool.pages_needed(
                kernel,
                AUTO_MEMORY_DATA,
                workers,
                status_offset=status_offset,
                stack_size=stack_size,
            )
            memory = Memory(initial, maximum=kernel.memory_maximum, shared=True)
        if spin is None:
            spin = DEFAULT_SPIN if workers <= default_workers() else 0.0
        spin = check_timeout(spin, "spin")
        assert spin is not None
        start_limit = check_timeout(start_timeout, "start_timeout")
        if start_limit is None or start_limit > threading.TIMEOUT_MAX:
            raise ValueError(
                f"start_timeout must be a finite number of seconds (got {start_timeout!r})"
            )
        self._spin_ns = int(min(spin, 60.0) * 1e9)
        # In a run with a timeout all N workers are threads; a caller spinning
        # beside them would take a CPU from one of them unless one is spare.
        self._standby_spin_ns = self._spin_ns if workers < default_workers() else 0
        if memory.pages < kernel.memory_minimum:
            raise KernelError(
                f"{kernel.name} needs env.memory of at least {kernel.memory_minimum} pages "
                f"(the memory has {memory.pages})"
            )
        if memory.maximum > kernel.memory_maximum:
            raise KernelError(
                f"{kernel.name} declares env.memory with maximum {kernel.memory_maximum} pages, "
                f"so the memory's maximum must be <= {kernel.memory_maximum} "
                f"(got maximum={memory.maximum})"
            )
        self._layout = plan(
            kernel, workers, status_offset, stack_size, memory.byte_length, memory.pages
        )
        # Compiled here, before any worker starts, so that a compile error is
        # raised here and the workers only instantiate.
        kernel._module_for(memory.interruptible)
        self.name = f"sharedwasm-{next(_pool_ids)}"
        claim = memory._claim(self.name)
        self._claim = claim
        self._memory = memory
        self._kernel = kernel
        self._board = StatusBoard(memory, self._layout)
        self._board.clear()
        if kernel.static_end:
            # A fresh start for the kernel's statics: wasm-ld's start function
            # initialises them only while its flag word (among them) reads 0,
            # and an earlier pool may have left anything there.
            memory.view(np.uint8, offset=0, count=kernel.static_end)[:] = 0
        self._lock = threading.Lock()
        self._state = State.OPEN
        # What a cancel needs, consistent under _cancel_lock: the run in
        # flight, if any, and the generation it was published as (mod 2**32).
        self._cancel_lock = threading.Lock()
        self._generation = 0
        self._flight: _Ticket | None = None
        lay = self._layout
        # Unsigned: element indices go up to 2**32 - 1 (a 4 GiB memory of bytes).
        self._records32 = memory.view(np.uint32, offset=lay.records_offset, count=workers * _I32)
        self._records64 = memory.view(np.int64, offset=lay.records_offset, count=workers * _I64)
        # The board's regions never move (the base address is fixed and grow
        # only appends), so the hot path reuses these views.
        self._status = memory.view(np.int32, offset=lay.status_offset, count=workers)
        self._published = memory.view(
            np.int64, offset=lay.control_address(Control.PUBLISH_TIME), count=1
        )
        self._control = memory.view(np.int32, offset=lay.control_offset, count=CONTROL_BYTES // 4)
        self._heap = Heap(memory, lay.data_offset)
        self._arrays = Arrays(memory, self._heap)
        self._slots = Slots(memory, lay)
        self._binders: dict[str | None, Binder] = {}
        self._entry_name = "compute_partition"
        """The entry of the run in flight or last run, for trap messages."""
        self._copy_warned = False
        # What a run in flight uses: its arguments and copies stay referenced
        # (so no block it writes can be reused) until the run has landed.
        self._held: object = None
        self._runs = 0
        self._busy = [0.0] * workers
        self._elements_done = [0] * workers
        self._latencies: collections.deque[float] = collections.deque(maxlen=_LATENCY_WINDOW)
        # Worker 0's thread is the standby that does the caller's share in
        # runs with a timeout; it parks at once, since those runs are rare.
        self._workers = [
            Worker(kernel, memory, lay, i, f"{self.name}-w{i}", self._spin_ns if i else 0)
            for i in range(workers)
        ]
        claim.threads = [w.thread for w in self._workers]
        self._finalizer = weakref.finalize(
            self, shutdown, self._board, self._workers, claim, CLOSE_TIMEOUT
        )
        try:
            for worker in self._workers:
                worker.start()
            start_deadline = time.monotonic() + start_limit
            for worker in self._workers:
                worker.ready.result(timeout=max(0.0, start_deadline - time.monotonic()))
            host = self._workers[0].host_runner
            assert host is not None
            self._host: Runner = host
        except concurrent.futures.TimeoutError:
            stuck = [w.index for w in self._workers if not w.ready.done()]
            self._state = State.CLOSED
            self._finalizer()
            still = [w.index for w in self._workers if w.thread.is_alive()]
            left = (
                f"; worker(s) {still} are still inside it, and the memory takes no new pool "
                "until they return"
                if still
                else ""
            )
            raise StartTimeout(
                f"start_timeout must be long enough for {kernel.name}'s start-up code (its "
                f"start function, __set_stack_limits or __wasm_init_tls) to return: worker(s) "
                f"{stuck} had not returned after {start_limit} s (got "
                f"start_timeout={start_timeout!r}){left}",
                workers=stuck,
            ) from None
        except BaseException:
            self._state = State.CLOSED
            self._finalizer()
            raise

    @staticmethod
    def pages_needed(
        kernel: Kernel,
        data_bytes: int,
        workers: int | None = None,
        *,
        status_offset: int | None = None,
        stack_size: int | None = None,
    ) -> int:
        """Return the fewest pages a memory needs for such a pool to hold `data_bytes` of data.

        The count covers what goes before the data region: the kernel's
        static data, the board, the records and the workers' stacks, which
        callers should not have to add up. The arguments are the
        constructor's.

        Raises:
            TypeError, ValueError, LayoutError: as the constructor would.
        """
        if not isinstance(kernel, Kernel):
            raise TypeError(f"kernel must be a sharedwasm.Kernel (got {type(kernel).__name__})")
        workers = check_workers(workers)
        if isinstance(data_bytes, bool):
            raise TypeError(f"data_bytes must be an int (got {data_bytes!r})")
        data_bytes = operator.index(data_bytes)
        if data_bytes < 0:
            raise ValueError(f"data_bytes must be >= 0 (got {data_bytes!r})")
        layout = plan(kernel, workers, status_offset, stack_size, MAX_PAGES * PAGE_SIZE)
        pages = -(-(layout.data_offset + max(data_bytes, 1)) // PAGE_SIZE)
        if pages > MAX_PAGES:
            raise LayoutError(
                f"data_bytes must fit a 4 GiB memory after the data offset {layout.data_offset} "
                f"(got {data_bytes!r})"
            )
        return max(pages, kernel.memory_minimum)

    def __repr__(self) -> str:
        return (
            f"<sharedwasm.WorkerPool {self.name} {self._state.value} workers={self.workers} "
            f"data_offset={self.data_offset}>"
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- introspection ---------------------------------------------------------

    @property
    def workers(self) -> int:
        """Number of worker threads."""
        return self._layout.workers

    @property
    def memory(self) -> Memory:
        """The shared memory the workers import."""
        return self._memory

    @property
    def kernel(self) -> Kernel:
        """The kernel the workers run."""
        return self._kernel

    @property
    def layout(self) -> Layout:
        """Where the status board, control block and data region are."""
        return self._layout

    @property
    def data_offset(self) -> int:
        """First byte of the data region."""
        return self._layout.data_offset

    @property
    def status(self) -> npt.NDArray[np.int32]:
        """A fresh int32 view of the status board: one slot per worker.

        Raises:
            PoolClosedError: the pool is closed (its board is no longer kept).
        """
        self._check_closed()
        return self._memory.view(np.int32, offset=self._layout.status_offset, count=self.workers)

    def data(self, dtype: npt.DTypeLike = np.float32) -> npt.NDArray[Any]:
        """Return a fresh zero-copy view of the data region at the memory's current size.

        Views taken before `close()` stay valid (they keep the memory alive).

        Raises:
            PoolClosedError: the pool is closed; the memory may be another
                pool's by now, with another layout (use `memory.view`).
        """
        self._check_closed()
        return self._memory.view(dtype, offset=self._layout.data_offset)

    # -- running -------------------------------------------------------------

    def _check_closed(self) -> None:
        if self._state is State.CLOSED:
            raise PoolClosedError(f"{self.name} is closed")

    def _check_open(self) -> None:
        self._check_closed()
        if self._pid != _wasmtime.process_id:
            raise BrokenPoolError(
                f"{self.name} belongs to process {self._pid}, not to this child of fork(): "
                "its worker threads do not exist here; close it and create a new WorkerPool"
            )
        if self._state is State.BROKEN:
            raise BrokenPoolError(f"{self.name} is broken by an earlier failure")

    def _wait(self, deadline: float | None, spin_ns: int) -> bool:
        """Wait until the run in flight is done or `deadline` passes; True if done."""
        wait = self._host.host_wait
        stuck_since: float | None = None
        stuck_board: tuple[int, list[int]] | None = None
        while True:
            slice_ns = _PARK_SLICE_NS
            if deadline is not None:
                slice_ns = min(slice_ns, max(0, int((deadline - time.monotonic()) * 1e9)))
            wait.args[0].i64 = spin_ns
            wait.args[1].i64 = slice_ns
            wait.call()
            if wait.args[0].i32:
                return True
            spin_ns = 0
            # Between slices: close() from another thread, or a worker thread
            # that died, must end a wait that would otherwise never finish.
            self._check_open()
            dead = [w for w in self._workers if not w.thread.is_alive()]
            if dead:
                self._state = State.BROKEN
                raise BrokenPoolError(
                    f"{self.name}: worker thread {dead[0].thread.name} died"
                ) from (dead[0].failure[1] if dead[0].failure else None)
            board = self._board_state()
            if board != stuck_board or board[1].count(_RUNNING):
                stuck_board, stuck_since = board, time.monotonic()
            elif stuck_since is not None and time.monotonic() - stuck_since >= STUCK_GRACE:
                self._break(
                    f"every worker has finished but PENDING has stayed at {board[0]} "
                    f"for {STUCK_GRACE} s"
                )
            if deadline is not None and time.monotonic() >= deadline:
                return False

    def _board_state(self) -> tuple[int, list[int]]:
        """Read PENDING and the status slots; break the pool if they cannot be.

        While a run is in flight a worker stores its final status before it
        counts itself out of PENDING, so PENDING is never below the number
        of RUNNING slots, never negative and never above the worker count.
        Anything else means the pool's words were written over (by a kernel:
        they share its memory), and waiting longer could never end.
        """
        pending = self._board.load(Control.PENDING)
        statuses = self._status.tolist()
        unknown = [v for v in statuses if v not in _STATUSES]
        if unknown:
            self._break(f"a status slot holds {unknown[0]}, which is no status")
        if not 0 <= pending <= self.workers:
            self._break(f"PENDING is {pending}, outside [0, {self.workers}]")
        running = statuses.count(_RUNNING)
        if running > pending:
            self._break(
                f"{running} status slot(s) read RUNNING but only {pending} worker(s) "
                "are still counted in the run"
            )
        return pending, statuses

    def _break(self, what: str) -> NoReturn:
        """Mark the pool broken because its own words were overwritten, and raise.

        On a pool closed meanwhile the words are close()'s own (it publishes
        EXIT over the board): that is the error to report.
        """
        self._check_closed()
        self._state = State.BROKEN
        raise BrokenPoolError(
            f"{self.name} is broken: {what}. The status board and control block live in "
            "the kernel's memory, so a kernel that writes outside its data (a stray "
            f"pointer, a wrong offset) can overwrite them; board {self._board.snapshot()}"
        )

    def _schedule(
        self, schedule: Literal["static", "dynamic"], chunk: int | None, total: int
    ) -> tuple[Schedule, int]:
        if schedule == "static":
            if chunk is not None:
                raise ValueError(
                    f"chunk must be None with schedule='static', which makes one range "
                    f"per worker (got {chunk!r})"
                )
            return Schedule.STATIC, 0
        if schedule != "dynamic":
            raise ValueError(f"schedule must be 'static' or 'dynamic' (got {schedule!r})")
        if chunk is None:
            return Schedule.DYNAMIC, max(1, -(-total // (self.workers * DYNAMIC_CHUNKS_PER_WORKER)))
        if isinstance(chunk, bool):
            raise TypeError(f"chunk must be an int or None (got {chunk!r})")
        chunk = operator.index(chunk)
        if not 1 <= chunk <= 0x7FFFFFFF:
            raise ValueError(f"chunk must be in [1, {0x7FFFFFFF}] elements (got {chunk!r})")
        return Schedule.DYNAMIC, chunk

    def _elements(
        self, elements: int | None, element_size: int, *, bounded: bool = True
    ) -> tuple[int, int]:
        """Check a run's element count; `bounded`: it indexes the data region (no arguments)."""
        if type(element_size) is not int:
            if isinstance(element_size, bool):
                raise TypeError(f"element_size must be an int (got {element_size!r})")
            element_size = operator.index(element_size)
        if element_size < 1:
            raise ValueError(f"element_size must be >= 1 byte (got {element_size!r})")
        # The memory's size is a call into wasmtime: only when it is needed.
        capacity = (
            (self._memory.byte_length - self._layout.data_offset) // element_size
            if bounded or elements is None
            else 0
        )
        if elements is None:
            elements = capacity
        elif type(elements) is not int:
            if isinstance(elements, bool):
                raise TypeError(f"elements must be an int or None (got {elements!r})")
            elements = operator.index(elements)
        if elements < 0:
            raise ValueError(f"elements must be >= 0 (got {elements!r})")
        if elements > 0xFFFFFFFF:
            raise ValueError(f"elements must be < 2**32 (got {elements!r})")
        if bounded and elements > capacity:
            raise LayoutError(
                f"elements must be <= {capacity}, the {element_size}-byte elements the data "
                f"region holds from byte {self._layout.data_offset} (got {elements!r})"
            )
        # No i32 limit: the runner treats element indices as unsigned, and a
        # data region holds fewer than 2**32 bytes.
        return elements, element_size

    def run(
        self,
        run_id: str = "run",
        /,
        *args: object,
        entry: str | None = None,
        elements: int | None = None,
        element_size: int = 4,
        schedule: Literal["static", "dynamic"] = "static",
        chunk: int | None = None,
        timeout: float | None = None,
        **kwargs: object,
    ) -> RunResult:
        """Run an entry of the kernel on every worker and wait until every share is done.

        With `schedule="static"` (the default) worker `i` gets one call,
        `entry(start, end, *args)`, with the reference partitioning:
        `chunk = ceil(elements / workers)`, `start = min(i * chunk, elements)`.
        With `schedule="dynamic"` the workers claim `chunk` elements at a time
        until none are left, which balances uneven work.

        Args:
            run_id: a label carried into the result (a str).
            args, kwargs: the entry's arguments after (start, end), by
                position, or by parameter name when the module records the
                names (`sharedwasm build` does; see `Kernel.entries`). An
                array goes to a pointer parameter as its address: one of this
                pool's heap with no copy, an ordinary numpy array copied in
                for the run (and back out unless the pointer is to const).
            entry: which entry to run; default, the kernel's only one, or
                `compute_partition`.
            elements: element count; default, the length (first axis) of the
                first array argument, or with no array argument as many
                `element_size`-byte elements as the data region holds now.
            element_size: bytes per element for that last default, 4.
            schedule: "static" or "dynamic".
            chunk: elements per claim of a dynamic run; default, enough for
                64 claims per worker. Must be None for a static run.
            timeout: seconds to wait for the run, including for a run still
                in flight from another thread; None waits as long as it takes.
                When it passes, the run is cancelled (see `cancel`).

        Blocks the calling thread, which computes worker 0's share itself,
        until every share is done. May be called from any thread; concurrent
        calls run one after another.

        Raises:
            KernelTrap: a share trapped; the other shares completed.
            RunTimeout: the run did not finish in time. It was cancelled; if
                it stopped within `CANCEL_GRACE` seconds the pool is ready,
                otherwise it keeps running in the background and the next
                call waits for it first.
            RunCancelled: `cancel()` stopped the run.
            PoolClosedError: the pool is closed, or was closed during the run.
            BrokenPoolError: a worker thread died.
            LayoutError: `elements` does not fit the data region.
            TypeError, ValueError, OverflowError: an argument does not fit its
                parameter (the message names it), or `run_id` is not a str.
            OutOfMemory: an ordinary array does not fit in the heap.
        """
        return self._run(
            run_id, args, kwargs, entry, elements, element_size, schedule, chunk, timeout, _Ticket()
        )

    def _binder(self, entry: str | None) -> Binder:
        binder = self._binders.get(entry)
        if binder is None:
            chosen = self._entry(entry)
            binder = Binder(chosen, self._slots, self._arrays, self._temporary, self._warn_copy)
            self._binders[entry] = binder
        return binder

    def _entry(self, entry: str | None) -> Entry:
        entries = self._kernel.entries
        if entry is None:
            if len(entries) == 1:
                return next(iter(entries.values()))
            if "compute_partition" in entries:
                return entries["compute_partition"]
            raise TypeError(
                f"entry must name one of {self._kernel.name}'s entries {list(entries)} "
                "(got None, and there is more than one)"
            )
        if not isinstance(entry, str):
            raise TypeError(f"entry must be a str or None (got {entry!r})")
        found = entries.get(entry)
        if found is None:
            raise ValueError(
                f"entry must be one of {self._kernel.name}'s entries {list(entries)} "
                f"(got {entry!r})"
            )
        return found

    def _warn_copy(self, nbytes: int) -> None:
        if not self._copy_warned:
            self._copy_warned = True
            warnings.warn(
                CopyWarning(
                    f"{self.name} copied a {nbytes}-byte numpy array into its shared memory for "
                    "a run (and copies it back after, unless the parameter is const); make "
                    "arrays with pool.asarray / empty / zeros / full to pass them with no copy. "
                    "Shown once per pool."
                ),
                stacklevel=_caller_stacklevel(),
            )

    def _run(
        self,
        run_id: str,
        args: tuple[object, ...],
        kwargs: dict[str, object],
        entry: str | None,
        elements: int | None,
        element_size: int,
        schedule: Literal["static", "dynamic"],
        chunk: int | None,
        timeout: float | None,
        ticket: _Ticket,
    ) -> RunResult:
        if not isinstance(run_id, str):
            raise TypeError(
                f"run_id must be a str (got {describe(run_id)}); the kernel's arguments "
                "follow it: pool.run('label', x, y)"
            )
        binder = self._binder(entry)
        timeout = check_timeout(timeout)
        if timeout is not None and timeout > threading.TIMEOUT_MAX:
            timeout = None  # centuries: no limit, which Lock.acquire also accepts
        deadline = None if timeout is None else time.monotonic() + timeout
        self._check_open()  # first: in a child of fork() the lock's holder may be gone
        self._acquire(run_id, timeout, deadline, ticket)
        self._enter_runner()
        try:
            self._check_open()
            if self._flight is not None:
                if not self._wait(deadline, 0):
                    raise RunTimeout(
                        f"run {run_id!r}: an earlier run of {self.name} was still in flight "
                        f"after {timeout} s; board {self._board.snapshot()}"
                    )
                self._land()
            # The slots are free now: no run is in flight to read them.
            first, copies = binder.bind(args, kwargs)
            if elements is None and first is not None:
                elements = first
            total, size = self._elements(elements, element_size, bounded=not (args or kwargs))
            kind, chunk_elements = self._schedule(schedule, chunk, total)
            host_failure: BaseException | None = None
            publish = self._host.host_run
            raw_args = publish.args
            raw_args[0].i32 = self.workers
            raw_args[1].i32 = as_i32(total)
            raw_args[2].i32 = kind
            raw_args[3].i32 = chunk_elements
            # A caller that must be able to give up cannot be the one
            # computing, nor can one whose thread lacks the native stack that
            # wasm code may use (a runaway recursion would crash the process).
            standby = deadline is not None or not _stack.caller_has_room()
            raw_args[4].i32 = standby
            raw_args[5].i32 = size
            raw_args[6].i32 = binder.entry.index
            self._entry_name = binder.entry.name
            with self._cancel_lock:
                if ticket.cancelled:
                    raise RunCancelled(f"run {run_id!r} was cancelled before it started")
                self._generation = (self._generation + 1) & 0xFFFFFFFF
                ticket.generation = self._generation
                self._flight = ticket
                self._held = (args, kwargs, copies)
            t0 = time.perf_counter()
            try:
                publish.call()
            except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                host_failure = exc
                # The trap unwound past the runner's own reset of the busy
                # word, and past the kernel's epilogues.
                self._board.store(Control.HOST_BUSY, 0)
                self._host.reset_stack()
                self._board.set_status(0, Status.CANCELLED if is_interrupt(exc) else Status.TRAPPED)
                self._board.finish()
            spin_ns = self._standby_spin_ns if standby else self._spin_ns
            if host_failure is None and raw_args[0].i32:
                # Workers were parked: a woken one is often queued on this
                # CPU, and spinning here would keep it waiting for its turn.
                spin_ns = 0
            if not self._wait(deadline, spin_ns):
                self._stop_after_timeout(run_id, timeout, host_failure)
            elapsed = time.perf_counter() - t0
            self._land()
            try:
                return self._collect(run_id, elapsed, host_failure)
            finally:
                # Landed, trapped or cancelled: the shares that ran wrote
                # their output, as they would have in an array of the heap.
                for copy in copies:
                    copy.finish()
        finally:
            self._leave_runner()
            self._lock.release()

    def _enter_runner(self) -> None:
        """Count the calling thread as one that may touch the board (see `Claim`)."""
        # One dict store under the GIL, no lock: this is on every run's path.
        self._claim.callers[threading.get_ident()] = threading.current_thread()

    def _leave_runner(self) -> None:
        self._claim.callers.pop(threading.get_ident(), None)

    def _acquire(
        self, run_id: str, timeout: float | None, deadline: float | None, ticket: _Ticket
    ) -> None:
        """Take the run lock, giving up at `deadline` or when `ticket` is cancelled."""
        if self._lock.acquire(blocking=False):
            return
        # Queued behind another run: wake now and then, so that a cancelled
        # task's thread leaves the queue (an event loop's shutdown joins it).
        while not self._lock.acquire(timeout=INTERRUPT_EVERY):
            if ticket.cancelled:
                raise RunCancelled(f"run {run_id!r} was cancelled before it started")
            if deadline is not None and time.monotonic() >= deadline:
                raise RunTimeout(f"run {run_id!r}: another run held {self.name} for {timeout} s")

    def _hint(self, error: BaseException) -> str:
        # A stack check's failure is an `unreachable` with no word of its own.
        if self._kernel.stack_checked and "unreachable" in str(error):
            return (
                "with stack checks this is also how a stack overflow ends: each worker "
                f"has {self._layout.thread_area - self._layout.tls_block} bytes of stack "
                "(WorkerPool stack_size)"
            )
        return ""

    def _land(self) -> None:
        """Mark the run in flight as over: a cancel can no longer reach it.

        No lock: a cancel that read the old ticket just before may still
        store CANCEL, naming a generation that is over; the next publish
        clears it (see the runner's host_run). The run's arguments and
        temporary copies are let go: no worker touches them any more.
        """
        self._flight = None
        self._held = None

    def _stop_after_timeout(
        self, run_id: str, timeout: float | None, host_failure: BaseException | None
    ) -> None:
        """Cancel a run that outlived its timeout, give it `CANCEL_GRACE`, and raise."""
        assert self._flight is not None
        self._cancel(self._flight)
        grace_end = time.monotonic() + CANCEL_GRACE
        stopped = False
        while not stopped and time.monotonic() < grace_end:
            stopped = self._wait(min(grace_end, time.monotonic() + INTERRUPT_EVERY), 0)
            if not stopped:
                interrupt(self._memory)
        if not stopped:
            how = (
                "it did not stop when interrupted (a kernel blocked in memory.atomic.wait "
                "stops only when woken)"
                if self._memory.interruptible
                else "it was asked to stop, but a kernel on a memory made without "
                "interruptible=True stops only between chunks of work"
            )
            raise RunTimeout(
                f"run {run_id!r} did not finish within {timeout} s and {how}; it keeps "
                f"running and the next call waits for it; board {self._board.snapshot()}"
            )
        self._land()
        snapshot = self._board.snapshot()
        message = (
            f"run {run_id!r} did not finish within {timeout} s; it was stopped and "
            f"{self.name} is ready for the next run; board {snapshot}"
        )
        try:
            self._collect(run_id, 0.0, host_failure)
        except RunCancelled:
            raise RunTimeout(message) from None
        # Every share ended in the grace period (a fault would have raised
        # KernelTrap, which outranks the timeout), but past the deadline.
        raise RunTimeout(message)

    def cancel(self) -> bool:
        """Cancel the run in flight, if any; return True if there was one.

        The run's caller gets `RunCancelled` (the shares that finished keep
        their output). On a memory made with `interruptible=True` a worker
        inside the kernel stops at once; otherwise the workers start no more
        work (no new chunk of a dynamic run, no share not yet begun) and the
        calls already inside the kernel run to their end. The pool is ready
        for the next run as soon as the cancelled one ends. May be called
        from any thread; never blocks on the run. On a closed pool it does
        nothing and returns False (closing already stopped its run).
        """
        with self._cancel_lock:
            ticket = self._flight
        return ticket is not None and self._cancel(ticket)

    def _cancel(self, ticket: _Ticket) -> bool:
        with self._cancel_lock:
            ticket.cancelled = True
            if self._state is State.CLOSED:
                return False  # the board may be another pool's by now
            if self._flight is not ticket or ticket.generation is None:
                return False
            # CANCEL before the epoch bump: a worker the bump makes check
            # must see it (see _runner._interrupt_check).
            self._board.store(Control.CANCEL, as_i32(ticket.generation))
        interrupt(self._memory)
        return True

    def _collect(
        self, run_id: str, elapsed: float, host_failure: BaseException | None
    ) -> RunResult:
        generation = self._control.item(Control.GENERATION) & 0xFFFFFFFF
        if generation != self._generation:
            self._break(
                f"GENERATION reads {generation} after run {run_id!r}, which was published "
                f"as {self._generation}"
            )
        if host_failure is not None or self._status.tolist().count(_DONE) != self.workers:
            self._raise_failures(run_id, host_failure)
        r32 = self._records32.tolist()
        r64 = self._records64.tolist()
        published = int(self._published[0])
        done: list[WorkerDone] = []
        busy, counts, latencies = self._busy, self._elements_done, self._latencies
        for i in range(self.workers):
            b32, b64 = i * _I32, i * _I64
            worker_elapsed = (r64[b64 + _T_END] - r64[b64 + _T_START]) * 1e-9
            count = r32[b32 + _ELEMENTS]
            done.append(
                WorkerDone(
                    i,
                    r32[b32 + _START],
                    r32[b32 + _END],
                    worker_elapsed,
                    count,
                    r32[b32 + _CHUNKS],
                )
            )
            busy[i] += worker_elapsed
            counts[i] += count
            if i:
                latencies.append(max(0, r64[b64 + _WAKE] - published) * 1e-9)
        self._runs += 1
        return RunResult(run_id, elapsed, done)

    def _raise_failures(self, run_id: str, host_failure: BaseException | None) -> None:
        generation = self._board.load(Control.GENERATION)
        failures: list[tuple[int, BaseException]] = []
        if host_failure is not None:
            failures.append((0, host_failure))
        for worker in self._workers:
            if worker.failure is not None and worker.failure.generation == generation:
                failures.append((worker.index, worker.failure.error))
        traps: list[tuple[KernelTrap, BaseException]] = []
        for index, error in failures:
            if not isinstance(error, wasmtime.Trap | wasmtime.WasmtimeError):
                self._state = State.BROKEN
                raise BrokenPoolError(
                    f"worker {index} of {self.name} failed outside the kernel: {error!r}"
                ) from error
            if is_interrupt(error):
                continue  # a cancelled share, reported below
            b32 = index * _I32
            start, end = (
                int(self._records32[b32 + _CUR_START]),
                int(self._records32[b32 + _CUR_END]),
            )
            traps.append(
                (
                    KernelTrap(
                        index,
                        start,
                        end,
                        str(error),
                        hint=self._hint(error),
                        entry=self._entry_name,
                    ),
                    error,
                )
            )
        if traps:
            first, cause = traps[0]
            raise KernelTrap(
                first.worker_index,
                first.start,
                first.end,
                first.trap,
                [t for t, _ in traps[1:]],
                hint=self._hint(cause),
                entry=self._entry_name,
            ) from cause
        # Closed during the run: that is the error to report.
        self._check_open()
        statuses = self._status.tolist()
        stopped = [i for i, status in enumerate(statuses) if status == _CANCELLED]
        if stopped:
            raise RunCancelled(
                f"run {run_id!r} was cancelled: worker(s) {stopped} of {self.name} stopped "
                f"before finishing their share; statuses {statuses}"
            )
        self._break(f"status slots {statuses} are not all DONE, yet no worker failed")

    def statistics(self) -> PoolStatistics:
        """Return a snapshot of the runs so far. Never blocks on a run.

        Works on a closed pool too: the figures of its whole life.
        """
        samples = sorted(self._latencies)
        median = _statistics.median(samples) if samples else None
        p99 = samples[min(len(samples) - 1, int(0.99 * len(samples)))] if samples else None
        return PoolStatistics(
            workers=self.workers,
            runs=self._runs,
            busy=tuple(self._busy),
            elements=tuple(self._elements_done),
            dispatch_latency_median=median,
            dispatch_latency_p99=p99,
        )

    async def run_async(
        self,
        run_id: str = "run",
        /,
        *args: object,
        entry: str | None = None,
        elements: int | None = None,
        element_size: int = 4,
        schedule: Literal["static", "dynamic"] = "static",
        chunk: int | None = None,
        timeout: float | None = None,
        **kwargs: object,
    ) -> RunResult:
        """Run like `run` on a worker thread of asyncio, so the event loop keeps going.

        Cancelling the awaiting task cancels this run (and no other), as
        `cancel` does, waits up to `CANCEL_GRACE` seconds for it to stop, then
        lets `asyncio.CancelledError` propagate. A run that has not stopped by
        then (a kernel that cannot be interrupted) keeps running in the
        background, and the next run waits for it.
        """
        ticket = _Ticket()
        future = asyncio.ensure_future(
            asyncio.to_thread(
                self._run,
                run_id,
                args,
                kwargs,
                entry,
                elements,
                element_size,
                schedule,
                chunk,
                timeout,
                ticket,
            )
        )
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            self._cancel(ticket)
            await asyncio.wait({future}, timeout=CANCEL_GRACE)
            # Whatever the run ends with belongs to nobody now.
            future.add_done_callback(_discard_outcome)
            raise

    def grow(self, delta_pages: int) -> int:
        """Grow the memory after the run in flight; return the previous page count.

        The next run partitions the new data region.

        Raises:
            ValueError: the memory would pass its maximum; nothing changes.
            PoolClosedError: the pool is closed.
        """
        self._check_open()  # before the lock, as in _run
        with self._lock:
            self._quiesce()
            previous = self._memory.grow(delta_pages)
            self._heap.extend(self._memory.byte_length)
            return previous

    def _quiesce(self) -> None:
        """With the run lock held: wait for a run left in flight (after a timeout) to end."""
        self._check_open()
        if self._flight is not None:
            self._enter_runner()
            try:
                self._wait(None, 0)
            finally:
                self._leave_runner()
            self._land()

    def close(self) -> None:
        """Stop the workers and release the memory's board. Idempotent.

        A run in flight is stopped: on a memory made with
        `interruptible=True` its workers are interrupted, and its caller gets
        `PoolClosedError`. Blocks for at most about a second while worker
        threads exit; a worker that cannot be interrupted and is stuck in a
        kernel call is left to finish as a daemon thread.
        """
        if self._state is not State.CLOSED:
            self._state = State.CLOSED
            self._finalizer()
