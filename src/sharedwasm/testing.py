"""Helpers for testing code that uses sharedwasm: bounded waits that fail loudly.

A concurrency bug shows up as a hang. These helpers turn a hang into a failure
that says where every thread was and what the status board held.

`thread_cpu_seconds` measures one thread's CPU time on its own, which other
processes' load cannot inflate (Linux).

`CHROMIUM` and `CHROMIUM_ARGS` launch a headless browser for pages served by
`sharedwasm serve` (for instance with playwright's `executable_path`).
"""

from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ._pool import WorkerPool

CHROMIUM = "/usr/bin/chromium"
"""Debian's Chromium, which the test command installs when it is missing."""

CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
"""Headless, and quiet: nothing that reaches for the network or a GPU."""


def thread_cpu_seconds(thread: threading.Thread) -> float:
    """Return the CPU time a live thread of this process has used so far."""
    task = Path(f"/proc/self/task/{thread.native_id}")
    try:
        # Nanoseconds on a CPU: exact, where utime and stime count clock ticks.
        return int((task / "schedstat").read_text().split()[0]) * 1e-9
    except FileNotFoundError:
        if not task.exists():
            raise
    # A kernel without schedstats: fields 14 and 15 of stat, after the name.
    fields = (task / "stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dump_on_deadlock(reason: str, pool: WorkerPool | None = None) -> None:
    """Dump every thread's stack and the pool's board to stderr, then raise.

    Raises:
        AssertionError: always, with `reason` and the board snapshot.
    """
    sys.stderr.write(f"\n=== sharedwasm deadlock: {reason} ===\n")
    sys.stderr.flush()
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    board = None
    if pool is not None:
        try:
            board = pool._board.snapshot()
        except Exception as exc:  # the dump must not hide the original failure
            board = {"error reading board": repr(exc)}
        sys.stderr.write(f"board: {board}\n")
    raise AssertionError(f"{reason}; board {board}")


def wait_until(
    predicate: Callable[[], bool],
    timeout: float,
    *,
    what: str = "condition",
    pool: WorkerPool | None = None,
    interval: float = 0.001,
) -> None:
    """Poll `predicate` until it is true; after `timeout` seconds, dump and fail."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            dump_on_deadlock(f"{what} not reached within {timeout} s", pool)
        time.sleep(interval)


def join_or_dump(thread: threading.Thread, timeout: float, pool: WorkerPool | None = None) -> None:
    """Join `thread` within `timeout` seconds or dump and fail."""
    thread.join(timeout)
    if thread.is_alive():
        dump_on_deadlock(f"thread {thread.name} still running after {timeout} s", pool)
