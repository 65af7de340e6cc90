"""After fork(): a child compiles kernels and runs pools; what it inherits works or fails fast."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection

import numpy as np
import pytest

import sharedwasm as sw
from sharedwasm._builtin import KERNEL_DIR, map_f32_reference

MakePool = Callable[..., sw.WorkerPool]
Step = Callable[[str], None]
"""How a child says what it is about to do, so that a hang names the step."""

CHILD_TIMEOUT = 30.0
"""Seconds a child may take: it needs a fraction of one even on busy CPUs, and
a deadlock after fork() is forever."""

MAP_F32 = KERNEL_DIR / "map_f32.wat"

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()"),
    # Python 3.12+ warns at fork() in a process with several threads, and
    # under pytest there always are some (numpy's OpenBLAS thread, the
    # faulthandler watchdog, a live pool's workers). CPython drops the warning
    # when it is made an error, so only other warning settings show it; these
    # tests fork on purpose, to check what sharedwasm does in the child.
    pytest.mark.filterwarnings(
        r"ignore:This process \(pid=\d+\) is multi-threaded, use of fork\(\) may lead to "
        r"deadlocks in the child\.:DeprecationWarning"
    ),
]


def _child_main(conn: Connection, body: Callable[[Step], str]) -> None:
    """Run `body` and send its steps and outcome through `conn`; never raise."""
    try:
        outcome = body(lambda what: conn.send(("step", what)))
        conn.send(("done", outcome))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def _outcome(conn: Connection, who: str, kill: Callable[[], None]) -> str:
    """Return what the child reports, or kill it and fail once CHILD_TIMEOUT has passed."""
    deadline = time.monotonic() + CHILD_TIMEOUT
    step = "start"
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not conn.poll(left):
            kill()
            pytest.fail(
                f"{who} still running after {CHILD_TIMEOUT} s, at step {step!r}: "
                "a deadlock after fork()"
            )
        try:
            kind, text = conn.recv()
        except EOFError:
            pytest.fail(f"{who} exited at step {step!r} without reporting")
        if kind == "step":
            step = text
        elif kind == "error":
            pytest.fail(f"{who} failed at step {step!r}:\n{text}")
        else:
            return str(text)


def in_forked_child(body: Callable[[Step], str]) -> str:
    """Run `body` in a child of os.fork() and return its result, within CHILD_TIMEOUT."""
    receiver, sender = multiprocessing.Pipe(duplex=False)
    pid = os.fork()
    if pid == 0:  # the child: whatever happens, never return into pytest
        status = 1
        try:
            receiver.close()
            _child_main(sender, body)
            status = 0
        finally:
            os._exit(status)
    sender.close()
    try:
        return _outcome(receiver, "the child of os.fork()", lambda: os.kill(pid, signal.SIGKILL))
    finally:
        receiver.close()
        deadline = time.monotonic() + CHILD_TIMEOUT
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() >= deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"the child of os.fork() did not exit within {CHILD_TIMEOUT} s")
            time.sleep(0.01)


def in_multiprocessing_child(body: Callable[[Step], str]) -> str:
    """Run `body` in a process of multiprocessing's "fork" start method, within CHILD_TIMEOUT."""
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child_main, args=(sender, body), name="fork-child", daemon=True)
    process.start()
    sender.close()
    try:
        outcome = _outcome(receiver, "the multiprocessing 'fork' child", process.kill)
    finally:
        receiver.close()
        process.join(CHILD_TIMEOUT)
        if process.is_alive():
            process.kill()
            process.join(CHILD_TIMEOUT)
            pytest.fail(f"the multiprocessing 'fork' child did not exit within {CHILD_TIMEOUT} s")
    assert process.exitcode == 0
    return outcome


