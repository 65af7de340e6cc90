"""Kernels compiled from C on a pool: static data, one stack and TLS block per worker, traps.

Each kernel here is a few lines of C built once per session with
`sharedwasm.build`, an entry that writes its results into an array of the
pool's heap; what they compute is chosen so that a shared stack, a
re-initialised static, a status board on the static data or a leaked stack
pointer gives a wrong number, not just a different timing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sharedwasm as sw
from conftest import InThread
from sharedwasm._layout import CACHE_LINE

# Every element records where its worker's stack and TLS block are, and how
# many calls that worker has made (a _Thread_local counter that starts at 100).
WHERE = r"""
#include <sharedwasm.h>
static _Thread_local uint32_t calls = 100;
SW_KERNEL(where, start, end, uint32_t *out) {
    volatile uint32_t local = 0;
    calls += 1;
    for (uint32_t i = start; i < end; i++) {
        out[4 * i + 0] = (uint32_t)(uintptr_t)&local;
        out[4 * i + 1] = (uint32_t)(uintptr_t)&calls;
        out[4 * i + 2] = calls;
        out[4 * i + 3] = sw_worker_index();
    }
}
"""

# Recursion with a 1 KiB frame per level; each level fills its frame from the
# element, recurses, then reads the frame back: another worker's frames on the
# same addresses change the sum. A negative depth traps at the bottom; depth 0
# means 1 + i % 8 for element i.
DEEP = r"""
#include <sharedwasm.h>
__attribute__((noinline)) static uint32_t dive(uint32_t seed, int32_t depth) {
    volatile uint32_t frame[256];
    for (uint32_t k = 0; k < 256; k++) frame[k] = seed * 2654435761u + k;
    uint32_t below = 0;
    if (depth > 1) below = dive(seed + 1, depth - 1);
    else if (depth < -1) below = dive(seed + 1, depth + 1);
    else if (depth == -1) __builtin_trap();
    uint32_t sum = 0;
    for (uint32_t k = 0; k < 256; k++) sum += frame[k] ^ k;
    return sum + below;
}
SW_KERNEL(deep, start, end, uint32_t *out, int32_t depth) {
    for (uint32_t i = start; i < end; i++) out[i] = dive(i, depth ? depth : 1 + (int32_t)(i % 8));
}
"""

# Static data: an initialised table and a counter every call bumps atomically.
STATICS = r"""
#include <sharedwasm.h>
static volatile const uint32_t table[4096] = {[0] = 11, [4095] = 22};
static uint32_t counter = 1000;
SW_KERNEL(statics, start, end, uint32_t *out) {
    uint32_t seen = sw_atomic_add_u32(&counter, 1);
    for (uint32_t i = start; i < end; i++) out[i] = table[0] + table[4095] + seen;
}
"""


def _python_dive(seed: int, depth: int) -> int:
    total = 0
    while True:
        total += sum(((seed * 2654435761 + k) & 0xFFFFFFFF) ^ k for k in range(256))
        if depth <= 1:
            return total & 0xFFFFFFFF
        seed, depth = seed + 1, depth - 1


@pytest.fixture(scope="session")
def c_kernel(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], sw.Kernel]:
    """Build a C source once per session; return the loaded kernel."""
    cache: dict[str, sw.Kernel] = {}
    root = tmp_path_factory.mktemp("c-kernels")

    def load(name: str, source: str) -> sw.Kernel:
        if name not in cache:
            path = root / f"{name}.c"
            path.write_text(source)
            cache[name] = sw.Kernel.from_file(sw.build(path))
        return cache[name]

    return load


def run(pool: sw.WorkerPool, *args: Any, **kw: Any) -> sw.RunResult:
    """`pool.run` in a thread, bounded by the tests' timeout (which dumps the board)."""
    result: sw.RunResult = InThread(lambda: pool.run("c", *args, **kw)).join(pool)
    return result


