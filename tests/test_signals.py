"""faulthandler and wasmtime's signal handlers: traps stay traps however faulthandler is set."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sharedwasm import _signals

ROOT = Path(__file__).parent.parent

# Traps three ways in worker `index` (a word of the data region), each a
# signal of its own: an out-of-bounds load (SIGSEGV), `unreachable` (SIGILL),
# a division by zero (SIGFPE on x86).
KERNEL = """
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (import "env" "worker_index" (global $index i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (local $how i32)
    (if (i32.ne (i32.load (global.get $data)) (global.get $index)) (then (return)))
    (local.set $how (i32.load offset=4 (global.get $data)))
    (if (i32.eq (local.get $how) (i32.const 0))
      (then (drop (i32.load (i32.const -4)))))
    (if (i32.eq (local.get $how) (i32.const 1)) (then unreachable))
    (drop (i32.div_u (i32.const 1) (i32.sub (local.get $how) (i32.const 2))))))
"""

SCRIPT = """
import faulthandler, sys, threading
import numpy as np
import sharedwasm as sw

kernel = sw.Kernel.from_wat(sys.argv[1])
pools = [sw.WorkerPool(kernel, sw.Memory(1, 64, interruptible=i), 2) for i in (False, True)]
for pool in pools:
    pool.data(np.int32)[0] = -1  # no worker traps
    pool.run(elements=2)  # every thread, the caller's included, has run wasm
{setup}
texts = ["out of bounds memory access", "unreachable", "integer divide by zero"]
for pool in pools:
    words = pool.data(np.int32)
    for index in range(2):
        for how, text in enumerate(texts):
            words[0], words[1] = index, how
            for timeout in (None, 10):
                try:
                    pool.run(elements=2, timeout=timeout)
                except sw.KernelTrap as trap:
                    assert trap.worker_index == index and text in str(trap), trap
                else:
                    raise AssertionError("no trap")
    words[0] = -1
    pool.run(elements=2)
    pool.close()
print("trapped", faulthandler.is_enabled())
"""

SETUPS = {
    "late-enable": "faulthandler.enable()",
    "late-enable-twice": "faulthandler.enable(); faulthandler.enable(all_threads=False)",
    "late-enable-in-another-thread": (
        "t = threading.Thread(target=faulthandler.enable); t.start(); t.join(10)"
    ),
    "enable-disable-enable": "faulthandler.enable(); faulthandler.disable(); faulthandler.enable()",
    "disable": "faulthandler.disable()",
}


def run_script(setup: str, *options: str) -> subprocess.CompletedProcess[str]:
    """Run SCRIPT with `setup` after the pools exist, in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, *options, "-c", SCRIPT.format(setup=setup), KERNEL],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest.mark.parametrize("setup", list(SETUPS.values()), ids=list(SETUPS))
@pytest.mark.parametrize("early", [False, True], ids=["plain", "X-faulthandler"])
def test_traps_stay_traps_whenever_faulthandler_is_enabled_or_disabled(
    setup: str, early: bool
) -> None:
    """Out-of-bounds, unreachable and divide-by-zero traps in any worker are KernelTraps and
    the process exits 0, with faulthandler enabled before sharedwasm (-X faulthandler) or
    after its engines, from any thread, or disabled again."""
    proc = run_script(setup, *(["-X", "faulthandler"] if early else []))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("trapped"), proc.stdout + proc.stderr[-3000:]


def test_traps_stay_traps_under_x_faulthandler_without_any_call() -> None:
    """With only `python -X faulthandler`, traps are KernelTraps and faulthandler stays on."""
    proc = run_script("", "-X", "faulthandler")
    assert (proc.returncode, proc.stdout) == (0, "trapped True\n"), proc.stderr[-3000:]


@pytest.mark.skipif(sys.platform != "linux", reason="the signals wasmtime handles on Linux")
def test_wasmtime_handlers_are_recorded_and_in_front() -> None:
    """Importing sharedwasm installs wasmtime's handlers for SIGSEGV and SIGILL and records
    them; in this process, whatever pytest did with faulthandler, they are still in front."""
    assert {signal.SIGSEGV, signal.SIGILL} <= set(_signals._wasmtime_actions)
    assert _signals.wasmtime_in_front()


def test_faulthandler_still_dumps_tracebacks_after_a_late_enable() -> None:
    """faulthandler's own uses still work after the wrapped enable: dumping a traceback."""
    code = textwrap.dedent(
        """
        import faulthandler, sys
        import sharedwasm
        faulthandler.enable()
        faulthandler.dump_traceback(sys.stdout)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert "most recent call first" in proc.stdout
