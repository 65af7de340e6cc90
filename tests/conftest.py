"""Shared fixtures: cached kernels, a pool factory that checks for leaked threads.

The whole session, and every process it starts, keeps its compiled code in a
temporary cache directory of its own, never in the user's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sharedwasm as sw
from sharedwasm import atomics
from sharedwasm._builtin import KERNEL_DIR
from sharedwasm.testing import join_or_dump, wait_until

TIMEOUT = 10.0
"""Upper bound, in seconds, of every join and wait in the tests."""

KERNELS = Path(__file__).parent / "kernels"


_SESSION_CACHE = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    # Set before any test compiles anything; subprocesses inherit it.
    directory = tempfile.mkdtemp(prefix="sharedwasm-test-cache-")
    config.stash[_SESSION_CACHE] = directory
    os.environ["SHAREDWASM_CACHE_DIR"] = os.path.join(directory, "cache")
    os.environ.pop("SHAREDWASM_CACHE", None)


def pytest_unconfigure(config: pytest.Config) -> None:
    directory = config.stash.get(_SESSION_CACHE, None)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)


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


def pool_threads(pool: sw.WorkerPool | str) -> list[threading.Thread]:
    """Return the live threads whose names mark them as a pool's workers (pool or its name)."""
    name = pool if isinstance(pool, str) else pool.name
    return [t for t in threading.enumerate() if t.name.startswith(f"{name}-w")]


def statuses(pool: sw.WorkerPool) -> list[int]:
    """Return an atomic read of every status slot (of a closed pool too)."""
    board = pool.memory.view(np.int32, offset=pool.layout.status_offset, count=pool.workers)
    return [atomics.load(board, i) for i in range(pool.workers)]


class InThread:
    """Call a function in a daemon thread, keeping its result or exception for the test."""

    def __init__(self, fn: Callable[[], Any], name: str = "test-caller") -> None:
        self.result: Any = None
        self.error: BaseException | None = None

        def target() -> None:
            try:
                self.result = fn()
            except BaseException as exc:
                self.error = exc

        self.thread = threading.Thread(target=target, name=name, daemon=True)
        self.thread.start()

    def join(self, pool: sw.WorkerPool | None = None) -> Any:
        """Wait at most TIMEOUT for the call; return its result or raise its exception."""
        join_or_dump(self.thread, TIMEOUT, pool)
        if self.error is not None:
            raise self.error
        return self.result


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
            lambda pool=pool: not pool_threads(pool),  # type: ignore[misc]
            TIMEOUT,
            what=f"all threads of {pool.name} exited",
            pool=pool,
        )
