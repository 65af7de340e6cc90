"""The public surface: what `sharedwasm` and `sharedwasm.atomics` export."""

from __future__ import annotations

import types

import sharedwasm as sw
from sharedwasm import atomics


def test_all_is_sorted_and_complete():
    """`__all__` lists every public name, each of which exists."""
    public = {name for name in vars(sw) if not name.startswith("_")}
    modules = {name for name in public if isinstance(getattr(sw, name), types.ModuleType)}
    assert set(sw.__all__) >= public - modules
    assert "atomics" in sw.__all__
    for name in sw.__all__:
        assert hasattr(sw, name), name


def test_core_api_names():
    """The names code outside the project relies on are exported."""
    for name in (
        "Memory",
        "Kernel",
        "WorkerPool",
        "RunResult",
        "WorkerDone",
        "KernelError",
        "LayoutError",
        "KernelTrap",
        "RunTimeout",
        "PoolClosedError",
        "BrokenPoolError",
        "SharedWasmError",
    ):
        assert name in sw.__all__, name


def test_atomics_api_mirrors_javascript():
    """`sharedwasm.atomics` has the operations of JavaScript's Atomics, Python-spelt."""
    assert sorted(atomics.__all__) == sorted(
        [
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
    )
    for name in atomics.__all__:
        assert hasattr(atomics, name), name


def test_facade_reexports_are_the_implementations():
    """The facade re-exports the implementation objects, not copies."""
    from sharedwasm._memory import Memory
    from sharedwasm._pool import WorkerPool

    assert sw.Memory is Memory
    assert sw.WorkerPool is WorkerPool
