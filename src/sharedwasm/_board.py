"""`StatusBoard`: typed atomic access to the status slots and control words.

The hot path of a run lives in the runner (`_runner`); this is the Python
side of the same protocol, for what happens rarely: zeroing the board when a
pool starts, publishing EXIT, counting a failed worker out of a run, and
reading the board for diagnostics. Each access is a wasm atomic on a word
whose offset comes from `_layout`, made through the calling thread's helper
instance.

Guarantees:
    Every access is a sequentially consistent wasm atomic, the same kind the
    runner uses, so the two sides interleave safely:

    * EXIT is published like a run: COMMAND is stored *before* GENERATION is
      bumped, so a worker that sees the new GENERATION sees EXIT.
    * A failed worker stores TRAPPED *before* it decrements PENDING, as the
      runner stores DONE before it does, so when the host sees PENDING reach
      0 every slot is final.
    * Only the worker that takes PENDING from 1 to 0 notifies it.

    Methods may be called from any thread that may touch the memory.
"""

from __future__ import annotations

from . import _atomics
from ._layout import CONTROL_WORDS, Command, Control, Layout, Record, Status
from ._memory import Memory

_ALL = -1  # notify count u32 max, as it travels in an i32 slot


class StatusBoard:
    """The status slots and control words of one pool, inside its memory."""

    def __init__(self, memory: Memory, layout: Layout) -> None:
        self.memory = memory
        self.layout = layout

    def _call(self, name: str, *args: int) -> int:
        func = _atomics.helper_for(self.memory).funcs[name]
        raw = func.args
        for i, value in enumerate(args):
            raw[i].i32 = value
        func.call()
        return int(raw[0].i32)

    # -- control words -------------------------------------------------------

    def load(self, word: Control) -> int:
        """Atomically read a control word (as stored, signed)."""
        return self._call("load32", self.layout.control_address(word))

    def store(self, word: Control, value: int) -> None:
        """Atomically write a control word."""
        self._call("store32", self.layout.control_address(word), value)

    def add(self, word: Control, delta: int) -> int:
        """Atomically add to a control word; return the old value."""
        return self._call("add32", self.layout.control_address(word), delta)

    def store_record(self, worker_index: int, field: Record, value: int) -> None:
        """Atomically write an i32 field of a worker's record."""
        self._call("store32", self.layout.record_address(worker_index) + field, value)

    def clear(self) -> None:
        """Zero every status slot and control word (at pool start, before any worker)."""
        for i in range(self.layout.workers):
            self._call("store32", self.layout.status_address(i), Status.RUNNING)
        for word in range(CONTROL_WORDS):
            self._call("store32", self.layout.control_offset + 4 * word, 0)
        self.store(Control.WORKERS, self.layout.workers)
        self.store(Control.DATA_OFFSET, self.layout.data_offset)

    # -- host side -----------------------------------------------------------

    def publish_exit(self) -> None:
        """Tell every worker to leave its loop, spinning or parked.

        Safe to repeat: close() does, until every worker is gone, in case a
        kernel wrote over the words in between.

        Runs are published by the runner's `host_run`; EXIT is rare enough to
        come from Python, and notifies unconditionally.
        """
        self.store(Control.COMMAND, Command.EXIT)
        # Each bump is a release of COMMAND; the standby thread waits on its own word.
        for word in (Control.GENERATION, Control.STANDBY_GENERATION):
            self.add(word, 1)
            self._call("notify", self.layout.control_address(word), _ALL)
        # A caller parked for the end of a run returns to Python on EXIT.
        self._call("notify", self.layout.control_address(Control.PENDING), _ALL)

    # -- worker side ---------------------------------------------------------

    def set_status(self, worker_index: int, status: Status) -> None:
        """Store a worker's status slot and wake anyone waiting on it."""
        address = self.layout.status_address(worker_index)
        self._call("store32", address, status)
        self._call("notify", address, _ALL)

    def finish(self) -> None:
        """Count a failed worker out of the run; the last one out wakes the host."""
        if self.add(Control.PENDING, -1) == 1:
            self._call("notify", self.layout.control_address(Control.PENDING), _ALL)

    # -- observation ---------------------------------------------------------

    def statuses(self) -> list[int]:
        """Return an atomic read of every status slot, in worker order."""
        return [
            self._call("load32", self.layout.status_address(i)) for i in range(self.layout.workers)
        ]

    def snapshot(self) -> dict[str, object]:
        """Return the board and control words, for diagnostics."""
        return {
            "status": self.statuses(),
            **{word.name.lower(): self.load(word) for word in Control},
        }
