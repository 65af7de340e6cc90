"""Run one WebAssembly kernel on a pool of threads over one shared linear memory."""

from . import atomics as atomics
from ._build import build as build
from ._build import build_is_current as build_is_current
from ._build import get_include as get_include
from ._entries import Entry as Entry
from ._entries import Param as Param
from ._errors import BrokenPoolError as BrokenPoolError
from ._errors import BuildError as BuildError
from ._errors import BuildWarning as BuildWarning
from ._errors import CacheWarning as CacheWarning
from ._errors import CopyWarning as CopyWarning
from ._errors import KernelError as KernelError
from ._errors import KernelTrap as KernelTrap
from ._errors import LayoutError as LayoutError
from ._errors import OutOfMemory as OutOfMemory
from ._errors import PoolClosedError as PoolClosedError
from ._errors import RunCancelled as RunCancelled
from ._errors import RunTimeout as RunTimeout
from ._errors import SharedWasmError as SharedWasmError
from ._errors import SharedWasmInternalError as SharedWasmInternalError
from ._errors import StartTimeout as StartTimeout
from ._errors import ToolchainNotFoundError as ToolchainNotFoundError
from ._kernel import Kernel as Kernel
from ._layout import Layout as Layout
from ._layout import Status as Status
from ._memory import Memory as Memory
from ._pool import WorkerPool as WorkerPool
from ._results import PoolStatistics as PoolStatistics
from ._results import RunResult as RunResult
from ._results import WorkerDone as WorkerDone
from ._version import __version__ as __version__
from ._wasmtime import PAGE_SIZE as PAGE_SIZE

__all__ = [
    "PAGE_SIZE",
    "BrokenPoolError",
    "BuildError",
    "BuildWarning",
    "CacheWarning",
    "CopyWarning",
    "Entry",
    "Kernel",
    "KernelError",
    "KernelTrap",
    "Layout",
    "LayoutError",
    "Memory",
    "OutOfMemory",
    "Param",
    "PoolClosedError",
    "PoolStatistics",
    "RunCancelled",
    "RunResult",
    "RunTimeout",
    "SharedWasmError",
    "SharedWasmInternalError",
    "StartTimeout",
    "Status",
    "ToolchainNotFoundError",
    "WorkerDone",
    "WorkerPool",
    "__version__",
    "atomics",
    "build",
    "build_is_current",
    "get_include",
]