def dives(pool: sw.WorkerPool, depth: int, elements: int, **kw: Any) -> list[int]:
    """Run the deep kernel over `elements` elements at `depth`; return its results."""
    out = pool.zeros(elements, np.uint32)
    run(pool, out, depth, **kw)
    return [int(v) for v in out]


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_every_worker_has_its_own_stack_and_tls_block(c_kernel, make_pool, workers):
    """Each worker's frames and _Thread_local block lie in its own thread area, run after run."""
    kernel = c_kernel("where", WHERE)
    assert kernel.uses_stack
    assert kernel.tls_size == 4
    pool = make_pool(kernel, workers=workers)
    lay = pool.layout
    out = pool.zeros((4 * workers, 4), np.uint32)  # a row per element
    for _ in range(3):
        run(pool, out)
    # A run with a timeout has worker 0's share done by the standby thread,
    # which stands in for the caller: same stack, same thread-local block.
    run(pool, out, timeout=10.0)
    for stack, tls, calls, index in out.tolist():
        assert lay.stack_bottom(index) <= stack < lay.stack_top(index)
        assert tls == lay.tls_address(index)
        assert calls == 104, f"worker {index} counted {calls} calls"
    assert len({row[0] for row in out.tolist()}) == workers
    assert lay.threads_offset >= lay.records_end
    assert lay.data_offset >= lay.threads_end


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_deep_recursion_on_every_worker_is_correct(c_kernel, make_pool, workers):
    """Workers recursing at once with 1 KiB frames all get the right sums."""
    pool = make_pool(c_kernel("deep", DEEP), sw.Memory(64, 256), workers=workers)
    expected = [_python_dive(i, 1 + i % 8) for i in range(64)]
    for _ in range(5):
        assert dives(pool, 0, 64, schedule="dynamic", chunk=1) == expected


def test_stack_overflow_traps_and_the_pool_recovers(c_kernel, make_pool):
    """Recursion past the stack traps with a message naming the stack size; the next run works."""
    pool = make_pool(c_kernel("deep", DEEP), sw.Memory(64, 256), workers=2)
    with pytest.raises(sw.KernelTrap, match="stack overflow") as info:
        dives(pool, 200, 8)  # 200 frames of 1 KiB in a 64 KiB stack
    assert "65536 bytes of stack" in str(info.value)
    assert dives(pool, 40, 8) == [_python_dive(i, 40) for i in range(8)]


def test_a_larger_stack_size_lets_deeper_recursion_through(c_kernel, make_pool):
    """stack_size makes room for recursion that the default stack cannot hold."""
    kernel = c_kernel("deep", DEEP)
    pool = make_pool(kernel, sw.Memory(64, 256), workers=2, stack_size=256 * 1024)
    assert pool.layout.thread_area == 256 * 1024
    assert dives(pool, 200, 4) == [_python_dive(i, 200) for i in range(4)]


def test_traps_do_not_leak_stack(c_kernel, make_pool):
    """A trap 40 frames deep leaves the stack pointer 40 KiB down unless it is reset."""
    pool = make_pool(c_kernel("deep", DEEP), sw.Memory(64, 256), workers=2)
    for _ in range(20):
        with pytest.raises(sw.KernelTrap):
            dives(pool, -40, 2)
    # 60 KiB of the 64: fits only from the top of the stack.
    assert dives(pool, 60, 2) == [_python_dive(i, 60) for i in range(2)]


