"""Kernel: compiling modules and checking them against the kernel ABI."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import wasmtime

import sharedwasm as sw
from conftest import KERNELS, TIMEOUT
from sharedwasm.testing import wait_until

MakePool = Callable[..., sw.WorkerPool]

MEMORY = '(import "env" "memory" (memory 1 65536 shared))'
ENTRY = '(func (export "compute_partition") (param i32 i32))'


def module(*fields: str) -> str:
    """Return WAT for a module made of `fields`."""
    return "(module\n  " + "\n  ".join(fields) + ")"


def worker_threads() -> set[threading.Thread]:
    """Return the live worker threads of every pool."""
    return {t for t in threading.enumerate() if t.name.startswith("sharedwasm-") and "-w" in t.name}


# -- valid kernels --------------------------------------------------------------


def test_minimal_kernel_is_accepted() -> None:
    """A module importing a shared env.memory and exporting compute_partition is a kernel."""
    k = sw.Kernel.from_wat(module(MEMORY, ENTRY), name="minimal")
    assert k.name == "minimal"
    assert (k.memory_minimum, k.memory_maximum) == (1, 65536)
    assert k.globals == ()
    assert "minimal" in repr(k)


def test_kernel_may_import_the_provided_globals() -> None:
    """The immutable i32 globals data_offset, worker_index and total_workers are allowed imports."""
    k = sw.Kernel.from_wat(
        module(
            '(import "env" "memory" (memory 2 8 shared))',
            '(import "env" "total_workers" (global i32))',
            '(import "env" "data_offset" (global i32))',
            '(import "env" "worker_index" (global i32))',
            ENTRY,
        )
    )
    assert k.globals == ("total_workers", "data_offset", "worker_index")
    assert (k.memory_minimum, k.memory_maximum) == (2, 8)


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_from_bytes_accepts_bytes_like_objects(wrap: Callable[[bytes], object]) -> None:
    """from_bytes takes bytes, bytearray and memoryview alike."""
    wasm = wasmtime.wat2wasm(module(MEMORY, ENTRY))
    k = sw.Kernel.from_bytes(wrap(wasm), name="wrapped")  # type: ignore[arg-type]
    assert k.name == "wrapped"


# -- not WebAssembly ---------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"hello world", b"\x00as", b"(module)"])
def test_bytes_without_the_wasm_magic_are_refused(data: bytes) -> None:
    """Bytes that do not start with the wasm magic number raise KernelError saying so."""
    with pytest.raises(sw.KernelError, match=r"blob is not WebAssembly: a module starts with"):
        sw.Kernel.from_bytes(data, name="blob")


@pytest.mark.parametrize(
    "data",
    [
        b"\x00asm",
        b"\x00asm\x01\x00\x00\x00garbage after the header",
        b"\x00asm\x02\x00\x00\x00",
        wasmtime.wat2wasm(module(MEMORY, ENTRY))[:-3],
    ],
    ids=["magic-only", "garbage", "bad-version", "truncated"],
)
def test_corrupt_wasm_is_refused(data: bytes) -> None:
    """Bytes with the magic number but an invalid body raise KernelError, a ValueError."""
    with pytest.raises(sw.KernelError, match=r"blob is not valid WebAssembly: ") as info:
        sw.Kernel.from_bytes(data, name="blob")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value.__cause__, wasmtime.WasmtimeError)


@pytest.mark.parametrize("text", ["(module (func", "(modul)", "not wat at all", ""])
def test_malformed_wat_is_refused(text: str) -> None:
    """Text that does not parse as WebAssembly text raises KernelError."""
    with pytest.raises(sw.KernelError, match=r"^text is not valid WebAssembly"):
        sw.Kernel.from_wat(text, name="text")


def test_shared_memory_without_maximum_is_refused() -> None:
    """A shared memory import with no maximum fails validation with KernelError."""
    with pytest.raises(sw.KernelError, match=r"shared memory must have maximum"):
        sw.Kernel.from_wat(module('(import "env" "memory" (memory 1 shared))', ENTRY))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: sw.Kernel.from_bytes("\0asm"), r"wasm must be bytes \(got str\)"),  # type: ignore[arg-type]
        (lambda: sw.Kernel.from_bytes(None), r"wasm must be bytes \(got NoneType\)"),  # type: ignore[arg-type]
        (lambda: sw.Kernel.from_bytes([0, 97]), r"wasm must be bytes \(got list\)"),  # type: ignore[arg-type]
        (
            lambda: sw.Kernel.from_wat(b"(module)"),  # type: ignore[arg-type]
            r"text must be a str of WebAssembly text \(got bytes\)",
        ),
        (
            lambda: sw.Kernel.from_wat(None),  # type: ignore[arg-type]
            r"text must be a str of WebAssembly text \(got NoneType\)",
        ),
    ],
    ids=["bytes-str", "bytes-none", "bytes-list", "wat-bytes", "wat-none"],
)
def test_wrong_argument_types_raise_type_error(call: Callable[[], object], match: str) -> None:
    """from_bytes wants bytes-like data and from_wat wants a str."""
    with pytest.raises(TypeError, match=match):
        call()


# -- from_file -------------------------------------------------------------------------


def test_from_file_reads_a_wasm_binary(tmp_path: Path, make_pool: MakePool) -> None:
    """A .wasm file is compiled as binary, named after the file, and runs."""
    path = tmp_path / "record.wasm"
    path.write_bytes(wasmtime.wat2wasm((KERNELS / "record.wat").read_text()))
    k = sw.Kernel.from_file(path)
    assert k.name == "record.wasm"
    assert set(k.globals) == {"data_offset", "worker_index", "total_workers"}
    pool = make_pool(k, sw.Memory(1, 4), 2)
    pool.run(elements=4, timeout=TIMEOUT)
    np.testing.assert_array_equal(pool.data(np.int32)[:4], [2001, 2001, 2002, 2002])


def test_from_file_reads_wat_text(tmp_path: Path) -> None:
    """A .wat file, given as a str path, is parsed as text."""
    path = tmp_path / "minimal.wat"
    path.write_text(module(MEMORY, ENTRY))
    k = sw.Kernel.from_file(str(path))
    assert k.name == "minimal.wat"


def test_from_file_decides_the_format_by_content(tmp_path: Path) -> None:
    """A binary module in a file named .wat is still read as binary."""
    path = tmp_path / "binary.wat"
    path.write_bytes(wasmtime.wat2wasm(module(MEMORY, ENTRY)))
    assert sw.Kernel.from_file(path).name == "binary.wat"


def test_from_file_missing_raises_os_error(tmp_path: Path) -> None:
    """A path that does not exist raises OSError."""
    with pytest.raises(OSError, match=r"No such file"):
        sw.Kernel.from_file(tmp_path / "absent.wasm")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\xff\xfe\x00\x01", r"bad.bin is neither a WebAssembly binary nor UTF-8"),
        (b"\x00asm\x01\x00\x00\x00\xff\xff", r"bad.bin is not valid WebAssembly: "),
        (b"(module (func", r"bad.bin is not valid WebAssembly text"),
    ],
    ids=["not-utf8", "corrupt-binary", "malformed-text"],
)
def test_from_file_bad_content_names_the_file(tmp_path: Path, content: bytes, match: str) -> None:
    """A file that is not a valid module raises KernelError naming the file."""
    path = tmp_path / "bad.bin"
    path.write_bytes(content)
    with pytest.raises(sw.KernelError, match=match):
        sw.Kernel.from_file(path)


# -- the ABI -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        pytest.param(
            [MEMORY],
            r"kernel must export an entry: compute_partition\(start: i32, end: i32\), or "
            r"functions named entry:NAME taking \(start: i32, end: i32, \.\.\.\) \(it has none\)",
            id="no-entry",
        ),
        pytest.param(
            [MEMORY, '(func (export "compute") (param i32 i32))'],
            r"must export an entry: compute_partition",
            id="misnamed-entry",
        ),
        pytest.param(
            [MEMORY, '(func (export "compute_partition") (param i32) (result i32) local.get 0)'],
            r"compute_partition must be a function \(i32, i32\) -> \(\) "
            r"\(got function \(i32\) -> \(i32\)\)",
            id="i32-to-i32",
        ),
        pytest.param(
            [
                MEMORY,
                '(func (export "compute_partition") (param i32 i32) (result i32) i32.const 0)',
            ],
            r"\(got function \(i32, i32\) -> \(i32\)\)",
            id="returns-a-value",
        ),
        pytest.param(
            [MEMORY, '(func (export "compute_partition") (param i64 i64))'],
            r"\(got function \(i64, i64\) -> \(\)\)",
            id="i64-params",
        ),
        pytest.param(
            [MEMORY, '(func (export "compute_partition"))'],
            r"\(got function \(\) -> \(\)\)",
            id="no-params",
        ),
        pytest.param(
            [MEMORY, '(global (export "compute_partition") i32 (i32.const 0))'],
            r"compute_partition must be a function \(i32, i32, \.\.\.\) -> \(\) "
            r"\(got a global\)",
            id="exported-global",
        ),
        pytest.param(
            ['(import "env" "memory" (memory 1 2))', ENTRY],
            r"env.memory must be declared shared so every worker can import it "
            r"\(got an unshared memory import\)",
            id="unshared-memory",
        ),
        pytest.param(
            [ENTRY],
            r"kernel must import a shared memory as env.memory \(it imports no memory\)",
            id="no-memory",
        ),
        pytest.param(
            ['(memory (export "memory") 1 2 shared)', ENTRY],
            r"kernel must import its memory as env.memory \(it defines its own memory\)",
            id="own-exported-memory",
        ),
        pytest.param(
            ['(import "env" "memory" (memory i64 1 2 shared))', ENTRY],
            r"env.memory must be a 32-bit memory \(got a memory64\)",
            id="memory64",
        ),
        pytest.param(
            [MEMORY, '(import "env" "memory" (memory 1 65536 shared))', ENTRY],
            r"^kernel must import env.memory once \(it imports it twice\)$",
            id="memory-imported-twice",
        ),
        pytest.param(
            ['(import "env" "memory" (global i32))', ENTRY],
            r"env.memory must be a memory import \(got immutable i32 global\)",
            id="memory-as-global",
        ),
        pytest.param(
            [MEMORY, '(import "env" "log" (func (param i32)))', ENTRY],
            r"unknown import env.log \(function \(i32\) -> \(\)\): a kernel may import only "
            r"env.memory, env.data_offset, env.worker_index and env.total_workers",
            id="function-import",
        ),
        pytest.param(
            [MEMORY, '(import "env" "offset" (global i32))', ENTRY],
            r"unknown import env.offset \(immutable i32 global\)",
            id="unknown-global",
        ),
        pytest.param(
            [MEMORY, '(import "js" "data_offset" (global i32))', ENTRY],
            r"unknown import js.data_offset \(immutable i32 global\)",
            id="other-module-global",
        ),
        pytest.param(
            ['(import "js" "memory" (memory 1 2 shared))', ENTRY],
            r"unknown import js.memory \(shared memory\)",
            id="other-module-memory",
        ),
        pytest.param(
            [MEMORY, '(import "env" "table" (table 1 funcref))', ENTRY],
            r"unknown import env.table \(table\)",
            id="table-import",
        ),
        pytest.param(
            [MEMORY, '(import "env" "data_offset" (global (mut i32)))', ENTRY],
            r"env.data_offset must be an immutable i32 global \(got mutable i32 global\)",
            id="mutable-data-offset",
        ),
        pytest.param(
            [MEMORY, '(import "env" "data_offset" (global i64))', ENTRY],
            r"env.data_offset must be an immutable i32 global \(got immutable i64 global\)",
            id="i64-data-offset",
        ),
        pytest.param(
            [MEMORY, '(import "env" "worker_index" (func (result i32)))', ENTRY],
            r"env.worker_index must be an immutable i32 global \(got function \(\) -> \(i32\)\)",
            id="function-worker-index",
        ),
        pytest.param(
            [MEMORY, '(import "env" "total_workers" (global (mut i64)))', ENTRY],
            r"env.total_workers must be an immutable i32 global \(got mutable i64 global\)",
            id="mutable-i64-total-workers",
        ),
    ],
)
def test_abi_violations_raise_kernel_error(fields: list[str], match: str) -> None:
    """A module that breaks the kernel ABI raises KernelError naming the problem."""
    with pytest.raises(sw.KernelError, match=match) as info:
        sw.Kernel.from_wat(module(*fields))
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, sw.SharedWasmError)


# -- the kernel meets the memory -------------------------------------------------------


def test_kernel_minimum_above_the_memory_size_is_refused(make_pool: MakePool) -> None:
    """A kernel that needs more pages than the memory has raises KernelError, until it grows."""
    k = sw.Kernel.from_wat(
        module('(import "env" "memory" (memory 8 16 shared))', ENTRY), name="big"
    )
    memory = sw.Memory(4, 16)
    with pytest.raises(
        sw.KernelError, match=r"big needs env.memory of at least 8 pages \(the memory has 4\)"
    ):
        make_pool(k, memory, 2)
    memory.grow(4)
    make_pool(k, memory, 2).run(timeout=TIMEOUT)


def test_kernel_maximum_below_the_memory_maximum_is_refused(make_pool: MakePool) -> None:
    """A kernel whose import maximum is below the memory's maximum raises KernelError."""
    k = sw.Kernel.from_wat(
        module('(import "env" "memory" (memory 1 8 shared))', ENTRY), name="small"
    )
    with pytest.raises(
        sw.KernelError,
        match=r"small declares env.memory with maximum 8 pages, so the memory's maximum "
        r"must be <= 8 \(got maximum=16\)",
    ):
        make_pool(k, sw.Memory(4, 16), 2)
    make_pool(k, sw.Memory(4, 8), 2).run(timeout=TIMEOUT)
    make_pool(k, sw.Memory(1, 2), 2).run(timeout=TIMEOUT)


