"""Atomic operations on numpy views of a shared `sharedwasm.Memory`.

The same operations, argument order and return values as JavaScript's
`Atomics`, executed as WebAssembly atomics so they interoperate with a
kernel's own (a kernel's `memory.atomic.notify` wakes a host `wait`, and a
host `notify` wakes a kernel's `memory.atomic.wait32`).
"""

from ._atomics import WaitResult as WaitResult
from ._atomics import add as add
from ._atomics import and_ as and_
from ._atomics import compare_exchange as compare_exchange
from ._atomics import exchange as exchange
from ._atomics import load as load
from ._atomics import notify as notify
from ._atomics import or_ as or_
from ._atomics import store as store
from ._atomics import sub as sub
from ._atomics import wait as wait
from ._atomics import wait_async as wait_async
from ._atomics import xor as xor

__all__ = [
    "WaitResult",
    "add",
    "and_",
    "compare_exchange",
    "exchange",
    "load",
    "notify",
    "or_",
    "store",
    "sub",
    "wait",
    "wait_async",
    "xor",
]
