"""What a pool promises when its kernel, its caller or its process misbehaves.

A typed error every time: never a hang past a bound, a crash of the
interpreter, or a memory that a finished pool can still write to.
"""

from __future__ import annotations

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

import sharedwasm as sw
from conftest import TIMEOUT, InThread, pool_threads, statuses
from sharedwasm import atomics
from sharedwasm._layout import Control
from sharedwasm.testing import wait_until

MakePool = Callable[..., sw.WorkerPool]
LoadKernel = Callable[[str], sw.Kernel]

ROOT = Path(__file__).resolve().parent.parent
DONE = int(sw.Status.DONE)

# tests/kernels/hang.wat's header.
MASK, HOW, WORD = 0, 1, 2
SPIN_UNTIL_RELEASED = 2
# tests/kernels/rogue.wat's header.
R_MASK, R_ADDRESS, R_VALUE, R_WHEN, R_RELEASE, R_WROTE = 0, 1, 2, 3, 4, 5
# tests/kernels/start_hang.wat's words, as i32 indices of the memory.
S_WHERE, S_HOW, S_RELEASE = 60000 // 4, 60004 // 4, 60008 // 4
START, STACK_LIMITS = 1, 2
SPIN, PARK, FOREVER = 0, 1, 2

RECURSE = """
(module
  (import "env" "memory" (memory 1 65536 shared))
  (func $deeper (param i32) (result i32)
    (i32.add (call $deeper (i32.add (local.get 0) (i32.const 1))) (i32.const 1)))
  (func (export "compute_partition") (param i32 i32)
    (drop (call $deeper (i32.const 0)))))
"""


def data_words(pool: sw.WorkerPool) -> np.ndarray[Any, np.dtype[np.int32]]:
    return pool.memory.view(np.int32, offset=pool.data_offset)


def memory_words(memory: sw.Memory) -> np.ndarray[Any, np.dtype[np.int32]]:
    return memory.view(np.int32)


