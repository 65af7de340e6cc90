"""Traps: every kind of wasm trap, in any worker, reported as KernelTrap; the pool recovers."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wasmtime

import sharedwasm as sw
from conftest import KERNELS, TIMEOUT, pool_threads, statuses
from sharedwasm import atomics
from sharedwasm.testing import join_or_dump, wait_until

MakePool = Callable[..., sw.WorkerPool]
LoadKernel = Callable[[str], sw.Kernel]
Int32s = np.ndarray[Any, np.dtype[np.int32]]

ELEMENTS = 1000
"""Elements of every trap_kinds run: at least 250 per worker, so no range is empty."""

# The trap_kinds header: int32 words before element 0 (tests/kernels/trap_kinds.wat).
MASK, KIND_BITS, AT = 0, 1, 2
HEADER = 16
NO_ELEMENT = -1


@dataclasses.dataclass(frozen=True)
class Kind:
    """A way to trap: its code in trap_kinds' header and the text wasmtime reports."""

    name: str
    code: int
    text: str


UNREACHABLE = Kind("unreachable", 0, "wasm trap: wasm `unreachable` instruction executed")
OUT_OF_BOUNDS = Kind("out-of-bounds", 1, "wasm trap: out of bounds memory access")
DIVIDE_BY_ZERO = Kind("divide-by-zero", 2, "wasm trap: integer divide by zero")
OVERFLOW = Kind("overflow", 3, "wasm trap: integer overflow")
STACK_OVERFLOW = Kind("stack-overflow", 4, "wasm trap: call stack exhausted")
KINDS = [UNREACHABLE, OUT_OF_BOUNDS, DIVIDE_BY_ZERO, OVERFLOW, STACK_OVERFLOW]
BY_NAME = {kind.name: kind for kind in KINDS}