def test_start_function_trap_raises_kernel_error_and_leaves_no_threads(
    make_pool: MakePool,
) -> None:
    """A kernel whose start function traps fails pool creation with KernelError and no threads."""
    k = sw.Kernel.from_wat(
        module(MEMORY, "(func $init unreachable)", "(start $init)", ENTRY), name="trapper"
    )
    before = worker_threads()
    memory = sw.Memory(1, 4)
    with pytest.raises(
        sw.KernelError, match=r"trapper failed to instantiate in worker \d+: .*unreachable"
    ) as info:
        make_pool(k, memory, 2)
    assert isinstance(info.value.__cause__, wasmtime.Trap | wasmtime.WasmtimeError)
    wait_until(lambda: worker_threads() <= before, TIMEOUT, what="failed workers exited")
    # The failed pool released the memory.
    make_pool(sw.Kernel.from_wat(module(MEMORY, ENTRY)), memory, 2).run(timeout=TIMEOUT)


PARTIAL_START_FAILURE = module(
    MEMORY,
    '(import "env" "data_offset" (global $data i32))',
    '(import "env" "worker_index" (global $index i32))',
    "(func $init",
    "  (if (i32.eqz (global.get $index)) (then unreachable))",
    "  ;; the other workers take 100 ms to start: a timed wait on a zero word",
    "  (drop (memory.atomic.wait32 (global.get $data) (i32.const 0) (i64.const 100000000))))",
    "(start $init)",
    ENTRY,
)


def test_start_failure_in_one_worker_leaves_no_threads() -> None:
    """When only worker 0's start traps, the workers that were still starting exit too."""
    k = sw.Kernel.from_wat(PARTIAL_START_FAILURE, name="partial")
    before = worker_threads()
    memory = sw.Memory(1, 4)
    with pytest.raises(sw.KernelError, match=r"partial failed to instantiate in worker 0"):
        sw.WorkerPool(k, memory, 2)
    # The constructor already joined its workers, so a short grace is enough.
    wait_until(lambda: worker_threads() <= before, 1.0, what="workers of the failed pool exited")


def test_kernel_is_compiled_once_and_reused_across_pools(make_pool: MakePool) -> None:
    """One Kernel object serves pools one after another, each with its own worker count."""
    k = sw.Kernel.from_file(KERNELS / "record.wat")
    memory = sw.Memory(1, 4)
    for workers in (1, 2, 3):
        pool = make_pool(k, memory, workers)
        data = pool.data(np.int32)
        data[:] = 0
        pool.run(elements=6, timeout=TIMEOUT)
        per_worker = 6 // workers
        np.testing.assert_array_equal(
            data[:6], np.repeat(np.arange(1, workers + 1) + workers * 1000, per_worker)
        )
        pool.close()