def run_python(code: str, *, limit_stack: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter (with a smaller stack rlimit if asked), bounded."""

    def shrink_stack() -> None:
        import resource

        assert limit_stack is not None
        resource.setrlimit(resource.RLIMIT_STACK, (limit_stack, limit_stack))

    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        preexec_fn=shrink_stack if limit_stack else None,
    )


# -- a closed pool cannot reach the next one ---------------------------------


def test_memory_refuses_a_new_pool_while_a_closed_ones_worker_is_in_the_kernel(
    kernel: LoadKernel,
) -> None:
    """A memory whose closed pool still has a worker in a kernel call takes no new pool until
    the call returns; then the new pool runs correctly."""
    memory = sw.Memory(16, 64)
    old = sw.WorkerPool(kernel("hang"), memory, 2)
    words = data_words(old)
    for index, value in ((HOW, SPIN_UNTIL_RELEASED), (WORD, 0), (MASK, 0b10)):
        atomics.store(words, index, value)
    with pytest.raises(sw.RunTimeout, match="interruptible=True"):
        old.run(elements=4000, timeout=0.1)
    old.close()
    assert len(pool_threads(old)) == 1
    with pytest.raises(sw.LayoutError, match=rf"still used by closed pool {old.name}.*-w1"):
        sw.WorkerPool(kernel("hang"), memory, 2)
    atomics.store(words, WORD, 1)
    wait_until(lambda: not pool_threads(old), TIMEOUT, what="the released worker exited")
    with sw.WorkerPool(kernel("hang"), memory, 2) as new:
        words = data_words(new)
        atomics.store(words, MASK, 0)
        atomics.store(words, 4, 7)  # the tag: element i becomes i + 7000
        new.run(elements=4000)
        np.testing.assert_array_equal(words[16 : 16 + 4000], np.arange(4000) + 7000)
        # Nothing changes with no run in flight, and the next run is as correct.
        time.sleep(0.05)
        np.testing.assert_array_equal(words[16 : 16 + 4000], np.arange(4000) + 7000)
        assert new.run(elements=4000).done[1].elements == 2000
        assert statuses(new) == [DONE, DONE]


def test_memory_takes_a_new_pool_right_after_close(kernel: LoadKernel) -> None:
    """Once close() returns with every worker gone, the memory takes a new pool at once."""
    memory = sw.Memory(16, 64)
    for _ in range(20):
        with sw.WorkerPool(kernel("empty"), memory, 2) as pool:
            pool.run()


# -- native stacks -------------------------------------------------------------


@pytest.mark.parametrize(
    "setup",
    [
        "threading.stack_size(256 * 1024); run_in_thread = True",
        "threading.stack_size(64 * 1024); run_in_thread = True",
        "run_in_thread = False",
    ],
    ids=["threads-of-256KiB", "threads-of-64KiB", "main-thread"],
)
@pytest.mark.parametrize("rlimit", [None, 512 * 1024], ids=["ulimit-default", "ulimit-512KiB"])
def test_runaway_recursion_traps_whatever_the_native_stack(setup: str, rlimit: int | None) -> None:
    """Unbounded recursion is a KernelTrap on small thread stacks and under a small
    `ulimit -s`, on every thread that runs the kernel, never a crash of the interpreter."""
    code = f"""
        import threading, sharedwasm as sw
        {setup}
        kernel = sw.Kernel.from_wat({RECURSE!r})
        outcomes = []
        def go():
            for memory in (sw.Memory(16, 64), sw.Memory(16, 64, interruptible=True)):
                with sw.WorkerPool(kernel, memory, 2) as pool:
                    for timeout in (None, 30):
                        try:
                            pool.run(timeout=timeout)
                        except sw.KernelTrap as trap:
                            outcomes.append(len(trap.traps))
        if run_in_thread:
            t = threading.Thread(target=go)
            t.start()
            t.join()
        else:
            go()
        print(outcomes)
    """
    proc = run_python(code, limit_stack=rlimit)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[2, 2, 2, 2]", proc.stdout + proc.stderr[-2000:]


# -- start-up code that never returns -------------------------------------------


def arm_start(memory: sw.Memory, where: int, how: int) -> None:
    words = memory_words(memory)
    atomics.store(words, S_RELEASE, 0)
    atomics.store(words, S_HOW, how)
    atomics.store(words, S_WHERE, where)


@pytest.mark.parametrize("where", [START, STACK_LIMITS], ids=["start", "set_stack_limits"])
@pytest.mark.parametrize("how", [SPIN, PARK], ids=["spin", "park"])
def test_start_up_code_that_never_returns_is_a_start_timeout(
    kernel: LoadKernel, where: int, how: int
) -> None:
    """A start function or __set_stack_limits that spins or parks makes the constructor
    raise StartTimeout after start_timeout; the memory takes a new pool once it returns."""
    memory = sw.Memory(16, 64)
    arm_start(memory, where, how)
    t0 = time.monotonic()
    with pytest.raises(sw.StartTimeout, match=r"start_timeout must be long enough") as info:
        sw.WorkerPool(kernel("start_hang"), memory, 2, start_timeout=0.3)
    # Bound: 0.3 s, then close()'s second of waiting for the stuck threads, with room.
    assert time.monotonic() - t0 < 0.3 + 1.0 + 2.0
    assert isinstance(info.value, TimeoutError)
    assert info.value.workers
    with pytest.raises(sw.LayoutError, match="still used by closed pool"):
        sw.WorkerPool(kernel("start_hang"), memory, 2)
    words = memory_words(memory)
    atomics.store(words, S_RELEASE, 1)
    atomics.notify(words, S_RELEASE)
    atomics.store(words, S_WHERE, 0)
    wait_until(
        lambda: (
            not [t for t in threading.enumerate() if t.name.startswith("sharedwasm-")]
            or _pool_free(memory, kernel("start_hang"))
        ),
        TIMEOUT,
        what="the stuck start returned and its thread exited",
    )


def _pool_free(memory: sw.Memory, kernel: sw.Kernel) -> bool:
    try:
        with sw.WorkerPool(kernel, memory, 2) as pool:
            pool.run()
    except sw.LayoutError:
        return False
    return True


def test_start_up_code_that_spins_forever_is_stopped_on_an_interruptible_memory(
    kernel: LoadKernel,
) -> None:
    """On an interruptible memory a start function that loops forever is interrupted: the
    constructor raises StartTimeout and leaves no thread behind."""
    memory = sw.Memory(16, 64, interruptible=True)
    arm_start(memory, START, FOREVER)
    before = set(threading.enumerate())
    with pytest.raises(sw.StartTimeout, match="start function"):
        sw.WorkerPool(kernel("start_hang"), memory, 2, start_timeout=0.3)
    wait_until(
        lambda: not [t for t in set(threading.enumerate()) - before if t.is_alive()],
        TIMEOUT,
        what="the interrupted start's threads exited",
    )
    atomics.store(memory_words(memory), S_WHERE, 0)
    assert _pool_free(memory, kernel("start_hang"))


def test_start_timeout_must_be_finite(kernel: LoadKernel) -> None:
    """start_timeout is a finite, non-negative number of seconds."""
    memory = sw.Memory(16, 64)
    with pytest.raises(ValueError, match="start_timeout must be a finite"):
        sw.WorkerPool(kernel("empty"), memory, 1, start_timeout=float("inf"))
    with pytest.raises(ValueError, match="start_timeout must be >= 0"):
        sw.WorkerPool(kernel("empty"), memory, 1, start_timeout=-1)
    with pytest.raises(TypeError, match="start_timeout must be a number"):
        sw.WorkerPool(kernel("empty"), memory, 1, start_timeout="1")  # type: ignore[arg-type]


# -- data segments the pool cannot place ---------------------------------------------


@pytest.mark.parametrize(
    "offset",
    ["(global.get $d)", "(i32.add (global.get $d) (i32.const 16))"],
    ids=["global.get", "extended-const"],
)
def test_data_segment_at_a_computed_offset_is_refused(offset: str) -> None:
    """An active data segment whose offset is computed cannot be placed: KernelError."""
    wat = f"""
    (module
      (import "env" "memory" (memory 1 64 shared))
      (import "env" "data_offset" (global $d i32))
      (data {offset} "written over the control block")
      (func (export "compute_partition") (param i32 i32)))
    """
    with pytest.raises(sw.KernelError, match=r"data segment 0 has a computed offset"):
        sw.Kernel.from_wat(wat)


def test_data_segment_at_a_constant_offset_still_counts_as_static_data() -> None:
    """A constant-offset segment is placed as before: the board goes after it."""
    kernel = sw.Kernel.from_wat("""
    (module
      (import "env" "memory" (memory 1 64 shared))
      (data (i32.const 1000) "abcd")
      (func (export "compute_partition") (param i32 i32)))
    """)
    assert kernel.static_end == 1004


# -- a kernel that writes over the pool's own words ---------------------------------


def arm_rogue(pool: sw.WorkerPool, mask: int, address: int, value: int, *, later: bool) -> None:
    words = data_words(pool)
    for index, v in (
        (R_ADDRESS, address),
        (R_VALUE, value),
        (R_WHEN, int(later)),
        (R_RELEASE, 0),
        (R_WROTE, 0),
        (R_MASK, mask),
    ):
        atomics.store(words, index, v)


@pytest.mark.parametrize(
    ("word", "value", "what"),
    [
        (Control.PENDING, 7, "PENDING is"),
        (Control.PENDING, -3, "PENDING is"),
        (Control.PENDING, 2, "PENDING has stayed"),
        (Control.GENERATION, 0, r"GENERATION reads|PENDING is"),
    ],
    ids=["pending-huge", "pending-negative", "pending-left-over", "generation-backwards"],
)
@pytest.mark.parametrize("timeout", [None, 5.0], ids=["no-timeout", "timeout"])
def test_kernel_writing_over_the_control_block_breaks_the_pool(
    kernel: LoadKernel,
    make_pool: MakePool,
    word: Control,
    value: int,
    what: str,
    timeout: float | None,
) -> None:
    """A kernel that overwrites PENDING or GENERATION makes the run raise BrokenPoolError
    in bounded time (never a hang, never an internal error); the pool stays broken."""
    pool = make_pool(kernel("rogue"), sw.Memory(16, 64), 2)
    # Worker 1 writes once worker 0 is done, so only the overwrite explains the board.
    arm_rogue(pool, 0b10, pool.layout.control_address(word), value, later=True)
    call = InThread(lambda: pool.run(timeout=timeout))
    wait_until(lambda: statuses(pool)[0] == DONE, TIMEOUT, what="worker 0 done", pool=pool)
    t0 = time.monotonic()
    atomics.store(data_words(pool), R_RELEASE, 1)
    with pytest.raises(sw.BrokenPoolError, match=what):
        call.join(pool)
    # Bound: the 2 s a board may look finished with PENDING left over, with room.
    assert time.monotonic() - t0 < 2.0 + 3.0
    with pytest.raises(sw.BrokenPoolError, match="broken"):
        pool.run()


def test_kernel_resetting_another_workers_done_slot_breaks_the_pool(
    kernel: LoadKernel, make_pool: MakePool
) -> None:
    """A kernel that resets a finished worker's status slot gets BrokenPoolError, not an
    internal error."""
    pool = make_pool(kernel("rogue"), sw.Memory(16, 64), 2)
    arm_rogue(pool, 0b10, pool.layout.status_address(0), 0, later=True)
    call = InThread(lambda: pool.run(timeout=TIMEOUT))
    wait_until(lambda: statuses(pool)[0] == DONE, TIMEOUT, what="worker 0 done", pool=pool)
    atomics.store(data_words(pool), R_RELEASE, 1)
    with pytest.raises(sw.BrokenPoolError, match=r"not all DONE|RUNNING") as info:
        call.join(pool)
    assert isinstance(info.value, sw.SharedWasmError)


def test_close_reaches_a_worker_whose_kernel_rewrote_the_generation(kernel: LoadKernel) -> None:
    """A worker whose kernel wrote its old generation back over EXIT's still exits once
    its call returns."""
    pool = sw.WorkerPool(kernel("rogue"), sw.Memory(16, 64), 2)
    generation_address = pool.layout.control_address(Control.GENERATION)
    # Worker 1 holds its call until released, then writes the generation it started with.
    arm_rogue(pool, 0b10, generation_address, 1, later=True)
    with pytest.raises(sw.RunTimeout):
        pool.run(timeout=0.1)
    pool.close()
    assert len(pool_threads(pool)) == 1
    atomics.store(data_words(pool), R_RELEASE, 1)
    wait_until(
        lambda: not pool_threads(pool), TIMEOUT, what="the released worker exited", pool=pool
    )
    assert atomics.load(data_words(pool), R_WROTE) == 1


# -- growing while a kernel grows --------------------------------------------------------


def test_grow_racing_a_kernels_own_grow_raises_value_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When another grower takes the last pages between the check and the grow, the
    error is the documented ValueError, not MemoryError."""
    memory = sw.Memory(16, 17)
    shared = memory._shared
    real_grow = shared.grow

    def grow_after_someone_else(delta: int) -> int:
        real_grow(1)  # what a kernel's memory.grow does from another thread
        return int(real_grow(delta))

    monkeypatch.setattr(shared, "grow", grow_after_someone_else)
    with pytest.raises(ValueError, match="delta_pages must be <= 0") as info:
        memory.grow(1)
    assert not isinstance(info.value, MemoryError)
    assert memory.pages == 17


def test_grow_racing_a_kernel_never_raises_memory_error(make_pool: MakePool) -> None:
    """Memory.grow beside a kernel that grows the memory either grows or raises ValueError."""
    kernel = sw.Kernel.from_wat("""
    (module
      (import "env" "memory" (memory 1 65536 shared))
      (func (export "compute_partition") (param $s i32) (param $e i32)
        (loop $more
          (if (i32.lt_u (local.get $s) (local.get $e))
            (then
              (drop (memory.grow (i32.const 1)))
              (local.set $s (i32.add (local.get $s) (i32.const 1)))
              (br $more))))))
    """)
    outcomes: dict[str, int] = {"grew": 0, "full": 0}
    for _ in range(30):
        memory = sw.Memory(16, 48)
        pool = make_pool(kernel, memory, 1)
        call = threading.Thread(target=lambda pool=pool: pool.run(elements=64), daemon=True)
        call.start()
        while call.is_alive() or memory.pages < memory.maximum:
            try:
                memory.grow(1)
                outcomes["grew"] += 1
            except ValueError:
                outcomes["full"] += 1
                if not call.is_alive():
                    break
        call.join(TIMEOUT)
        pool.close()
    assert outcomes["full"] > 0


# -- a closed pool ---------------------------------------------------------------


def test_every_call_on_a_closed_pool_is_consistent(kernel: LoadKernel) -> None:
    """After close(): run, run_async, grow, data() and status raise PoolClosedError;
    cancel() returns False; statistics() and the properties still answer."""
    import asyncio

    pool = sw.WorkerPool(kernel("empty"), sw.Memory(16, 64), 2)
    pool.run()
    pool.close()
    for call in (
        pool.run,
        lambda: asyncio.run(pool.run_async()),
        lambda: pool.grow(1),
        pool.data,
        lambda: pool.status,
    ):
        with pytest.raises(sw.PoolClosedError, match=f"{pool.name} is closed"):
            call()
    assert pool.cancel() is False
    assert pool.statistics().runs == 1
    assert pool.workers == 2
    assert pool.data_offset > 0
    pool.close()  # idempotent


# -- sizes ---------------------------------------------------------------------------


def test_default_elements_cover_a_data_region_over_2_gib(kernel: LoadKernel) -> None:
    """With 1-byte elements the default is the whole data region, even past 2**31 bytes."""
    memory = sw.Memory(32768 + 16, 32768 + 16)
    with sw.WorkerPool(kernel("empty"), memory, 2) as pool:
        capacity = memory.byte_length - pool.data_offset
        assert capacity > 2**31
        for schedule in ("static", "dynamic"):
            result = pool.run(element_size=1, schedule=schedule)
            assert sum(d.elements for d in result.done) == capacity
            assert max(d.end for d in result.done) == capacity
        chunk = 0x7FFFFFFF  # a claim that would wrap past 2**32 without the clamp
        result = pool.run(element_size=1, schedule="dynamic", chunk=chunk)
        assert sum(d.elements for d in result.done) == capacity


# -- interpreter exit ---------------------------------------------------------------


def test_exit_is_quiet_with_pools_kept_in_module_globals(tmp_path: Path) -> None:
    """Closed and open pools, kernels and memories kept in a module global until the
    interpreter exits print nothing on the way out."""
    (tmp_path / "registry.py").write_text("pools = []\n")
    code = f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import registry
        sys.keep = registry  # lives until the last stage of shutdown
        import sharedwasm as sw
        kernel = sw.Kernel.from_file({str(ROOT / "tests" / "kernels" / "empty.wat")!r})
        for i in range(4):
            pool = sw.WorkerPool(kernel, sw.Memory(16, 64, interruptible=bool(i % 2)), 2)
            pool.run()
            if i < 3:
                pool.close()
            registry.pools.append((pool, pool.memory, kernel))
        print("ok")
    """
    proc = run_python(code)
    assert proc.returncode == 0
    assert proc.stdout == "ok\n"
    assert proc.stderr == ""