def positions(workers: int) -> list[tuple[str, int]]:
    """Return the trapping positions a pool of `workers` has: first, middle, last."""
    found = [("first", 0)]
    if workers >= 3:
        found.append(("middle", (workers - 1) // 2))
    if workers >= 2:
        found.append(("last", workers - 1))
    return found


def matrix() -> list[Any]:
    """Return every (kind, workers, trapping worker, timed) case of the trap matrix."""
    cases = []
    for kind in KINDS:
        for workers in range(1, 5):
            for where, index in positions(workers):
                for timed in (False, True):
                    cases.append(
                        pytest.param(
                            kind.name,
                            workers,
                            index,
                            timed,
                            id=f"{kind.name}-N{workers}-{where}-{'timed' if timed else 'untimed'}",
                        )
                    )
    return cases


def reference_partition(total: int, workers: int, index: int) -> tuple[int, int]:
    """Return the static range of one worker, with start clamped to total."""
    chunk = -(-total // workers)
    start = min(index * chunk, total)
    return start, min((index + 1) * chunk, total)


def arm(
    pool: sw.WorkerPool,
    *,
    trappers: dict[int, Kind] | None = None,
    at: int = NO_ELEMENT,
    kind: Kind = UNREACHABLE,
) -> Int32s:
    """Zero the data region and set the header; return the element view.

    Each worker in `trappers` traps the given way at the middle of its range;
    any worker that reaches element `at` traps the way `kind` says.
    """
    words = pool.data(np.int32)
    words[:] = 0
    trappers = trappers or {}
    mask = kinds = 0
    for index in range(pool.workers):
        code = trappers[index].code if index in trappers else kind.code
        kinds |= code << (4 * index)
        if index in trappers:
            mask |= 1 << index
    words[MASK], words[KIND_BITS], words[AT] = mask, kinds, at
    return words[HEADER:]


def written(start: int, end: int) -> Int32s:
    """Return what trap_kinds writes over [start, end): 2 * i + 1."""
    return np.arange(start, end, dtype=np.int32) * 2 + 1


def check_threads(pool: sw.WorkerPool, before: list[threading.Thread]) -> None:
    """Assert that the pool still has the same N live worker threads, named after it."""
    threads = pool_threads(pool)
    assert set(threads) == set(before)
    assert sorted(t.name for t in threads) == sorted(
        f"{pool.name}-w{i}" for i in range(pool.workers)
    )
    assert all(t.is_alive() for t in threads)


def check_trap(trap: sw.KernelTrap, index: int, start: int, end: int, kind: Kind) -> None:
    """Assert one KernelTrap's fields and message."""
    assert (trap.worker_index, trap.start, trap.end) == (index, start, end)
    assert str(trap) == f"worker {index} trapped in compute_partition({start}, {end}): {kind.text}"
    assert kind.text in trap.trap
    assert isinstance(trap, RuntimeError)


def check_clean_runs(pool: sw.WorkerPool) -> None:
    """Assert that an untimed and a timed run right after a trap complete every element."""
    for timeout in (None, TIMEOUT):
        out = arm(pool)
        result = pool.run("clean", elements=ELEMENTS, timeout=timeout)
        assert [(d.worker_index, d.start, d.end) for d in result.done] == [
            (i, *reference_partition(ELEMENTS, pool.workers, i)) for i in range(pool.workers)
        ]
        np.testing.assert_array_equal(out[:ELEMENTS], written(0, ELEMENTS))
        assert not out[ELEMENTS:].any()
        assert statuses(pool) == [sw.Status.DONE] * pool.workers


def check_trap_case(pool: sw.WorkerPool, kind_name: str, index: int, timed: bool) -> None:
    """Make worker `index` trap the way `kind_name` says and check everything the run leaves.

    Module-level so that a child process can run it for the kinds that abort.
    """
    kind = BY_NAME[kind_name]
    workers = pool.workers
    timeout = TIMEOUT if timed else None
    before = pool_threads(pool)
    assert len(before) == workers
    out = arm(pool, trappers={index: kind})
    start, end = reference_partition(ELEMENTS, workers, index)
    with pytest.raises(
        sw.KernelTrap,
        match=rf"^worker {index} trapped in compute_partition\({start}, {end}\): "
        + re.escape(kind.text)
        + "$",
    ) as info:
        pool.run("trap", elements=ELEMENTS, timeout=timeout)
    trap = info.value
    check_trap(trap, index, start, end, kind)
    assert trap.traps == (trap,)
    assert isinstance(trap.__cause__, wasmtime.Trap)

    expected_status = [sw.Status.DONE] * workers
    expected_status[index] = sw.Status.TRAPPED
    assert statuses(pool) == expected_status
    assert list(pool.status) == expected_status
    # Every other worker did its whole range; the trapping one stopped at its middle.
    middle = (start + end) // 2
    expected = written(0, ELEMENTS)
    expected[middle:end] = 0
    np.testing.assert_array_equal(out[:ELEMENTS], expected)
    assert not out[ELEMENTS:].any()
    check_threads(pool, before)

    check_clean_runs(pool)
    check_threads(pool, before)


def run_in_child(script: str) -> subprocess.CompletedProcess[str]:
    """Run a Python script in a child process that can import the tests; wait at most 20 s."""
    prelude = f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


# -- the matrix --------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "workers", "index", "timed"), matrix())
def test_trap_matrix(
    make_pool: MakePool, kernel: LoadKernel, kind: str, workers: int, index: int, timed: bool
) -> None:
    """Each trap kind in any one worker is a KernelTrap for its range; the others finish."""
    if kind == OUT_OF_BOUNDS.name:
        # Checked in a child process: an out-of-bounds access faults, and in a
        # store where two instances import the memory wasmtime's handler finds
        # it twice and aborts the process; a regression must fail this test,
        # not end the test run.
        child = run_in_child(
            f"""
            import sharedwasm as sw
            from test_traps import check_trap_case
            kernel = sw.Kernel.from_file({str(KERNELS / "trap_kinds.wat")!r})
            with sw.WorkerPool(kernel, sw.Memory(1, 4), {workers}) as pool:
                check_trap_case(pool, {kind!r}, {index}, {timed})
            print("checked")
            """
        )
        assert (child.returncode, child.stdout) == (0, "checked\n"), child.stderr[-2000:]
        return
    pool = make_pool(kernel("trap_kinds"), sw.Memory(1, 4), workers)
    check_trap_case(pool, kind, index, timed)


# -- several traps in one run ------------------------------------------------------


@pytest.mark.parametrize("timed", [False, True], ids=["untimed", "timed"])
@pytest.mark.parametrize(
    "trappers",
    [
        {0: UNREACHABLE, 1: DIVIDE_BY_ZERO, 2: OVERFLOW, 3: STACK_OVERFLOW},
        {1: STACK_OVERFLOW, 3: UNREACHABLE},
        {0: OVERFLOW, 3: DIVIDE_BY_ZERO},
    ],
    ids=["all", "middle-and-last", "first-and-last"],
)
def test_several_traps_in_one_run_are_all_reported(
    make_pool: MakePool, kernel: LoadKernel, trappers: dict[int, Kind], timed: bool
) -> None:
    """When several workers trap, .traps lists each one, in worker order, with its own cause."""
    workers = 4
    pool = make_pool(kernel("trap_kinds"), sw.Memory(1, 4), workers)
    before = pool_threads(pool)
    out = arm(pool, trappers=trappers)
    first = min(trappers)
    with pytest.raises(
        sw.KernelTrap, match=rf"^worker {first} trapped .*" + re.escape(trappers[first].text)
    ) as info:
        pool.run("traps", elements=ELEMENTS, timeout=TIMEOUT if timed else None)
    trap = info.value
    assert [t.worker_index for t in trap.traps] == sorted(trappers)
    assert trap.traps[0] is trap
    for t in trap.traps:
        check_trap(
            t,
            t.worker_index,
            *reference_partition(ELEMENTS, workers, t.worker_index),
            trappers[t.worker_index],
        )
        assert t.traps == (t,) or t is trap
    assert isinstance(trap.__cause__, wasmtime.Trap)
    assert trappers[trap.worker_index].text in str(trap.__cause__)

    assert statuses(pool) == [
        sw.Status.TRAPPED if i in trappers else sw.Status.DONE for i in range(workers)
    ]
    expected = written(0, ELEMENTS)
    for i in trappers:
        start, end = reference_partition(ELEMENTS, workers, i)
        expected[(start + end) // 2 : end] = 0
    np.testing.assert_array_equal(out[:ELEMENTS], expected)
    check_threads(pool, before)
    check_clean_runs(pool)


def test_traps_in_many_consecutive_runs_leave_the_pool_whole(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """Trapping runs, timed and untimed, each worker in turn, alternate with clean ones."""
    workers = 3
    pool = make_pool(kernel("trap_kinds"), sw.Memory(1, 4), workers)
    before = pool_threads(pool)
    kinds = [UNREACHABLE, DIVIDE_BY_ZERO, OVERFLOW, STACK_OVERFLOW]
    for r in range(24):
        index, kind, timeout = r % workers, kinds[r % len(kinds)], TIMEOUT if r % 2 else None
        arm(pool, trappers={index: kind})
        with pytest.raises(sw.KernelTrap, match=rf"^worker {index} trapped") as info:
            pool.run(f"trap-{r}", elements=ELEMENTS, timeout=timeout)
        check_trap(info.value, index, *reference_partition(ELEMENTS, workers, index), kind)
        assert info.value.traps == (info.value,)
        out = arm(pool)
        pool.run(f"clean-{r}", elements=ELEMENTS, timeout=timeout)
        np.testing.assert_array_equal(out[:ELEMENTS], written(0, ELEMENTS))
    assert pool.statistics().runs == 24
    check_threads(pool, before)


# -- traps and the rest of the run -------------------------------------------------


@pytest.mark.parametrize("timed", [False, True], ids=["untimed", "timed"])
@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("kind", [UNREACHABLE, STACK_OVERFLOW], ids=lambda k: k.name)
def test_trap_in_a_dynamic_run_spares_every_other_chunk(
    make_pool: MakePool, kernel: LoadKernel, kind: Kind, workers: int, timed: bool
) -> None:
    """A trap in one chunk of a dynamic run names that chunk; every other chunk completes."""
    pool = make_pool(kernel("trap_kinds"), sw.Memory(1, 4), workers)
    before = pool_threads(pool)
    chunk, at = 7, 500
    first = at // chunk * chunk
    out = arm(pool, at=at, kind=kind)
    timeout = TIMEOUT if timed else None
    with pytest.raises(
        sw.KernelTrap,
        match=rf"trapped in compute_partition\({first}, {first + chunk}\): " + re.escape(kind.text),
    ) as info:
        pool.run("dynamic", elements=ELEMENTS, schedule="dynamic", chunk=chunk, timeout=timeout)
    trap = info.value
    assert (trap.start, trap.end) == (first, first + chunk)
    assert 0 <= trap.worker_index < workers
    assert trap.traps == (trap,)
    assert isinstance(trap.__cause__, wasmtime.Trap)
    expected = written(0, ELEMENTS)
    expected[at : first + chunk] = 0
    np.testing.assert_array_equal(out[:ELEMENTS], expected)
    assert statuses(pool) == [
        sw.Status.TRAPPED if i == trap.worker_index else sw.Status.DONE for i in range(workers)
    ]
    check_threads(pool, before)

    out = arm(pool)
    result = pool.run("again", elements=ELEMENTS, schedule="dynamic", chunk=chunk, timeout=timeout)
    np.testing.assert_array_equal(out[:ELEMENTS], written(0, ELEMENTS))
    assert sum(d.elements for d in result.done) == ELEMENTS
    assert statuses(pool) == [sw.Status.DONE] * workers


# The trap_gate kernel's words (tests/kernels/trap_gate.wat).
TRAPPER, GATE, ENTERED, GAVE_UP, FINISHED = range(5)


@pytest.mark.parametrize("timed", [False, True], ids=["untimed", "timed"])
@pytest.mark.parametrize("index", [0, 1, 2], ids=["first", "middle", "last"])
def test_trap_is_raised_only_after_the_other_shares_finish(
    make_pool: MakePool, kernel: LoadKernel, index: int, timed: bool
) -> None:
    """A run with a trapped share still waits for the others before it raises KernelTrap."""
    workers = 3
    pool = make_pool(kernel("trap_gate"), sw.Memory(1, 4), workers)
    words = pool.data(np.int32)[:5]
    words[:] = 0
    words[TRAPPER] = index
    outcome: dict[str, BaseException] = {}

    def call() -> None:
        try:
            pool.run("gated", elements=30, timeout=TIMEOUT if timed else None)
        except BaseException as exc:
            outcome["error"] = exc

    caller = threading.Thread(target=call, name="test-caller", daemon=True)
    caller.start()
    try:
        wait_until(
            lambda: (
                atomics.load(words, ENTERED) == workers - 1
                and atomics.load(pool.status, index) == sw.Status.TRAPPED
            ),
            TIMEOUT,
            what="the trap and every other worker at the gate",
            pool=pool,
        )
        time.sleep(0.05)
        assert caller.is_alive()
        assert "error" not in outcome
        assert [atomics.load(pool.status, i) for i in range(workers) if i != index] == [
            sw.Status.RUNNING
        ] * (workers - 1)
    finally:
        atomics.store(words, GATE, 1)
        atomics.notify(words, GATE)
        join_or_dump(caller, TIMEOUT, pool)
    error = outcome.get("error")
    assert isinstance(error, sw.KernelTrap)
    assert (error.worker_index, error.start, error.end) == (index, index * 10, index * 10 + 10)
    assert error.traps == (error,)
    assert atomics.load(words, FINISHED) == workers - 1
    assert atomics.load(words, GAVE_UP) == 0
    assert statuses(pool) == [
        sw.Status.TRAPPED if i == index else sw.Status.DONE for i in range(workers)
    ]


@pytest.mark.parametrize("timed", [False, True], ids=["untimed", "timed"])
def test_run_after_a_timed_out_run_with_a_trap_succeeds(
    make_pool: MakePool, kernel: LoadKernel, timed: bool
) -> None:
    """A run that timed out while one share had trapped does not break the next run."""
    workers = 3
    pool = make_pool(kernel("trap_gate"), sw.Memory(1, 4), workers)
    words = pool.data(np.int32)[:5]
    words[:] = 0
    words[TRAPPER] = 1
    try:
        with pytest.raises(sw.RunTimeout, match=r"run 'stuck' did not finish within 0\.2 s"):
            pool.run("stuck", elements=30, timeout=0.2)
        assert statuses(pool)[1] == sw.Status.TRAPPED
    finally:
        atomics.store(words, TRAPPER, -1)
        atomics.store(words, GATE, 1)
        atomics.notify(words, GATE)
    result = pool.run("next", elements=30, timeout=TIMEOUT if timed else None)
    assert [(d.start, d.end) for d in result.done] == [(0, 10), (10, 20), (20, 30)]
    assert statuses(pool) == [sw.Status.DONE] * workers
    # The stuck run's two blocked workers, then all three of the next run.
    assert atomics.load(words, FINISHED) == (workers - 1) + workers
    assert atomics.load(words, GAVE_UP) == 0


def test_run_async_raises_kernel_trap(make_pool: MakePool, kernel: LoadKernel) -> None:
    """Awaiting run_async of a trapping run raises the same KernelTrap."""
    pool = make_pool(kernel("trap_kinds"), sw.Memory(1, 4), 2)
    arm(pool, trappers={1: DIVIDE_BY_ZERO})

    async def main() -> None:
        with pytest.raises(sw.KernelTrap, match=r"worker 1 .*integer divide by zero"):
            await pool.run_async(elements=ELEMENTS, timeout=TIMEOUT)
        out = arm(pool)
        await pool.run_async(elements=ELEMENTS, timeout=TIMEOUT)
        np.testing.assert_array_equal(out[:ELEMENTS], written(0, ELEMENTS))

    asyncio.run(main())


def test_closing_a_pool_after_a_trap_ends_every_thread(
    make_pool: MakePool, kernel: LoadKernel
) -> None:
    """The threads of a pool whose last run trapped exit on close."""
    pool = make_pool(kernel("trap_kinds"), sw.Memory(1, 4), 3)
    threads = pool_threads(pool)
    arm(pool, trappers={0: STACK_OVERFLOW, 2: UNREACHABLE})
    with pytest.raises(sw.KernelTrap, match=r"^worker 0 trapped .*call stack exhausted"):
        pool.run(elements=ELEMENTS, timeout=TIMEOUT)
    pool.close()
    for thread in threads:
        join_or_dump(thread, TIMEOUT, pool)
    assert not pool_threads(pool)
    with pytest.raises(sw.PoolClosedError, match=rf"^{pool.name} is closed$"):
        pool.run(elements=ELEMENTS, timeout=TIMEOUT)


# -- out-of-bounds accesses: faults that wasmtime turns into traps ---------------------

# The edge kernel's i32 words at data_offset: the trapping worker, how it
# accesses memory, and where; a gate (open: 1) the other workers wait at,
# counting themselves in and out.
EDGE_WAT = """
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (import "env" "worker_index" (global $index i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (local $op i32) (local $at i32)
    (if (i32.ne (i32.atomic.load (global.get $data)) (global.get $index))
      (then
        (drop (i32.atomic.rmw.add offset=16 (global.get $data) (i32.const 1)))
        (block $open
          (loop $closed
            (br_if $open (i32.atomic.load offset=12 (global.get $data)))
            (drop (memory.atomic.wait32 offset=12 (global.get $data) (i32.const 0)
              (i64.const 10000000000)))
            (br $closed)))
        (drop (i32.atomic.rmw.add offset=20 (global.get $data) (i32.const 1)))
        (return)))
    (local.set $op (i32.load offset=4 (global.get $data)))
    (local.set $at (i32.load offset=8 (global.get $data)))
    (if (i32.eq (local.get $op) (i32.const 0)) (then (drop (i32.load8_u (local.get $at)))))
    (if (i32.eq (local.get $op) (i32.const 1)) (then (drop (i32.load (local.get $at)))))
    (if (i32.eq (local.get $op) (i32.const 2)) (then (i64.store (local.get $at) (i64.const -1))))
    (if (i32.eq (local.get $op) (i32.const 3)) (then (drop (v128.load (local.get $at)))))
    (if (i32.eq (local.get $op) (i32.const 4))
      (then (drop (i32.load offset=0xffffffff (local.get $at)))))
    (if (i32.eq (local.get $op) (i32.const 5)) (then (drop (i64.atomic.load (local.get $at)))))
    (if (i32.eq (local.get $op) (i32.const 6))
      (then (memory.fill (local.get $at) (i32.const 0) (i32.const 16))))
    (if (i32.eq (local.get $op) (i32.const 7))
      (then (drop (i32.atomic.rmw.add (local.get $at) (i32.const 1))))))
)
"""
EDGE_OPS = ("load8", "load32", "store64", "load128", "load32-offset", "atomic64", "fill16", "rmw32")
FULL = 0x1_0000_0000
# (op, address, traps) on a memory grown to its maximum of 65536 pages: the
# last bytes below 4 GiB are in bounds, an access that crosses 4 GiB is not.
AT_4_GIB = [
    ("load8", FULL - 1, False),
    ("load32", FULL - 4, False),
    ("load32", FULL - 3, True),
    ("store64", FULL - 7, True),
    ("load128", FULL - 16, False),
    ("load128", FULL - 15, True),
    ("load32-offset", 0, True),
    ("load32-offset", FULL - 1, True),
    ("atomic64", FULL - 8, False),
    ("fill16", FULL - 16, False),
    ("fill16", FULL - 8, True),
    ("rmw32", FULL - 4, False),
]


def edge_script(body: str) -> str:
    """Return a child script that runs `body` with EDGE_WAT compiled as `kernel`."""
    return f"""
        import threading, time
        import numpy as np
        import sharedwasm as sw
        from sharedwasm import atomics
        kernel = sw.Kernel.from_wat({EDGE_WAT!r})
        OPS = {EDGE_OPS!r}
        OOB = "wasm trap: out of bounds memory access"

        def access(pool, trapper, op, at, traps, timeout):
            words = pool.data(np.uint32)
            words[:6] = [trapper, OPS.index(op), at, 1, 0, 0]
            try:
                pool.run(elements=pool.workers, timeout=timeout)
            except sw.KernelTrap as trap:
                assert traps, (op, hex(at), trap)
                start, end = trapper, trapper + 1
                assert str(trap) == (
                    f"worker {{trapper}} trapped in compute_partition({{start}}, {{end}}): {{OOB}}"
                ), trap
                assert [t.worker_index for t in trap.traps] == [trapper]
            else:
                assert not traps, (op, hex(at))
            words[0] = 0xFFFFFFFF  # nobody traps
            assert len(pool.run(elements=pool.workers).done) == pool.workers
        {textwrap.indent(textwrap.dedent(body), "        ").lstrip()}
        print("checked")
        """


@pytest.mark.parametrize("interruptible", [False, True], ids=["plain", "interruptible"])
def test_out_of_bounds_at_the_4_gib_edge_is_a_kernel_trap(interruptible: bool) -> None:
    """On a memory whose maximum is 65536 pages, an access past its current size, or at
    its 4 GiB edge once it has grown there, traps in any worker as a KernelTrap naming
    the worker and its range, and the pool runs on; the bytes just below 4 GiB stay in
    bounds."""
    child = run_in_child(
        edge_script(
            f"""
            memory = sw.Memory(1, 65536, interruptible={interruptible})
            with sw.WorkerPool(kernel, memory, 3) as pool:
                for trapper in range(3):
                    for timeout in (None, 10):
                        for op in OPS:
                            for at in (65536, 0xFFFFFFF0, 0xFFFFFFF8):
                                access(pool, trapper, op, at, True, timeout)
                pool.grow(65536 - memory.pages)
                assert memory.byte_length == 1 << 32
                for trapper in range(3):
                    for op, at, traps in {AT_4_GIB!r}:
                        access(pool, trapper, op, at, traps, None)
            """
        )
    )
    assert (child.returncode, child.stdout) == (0, "checked\n"), child.stderr[-3000:]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["first", "middle", "last"])
def test_out_of_bounds_while_other_workers_run_waits_for_them(index: int) -> None:
    """A worker that faults while the others are still inside the kernel traps alone: the
    run raises its KernelTrap only after they finish, and the pool runs on."""
    child = run_in_child(
        edge_script(
            f"""
            with sw.WorkerPool(kernel, sw.Memory(1, 65536), 3) as pool:
                words = pool.data(np.uint32)
                words[:6] = [{index}, OPS.index("load32"), 0xFFFFFFFC, 0, 0, 0]
                outcome = []

                def call():
                    try:
                        pool.run(elements=3, timeout=10)
                    except BaseException as exc:
                        outcome.append(exc)

                caller = threading.Thread(target=call)
                caller.start()
                deadline = time.monotonic() + 10
                while not (
                    atomics.load(words, 4) == 2
                    and atomics.load(pool.status, {index}) == sw.Status.TRAPPED
                ):
                    assert time.monotonic() < deadline, "no trap, or the others never came"
                    time.sleep(0.001)
                time.sleep(0.05)
                assert caller.is_alive() and not outcome
                atomics.store(words, 3, 1)
                atomics.notify(pool.data(np.int32), 3)
                caller.join(10)
                assert not caller.is_alive()
                (trap,) = outcome
                assert isinstance(trap, sw.KernelTrap), trap
                assert (trap.worker_index, trap.start, trap.end) == ({index}, {index}, {index + 1})
                assert atomics.load(words, 5) == 2
                words[0] = 0xFFFFFFFF
                assert len(pool.run(elements=3).done) == 3
            """
        )
    )
    assert (child.returncode, child.stdout) == (0, "checked\n"), child.stderr[-3000:]
