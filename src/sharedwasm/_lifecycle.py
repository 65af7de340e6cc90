"""The pool's lifecycle: its size, its layout, its start-up defaults and its shutdown.

What happens before the first run and after the last one, apart from the
run protocol (`_pool`): how many workers, where the regions go (`plan`), the
timeouts of start-up and close, and `shutdown`, which is also the pool's
finalizer and so must not reference the pool.
"""

from __future__ import annotations

import enum
import math
import operator
import os
import threading
import time

import numpy as np

from ._board import StatusBoard
from ._errors import LayoutError
from ._kernel import Kernel
from ._layout import CACHE_LINE, DEFAULT_STACK_SIZE, STACK_ALIGN, Layout, align_up
from ._memory import Claim, Memory
from ._wasmtime import MAX_PAGES, PAGE_SIZE, engine
from ._worker import Worker

MAX_WORKERS = 1024
"""More workers than this is refused: each one is an OS thread and a wasm store."""

CLOSE_TIMEOUT = 1.0
"""Seconds `close()` waits for worker threads to exit."""

START_TIMEOUT = 30.0
"""Default seconds a pool waits for every worker's instances (and the kernel's
start-up code in them) before it gives up with `StartTimeout`."""

DEFAULT_SPIN = 2e-3
"""Seconds a worker polls for the next run before it parks, when every
worker has a CPU of its own. Spinning with more threads than CPUs only
steals time from the threads doing the work, so then the default is 0."""

INTERRUPT_EVERY = 0.02
"""Seconds between epoch bumps while waiting for a cancelled run to stop
(each bump makes a busy worker check whether it must stop)."""

AUTO_MEMORY_DATA = 1 << 20
"""Bytes of data region a pool made without a memory starts with."""


def default_workers() -> int:
    """Return the number of CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def interrupt(memory: Memory) -> None:
    """Make every busy thread on `memory`'s engine check whether to stop."""
    if memory.interruptible:
        engine(True).increment_epoch()


class State(enum.Enum):
    """Where a pool is in its life."""

    OPEN = "open"
    CLOSED = "closed"
    BROKEN = "broken"


def shutdown(board: StatusBoard, workers: list[Worker], claim: Claim, timeout: float) -> None:
    """Tell every worker to exit and wait at most `timeout` seconds for them.

    Also waits for other threads inside a call into the runner (a run's
    caller) to leave it. The memory's claim is released only once all of them
    are gone, whenever that is: until then a new pool on the memory is
    refused, since a returning call would write to this pool's board.
    Also the pool's finalizer, so it must not reference the pool.
    """
    claim.closed = True
    for worker in workers:
        worker.abandon.set()
    me = threading.get_ident()
    deadline = time.monotonic() + timeout
    while True:
        alive = [w.thread for w in workers if w.thread.ident is not None and w.thread.is_alive()]
        callers = [ident for ident in list(claim.callers) if ident != me]
        if not alive and not callers:
            return
        # Published again on every round: a kernel may have written over
        # COMMAND or GENERATION since. A worker still inside the kernel stops
        # at its next check after the bump (EXIT is stored first, so the
        # check sees it).
        board.publish_exit()
        interrupt(board.memory)
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if alive:
            alive[0].join(min(left, INTERRUPT_EVERY))
        else:
            time.sleep(min(left, 0.002))


def check_timeout(timeout: float | None, name: str = "timeout") -> float | None:
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


def plan(
    kernel: Kernel,
    workers: int,
    status_offset: int | None,
    stack_size: int | None,
    byte_length: int,
    pages: int | None = None,
) -> Layout:
    """Lay out a pool of `kernel` on `workers` workers, applying the defaults."""
    if stack_size is None:
        stack_size = DEFAULT_STACK_SIZE if kernel.uses_stack else 0
    elif isinstance(stack_size, bool):
        raise TypeError(f"stack_size must be an int (got {stack_size!r})")
    else:
        stack_size = operator.index(stack_size)
        if not kernel.uses_stack:
            raise ValueError(
                f"stack_size applies only to a kernel that exports __stack_pointer; "
                f"{kernel.name} uses no stack (got stack_size={stack_size!r})"
            )
        if stack_size < STACK_ALIGN:
            raise ValueError(f"stack_size must be >= {STACK_ALIGN} bytes (got {stack_size!r})")
    defaulted = status_offset is None
    if status_offset is None:
        status_offset = align_up(kernel.static_end, CACHE_LINE)
    if defaulted and pages is not None:
        needed = Layout.build(
            workers=workers,
            status_offset=status_offset,
            byte_length=MAX_PAGES * PAGE_SIZE,
            static_end=kernel.static_end,
            stack_size=stack_size,
            tls_size=kernel.tls_size,
            tls_align=kernel.tls_align,
        ).data_offset
        if needed >= byte_length:
            want = needed // PAGE_SIZE + 1
            raise LayoutError(
                f"memory must have at least {want} pages for the pool's own regions (the "
                f"kernel's static data, the status board, the control block, the worker "
                f"records and {workers} workers' thread areas take {needed} bytes before any "
                f"data), or memory=None for one that grows (got a memory of {pages} pages)"
            )
    return Layout.build(
        workers=workers,
        status_offset=status_offset,
        byte_length=byte_length,
        static_end=kernel.static_end,
        stack_size=stack_size,
        tls_size=kernel.tls_size,
        tls_align=kernel.tls_align,
    )


def check_workers(workers: int | None) -> int:
    if workers is None:
        return default_workers()
    if isinstance(workers, bool):
        raise TypeError(f"workers must be an int (got {workers!r})")
    workers = operator.index(workers)
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers must be in [1, {MAX_WORKERS}] (got {workers!r})")
    return workers
