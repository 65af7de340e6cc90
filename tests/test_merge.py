"""The runner merged into each kernel's module: one instance per store imports the memory."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import wasmtime

import sharedwasm as sw
from conftest import KERNELS, TIMEOUT
from sharedwasm import _binary, _merge, _runner, atomics
from sharedwasm._builtin import KERNEL_DIR

MakePool = Callable[..., sw.WorkerPool]
LoadKernel = Callable[[str], sw.Kernel]

ROOT = Path(__file__).parent.parent
MEMORY = '(import "env" "memory" (memory 1 65536 shared))'
ENTRY = '(func (export "compute_partition") (param i32 i32))'
EVERY_KERNEL = sorted(
    [
        *(ROOT / "kernels").glob("*.wasm"),
        *KERNELS.glob("*.wat"),
        *KERNEL_DIR.glob("*.wat"),
        *(ROOT / "benchmarks" / "kernels").glob("*.wat"),
    ]
)
RUNNER_EXPORTS = {
    _runner.WORKER_LOOP,
    _runner.HOST_RUN,
    _runner.HOST_WAIT,
    _runner.CLOCK_TABLE,
    *_runner.OFFSET_GLOBALS.values(),
}


def module(*fields: str) -> str:
    """Return WAT for a module made of `fields`."""
    return "(module\n  " + "\n  ".join(fields) + ")"


def sections(wasm: bytes) -> list[tuple[int, bytes]]:
    """Return each section of a module as (id, payload)."""
    return _binary.section_payloads(wasm)


# -- every kernel merges --------------------------------------------------------


@pytest.mark.parametrize("path", EVERY_KERNEL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_kernel_merges_and_keeps_its_own_sections(path: Path) -> None:
    """Each kernel of the project merges; the merged module keeps the kernel's imports, data,
    start, elements and custom sections byte for byte, and its exports at the same indices."""
    kernel = sw.Kernel.from_file(path)
    merged = kernel._merged
    ours, theirs = sections(merged), sections(kernel._wasm)
    kept = (
        _merge.IMPORT,
        _merge.MEMORY,
        _merge.TAG,
        _merge.START,
        _merge.ELEMENT,
        _merge.DATA_COUNT,
        _merge.DATA,
        0,
    )
    assert [s for s in ours if s[0] in kept] == [s for s in theirs if s[0] in kept]
    shape, merged_shape = _merge.read_shape(kernel._wasm), _merge.read_shape(merged)
    assert merged_shape.encoded_types[: len(shape.encoded_types)] == shape.encoded_types
    assert merged_shape.functions[: len(shape.functions)] == shape.functions
    assert merged_shape.globals == shape.globals + len(_runner.OFFSET_GLOBALS)
    assert merged_shape.tables == shape.tables + 1
    for name, export in shape.exports.items():
        assert merged_shape.exports[name] == export
    assert set(merged_shape.exports) - set(shape.exports) <= RUNNER_EXPORTS | {"memory"}
    assert merged_shape.exports["memory"] == ("memory", 0)
    assert isinstance(kernel._module_for(False), wasmtime.Module)


# -- one importer per store -----------------------------------------------------


class Instantiations:
    """Every instantiation in the test, by store: whether it imported a shared memory."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_store: dict[int, tuple[wasmtime.Store, list[bool]]] = {}

    def record(self, store: wasmtime.Store, imports: object) -> None:
        """Note one instantiation in `store` with these imports."""
        imported = any(isinstance(i, wasmtime.SharedMemory) for i in imports)  # type: ignore[attr-defined]
        with self.lock:
            # The store itself is kept, so its id is not reused by another.
            self.by_store.setdefault(id(store), (store, []))[1].append(imported)

    def importers(self) -> list[int]:
        """Return, per store with an instance importing a shared memory, how many import it."""
        with self.lock:
            counts = [sum(kinds) for _, kinds in self.by_store.values()]
        return [n for n in counts if n]


@pytest.fixture
def instantiations(monkeypatch: pytest.MonkeyPatch) -> Instantiations:
    """Record every `wasmtime.Instance` the library makes; refuse instantiation through a Linker."""
    seen = Instantiations()
    original = wasmtime.Instance

    def instance(store: wasmtime.Store, module: wasmtime.Module, imports: object) -> object:
        seen.record(store, imports)
        return original(store, module, imports)  # type: ignore[arg-type]

    def through_linker(*args: object, **kwargs: object) -> object:
        raise AssertionError("a Linker instantiation: make the test see what it imports")

    monkeypatch.setattr(wasmtime, "Instance", instance)
    monkeypatch.setattr(wasmtime.Linker, "instantiate", through_linker)
    return seen


