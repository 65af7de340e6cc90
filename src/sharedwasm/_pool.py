"""`WorkerPool`: N worker threads running one kernel over one shared memory.

The pool owns the lifecycle (start, run, grow, close), places the board with
`_layout`, dispatches through `_board` and turns worker outcomes into results
or errors. Workers live in `_worker`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import itertools
import math
import operator
import os
import threading
import time
import weakref
from typing import Any

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
)
from ._kernel import Kernel
from ._layout import Command, Layout
from ._memory import Memory
from ._worker import Worker

MAX_WORKERS = 1024
"""More workers than this is refused: each one is an OS thread and a wasm store."""

CLOSE_TIMEOUT = 1.0
"""Seconds `close()` waits for worker threads to exit."""

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
    end: int
    elapsed: float


@dataclasses.dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of `WorkerPool.run`: one `WorkerDone` per worker, in worker order."""

    run_id: str
    elapsed: float
    done: list[WorkerDone]


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
        board.publish(Command.EXIT)
    deadline = time.monotonic() + timeout
    for worker in workers:
        if worker.thread.ident is not None:
            worker.thread.join(max(0.0, deadline - time.monotonic()))


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float | np.integer | np.floating):
        raise TypeError(f"timeout must be a number of seconds or None (got {timeout!r})")
    t = float(timeout)
    if math.isnan(t) or t < 0:
        raise ValueError(f"timeout must be >= 0 seconds or None (got {timeout!r})")
    return t


class WorkerPool:
    """Run one kernel on N threads over one shared memory.

    Args:
        kernel: the compiled kernel.
        memory: the shared memory every worker imports as `env.memory`.
        workers: worker count; default, the CPUs this process may use.
        status_offset: byte offset of the status board. The control block
            and the data region follow it; bytes before it are left alone.

    Blocks until every worker has instantiated the kernel (READY).

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
        self._workers = [
            Worker(kernel, memory, self._layout, i, f"{self.name}-w{i}") for i in range(workers)
        ]
        self._finalizer = weakref.finalize(
            self, _shutdown, self._board, self._workers, self.name, CLOSE_TIMEOUT
        )
        try:
            for worker in self._workers:
                worker.start()
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

    def _wait_idle(self, deadline: float | None) -> bool:
        # Re-check the pool state between parking slices: close() from another
        # thread must end a wait whose workers have been told to exit.
        while True:
            slice_end = time.monotonic() + 0.1
            if deadline is not None:
                slice_end = min(slice_end, deadline)
            if self._board.wait_idle(slice_end):
                return True
            self._check_open()
            if deadline is not None and time.monotonic() >= deadline:
                return False

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
        timeout: float | None = None,
    ) -> RunResult:
        """Run the kernel over the data region, one partition per worker.

        Worker `i` gets `compute_partition(start, end)` with the reference
        partitioning: `chunk = ceil(elements / workers)`, `start = i * chunk`.

        Args:
            run_id: a label carried into the result.
            elements: element count; default, as many `element_size`-byte
                elements as the data region holds now (after any grow).
            element_size: bytes per element, 4 (float32) by default.
            timeout: seconds to wait for the run, including for a run still
                in flight from another thread; None waits as long as it takes.

        Blocks the calling thread until every partition is done. May be
        called from any thread; concurrent calls run one after another.

        Raises:
            KernelTrap: a partition trapped; the other partitions completed.
            RunTimeout: the run did not finish in time. It keeps running in
                the background and the next call waits for it first.
            PoolClosedError: the pool is closed, or was closed during the run.
            LayoutError: `elements` does not fit the data region.
        """
        timeout = _check_timeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self._lock.acquire(timeout=-1 if timeout is None else timeout):
            raise RunTimeout(f"run {run_id!r}: another run held {self.name} for {timeout} s")
        try:
            self._check_open()
            if self._in_flight:
                if not self._wait_idle(deadline):
                    raise RunTimeout(
                        f"run {run_id!r}: an earlier run of {self.name} was still in flight "
                        f"after {timeout} s; board {self._board.snapshot()}"
                    )
                self._in_flight = False
            total, size = self._elements(elements, element_size)
            self._in_flight = True
            t0 = time.perf_counter()
            self._board.publish(Command.RUN, elements=total, element_size=size)
            if not self._wait_idle(deadline):
                raise RunTimeout(
                    f"run {run_id!r} did not finish within {timeout} s; "
                    f"board {self._board.snapshot()}"
                )
            elapsed = time.perf_counter() - t0
            self._in_flight = False
            return self._collect(run_id, elapsed)
        finally:
            self._lock.release()

    def _collect(self, run_id: str, elapsed: float) -> RunResult:
        outcomes = [w.outcome for w in self._workers]
        done: list[WorkerDone] = []
        traps: list[tuple[KernelTrap, BaseException]] = []
        for i, outcome in enumerate(outcomes):
            assert outcome is not None
            if isinstance(outcome.error, wasmtime.Trap | wasmtime.WasmtimeError):
                trap = KernelTrap(i, outcome.start, outcome.end, str(outcome.error))
                traps.append((trap, outcome.error))
            elif outcome.error is not None:
                self._state = _State.BROKEN
                raise BrokenPoolError(
                    f"worker {i} of {self.name} failed outside the kernel: {outcome.error!r}"
                ) from outcome.error
            done.append(WorkerDone(i, outcome.start, outcome.end, outcome.elapsed))
        if traps:
            first, cause = traps[0]
            error = KernelTrap(
                first.worker_index, first.start, first.end, first.trap, [t for t, _ in traps[1:]]
            )
            raise error from cause
        return RunResult(run_id, elapsed, done)

    async def run_async(
        self,
        run_id: str = "run",
        *,
        elements: int | None = None,
        element_size: int = 4,
        timeout: float | None = None,
    ) -> RunResult:
        """Run like `run`, waiting in a thread so the event loop keeps going.

        Cancelling the awaiting task stops the wait, not the run: the run
        completes in the background and the next run waits for it.
        """
        return await asyncio.to_thread(
            self.run, run_id, elements=elements, element_size=element_size, timeout=timeout
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
                self._wait_idle(None)
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
