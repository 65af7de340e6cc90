"""Shared fixtures: cached kernels, a pool factory that checks for leaked threads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import sharedwasm as sw
from sharedwasm._builtin import KERNEL_DIR
from sharedwasm.testing import wait_until

TIMEOUT = 10.0
"""Upper bound, in seconds, of every join and wait in the tests."""

KERNELS = Path(__file__).parent / "kernels"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", help="also run tests marked slow")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    slow = [item for item in items if "slow" in item.keywords]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if "slow" not in item.keywords]


_kernel_cache: dict[str, sw.Kernel] = {}


@pytest.fixture(scope="session")
def kernel() -> Callable[[str], sw.Kernel]:
    """Return a loader for `tests/kernels/<name>.wat`, compiled once per session."""

    def load(name: str) -> sw.Kernel:
        if name not in _kernel_cache:
            path = KERNELS / f"{name}.wat"
            if not path.exists():  # the kernels that ship with the package
                path = KERNEL_DIR / f"{name}.wat"
            _kernel_cache[name] = sw.Kernel.from_file(path)
        return _kernel_cache[name]

    return load


def _pool_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(f"{name}-w")]


@pytest.fixture
def make_pool() -> Iterator[Callable[..., sw.WorkerPool]]:
    """Create pools that are closed after the test and must leave no thread behind."""
    pools: list[sw.WorkerPool] = []

    def factory(
        kernel: sw.Kernel, memory: sw.Memory | None = None, workers: int | None = 2, **kw: object
    ) -> sw.WorkerPool:
        if memory is None:
            memory = sw.Memory(16, 64)
        pool = sw.WorkerPool(kernel, memory, workers, **kw)  # type: ignore[arg-type]
        pools.append(pool)
        return pool

    yield factory
    for pool in pools:
        pool.close()
    for pool in pools:
        wait_until(
            lambda pool=pool: not _pool_threads(pool.name),  # type: ignore[misc]
            TIMEOUT,
            what=f"all threads of {pool.name} exited",
            pool=pool,
        )