@pytest.mark.parametrize("interruptible", [False, True], ids=["plain", "interruptible"])
@pytest.mark.parametrize("name", ["trap_kinds", "map_f32.wasm"])
def test_every_store_has_exactly_one_instance_importing_the_memory(
    instantiations: Instantiations,
    make_pool: MakePool,
    kernel: LoadKernel,
    name: str,
    interruptible: bool,
) -> None:
    """Workers, the caller's runner, the standby and the atomics helpers each instantiate one
    module over the shared memory in their store: a second would make an out-of-bounds access
    abort the process."""
    workers = 3
    memory = sw.Memory(8, 64, interruptible=interruptible)
    compiled = sw.Kernel.from_file(ROOT / "kernels" / name) if name.endswith(".wasm") else None
    pool = make_pool(compiled or kernel(name), memory, workers)
    words = pool.data(np.int32)[:16]
    words[:] = 0
    words[2] = -1  # trap_kinds: no element traps
    # map_f32 is an entry over an array of the heap; trap_kinds works on pool.data().
    args = (pool.zeros(workers, np.float32),) if compiled is not None else ()
    pool.run("caller", *args, elements=workers)  # the caller's runner
    pool.run("standby", *args, elements=workers, timeout=TIMEOUT)  # worker 0's own store
    atomics.store(words, 0, -1)  # the caller's helper
    other = threading.Thread(target=atomics.load, args=(words, 0), name="test-atomics")
    other.start()
    other.join(TIMEOUT)
    assert not other.is_alive()
    importers = instantiations.importers()
    assert set(importers) == {1}
    # Each worker, the caller's runner, and at least the two helpers above.
    assert len(importers) >= workers + 1 + 2


def test_a_kernel_with_tables_tags_start_and_passive_data_merges_and_runs(
    make_pool: MakePool,
) -> None:
    """A kernel with a table and call_indirect, a start function, passive data copied into a
    second memory, a tag it throws and catches, v128 and funcref globals and two entries runs
    exactly as written once merged."""
    wat = module(
        "(type $unary (func (param i32) (result i32)))",
        MEMORY,
        '(import "env" "data_offset" (global $data i32))',
        "(memory $scratch 1)",
        "(table $ops 2 funcref)",
        "(elem (table $ops) (i32.const 0) func $double $square)",
        "(global $started (mut i32) (i32.const 0))",
        "(global $wide v128 (v128.const i32x4 1 2 3 4))",
        "(global $ref (mut funcref) (ref.null func))",
        '(global (export "__heap_base") i32 (i32.const 0))',
        "(tag $oops (param i32))",
        '(data $seven "\\07\\00\\00\\00")',
        "(func $double (type $unary) (i32.shl (local.get 0) (i32.const 1)))",
        "(func $square (type $unary) (i32.mul (local.get 0) (local.get 0)))",
        """(func $start
            (memory.init $scratch $seven (i32.const 0) (i32.const 0) (i32.const 4))
            (global.set $started (i32.const 100)))""",
        "(start $start)",
        """(func $caught (param i32) (result i32)
            (block $handler (result i32)
              (try_table (catch $oops $handler) (throw $oops (local.get 0)))
              (i32.const -1)))""",
        """(func (export "entry:apply") (param $s i32) (param $e i32) (param $op i32)
            (local $p i32)
            (block $done
              (loop $next
                (br_if $done (i32.ge_u (local.get $s) (local.get $e)))
                (local.set $p (i32.add (global.get $data) (i32.shl (local.get $s) (i32.const 2))))
                (i32.store (local.get $p)
                  (i32.add
                    (call_indirect $ops (type $unary) (i32.load (local.get $p)) (local.get $op))
                    (i32.add
                      (call $caught (i32.load $scratch (i32.const 0))) (global.get $started))))
                (local.set $s (i32.add (local.get $s) (i32.const 1)))
                (br $next))))""",
        ENTRY,
        '(@custom "extra" "kept")',
    )
    kernel = sw.Kernel.from_wat(wat)
    assert (0, b"\x05extrakept") in sections(kernel._merged)
    pool = make_pool(kernel, sw.Memory(1, 16), 2)
    values = pool.data(np.int32)[:10]
    for op, expected in ((0, 2 * np.arange(10)), (1, np.arange(10) ** 2)):
        values[:] = np.arange(10)
        pool.run("apply", op, entry="apply", elements=10)
        np.testing.assert_array_equal(values, expected + 107)


