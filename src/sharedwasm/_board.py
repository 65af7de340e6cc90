"""`StatusBoard`: typed atomic access to the status slots and control words.

Everything the pool and its workers say to each other goes through here, as
wasm atomics on words whose offsets come from `_layout`. The host and every
worker use the same methods, each through its own thread's helper instance.

Guarantees:
    Every access is a sequentially consistent wasm atomic, so the protocol
    below needs no extra fences:

    * The host writes the run's parameters (ELEMENTS, ELEMENT_SIZE, PENDING)
      and resets the status slots *before* it bumps GENERATION. A worker that
      sees the new GENERATION therefore sees those values, and the input data
      the host wrote with plain stores before that.
    * A worker stores its status slot *before* it decrements PENDING. So when
      the host sees PENDING reach 0, every slot reads DONE or TRAPPED and
      every output byte a kernel wrote with plain stores is visible.
    * Only the worker that takes PENDING from 1 to 0 notifies it: one wake-up
      per run, however many workers there are.

    Methods may be called from any thread that may touch the memory.
"""

from __future__ import annotations

import time

from . import _atomics
from ._layout import CONTROL_WORDS, Command, Control, Layout, Status
from ._memory import Memory

_ALL = -1  # notify count u32 max, as it travels in an i32 slot
_POLL = 0.1  # seconds between re-checks of a deadline while parked


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

    def clear(self) -> None:
        """Zero every status slot and control word (at pool start, before any worker)."""
        for i in range(self.layout.workers):
            self._call("store32", self.layout.status_address(i), Status.RUNNING)
        for word in range(CONTROL_WORDS):
            self._call("store32", self.layout.control_offset + 4 * word, 0)
        self.store(Control.WORKERS, self.layout.workers)
        self.store(Control.DATA_OFFSET, self.layout.data_offset)

    # -- host side -----------------------------------------------------------

    def publish(self, command: Command, *, elements: int = 0, element_size: int = 0) -> None:
        """Hand every worker a new command and wake them.

        For a RUN, the slots are reset to RUNNING first so an observer that
        waits for DONE cannot mistake the previous run's DONE for this one's.
        """
        if command is Command.RUN:
            for i in range(self.layout.workers):
                self._call("store32", self.layout.status_address(i), Status.RUNNING)
            self.store(Control.ELEMENTS, elements - (1 << 32) if elements >= 1 << 31 else elements)
            self.store(Control.ELEMENT_SIZE, element_size)
            self.store(Control.PENDING, self.layout.workers)
        self.store(Control.COMMAND, command)
        # The GENERATION bump is the release: everything above is visible to
        # a worker once it observes the new value.
        self.add(Control.GENERATION, 1)
        self._call("notify", self.layout.control_address(Control.GENERATION), _ALL)

    def wait_idle(self, deadline: float | None) -> bool:
        """Block until PENDING is 0 or `deadline` (a `time.monotonic` value) passes.

        Parks in slices of at most 0.1 s: safe because the condition is
        re-read after every wake-up, and it keeps Ctrl-C responsive.

        Returns:
            True if every worker finished, False on timeout.
        """
        address = self.layout.control_address(Control.PENDING)
        while True:
            pending = self.load(Control.PENDING)
            if pending == 0:
                return True
            if deadline is None:
                slice_ = _POLL
            else:
                slice_ = min(_POLL, deadline - time.monotonic())
                if slice_ <= 0:
                    return False
            self._wait32(address, pending, max(0, int(slice_ * 1e9)))

    def _wait32(self, address: int, expected: int, timeout_ns: int) -> None:
        func = _atomics.helper_for(self.memory).funcs["wait32"]
        raw = func.args
        raw[0].i32 = address
        raw[1].i32 = expected
        raw[2].i64 = timeout_ns  # negative: no timeout
        func.call()

    # -- worker side ---------------------------------------------------------

    def wait_generation(self, seen: int) -> int:
        """Park until GENERATION differs from `seen`; return the new value."""
        address = self.layout.control_address(Control.GENERATION)
        while True:
            current = self.load(Control.GENERATION)
            if current != seen:
                return current
            # If the host bumps GENERATION between the load and the wait, the
            # wait returns "not-equal" at once: no wake-up can be lost.
            self._wait32(address, seen, -1)

    def set_status(self, worker_index: int, status: Status) -> None:
        """Store a worker's status slot and wake anyone waiting on it."""
        address = self.layout.status_address(worker_index)
        self._call("store32", address, status)
        self._call("notify", address, _ALL)

    def finish(self) -> None:
        """Count this worker out of the run; the last one out wakes the host."""
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
