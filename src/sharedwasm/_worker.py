"""One worker thread: a single call into the runner's `worker_loop`, for life.

Guarantees:
    A worker never touches the pool object, only the kernel, the memory and
    the board, so a pool dropped without `close()` can still be collected
    (its finalizer tells the workers to exit).

    Between runs a worker spins on GENERATION for at most `spin_ns`, then
    parks in `memory.atomic.wait32` and costs no CPU. All of that happens
    inside wasm with the GIL released; Python runs again only when the loop
    returns, on EXIT or on a trap.

    On a trap the thread does in Python what the runner could not: it keeps
    the error for the host, stores TRAPPED in its slot (CANCELLED if the trap
    is the interrupt of a cancelled run) and counts itself out
    of PENDING, in that order (so the host, which reads errors only after
    PENDING reaches 0, sees it), then re-enters the loop for the next run.
    The generation it re-enters with is that of the failed run: the host
    cannot publish another until this worker has counted out.

    Worker threads are daemons: a worker stuck in a kernel that never returns
    cannot keep the process alive. They are started with `_stack.THREAD_STACK`
    bytes of stack, so that a kernel's runaway recursion hits wasmtime's own
    limit and traps before it reaches the end of the thread's stack.

    Worker 0's thread also instantiates the caller's runner, so all of a
    kernel's start-up code runs on the pool's threads, where the pool can
    bound it: a start the pool gave up on (`abandon`) never enters the loop.
"""

from __future__ import annotations

import concurrent.futures
import threading
from typing import NamedTuple

import wasmtime

from . import _stack
from ._board import StatusBoard
from ._kernel import Kernel
from ._layout import Command, Control, Layout, Record, Status
from ._memory import Memory
from ._runner import Runner
from ._wasmtime import is_interrupt


class Failure(NamedTuple):
    """How a worker's share of a run ended early."""

    generation: int
    """The run's generation."""
    error: BaseException
    """What the call raised."""
    interrupted: bool
    """True when the run was cancelled (or the pool closed) and the error is
    the interrupt, not a fault of the kernel."""


class Worker:
    """A worker thread bound to one kernel, memory and layout.

    Worker 0's thread is the standby for the caller, which does worker 0's
    share itself except in runs with a timeout.
    """

    def __init__(
        self,
        kernel: Kernel,
        memory: Memory,
        layout: Layout,
        index: int,
        name: str,
        spin_ns: int,
    ) -> None:
        self.index = index
        self._kernel = kernel
        self._memory = memory
        self._layout = layout
        self._spin_ns = spin_ns
        self.ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.abandon = threading.Event()
        """Set by the pool when it gives up waiting for `ready`."""
        self.host_runner: Runner | None = None
        """Worker 0's thread makes the caller's runner too, before `ready`."""
        self.failure: Failure | None = None
        """The last run whose share failed in this worker."""
        self.thread = threading.Thread(target=self._main, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread; `ready` resolves once the instances exist (or failed)."""
        with _stack.thread_stack_size():
            self.thread.start()

    def _main(self) -> None:
        try:
            runner = Runner(
                self._kernel, self._memory, self._layout, self.index, abandon=self.abandon
            )
            if self.index == 0:
                self.host_runner = Runner(
                    self._kernel, self._memory, self._layout, 0, host=True, abandon=self.abandon
                )
            board = StatusBoard(self._memory, self._layout)
        except BaseException as exc:
            self.ready.set_exception(exc)
            return
        if self.abandon.is_set():
            return  # the pool gave up on this start and closed
        self.ready.set_result(None)
        loop = runner.worker_loop
        # The pool zeroed GENERATION before starting any worker, so 0 is the
        # baseline. Reading it here instead would race with a pool that gave
        # up on a sibling's failed start and already published EXIT: this
        # worker would then wait for a generation that never comes.
        seen = 0
        while True:
            args = loop.args
            args[0].i32 = self.index
            args[1].i32 = self._layout.workers
            args[2].i32 = seen
            args[3].i64 = self._spin_ns
            try:
                loop.call()
                return  # EXIT
            except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                # The failed run's generation: no other can be published until
                # this worker counts out (only EXIT can come first, checked
                # below). The standby re-enters on its own word.
                generation = board.load(Control.GENERATION)
                interrupted = is_interrupt(exc)
                self.failure = Failure(generation, exc, interrupted)
                seen = board.load(
                    Control.STANDBY_GENERATION if self.index == 0 else Control.GENERATION
                )
                # The trap unwound past the runner's own reset of the busy
                # word, and past the kernel's epilogues.
                board.store_record(self.index, Record.BUSY, 0)
                runner.reset_stack()
                board.set_status(self.index, Status.CANCELLED if interrupted else Status.TRAPPED)
                board.finish()
                # EXIT stores COMMAND before it bumps the generation read into
                # `seen`, so this sees it if `seen` already includes it.
                if board.load(Control.COMMAND) == Command.EXIT:
                    return
            except BaseException as exc:
                # Not the kernel's fault: record it, release the host, and end
                # the thread; the pool sees a dead worker and breaks.
                self.failure = Failure(board.load(Control.GENERATION), exc, False)
                board.set_status(self.index, Status.TRAPPED)
                board.finish()
                raise
