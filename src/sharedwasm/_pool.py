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
import dataclasses
import enum
import itertools
import math
import operator
import os
import statistics as _statistics
import threading
import time
import weakref
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import wasmtime

from ._board import StatusBoard
from ._errors import (
    BrokenPoolError,
    KernelError,
    KernelTrap,
    LayoutError,
    PoolClosedError,
    RunTimeout,
    SharedWasmInternalError,
)
from ._kernel import Kernel
from ._layout import RECORD_BYTES, Control, Layout, Record, Schedule, Status
from ._memory import Memory
from ._runner import Runner
from ._worker import Worker

MAX_WORKERS = 1024
"""More workers than this is refused: each one is an OS thread and a wasm store."""

CLOSE_TIMEOUT = 1.0
"""Seconds `close()` waits for worker threads to exit."""

DEFAULT_SPIN = 2e-3
"""Seconds a worker polls for the next run before it parks, when every
worker has a CPU of its own. Spinning with more threads than CPUs only
steals time from the threads doing the work, so then the default is 0."""

_PARK_SLICE_NS = 100_000_000
"""The host parks in slices of 0.1 s, to notice close() and dead workers."""

_LATENCY_WINDOW = 1024
"""Dispatch-latency samples kept for `statistics()`."""

DYNAMIC_CHUNKS_PER_WORKER = 64
"""Default chunk count per worker of a dynamic run: fine enough to balance
uneven work, coarse enough that claiming a chunk (one compare-exchange)
costs nothing next to computing it."""

_DONE = int(Status.DONE)
_I32 = RECORD_BYTES // 4
_I64 = RECORD_BYTES // 8
_START, _END = Record.START // 4, Record.END // 4
_ELEMENTS, _CHUNKS = Record.ELEMENTS // 4, Record.CHUNKS // 4
_CUR_START, _CUR_END = Record.CUR_START // 4, Record.CUR_END // 4
_WAKE, _T_START, _T_END = Record.WAKE_TIME // 8, Record.T_START // 8, Record.T_END // 8

_pool_ids = itertools.count(1)


def default_workers() -> int:
    """Return the number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerDone:
    """One worker's part of a run: its element range and how long its call took."""

    worker_index: int
    start: int
    """First element processed (in a dynamic run, of the first chunk claimed)."""
    end: int
    """One past the last element processed (of the last chunk claimed)."""
    elapsed: float
    """Seconds the worker spent on its share."""
    elements: int = 0
    """Elements processed; in a static run `end - start`."""
    chunks: int = 0
    """Calls to compute_partition; 1 in a static run."""


@dataclasses.dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of `WorkerPool.run`: one `WorkerDone` per worker, in worker order."""

    run_id: str
    elapsed: float
    done: list[WorkerDone]


@dataclasses.dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot of a pool's activity, from `WorkerPool.statistics()`."""

    workers: int
    runs: int
    """Runs completed without error."""
    busy: tuple[float, ...]
    """Seconds each worker spent in its shares, summed over those runs."""
    elements: tuple[int, ...]
    """Elements each worker processed, summed over those runs."""
    dispatch_latency_median: float | None
    """Median seconds from publishing a run to a worker thread starting it,
    over the last 1024 samples; None before any sample (or with one worker)."""
    dispatch_latency_p99: float | None
    """99th percentile of the same samples."""


class _State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"
    BROKEN = "broken"


def _shutdown(board: StatusBoard, workers: list[Worker], name: str, timeout: float) -> None:
    """Tell every worker to exit and join them for at most `timeout` seconds.

    Also the pool's finalizer, so it must not reference the pool.
    """
    board.memory._pools.discard(name)
    if any(w.thread.is_alive() for w in workers):
        board.publish_exit()
    deadline = time.monotonic() + timeout
    for worker in workers:
        if worker.thread.ident is not None:
            worker.thread.join(max(0.0, deadline - time.monotonic()))


def _check_timeout(timeout: float | None, name: str = "timeout") -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float | np.integer | np.floating):
        raise TypeError(f"{name} must be a number of seconds or None (got {timeout!r})")
    try:
        t = float(timeout)
    except OverflowError:  # an int beyond float range: forever, or an error if negative
        t = math.inf if timeout > 0 else -math.inf
    if math.isnan(t) or t < 0:
        raise ValueError(f"{name} must be >= 0 seconds or None (got {timeout!r})")
    return t


