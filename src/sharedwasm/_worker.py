"""One worker thread: its own store and instance, parked on the board between runs.

Guarantees:
    A worker never touches the pool object, only the kernel, the memory and
    the board, so a pool dropped without `close()` can still be collected
    (its finalizer tells the workers to exit).

    The only Python state a worker shares with the host is `outcome`, which
    it writes before storing its status slot and counting itself out of the
    run (see `_board`); the host reads it only after PENDING reaches 0.

    The kernel call goes through ctypes with the GIL released, so workers run
    their partitions truly in parallel. Between runs a worker is parked in
    `memory.atomic.wait32` on GENERATION and costs no CPU.

    Worker threads are daemons: a worker stuck in a kernel that never returns
    cannot keep the process alive.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time

import wasmtime

from . import _wasmtime
from ._board import StatusBoard
from ._errors import KernelError
from ._kernel import ENTRY_POINT, Kernel
from ._layout import Command, Control, Layout, Status
from ._memory import Memory
from ._partition import partition


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What one worker did in one run."""

    generation: int
    start: int
    end: int
    elapsed: float
    error: BaseException | None = None


def _i32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


class Worker:
    """A worker thread bound to one kernel, one memory and one board layout."""

    def __init__(
        self, kernel: Kernel, memory: Memory, layout: Layout, index: int, name: str
    ) -> None:
        self.index = index
        self._kernel = kernel
        self._memory = memory
        self._layout = layout
        self.ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.outcome: Outcome | None = None
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread; `ready` resolves once the instance exists (or failed)."""
        self.thread.start()

    def _instantiate(self) -> _wasmtime.RawFunc:
        store = wasmtime.Store(_wasmtime.engine())
        values = {
            "data_offset": self._layout.data_offset,
            "worker_index": self.index,
            "total_workers": self._layout.workers,
        }
        externs = self._kernel._imports(store, self._memory._shared, values)
        try:
            instance = wasmtime.Instance(store, self._kernel._module, externs)  # type: ignore[arg-type]
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise KernelError(
                f"{self._kernel.name} failed to instantiate in worker {self.index}: "
                f"{lines[-1] if lines else exc!r}"
            ) from exc
        func = instance.exports(store)[ENTRY_POINT]
        assert isinstance(func, wasmtime.Func)
        return _wasmtime.RawFunc(store, func, 2)

    def _main(self) -> None:
        try:
            call = self._instantiate()
            board = StatusBoard(self._memory, self._layout)
        except BaseException as exc:
            self.ready.set_exception(exc)
            return
        self.ready.set_result(None)
        # The pool zeroed GENERATION before starting any worker, so 0 is the
        # baseline. Reading it here instead would race with a pool that gave
        # up on a sibling's failed start and already published EXIT: this
        # worker would then wait for a generation that never comes.
        self._loop(call, board, 0)

    def _loop(self, call: _wasmtime.RawFunc, board: StatusBoard, seen: int) -> None:
        workers = self._layout.workers
        while True:
            seen = board.wait_generation(seen)
            if board.load(Control.COMMAND) == Command.EXIT:
                return
            start = end = 0
            error: BaseException | None = None
            t0 = time.perf_counter()
            try:
                total = board.load(Control.ELEMENTS) & 0xFFFFFFFF
                start, end = partition(total, workers, self.index)
                # The host already reset the slot; storing it again keeps the
                # reference protocol for observers that only watch workers.
                board.set_status(self.index, Status.RUNNING)
                call.args[0].i32 = _i32(start)
                call.args[1].i32 = _i32(end)
                t0 = time.perf_counter()
                call.call()
            except BaseException as exc:
                error = exc
            elapsed = time.perf_counter() - t0
            self.outcome = Outcome(seen, start, end, elapsed, error)
            board.set_status(self.index, Status.DONE if error is None else Status.TRAPPED)
            board.finish()
