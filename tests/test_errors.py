"""The exception hierarchy: one base class, each error also a fitting builtin."""

from __future__ import annotations

import pytest

import sharedwasm as sw


@pytest.mark.parametrize(
    ("error", "builtin"),
    [
        (sw.KernelError, ValueError),
        (sw.LayoutError, ValueError),
        (sw.KernelTrap, RuntimeError),
        (sw.RunTimeout, TimeoutError),
        (sw.PoolClosedError, RuntimeError),
        (sw.BrokenPoolError, RuntimeError),
    ],
)
def test_each_error_is_a_sharedwasm_error_and_a_builtin(error, builtin):
    """Every error derives from SharedWasmError and the builtin that fits it."""
    assert issubclass(error, sw.SharedWasmError)
    assert issubclass(error, builtin)


def test_internal_error_is_not_a_sharedwasm_error():
    """An internal error is a bug report, not something to catch with the others."""
    assert not issubclass(sw.SharedWasmInternalError, sw.SharedWasmError)


def test_kernel_trap_carries_its_context():
    """A KernelTrap names the worker and range and keeps the trap text."""
    text = "error while executing at wasm backtrace:\n  0: ...\n\nCaused by:\n  wasm trap: oops"
    trap = sw.KernelTrap(3, 10, 20, text)
    assert (trap.worker_index, trap.start, trap.end, trap.trap) == (3, 10, 20, text)
    assert str(trap) == "worker 3 trapped in compute_partition(10, 20): wasm trap: oops"
    assert trap.traps == (trap,)


def test_kernel_trap_lists_every_trap_of_a_run():
    """With several traps in one run, the first lists them all."""
    second = sw.KernelTrap(1, 5, 10, "b")
    first = sw.KernelTrap(0, 0, 5, "a", [second])
    assert first.traps == (first, second)
