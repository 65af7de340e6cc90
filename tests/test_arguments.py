"""Kernels with arguments: entries, typed parameters, arrays without copies, reductions."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import wasmtime

import sharedwasm as sw
from sharedwasm._binary import encode_custom_section

TIMEOUT = 10.0

SOURCE_A = r"""
#include <sharedwasm.h>
typedef float real;

SW_KERNEL(saxpy, start, end, real a, const float *x, float *y) {
    for (uint32_t i = start; i < end; i++) y[i] = a * x[i] + y[i];
}

/* One row per element: rows of a (height x width) image. */
SW_KERNEL(row_sums, start, end, const uint8_t *image, uint32_t width, uint32_t *sums) {
    for (uint32_t r = start; r < end; r++) {
        uint32_t s = 0;
        for (uint32_t c = 0; c < width; c++) s += image[r * width + c];
        sums[r] = s;
    }
}

SW_KERNEL(sum, start, end, const float *x, double *partial) {
    double s = 0;
    for (uint32_t i = start; i < end; i++) s += x[i];
    SW_PARTIAL(partial) += s;
}

SW_KERNEL(max, start, end, const float *x, float *partial) {
    float m = -__builtin_inff();
    for (uint32_t i = start; i < end; i++) m = __builtin_wasm_max_f32(m, x[i]);
    SW_PARTIAL(partial) = __builtin_wasm_max_f32(SW_PARTIAL(partial), m);
}
"""

SOURCE_B = r"""
#include <sharedwasm.h>

SW_KERNEL(threshold, start, end, const uint8_t *in, uint8_t *out, uint8_t t) {
    for (uint32_t i = start; i < end; i++) out[i] = in[i] >= t ? 255 : 0;
}

SW_KERNEL(offset64, start, end, int64_t *x, long long k, double scale, int8_t small) {
    for (uint32_t i = start; i < end; i++) x[i] = (int64_t)(x[i] * scale) + k + small;
}

SW_KERNEL(fail_at, start, end, const float *restrict x, float *const out, uint32_t at) {
    for (uint32_t i = start; i < end; i++) {
        if (i == at) __builtin_trap();
        out[i] = x[i];
    }
}

