"""The exception hierarchy of sharedwasm.

Every error the library raises on purpose derives from `SharedWasmError`, and
also from the builtin exception that fits, so code that already catches
`ValueError` or `TimeoutError` keeps working::

    SharedWasmError(Exception)
     ├─ KernelError(ValueError)        the module breaks the kernel ABI or is not wasm
     ├─ LayoutError(ValueError)        regions overlap, or an offset is out of bounds or misaligned
     ├─ KernelTrap(RuntimeError)       a partition trapped; .worker_index .start .end .trap
     ├─ RunTimeout(TimeoutError)       a run did not finish within its timeout
     ├─ StartTimeout(TimeoutError)     a kernel's start-up code did not return in time
     ├─ RunCancelled(CancelledError)   a run was cancelled (concurrent.futures.CancelledError)
     ├─ PoolClosedError(RuntimeError)  the pool was closed by its owner
     ├─ BrokenPoolError(RuntimeError)  the pool cannot be used after a failure
     └─ OutOfMemory(MemoryError)       the heap is full and the memory at its maximum
    CopyWarning(UserWarning)           an ordinary array was copied in and out for a run
    CacheWarning(UserWarning)          the compiled-code cache cannot be used; code is compiled
    SharedWasmInternalError(Exception) a bug in sharedwasm; please report it

Plain argument mistakes (a negative page count, a float where an int is
needed) raise the builtin `TypeError`/`ValueError`/`IndexError` directly, the
way the standard library does.
"""

from __future__ import annotations

import concurrent.futures
import re
from collections.abc import Sequence


def describe(value: object) -> str:
    """A short description of a value for an error message: an array by dtype and shape."""
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        return f"a {dtype} array of shape {shape}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def error_cause(text: str, default: str) -> str:
    """Return the line of a wasmtime error or trap text that says what happened.

    wasmtime's text is a backtrace followed by the cause, so the cause is the
    last non-empty line, without the number it has in a chain of causes
    ("0: memory fault at ...", "1: wasm trap: out of bounds memory access");
    `default` stands in for an empty text.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return re.sub(r"^\d+: ", "", lines[-1]) if lines else default


class SharedWasmError(Exception):
    """Base class of the errors sharedwasm raises on purpose."""


class KernelError(SharedWasmError, ValueError):
    """A module cannot be used as a kernel: not wasm, or it breaks the kernel ABI."""


class BuildError(KernelError):
    """The compiler, linker or optimiser could not turn a source into a kernel.

    The message holds the tool's own diagnostics.

    Attributes:
        command: the command line that failed.
        stderr: the tool's complete diagnostic output.
        returncode: its exit status (None if it was stopped for taking too long).
    """

    def __init__(
        self, message: str, *, command: Sequence[str], stderr: str, returncode: int | None
    ) -> None:
        super().__init__(message)
        self.command = list(command)
        self.stderr = stderr
        self.returncode = returncode


class ToolchainNotFoundError(SharedWasmError, FileNotFoundError):
    """A program that building a kernel needs (clang, wasm-ld, wasm-opt) is not installed."""


class BuildWarning(UserWarning):
    """The compiler built the kernel but printed warnings; the message holds them."""


class LayoutError(SharedWasmError, ValueError):
    """A region of the shared memory is misplaced, misaligned or overlaps another."""


class KernelTrap(SharedWasmError, RuntimeError):
    """A worker's partition trapped.

    Attributes:
        worker_index: the worker whose call trapped.
        start: first element of that worker's partition.
        end: one past the last element of that worker's partition.
        trap: wasmtime's trap message.
        traps: every trap of the run, this one first, when several workers trapped.
        entry: the name of the entry that was called.
    """

    def __init__(
        self,
        worker_index: int,
        start: int,
        end: int,
        trap: str,
        traps: Sequence[KernelTrap] = (),
        hint: str = "",
        entry: str = "compute_partition",
    ) -> None:
        cause = error_cause(trap, "trap")
        super().__init__(
            f"worker {worker_index} trapped in {entry}({start}, {end}): {cause}"
            + (f" ({hint})" if hint else "")
        )
        self.entry = entry
        self.worker_index = worker_index
        self.start = start
        self.end = end
        self.trap = trap
        self.traps: tuple[KernelTrap, ...] = (self, *traps)


class RunTimeout(SharedWasmError, TimeoutError):
    """A run did not finish within its timeout."""


class StartTimeout(SharedWasmError, TimeoutError):
    """A kernel's start-up code (its start function, `__set_stack_limits` or
    `__wasm_init_tls`) did not return within the pool's `start_timeout`; no
    pool was made.

    Attributes:
        workers: the workers whose start had not returned.
    """

    def __init__(self, message: str, *, workers: Sequence[int]) -> None:
        super().__init__(message)
        self.workers = tuple(workers)


class RunCancelled(SharedWasmError, concurrent.futures.CancelledError):
    """A run was cancelled (by `WorkerPool.cancel` or its task's cancellation)
    before every share finished; the output of the shares that did not finish
    is incomplete. The pool is ready for the next run."""


class PoolClosedError(SharedWasmError, RuntimeError):
    """The pool was closed by its owner and cannot run anything more."""


class BrokenPoolError(SharedWasmError, RuntimeError):
    """The pool failed in a way that leaves it unusable."""


class OutOfMemory(SharedWasmError, MemoryError):
    """A pool's heap cannot hold an array: the memory is at its maximum."""

    def __init__(self, message: str, *, requested: int, available: int) -> None:
        super().__init__(message)
        self.requested = requested
        """Bytes asked for."""
        self.available = available
        """Bytes the heap could still give in one piece, growing the memory to its maximum."""


class CopyWarning(UserWarning):
    """An ordinary numpy array was copied into the shared memory for a run, and back.

    Issued once per pool. Arrays made with `WorkerPool.asarray` (or `empty`,
    `zeros`, `full`) live in the shared memory and pass to kernels with no copy.
    """


class CacheWarning(UserWarning):
    """The compiled-code cache cannot be used, so modules are compiled instead.

    Issued at most once per process and directory, with the reason: the
    directory cannot be created or written, or it is not private to the user
    (owned by someone else, or writable by group or others). Compiling still
    works; only the time it saves is lost. `SHAREDWASM_CACHE=0` turns the
    cache off and silences it.
    """


class SharedWasmInternalError(Exception):
    """An invariant of sharedwasm itself was broken: this is a bug, please report it."""