class WorkerPool:
    """Run one kernel on N threads over one shared memory.

    Args:
        kernel: the compiled kernel.
        memory: the shared memory every worker imports as `env.memory`.
        workers: worker count; default, the CPUs this process may use.
        status_offset: byte offset of the status board. The control block,
            the worker records and the data region follow it; bytes before
            it are left alone.
        spin: seconds a worker polls for the next run before parking, and the
            caller polls for the end of a run. Default: 2 ms when every
            worker has a CPU of its own, else 0. Spinning turns the wake-up
            cost (tens of microseconds) into a few microseconds for runs that
            follow each other closely; an idle pool spins for no longer.

    Worker 0 is the thread that calls `run`, except in a run with a timeout,
    where a standby thread does its share so that the caller stays free to
    give up. Blocks until every worker has instantiated the kernel (READY).

    Raises:
        TypeError: an argument has the wrong type.
        ValueError: `workers` is out of range.
        KernelError: the kernel's memory import does not fit `memory`, or
            instantiation failed.
        LayoutError: the regions do not fit, or `memory` already has a pool.

    All methods may be called from any thread; runs are serialised.
    """

    def __init__(
        self,
        kernel: Kernel,
        memory: Memory,
        workers: int | None = None,
        *,
        status_offset: int = 0,
        spin: float | None = None,
    ) -> None:
        if not isinstance(kernel, Kernel):
            raise TypeError(f"kernel must be a sharedwasm.Kernel (got {type(kernel).__name__})")
        if not isinstance(memory, Memory):
            raise TypeError(f"memory must be a sharedwasm.Memory (got {type(memory).__name__})")
        if workers is None:
            workers = default_workers()
        if isinstance(workers, bool):
            raise TypeError(f"workers must be an int (got {workers!r})")
        workers = operator.index(workers)
        if not 1 <= workers <= MAX_WORKERS:
            raise ValueError(f"workers must be in [1, {MAX_WORKERS}] (got {workers!r})")
        if spin is None:
            spin = DEFAULT_SPIN if workers <= default_workers() else 0.0
        spin = _check_timeout(spin, "spin")
        assert spin is not None
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
        self._layout = Layout.build(
            workers=workers, status_offset=status_offset, byte_length=memory.byte_length
        )
        self.name = f"sharedwasm-{next(_pool_ids)}"
        if memory._pools:
            raise LayoutError(
                f"memory is already used by {', '.join(sorted(memory._pools))}: two pools' "
                "boards and data regions would overlap; close the other pool first"
            )
        memory._pools.add(self.name)
        self._memory = memory
        self._kernel = kernel
        self._board = StatusBoard(memory, self._layout)
        self._board.clear()
        self._lock = threading.Lock()
        self._state = _State.OPEN
        self._in_flight = False
        lay = self._layout
        self._records32 = memory.view(np.int32, offset=lay.records_offset, count=workers * _I32)
        self._records64 = memory.view(np.int64, offset=lay.records_offset, count=workers * _I64)
        # The board's regions never move (the base address is fixed and grow
        # only appends), so the hot path reuses these views.
        self._status = memory.view(np.int32, offset=lay.status_offset, count=workers)
        self._published = memory.view(
            np.int64, offset=lay.control_address(Control.PUBLISH_TIME), count=1
        )
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
        self._finalizer = weakref.finalize(
            self, _shutdown, self._board, self._workers, self.name, CLOSE_TIMEOUT
        )
        try:
            for worker in self._workers:
                worker.start()
            self._host = Runner(kernel, memory, lay, 0)
            for worker in self._workers:
                worker.ready.result()
        except BaseException:
            self._state = _State.CLOSED
            self._finalizer()
            raise

    def __repr__(self) -> str:
        return (
            f"<sharedwasm.WorkerPool {self.name} {self._state.value} workers={self.workers} "
            f"data_offset={self.data_offset}>"
        )

    def __enter__(self) -> WorkerPool:
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
        """A fresh int32 view of the status board: one slot per worker."""
        return self._memory.view(np.int32, offset=self._layout.status_offset, count=self.workers)

    def data(self, dtype: npt.DTypeLike = np.float32) -> npt.NDArray[Any]:
        """Return a fresh zero-copy view of the data region at the memory's current size."""
        return self._memory.view(dtype, offset=self._layout.data_offset)

    # -- running -------------------------------------------------------------

    def _check_open(self) -> None:
        if self._state is _State.CLOSED:
            raise PoolClosedError(f"{self.name} is closed")
        if self._state is _State.BROKEN:
            raise BrokenPoolError(f"{self.name} is broken by an earlier failure")

    def _wait(self, deadline: float | None, spin_ns: int) -> bool:
        """Wait until the run in flight is done or `deadline` passes; True if done."""
        wait = self._host.host_wait
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
                self._state = _State.BROKEN
                raise BrokenPoolError(
                    f"{self.name}: worker thread {dead[0].thread.name} died"
                ) from (dead[0].failure[1] if dead[0].failure else None)
            if deadline is not None and time.monotonic() >= deadline:
                return False

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

    def _elements(self, elements: int | None, element_size: int) -> tuple[int, int]:
        if isinstance(element_size, bool):
            raise TypeError(f"element_size must be an int (got {element_size!r})")
        element_size = operator.index(element_size)
        if element_size < 1:
            raise ValueError(f"element_size must be >= 1 byte (got {element_size!r})")
        capacity = (self._memory.byte_length - self._layout.data_offset) // element_size
        if elements is None:
            elements = capacity
        if isinstance(elements, bool):
            raise TypeError(f"elements must be an int or None (got {elements!r})")
        elements = operator.index(elements)
        if elements < 0:
            raise ValueError(f"elements must be >= 0 (got {elements!r})")
        if elements > capacity:
            raise LayoutError(
                f"elements must be <= {capacity}, the {element_size}-byte elements the data "
                f"region holds from byte {self._layout.data_offset} (got {elements!r})"
            )
        if elements > 0x7FFFFFFF:
            raise ValueError(f"elements must fit an i32, <= {0x7FFFFFFF} (got {elements!r})")
        return elements, element_size

    def run(
        self,
        run_id: str = "run",
        *,
        elements: int | None = None,
        element_size: int = 4,
        schedule: Literal["static", "dynamic"] = "static",
        chunk: int | None = None,
        timeout: float | None = None,
    ) -> RunResult:
        """Run the kernel over the data region and wait until every share is done.

        With `schedule="static"` (the default) worker `i` gets one call,
        `compute_partition(start, end)`, with the reference partitioning:
        `chunk = ceil(elements / workers)`, `start = min(i * chunk, elements)`.
        With `schedule="dynamic"` the workers claim `chunk` elements at a time
        until none are left, which balances uneven work.

        Args:
            run_id: a label carried into the result.
            elements: element count; default, as many `element_size`-byte
                elements as the data region holds now (after any grow).
            element_size: bytes per element, 4 (float32) by default.
            schedule: "static" or "dynamic".
            chunk: elements per claim of a dynamic run; default, enough for
                64 claims per worker. Must be None for a static run.
            timeout: seconds to wait for the run, including for a run still
                in flight from another thread; None waits as long as it takes.

        Blocks the calling thread, which computes worker 0's share itself,
        until every share is done. May be called from any thread; concurrent
        calls run one after another.

        Raises:
            KernelTrap: a share trapped; the other shares completed.
            RunTimeout: the run did not finish in time. It keeps running in
                the background and the next call waits for it first.
            PoolClosedError: the pool is closed, or was closed during the run.
            BrokenPoolError: a worker thread died.
            LayoutError: `elements` does not fit the data region.
        """
        timeout = _check_timeout(timeout)
        if timeout is not None and timeout > threading.TIMEOUT_MAX:
            timeout = None  # centuries: no limit, which Lock.acquire also accepts
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            raise RunTimeout(f"run {run_id!r}: another run held {self.name} for {timeout} s")
        try:
            self._check_open()
            if self._in_flight:
                if not self._wait(deadline, 0):
                    raise RunTimeout(
                        f"run {run_id!r}: an earlier run of {self.name} was still in flight "
                        f"after {timeout} s; board {self._board.snapshot()}"
                    )
                self._in_flight = False
            total, size = self._elements(elements, element_size)
            kind, chunk_elements = self._schedule(schedule, chunk, total)
            host_failure: BaseException | None = None
            publish = self._host.host_run
            args = publish.args
            args[0].i32 = self.workers
            args[1].i32 = total
            args[2].i32 = kind
            args[3].i32 = chunk_elements
            # A caller that must be able to give up cannot be the one computing.
            args[4].i32 = deadline is not None
            args[5].i32 = size
            self._in_flight = True
            t0 = time.perf_counter()
            try:
                publish.call()
            except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                host_failure = exc
                self._board.set_status(0, Status.TRAPPED)
                self._board.finish()
            spin_ns = self._spin_ns if deadline is None else self._standby_spin_ns
            if host_failure is None and args[0].i32:
                # Workers were parked: a woken one is often queued on this
                # CPU, and spinning here would keep it waiting for its turn.
                spin_ns = 0
            if not self._wait(deadline, spin_ns):
                raise RunTimeout(
                    f"run {run_id!r} did not finish within {timeout} s; "
                    f"board {self._board.snapshot()}"
                )
            elapsed = time.perf_counter() - t0
            self._in_flight = False
            return self._collect(run_id, elapsed, host_failure)
        finally:
            self._lock.release()

    def _collect(
        self, run_id: str, elapsed: float, host_failure: BaseException | None
    ) -> RunResult:
        if host_failure is not None or self._status.tolist().count(_DONE) != self.workers:
            self._raise_failures(host_failure)
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

    def _raise_failures(self, host_failure: BaseException | None) -> None:
        generation = self._board.load(Control.GENERATION)
        failures: list[tuple[int, BaseException]] = []
        if host_failure is not None:
            failures.append((0, host_failure))
        for worker in self._workers:
            if worker.failure is not None and worker.failure[0] == generation:
                failures.append((worker.index, worker.failure[1]))
        traps: list[tuple[KernelTrap, BaseException]] = []
        for index, error in failures:
            if not isinstance(error, wasmtime.Trap | wasmtime.WasmtimeError):
                self._state = _State.BROKEN
                raise BrokenPoolError(
                    f"worker {index} of {self.name} failed outside the kernel: {error!r}"
                ) from error
            b32 = index * _I32
            start, end = (
                int(self._records32[b32 + _CUR_START]),
                int(self._records32[b32 + _CUR_END]),
            )
            traps.append((KernelTrap(index, start, end, str(error)), error))
        if not traps:
            raise SharedWasmInternalError(
                f"{self.name}: a status slot is not DONE but no worker failed; "
                f"board {self._board.snapshot()}"
            )
        first, cause = traps[0]
        raise KernelTrap(
            first.worker_index, first.start, first.end, first.trap, [t for t, _ in traps[1:]]
        ) from cause

    def statistics(self) -> PoolStatistics:
        """Return a snapshot of the runs so far. Never blocks on a run."""
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
        *,
        elements: int | None = None,
        element_size: int = 4,
        schedule: Literal["static", "dynamic"] = "static",
        chunk: int | None = None,
        timeout: float | None = None,
    ) -> RunResult:
        """Run like `run` on a worker thread of asyncio, so the event loop keeps going.

        Cancelling the awaiting task stops the wait, not the run: the run
        completes in the background and the next run waits for it.
        """
        return await asyncio.to_thread(
            self.run,
            run_id,
            elements=elements,
            element_size=element_size,
            schedule=schedule,
            chunk=chunk,
            timeout=timeout,
        )

    def grow(self, delta_pages: int) -> int:
        """Grow the memory after the run in flight; return the previous page count.

        The next run partitions the new data region.

        Raises:
            ValueError: the memory would pass its maximum; nothing changes.
            PoolClosedError: the pool is closed.
        """
        with self._lock:
            self._check_open()
            if self._in_flight:
                self._wait(None, 0)
                self._in_flight = False
            return self._memory.grow(delta_pages)

    def close(self) -> None:
        """Stop the workers and release the memory's board. Idempotent.

        Blocks for at most about a second while worker threads exit; a worker
        stuck in a kernel call is left to finish as a daemon thread.
        """
        if self._state is not _State.CLOSED:
            self._state = _State.CLOSED
            self._finalizer()
