"""The repairs to wasmtime-py's shared-memory binding, and the raw call path.

The first two tests pin the upstream bugs: when one of them fails, upstream
has changed, and `_wasmtime.SharedMemory` should be revisited. So does the
test of a memory fault in a store where two instances import the memory.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import threading

import pytest
import wasmtime

from conftest import TIMEOUT
from sharedwasm import _wasmtime
from sharedwasm.testing import join_or_dump

WAT = """
(module
  (import "env" "memory" (memory 1 8 shared))
  (func (export "add") (param i32 i32) (result i32) (i32.add (local.get 0) (local.get 1)))
  (func (export "boom") (param i32) (result i32) unreachable)
  (func (export "wait") (param i32 i32) (result i32)
    (memory.atomic.wait32 (local.get 0) (local.get 1) (i64.const -1)))
  (func (export "notify") (param i32) (result i32)
    (memory.atomic.notify (local.get 0) (i32.const 1))))
"""


LOAD = """
(module
  (import "env" "memory" (memory 1 8 shared))
  (func (export "load") (param i32) (result i32) (i32.load (local.get 0))))
"""


def _memory_type() -> wasmtime.MemoryType:
    return wasmtime.MemoryType(wasmtime.Limits(1, 8), shared=True)


def _instance(memory: wasmtime.SharedMemory) -> tuple[wasmtime.Store, wasmtime.Instance]:
    store = wasmtime.Store(_wasmtime.engine())
    module = wasmtime.Module(_wasmtime.engine(), WAT)
    return store, wasmtime.Instance(store, module, [memory])


def _raw(store: wasmtime.Store, instance: wasmtime.Instance, name: str) -> _wasmtime.RawFunc:
    func = instance.exports(store)[name]
    assert isinstance(func, wasmtime.Func)
    return _wasmtime.RawFunc(store, func, 2)


def test_upstream_size_still_passes_a_pointer_to_the_pointer():
    """Upstream SharedMemory.size() still fails; drop our repair when this test fails."""
    memory = wasmtime.SharedMemory(_wasmtime.engine(), _memory_type())
    with pytest.raises(ctypes.ArgumentError):
        memory.size()


def test_upstream_extern_still_wraps_the_pointer_twice():
    """Upstream cannot instantiate with a SharedMemory; drop our repair when this test fails."""
    memory = wasmtime.SharedMemory(_wasmtime.engine(), _memory_type())
    with pytest.raises(TypeError, match="LP_LP_wasmtime_sharedmemory"):
        _instance(memory)


def test_upstream_still_aborts_on_a_fault_in_a_store_with_two_importers():
    """An out-of-bounds access in a store where two instances import the shared memory still
    aborts the process: the reason each store instantiates one merged module (_merge)."""
    code = f"""
import wasmtime
from sharedwasm import _wasmtime
limits = wasmtime.Limits(1, 8)
memory = _wasmtime.SharedMemory(_wasmtime.engine(), wasmtime.MemoryType(limits, shared=True))
store = wasmtime.Store(_wasmtime.engine())
module = wasmtime.Module(_wasmtime.engine(), {LOAD!r})
first = wasmtime.Instance(store, module, [memory])
if {{second}}:
    wasmtime.Instance(store, module, [memory])
try:
    first.exports(store)["load"](store, 1 << 20)
except wasmtime.Trap as trap:
    print("trapped" if "out of bounds" in str(trap) else trap)
"""
    one, two = (
        subprocess.run(
            [sys.executable, "-c", code.format(second=second)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        for second in (False, True)
    )
    assert (one.returncode, one.stdout) == (0, "trapped\n"), one.stderr[-2000:]
    assert two.returncode < 0, two.stdout + two.stderr[-2000:]
    assert "fault.is_none()" in two.stderr


def test_repaired_memory_reports_size_and_instantiates():
    """The repaired SharedMemory reports its pages and can be imported by a module."""
    memory = _wasmtime.SharedMemory(_wasmtime.engine(), _memory_type())
    assert memory.size() == 1
    store, instance = _instance(memory)
    assert _raw(store, instance, "add") is not None


def test_base_address_is_stable_across_grow():
    """Growing a shared memory never moves its base address."""
    memory = _wasmtime.SharedMemory(_wasmtime.engine(), _memory_type())
    before = memory.base_address()
    assert memory.grow(3) == 1
    assert memory.size() == 4
    assert memory.base_address() == before


def test_raw_call_returns_results_and_survives_a_trap():
    """A raw call returns its result, raises Trap on a trap, and works again after it."""
    memory = _wasmtime.SharedMemory(_wasmtime.engine(), _memory_type())
    store, instance = _instance(memory)
    add, boom = _raw(store, instance, "add"), _raw(store, instance, "boom")
    add.args[0].i32, add.args[1].i32 = 40, 2
    add.call()
    assert add.args[0].i32 == 42
    with pytest.raises(wasmtime.Trap, match="unreachable"):
        boom.call()
    with pytest.raises(wasmtime.Trap, match="unreachable"):
        boom.call()
    add.args[0].i32, add.args[1].i32 = -1, 1
    add.call()
    assert add.args[0].i32 == 0


def test_raw_call_releases_the_gil():
    """A thread parked inside wasm lets the main thread run Python and wake it."""
    memory = _wasmtime.SharedMemory(_wasmtime.engine(), _memory_type())
    woken: list[int] = []

    def park() -> None:
        store, instance = _instance(memory)
        wait = _raw(store, instance, "wait")
        wait.args[0].i32, wait.args[1].i32 = 0, 0
        wait.call()
        woken.append(wait.args[0].i32)

    thread = threading.Thread(target=park, daemon=True)
    thread.start()
    store, instance = _instance(memory)
    notify = _raw(store, instance, "notify")
    for _ in range(int(TIMEOUT / 0.001)):
        notify.args[0].i32 = 0
        notify.call()
        if notify.args[0].i32 == 1:
            break
        threading.Event().wait(0.001)
    join_or_dump(thread, TIMEOUT)
    assert woken == [0]  # "ok"