def run_map_f32(step: Step, kernel: sw.Kernel, memory: sw.Memory) -> str:
    """Run map_f32 on a two-worker pool over `memory` and check every element."""
    step(f"create a pool on {memory!r}")
    with sw.WorkerPool(kernel, memory, 2) as pool:
        x = pool.data()
        x[:] = np.linspace(0, 1000, x.size, dtype=np.float32)
        expected = map_f32_reference(x.copy())
        step("run the pool")
        pool.run()
        np.testing.assert_array_equal(pool.data().view(np.uint32), expected.view(np.uint32))
    return "ok"


def compile_and_run(step: Step) -> str:
    """Compile map_f32 and run it on a plain and on an interruptible memory."""
    step("compile a kernel")
    kernel = sw.Kernel.from_file(MAP_F32)
    run_map_f32(step, kernel, sw.Memory(16, 64))
    # The first pool on an interruptible memory compiles for the other engine.
    return run_map_f32(step, kernel, sw.Memory(16, 64, interruptible=True))


def test_child_of_fork_compiles_kernels_and_runs_pools() -> None:
    """A child of os.fork() compiles and runs kernels after its parent compiled one."""
    sw.Kernel.from_file(MAP_F32)
    assert in_forked_child(compile_and_run) == "ok"


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="no 'fork' start method"
)
def test_multiprocessing_fork_child_compiles_kernels_and_runs_pools() -> None:
    """A multiprocessing child started by "fork" compiles and runs kernels after its parent did."""
    sw.Kernel.from_file(MAP_F32)
    assert in_multiprocessing_child(compile_and_run) == "ok"


@pytest.mark.parametrize("interruptible", [False, True])
def test_inherited_kernel_and_memory_work_on_a_copy(interruptible: bool) -> None:
    """A child runs the parent's Kernel on the parent's Memory, and its writes stay in its copy."""
    kernel = sw.Kernel.from_file(MAP_F32)
    memory = sw.Memory(16, 64, interruptible=interruptible)
    with sw.WorkerPool(kernel, memory, 2) as pool:
        pool.run()  # the parent compiled and ran everything the child will use
    memory.view(np.uint8)[:] = 7
    assert in_forked_child(lambda step: run_map_f32(step, kernel, memory)) == "ok"
    assert np.all(memory.view(np.uint8) == 7)


def test_inherited_pool_fails_fast_in_child(make_pool: MakePool) -> None:
    """A child's calls on its parent's pool raise BrokenPoolError, even with the run lock held."""
    kernel = sw.Kernel.from_file(MAP_F32)
    pool = make_pool(kernel)
    pool.run()
    parent = os.getpid()

    def child(step: Step) -> str:
        message = rf"^{pool.name} belongs to process {parent}, not to this child of fork\(\): "
        step("run the inherited pool")
        with pytest.raises(sw.BrokenPoolError, match=message + "its worker threads do not exist"):
            pool.run()
        with pytest.raises(sw.BrokenPoolError, match=message):
            pool.run(timeout=1.0)
        step("grow the inherited pool")
        with pytest.raises(sw.BrokenPoolError, match=message):
            pool.grow(1)
        step("close the inherited pool")
        pool.close()
        with pytest.raises(sw.PoolClosedError, match=rf"^{pool.name} is closed$"):
            pool.run()
        return run_map_f32(step, kernel, pool.memory)

    # Held across the fork, as by a run in flight on another thread: in the
    # child the lock stays taken with no thread to release it.
    with pool._lock:
        assert in_forked_child(child) == "ok"
    x = pool.data()
    x[:] = 2.0
    expected = map_f32_reference(x.copy())
    pool.run()
    np.testing.assert_array_equal(pool.data().view(np.uint32), expected.view(np.uint32))


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_compiling_starts_no_threads() -> None:
    """Compiling kernels for both engines leaves the process with the threads it had."""
    code = (
        "import os, sharedwasm as sw\n"
        "from sharedwasm._builtin import KERNEL_DIR\n"
        "before = len(os.listdir('/proc/self/task'))\n"
        "sw.Kernel.from_file(KERNEL_DIR / 'map_f32.wat')._module_for(True)\n"
        "print(before, len(os.listdir('/proc/self/task')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.split()
    assert after == before, "compiling started threads, which a child of fork() would lack"