def test_status_board_goes_after_static_data(c_kernel, make_pool):
    """The board starts past the kernel's statics, which keep their initial values."""
    kernel = c_kernel("statics", STATICS)
    assert kernel.static_end >= 1024 + 4096 * 4
    pool = make_pool(kernel, workers=3)
    assert pool.layout.status_offset == -(-kernel.static_end // CACHE_LINE) * CACHE_LINE
    assert pool.layout.regions()["kernel static data"] == (0, kernel.static_end)
    out = pool.zeros(3, np.uint32)
    run(pool, out)
    assert sorted(out.tolist()) == [1033, 1034, 1035]


def test_status_offset_inside_static_data_is_a_layout_error(c_kernel):
    """A status_offset inside the static data is refused."""
    kernel = c_kernel("statics", STATICS)
    with pytest.raises(sw.LayoutError, match=rf"status_offset must be >= {kernel.static_end}"):
        sw.WorkerPool(kernel, sw.Memory(16, 64), 2, status_offset=0)


def test_static_data_is_initialised_once_per_pool(c_kernel, make_pool):
    """Statics are initialised once per pool, whatever an earlier pool left in them."""
    kernel = c_kernel("statics", STATICS)
    memory = sw.Memory(16, 64)
    # Whatever an earlier user left there, including wasm-ld's init flag, must
    # not stop the statics being initialised (nor hang the instantiation).
    memory.view(np.uint8, offset=0, count=kernel.static_end)[:] = 1
    pool = make_pool(kernel, memory, workers=4)
    out = pool.zeros(4, np.uint32)
    run(pool, out)
    run(pool, out)
    # 4 instances (plus the caller's) started; none re-initialised the counter.
    assert sorted(out.tolist()) == [1037, 1038, 1039, 1040]
    pool.close()
    again = make_pool(kernel, memory, workers=2)
    out = again.zeros(2, np.uint32)
    run(again, out)
    assert sorted(out.tolist()) == [1033, 1034]


def test_c_kernel_on_an_interruptible_memory(c_kernel, make_pool):
    """A C kernel runs and traps normally on an interruptible memory."""
    pool = make_pool(c_kernel("deep", DEEP), sw.Memory(64, 256, interruptible=True), workers=2)
    assert dives(pool, 0, 16) == [_python_dive(i, 1 + i % 8) for i in range(16)]
    with pytest.raises(sw.KernelTrap):
        dives(pool, -5, 2)


@pytest.mark.parametrize(
    ("stack_size", "error", "match"),
    [
        (100, ValueError, "multiple of 16"),
        (8, ValueError, ">= 16"),
        (-16, ValueError, "stack_size"),
        (True, TypeError, "stack_size must be an int"),
        ("64k", TypeError, "integer"),
        (1 << 30, sw.LayoutError, "thread areas"),
    ],
)
def test_bad_stack_size(c_kernel, stack_size, error, match):
    """An unusable stack_size is refused with an error that says why."""
    with pytest.raises(error, match=match):
        sw.WorkerPool(c_kernel("deep", DEEP), sw.Memory(16, 64), 2, stack_size=stack_size)


def test_stack_size_for_a_kernel_without_a_stack(kernel):
    """A stack_size for a kernel without a stack is a ValueError."""
    with pytest.raises(ValueError, match="uses no stack"):
        sw.WorkerPool(kernel("map_f32"), sw.Memory(16, 64), 2, stack_size=65536)


def test_an_unexported_stack_pointer_is_refused():
    """A module with an unexported __stack_pointer is refused."""
    wat = """
    (module
      (import "env" "memory" (memory 1 16 shared))
      (global $__stack_pointer (mut i32) (i32.const 4096))
      (func (export "compute_partition") (param i32 i32)
        (global.set $__stack_pointer (i32.sub (global.get $__stack_pointer) (i32.const 16)))))
    """
    with pytest.raises(sw.KernelError, match="every worker would use the same stack"):
        sw.Kernel.from_wat(wat)


def test_an_immutable_stack_pointer_is_refused():
    """An immutable __stack_pointer export is refused."""
    wat = """
    (module
      (import "env" "memory" (memory 1 16 shared))
      (global (export "__stack_pointer") i32 (i32.const 4096))
      (func (export "compute_partition") (param i32 i32)))
    """
    with pytest.raises(sw.KernelError, match="mutable i32 global"):
        sw.Kernel.from_wat(wat)


def test_tls_without_init_function_is_refused():
    """__tls_size without __wasm_init_tls is refused."""
    wat = """
    (module
      (import "env" "memory" (memory 1 16 shared))
      (global (export "__stack_pointer") (mut i32) (i32.const 4096))
      (global (export "__tls_size") i32 (i32.const 8))
      (func (export "compute_partition") (param i32 i32)))
    """
    with pytest.raises(sw.KernelError, match="__wasm_init_tls"):
        sw.Kernel.from_wat(wat)


def test_active_data_segments_count_as_static_data(make_pool):
    """Active data segments count as static data, and the board goes after them."""
    wat = """
    (module
      (import "env" "memory" (memory 1 64 shared))
      (data (i32.const 2000) "\\01\\02\\03\\04")
      (func (export "compute_partition") (param i32 i32)))
    """
    kernel = sw.Kernel.from_wat(wat)
    assert kernel.static_end == 2004
    assert not kernel.uses_stack
    pool = make_pool(kernel, workers=2)
    assert pool.layout.status_offset == 2048
    assert pool.memory.view(np.uint8, offset=2000, count=4).tolist() == [1, 2, 3, 4]


def test_wat_kernels_keep_the_bare_layout(kernel, make_pool):
    """A WAT kernel without stack or statics gets the bare layout, board at 0."""
    pool = make_pool(kernel("map_f32"), workers=2)
    lay = pool.layout
    assert (lay.status_offset, lay.static_end, lay.thread_area) == (0, 0, 0)
    assert lay.threads_offset == lay.records_end
    assert "worker stacks" not in lay.regions()


def test_library_header_is_in_get_include():
    """get_include() holds the header and the ABI stub."""
    include = Path(sw.get_include())
    assert (include / "sharedwasm.h").is_file()
    assert (include / "sharedwasm_abi.s").is_file()


@pytest.mark.parametrize(
    ("export", "match"),
    [
        (
            '(func (export "__wasm_init_tls"))',
            r"__wasm_init_tls must be a function \(i32\) -> \(\) \(got function \(\) -> \(\)\)",
        ),
        (
            '(global (export "__set_stack_limits") i32 (i32.const 0))',
            r"__set_stack_limits must be a function \(i32, i32\) -> \(\) \(got global\)",
        ),
    ],
)
def test_thread_area_exports_must_have_their_signatures(export, match):
    """Thread-area exports with the wrong type are refused by name."""
    wat = f"""
    (module
      (import "env" "memory" (memory 1 16 shared))
      (func (export "compute_partition") (param i32 i32))
      {export})
    """
    with pytest.raises(sw.KernelError, match=match):
        sw.Kernel.from_wat(wat)


def test_passive_segments_without_a_static_end_are_refused():
    """wasm-ld's shape (passive segments, a start function) with no __heap_base export."""
    wat = """
    (module
      (import "env" "memory" (memory 1 16 shared))
      (data $d "\\2a\\00\\00\\00")
      (func $init (memory.init $d (i32.const 1024) (i32.const 0) (i32.const 4)))
      (start $init)
      (func (export "compute_partition") (param i32 i32)))
    """
    with pytest.raises(sw.KernelError, match="exports neither __heap_base nor __data_end"):
        sw.Kernel.from_wat(wat)


def test_passive_segments_a_kernel_copies_itself_are_its_business(make_pool):
    """Passive segments that the kernel copies itself need no static end."""
    wat = """
    (module
      (import "env" "memory" (memory 1 64 shared))
      (import "env" "data_offset" (global $data i32))
      (data $d "\\2a\\00\\00\\00")
      (func (export "compute_partition") (param i32 i32)
        (memory.init $d (global.get $data) (i32.const 0) (i32.const 4))))
    """
    pool = make_pool(sw.Kernel.from_wat(wat), workers=2)
    assert pool.layout.status_offset == 0
    run(pool, elements=2)
    assert pool.data(np.uint32)[0] == 42


def test_an_empty_c_kernel_builds_and_runs(c_kernel, make_pool):
    """The unnamed form, SW_KERNEL(start, end), still builds compute_partition and runs."""
    kernel = c_kernel("empty", "#include <sharedwasm.h>\nSW_KERNEL(start, end) {}\n")
    pool = make_pool(kernel, workers=2)
    assert [d.end for d in run(pool, elements=10).done] == [5, 10]


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("data_bytes", [0, 1, 65536, 3 * 65536 + 5])
def test_pages_needed_is_exactly_enough(c_kernel, kernel, workers, data_bytes):
    """pages_needed gives room for the data asked for, and less than a page more."""
    for k, stack_size in ((c_kernel("deep", DEEP), None), (c_kernel("deep", DEEP), 4096),
                          (kernel("map_f32"), None)):  # fmt: skip
        pages = sw.WorkerPool.pages_needed(k, data_bytes, workers, stack_size=stack_size)
        with sw.WorkerPool(k, sw.Memory(pages, pages), workers, stack_size=stack_size) as pool:
            room = pool.memory.byte_length - pool.data_offset
            assert max(data_bytes, 1) <= room < max(data_bytes, 1) + sw.PAGE_SIZE


@pytest.mark.parametrize(
    ("args", "error", "match"),
    [
        ((-1,), ValueError, "data_bytes must be >= 0"),
        ((True,), TypeError, "data_bytes must be an int"),
        ((1 << 32,), sw.LayoutError, "4 GiB"),
        ((0, 0), ValueError, "workers must be in"),
    ],
)
def test_pages_needed_rejects(c_kernel, args, error, match):
    """pages_needed refuses bad arguments as the constructor would."""
    with pytest.raises(error, match=match):
        sw.WorkerPool.pages_needed(c_kernel("deep", DEEP), *args)