def test_a_kernel_that_exports_its_memory_as_memory_keeps_the_clock(make_pool: MakePool) -> None:
    """A kernel may export env.memory as "memory" itself: WASI's clock writes through it."""
    kernel = sw.Kernel.from_wat(module(MEMORY, '(export "memory" (memory 0))', ENTRY))
    result = make_pool(kernel, sw.Memory(1, 16), 2).run(elements=2)
    assert all(d.elapsed >= 0 for d in result.done)
    assert result.elapsed > 0


# -- what cannot be merged ------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            ['(func (export "memory"))'],
            r"^kernel's export 'memory' must be its memory env\.memory \(got a function\): ",
        ),
        (
            ['(memory (export "memory") 1)'],
            r"^kernel's export 'memory' must be its memory env\.memory \(got memory 1\): ",
        ),
        (
            ['(func (export "sharedwasm:worker_loop"))'],
            r"^kernel must not export 'sharedwasm:worker_loop': the worker loop merged",
        ),
        (
            ['(global (export "sharedwasm:clock") i32 (i32.const 0))'],
            r"^kernel must not export 'sharedwasm:clock': ",
        ),
        (
            ["(type (struct (field i32)))"],
            r"^kernel's type 0 must be a function type \(got a struct type, from WebAssembly GC\)",
        ),
        (
            ["(type (array i8))"],
            r"^kernel's type 0 must be a function type \(got an array type, ",
        ),
        (
            ["(rec (type (func)) (type (func (param i32))))"],
            r"^kernel's type 0 must be a function type \(got a recursive type group, ",
        ),
        (
            ["(type (sub (func)))"],
            r"^kernel's type 0 must be a function type \(got a subtype declaration, ",
        ),
    ],
    ids=[
        "memory-export-function",
        "memory-export-other-memory",
        "runner-export-name",
        "runner-table-name",
        "struct-type",
        "array-type",
        "rec-group",
        "subtype",
    ],
)
def test_a_kernel_the_runner_cannot_merge_with_is_a_kernel_error(
    fields: list[str], message: str
) -> None:
    """A kernel whose exports or types the runner cannot be merged with is refused, saying why."""
    with pytest.raises(sw.KernelError, match=message):
        sw.Kernel.from_wat(module(MEMORY, *fields, ENTRY))


def _reencode_type_section(wasm: bytes, old: bytes, new: bytes) -> bytes:
    out = bytearray(wasm[:8])
    for section, payload in sections(wasm):
        if section == _merge.TYPE:
            assert old in payload
            payload = payload.replace(old, new)
        out += bytes([section]) + _binary.encode_uleb(len(payload)) + payload
    return bytes(out)


def test_a_type_that_text_cannot_spell_byte_for_byte_is_a_kernel_error() -> None:
    """A reference type in its long encoding, (ref null func) as 0x63 0x70, comes out of the
    text as funcref (0x70): the types would not match byte for byte, so the kernel is refused."""
    wasm = bytes(wasmtime.wat2wasm(module("(type (func (param funcref)))", MEMORY, ENTRY)))
    long_form = _reencode_type_section(wasm, b"\x60\x01\x70\x00", b"\x60\x01\x63\x70\x00")
    with pytest.raises(
        sw.KernelError,
        match=r"^kernel's type 0, \(func \(param \(ref null func\)\)\), is encoded as "
        r"6001637000, which WebAssembly text encodes as 60017000: ",
    ):
        sw.Kernel.from_bytes(long_form)


def test_reference_and_vector_types_in_the_kernels_types_merge(make_pool: MakePool) -> None:
    """Function types over v128, funcref, externref and typed references are written back
    exactly, so kernels that use them merge and run."""
    kernel = sw.Kernel.from_wat(
        module(
            "(type $f (func (param i32) (result i32)))",
            "(type (func (param v128 funcref externref) (result v128)))",
            "(type (func (param (ref null $f) (ref $f) (ref any) (ref null extern))))",
            MEMORY,
            "(func (type 1) (local.get 0))",
            ENTRY,
        )
    )
    make_pool(kernel, sw.Memory(1, 16), 2).run(elements=2)