/* Not an entry: an ordinary exported helper. */
__attribute__((export_name("helper"))) void helper(uint32_t a, uint32_t b) {}
"""

CXX = r"""
#include <sharedwasm.h>
static volatile int seed = 3;
struct Counted {
    int constructed;
    float value;
    Counted() : constructed(0), value(seed * 1.5f) {
        __atomic_fetch_add(&constructed, 1, __ATOMIC_SEQ_CST);
    }
};
static Counted counted;
SW_KERNEL(look, start, end, float *out, int *constructed) {
    for (uint32_t i = start; i < end; i++) out[i] = counted.value;
    constructed[0] = counted.constructed;
}
"""

UNTYPED = """(module
  (import "env" "memory" (memory 1 65536 shared))
  (func (export "entry:scale") (param $s i32) (param $e i32) (param $x i32) (param $k f64)
    (local $p i32)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $s) (local.get $e)))
      (local.set $p (i32.add (local.get $x) (i32.shl (local.get $s) (i32.const 2))))
      (f32.store (local.get $p)
        (f32.mul (f32.load (local.get $p)) (f32.demote_f64 (local.get $k))))
      (local.set $s (i32.add (local.get $s) (i32.const 1)))
      (br $next))))
  (func (export "entry:wide") (param i32 i32 i64 f32))
  (func (export "helper") (param i32 i32)))"""


@pytest.fixture(scope="module")
def image_kernel(tmp_path_factory: pytest.TempPathFactory) -> sw.Kernel:
    """Two C sources linked into one module with five entries."""
    tmp = tmp_path_factory.mktemp("args")
    a, b = tmp / "a.c", tmp / "b.c"
    a.write_text(SOURCE_A)
    b.write_text(SOURCE_B)
    return sw.Kernel.from_file(sw.build([a, b], tmp / "image.wasm"))


@pytest.fixture
def pool(image_kernel: sw.Kernel) -> Iterator[sw.WorkerPool]:
    with sw.WorkerPool(image_kernel, workers=2) as p:
        yield p


def test_entries_carry_the_c_signatures(image_kernel: sw.Kernel) -> None:
    entries = image_kernel.entries
    assert list(entries) == [
        "saxpy",
        "row_sums",
        "sum",
        "max",
        "threshold",
        "offset64",
        "fail_at",
    ]
    assert str(entries["saxpy"]) == "saxpy(start, end, real a, const float *x, float *y)"
    x = entries["saxpy"].params[1]
    assert (x.pointer, x.const, x.dtype, x.wasm_type) == (True, True, np.dtype(np.float32), "i32")
    t = entries["threshold"].params[2]
    assert (t.pointer, t.dtype, t.wasm_type) == (False, np.dtype(np.uint8), "i32")
    k = entries["offset64"].params[1]
    assert (k.dtype, k.wasm_type) == (np.dtype(np.int64), "i64")
    assert all(e.typed for e in entries.values())
    assert "helper" not in entries


def test_saxpy_on_heap_arrays_copies_nothing(pool: sw.WorkerPool) -> None:
    n = 100_003
    x = pool.asarray(np.linspace(-1, 1, n, dtype=np.float32))
    y = pool.full(n, 0.5, np.float32)
    expected = np.float32(3.0) * x + np.float32(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sw.CopyWarning)
        result = pool.run("step", 3.0, x, y, entry="saxpy", timeout=TIMEOUT)
    assert sum(d.elements for d in result.done) == n  # elements: len(x)
    np.testing.assert_array_equal(y, expected)


def test_keyword_arguments_by_parameter_name(pool: sw.WorkerPool) -> None:
    x = pool.asarray(np.arange(10, dtype=np.float32))
    y = pool.zeros(10, np.float32)
    pool.run("kw", y=y, x=x, a=2.0, entry="saxpy", timeout=TIMEOUT)
    np.testing.assert_array_equal(y, 2 * np.arange(10, dtype=np.float32))
    pool.run("mixed", 1.0, x, y=y, entry="saxpy", timeout=TIMEOUT)
    np.testing.assert_array_equal(y, 3 * np.arange(10, dtype=np.float32))


def test_elements_default_to_the_first_arrays_first_axis(pool: sw.WorkerPool) -> None:
    rng = np.random.default_rng(3)
    image = pool.asarray(rng.integers(0, 256, size=(37, 53), dtype=np.uint8))
    sums = pool.zeros(37, np.uint32)
    result = pool.run("rows", image, 53, sums, entry="row_sums", timeout=TIMEOUT)
    assert [(d.start, d.end) for d in result.done] == [(0, 19), (19, 37)]
    np.testing.assert_array_equal(sums, image.astype(np.uint32).sum(axis=1))
    sums[:] = 0
    pool.run("rows", image, 53, sums, entry="row_sums", elements=10, timeout=TIMEOUT)
    assert sums[9] != 0
    assert not sums[10:].any()


def test_a_pipeline_of_two_entries_over_the_same_arrays(pool: sw.WorkerPool) -> None:
    rng = np.random.default_rng(5)
    img = pool.asarray(rng.integers(0, 256, size=4096, dtype=np.uint8))
    out = pool.empty_like(img)
    again = pool.empty_like(img)
    pool.run("t1", img, out, t=128, entry="threshold", timeout=TIMEOUT)
    pool.run("t2", out, again, t=1, entry="threshold", schedule="dynamic", timeout=TIMEOUT)
    np.testing.assert_array_equal(out, np.where(img >= 128, 255, 0))
    np.testing.assert_array_equal(again, out)


def test_pointer_qualifiers_and_traps_name_the_entry(pool: sw.WorkerPool) -> None:
    """`const float *restrict`, `float *const`: still arrays; a trap names the entry it was in."""
    x, out = pool.asarray(np.arange(10, dtype=np.float32)), pool.zeros(10, np.float32)
    assert [str(p) for p in pool.kernel.entries["fail_at"].params] == [
        "const float *restrict x",
        "float *const out",
        "uint32_t at",
    ]
    pool.run("copy", x, out, 99, entry="fail_at", timeout=TIMEOUT)
    np.testing.assert_array_equal(out, x)
    with pytest.raises(sw.KernelTrap, match=r"worker 1 trapped in fail_at\(5, 10\)") as info:
        pool.run("trap", x, out, 7, entry="fail_at", timeout=TIMEOUT)
    assert info.value.entry == "fail_at"
    with pytest.raises(TypeError, match=r"'out' \(float \*const out\) must be a float32 array"):
        pool.run("bad", x, x.astype(np.float64), 99, entry="fail_at")


def test_wide_scalar_types(pool: sw.WorkerPool) -> None:
    x = pool.asarray(np.array([1, -2, 3, 2**40], dtype=np.int64))
    pool.run("o", x, -(2**62), 2.0, -3, entry="offset64", timeout=TIMEOUT)
    np.testing.assert_array_equal(x, np.array([2, -4, 6, 2**41], dtype=np.int64) - 2**62 - 3)


def test_ordinary_arrays_are_copied_in_and_back_with_one_warning(pool: sw.WorkerPool) -> None:
    x = np.arange(1000, dtype=np.float32)
    y = np.ones(1000, dtype=np.float32)
    x_before = x.copy()
    with pytest.warns(
        sw.CopyWarning, match=r"copied a 4000-byte numpy array .* pool.asarray"
    ) as caught:
        pool.run("c1", 2.0, x, y, entry="saxpy", timeout=TIMEOUT)
    assert caught[0].filename == __file__  # it points at the call
    np.testing.assert_array_equal(y, 2 * x_before + 1)  # written back
    np.testing.assert_array_equal(x, x_before)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sw.CopyWarning)  # once per pool
        frozen = x.copy()
        frozen.flags.writeable = False  # a const parameter accepts a read-only array
        pool.run("c2", 1.0, frozen, y, entry="saxpy", timeout=TIMEOUT)
        strided = np.arange(2000, dtype=np.float32)[::2]  # copied, so any layout will do
        pool.run("c3", 1.0, strided, y, entry="saxpy", timeout=TIMEOUT)
    np.testing.assert_array_equal(y, 5 * x_before + 1)  # 2x + 1, + x, + 2x


def test_partials_sum_and_max_need_no_reset(pool: sw.WorkerPool) -> None:
    rng = np.random.default_rng(11)
    x = pool.asarray(rng.standard_normal(1_000_003).astype(np.float32))
    acc = pool.partials(np.float64)
    assert acc.shape == (pool.workers,)
    sums = []
    for _ in range(3):
        pool.run("sum", x, acc, entry="sum", timeout=TIMEOUT)
        sums.append(acc.sum())
    # Static: each worker adds its whole share once, so every run gives the same bits.
    assert sums[0] == sums[1] == sums[2]
    half = -(-len(x) // 2)
    expected = [
        float(np.add.reduce(x[:half].astype(np.float64), dtype=np.float64)),
        float(np.add.reduce(x[half:].astype(np.float64), dtype=np.float64)),
    ]
    np.testing.assert_allclose(acc, expected, rtol=1e-12)
    for _ in range(3):
        pool.run("sum", x, acc, entry="sum", schedule="dynamic", chunk=1000, timeout=TIMEOUT)
        assert acc.sum() == pytest.approx(sum(expected), rel=1e-12, abs=1e-9)
    peak = pool.partials(np.float32, fill=-np.inf)
    for schedule in ("static", "dynamic"):
        pool.run("max", x, peak, entry="max", schedule=schedule, timeout=TIMEOUT)
        assert peak.max() == x.max()


def test_constructors_run_once_per_pool(tmp_path: Path) -> None:
    src = tmp_path / "counted.cc"
    src.write_text(CXX)
    kernel = sw.Kernel.from_file(sw.build(src))
    assert kernel.constructors
    for _ in range(2):  # and again in a new pool on a new memory
        with sw.WorkerPool(kernel, workers=2) as pool:
            out, constructed = pool.zeros(10, np.float32), pool.zeros(1, np.int32)
            for _ in range(3):
                pool.run("look", out, constructed, timeout=TIMEOUT)
            np.testing.assert_array_equal(out, [4.5] * 10)
            assert constructed[0] == 1


def test_untyped_entries_are_called_by_their_wasm_types() -> None:
    kernel = sw.Kernel.from_wat(UNTYPED)
    assert list(kernel.entries) == ["scale", "wide"]
    assert str(kernel.entries["scale"]) == "scale(start, end, i32 arg0, f64 arg1)"
    assert not kernel.entries["scale"].typed
    with sw.WorkerPool(kernel, workers=2) as pool:
        x = pool.full(100, 2.0, np.float32)
        pool.run("s", x, 0.25, entry="scale", timeout=TIMEOUT)
        np.testing.assert_array_equal(x, [0.5] * 100)
        with pytest.raises(TypeError, match="by position only"):
            pool.run("s", x, k=0.25, entry="scale")
        pool.run("w", 2**64 - 1, 1.0, entry="wide", elements=4, timeout=TIMEOUT)
        with pytest.raises(OverflowError, match=r"'arg0' \(i64 arg0\) must be in"):
            pool.run("w", 2**64, 1.0, entry="wide", elements=4)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (
            (1.0, "text", "Y"),
            {},
            TypeError,
            r"saxpy: argument 'x' \(const float \*x\) must be a nump",
        ),
        (
            (1.0, "X64", "Y"),
            {},
            TypeError,
            r"argument 'x' .* must be a float32 array \(got a float64",
        ),
        ((1.0, "X", "Ystrided"), {}, ValueError, r"argument 'y' .* non-contiguous view"),
        ((1.0, "X", "Yother"), {}, ValueError, r"argument 'y' .* another sharedwasm memory"),
        ((1.0, "X", "Yboard"), {}, ValueError, r"argument 'y' .* not inside a live array"),
        ((1.0, "X", "Yfrozen"), {}, ValueError, r"argument 'y' \(float \*y\) must be writable"),
        (("1", "X", "Y"), {}, TypeError, r"argument 'a' \(real a\) must be a real number"),
        ((True, "X", "Y"), {}, TypeError, r"argument 'a' .* must be a real number"),
        ((1e39, "X", "Y"), {}, OverflowError, r"argument 'a' .* must fit a float32"),
        ((1.0, "X"), {}, TypeError, r"saxpy takes 3 argument\(s\) after run_id .* \(got 2\)"),
        ((1.0, "X", "Y", 4), {}, TypeError, r"saxpy takes 3 argument\(s\)"),
        ((1.0, "X"), {"z": 1}, TypeError, r"saxpy has no parameter 'z'"),
        ((1.0, "X", "Y"), {"a": 2.0}, TypeError, r"parameter 'a' both by position and by name"),
        ((), {"a": 2.0, "x": "X"}, TypeError, r"saxpy is missing argument\(s\) \['y'\]"),
    ],
)
def test_argument_errors_name_the_parameter(
    pool: sw.WorkerPool, args: tuple[object, ...], kwargs: dict[str, object], error, match
) -> None:
    other_kernel = sw.Kernel.from_wat(UNTYPED)
    with sw.WorkerPool(other_kernel, workers=1) as other:
        frozen = pool.zeros(8, np.float32)
        frozen.flags.writeable = False
        arrays = {
            "X": pool.zeros(8, np.float32),
            "Y": pool.zeros(8, np.float32),
            "X64": pool.zeros(8, np.float64),
            "Ystrided": pool.zeros(16, np.float32)[::2],
            "Yother": other.zeros(8, np.float32),
            "Yboard": pool.memory.view(np.float32, offset=pool.layout.status_offset, count=2),
            "Yfrozen": frozen,
        }

        def resolve(value: object) -> object:
            return arrays.get(value, value) if isinstance(value, str) else value

        call_args = [resolve(a) for a in args]
        call_kwargs = {k: resolve(v) for k, v in kwargs.items()}
        with pytest.raises(error, match=match):
            pool.run("bad", *call_args, entry="saxpy", **call_kwargs)  # type: ignore[arg-type]
    # Nothing was published: the pool runs the next call normally.
    x, y = pool.full(4, 1.0, np.float32), pool.zeros(4, np.float32)
    pool.run("good", 2.0, x, y, entry="saxpy", timeout=TIMEOUT)
    np.testing.assert_array_equal(y, [2.0] * 4)


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (256, OverflowError, r"'t' \(uint8_t t\) must be in \[0, 255\] \(got 256\)"),
        (-1, OverflowError, r"must be in \[0, 255\] \(got -1\)"),
        (1.5, TypeError, r"'t' \(uint8_t t\) must be an int \(got 1.5\)"),
        (True, TypeError, r"must be an int \(got True\)"),
        (np.uint8(7), None, None),
    ],
)
def test_scalar_ranges_follow_the_c_type(pool: sw.WorkerPool, value, error, match) -> None:
    img, out = pool.zeros(8, np.uint8), pool.zeros(8, np.uint8)
    if error is None:
        pool.run("t", img, out, t=value, entry="threshold", timeout=TIMEOUT)
        return
    with pytest.raises(error, match=match):
        pool.run("t", img, out, t=value, entry="threshold")


def test_run_id_and_entry_are_checked(pool: sw.WorkerPool) -> None:
    x = pool.zeros(4, np.float32)
    with pytest.raises(TypeError, match=r"run_id must be a str \(got a float32 array"):
        pool.run(x)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"entry must name one of .*'saxpy'.* \(got None"):
        pool.run("r", 1.0, x, x)
    with pytest.raises(ValueError, match=r"entry must be one of .* \(got 'nope'\)"):
        pool.run("r", entry="nope")
    with pytest.raises(TypeError, match=r"entry must be a str or None \(got 3\)"):
        pool.run("r", entry=3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("wat", "record", "match"),
    [
        (
            '(func (export "entry:f") (param i32 i32) (result i32) i32.const 0)',
            None,
            r"entry:f must be a function \(i32 start, i32 end, then i32, i64, f32 or f64",
        ),
        ('(func (export "entry:f") (param i32 f32))', None, r"entry:f must be a function"),
        ('(func (export "entry:") (param i32 i32))', None, r"must name its entry after 'entry:'"),
        ('(global (export "entry:g") i32 (i32.const 0))', None, r"got a global"),
        (
            '(func (export "entry:f") (param i32 i32' + " i32" * 33 + "))",
            None,
            r"at most 32 parameters after \(start, end\) \(got 33\)",
        ),
        (
            '(func (export "compute_partition") (param i32 i32 f32))',
            None,
            r"compute_partition must be a function \(i32, i32\) -> \(\).* exported as entry:NAME",
        ),
        (
            '(func (export "entry:f") (param i32 i32 f32))',
            b'{"version": 1, "entries": {"f": [{"name": "p", "type": "int *"}]}}',
            r"parameter 'p' is recorded as 'int \*', which is i32 in wasm, but the function "
            r"takes f32",
        ),
        (
            '(func (export "entry:f") (param i32 i32 f32))',
            b'{"version": 1, "entries": {"f": []}}',
            r"recorded signature must list its 1 parameter\(s\)",
        ),
        (
            '(func (export "entry:f") (param i32 i32 i32))',
            b'{"version": 1, "entries": {"f": [{"name": "s", "type": "struct S"}]}}',
            r"which a kernel entry cannot take",
        ),
        ('(func (export "entry:f") (param i32 i32))', b"{not json", r"is not valid"),
        ('(func (export "entry:f") (param i32 i32))', b'{"version": 9}', r"must be version 1"),
    ],
)
def test_malformed_entries_are_kernel_errors(wat: str, record: bytes | None, match: str) -> None:
    text = f'(module (import "env" "memory" (memory 1 65536 shared)) {wat})'
    wasm = wasmtime.wat2wasm(text)
    if record is not None:
        wasm += encode_custom_section("sharedwasm.entries", record)
    with pytest.raises(sw.KernelError, match=match):
        sw.Kernel.from_bytes(wasm)


def test_a_pool_without_a_memory_makes_one_that_grows(image_kernel: sw.Kernel) -> None:
    with sw.WorkerPool(image_kernel, workers=2) as pool:
        assert pool.memory.maximum == image_kernel.memory_maximum
        start = pool.memory.pages
        x = pool.zeros(8 * 2**20, np.float32)  # 32 MiB
        assert pool.memory.pages > start
        pool.run("s", 1.0, x, x, entry="saxpy", timeout=TIMEOUT)


def test_a_memory_too_small_for_the_pools_regions_says_so(image_kernel: sw.Kernel) -> None:
    with pytest.raises(
        sw.LayoutError, match=r"memory must have at least 3 pages for the pool's own"
    ):
        sw.WorkerPool(image_kernel, sw.Memory(1, 16), workers=2)


GATE = """(module
  (import "env" "memory" (memory 1 65536 shared))
  ;; Spins until gate[0] is non-zero, then writes 7 over out[start, end).
  (func (export "entry:gated") (param $s i32) (param $e i32) (param $gate i32) (param $out i32)
    (block $open (loop $wait
      (br_if $open (i32.atomic.load (local.get $gate)))
      (br $wait)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $s) (local.get $e)))
      (i32.store (i32.add (local.get $out) (i32.shl (local.get $s) (i32.const 2))) (i32.const 7))
      (local.set $s (i32.add (local.get $s) (i32.const 1)))
      (br $next)))))"""


def test_a_run_left_in_flight_keeps_its_copies_allocated() -> None:
    """After a RunTimeout the run goes on: its temporary blocks are not reused until it ends."""
    from sharedwasm import atomics

    with sw.WorkerPool(sw.Kernel.from_wat(GATE), workers=2) as pool:
        gate = pool.zeros(1, np.int32)
        out = np.zeros(4096, np.int32)  # ordinary: copied into a temporary block
        with pytest.warns(sw.CopyWarning), pytest.raises(sw.RunTimeout, match="keeps running"):
            pool.run("held", gate, out, elements=len(out), timeout=0.2)
        live_during, _ = pool._heap.snapshot()
        assert len(live_during) == 2  # the gate and the run's copy of `out`
        fresh = pool.zeros(4096, np.int32)  # allocated beside the copy, not over it
        fresh_at = fresh.__array_interface__["data"][0] - pool.memory._base
        assert all(not (lo <= fresh_at < hi) for lo, hi in live_during)
        atomics.store(gate, 0, 1)
        pool.run("next", gate, fresh, elements=len(fresh), timeout=TIMEOUT)  # after the first
        live_after, _ = pool._heap.snapshot()
        assert len(live_after) == 2  # the gate and `fresh`: the copy was let go
        assert (fresh == 7).all()
        assert not out.any()  # a run that timed out is not copied back


async def _run_async_with_arguments(pool: sw.WorkerPool) -> None:
    x = pool.asarray(np.arange(8, dtype=np.float32))
    y = pool.zeros(8, np.float32)
    await pool.run_async("a", 2.0, x, y=y, entry="saxpy", timeout=TIMEOUT)
    np.testing.assert_array_equal(y, 2 * np.arange(8, dtype=np.float32))


def test_run_async_takes_the_same_arguments(pool: sw.WorkerPool) -> None:
    import asyncio

    asyncio.run(_run_async_with_arguments(pool))
