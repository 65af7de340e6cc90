"""Cancellation: how fast a hung run stops, and what interruptibility costs.

* `cancel_latency`: a 2-worker run on an interruptible memory whose kernel
  spins forever in both shares (worker 0's on the calling thread); another
  thread calls `pool.cancel()`. Measured: from the cancel call to the run
  raising `RunCancelled` in its caller.
* `timeout_overshoot`: the same hung run with `run(timeout=0.05)`. Measured:
  how long after the 50 ms deadline `RunTimeout` arrives (the issue's bound
  is 200 ms), with the pool ready again.
* `close_latency`: the same hung run on a fresh pool each time; measured:
  from `pool.close()` to its return with every worker thread gone (close
  gives up after `CLOSE_TIMEOUT`, 1 s, on a worker it cannot stop).
* `plain` / `interruptible`: the compute-bound poly kernel (64 multiply-adds
  per float32) over 8 MiB (256 KiB with --quick) on 2 workers, on a plain and
  on an interruptible memory: the price of the epoch checks.
"""

from __future__ import annotations

import functools
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from _harness import build_wasm, emit, main_guard, parser, summarize, timeit

import sharedwasm as sw

BENCH = "cancel"
WORKERS = 2
TIMEOUT = 0.05


class HungPool(sw.WorkerPool):
    """A pool of hang_on_flag whose runs hang in every share, with the flag raised."""

    def __init__(self, kernel: sw.Kernel) -> None:
        super().__init__(kernel, sw.Memory(2, 2, interruptible=True), WORKERS)
        self.flag = self.full(1, 1, np.int32)

    def hang(self, timeout: float | None = None) -> None:
        # One element per worker: the kernel ignores the range, only not empty.
        self.run("hang", self.flag, elements=WORKERS, timeout=timeout)


def cancel_latency(kernel: sw.Kernel, repeat: int) -> list[float]:
    """Seconds from `cancel()` to the hung run's caller getting RunCancelled."""
    samples: list[float] = []
    pool = HungPool(kernel)
    with pool:
        for _ in range(repeat):
            raised = threading.Event()
            stamp: list[float] = []

            def call(
                pool: HungPool = pool,
                raised: threading.Event = raised,
                stamp: list[float] = stamp,
            ) -> None:
                try:
                    pool.hang()
                except sw.RunCancelled:
                    stamp.append(time.perf_counter())
                raised.set()

            caller = threading.Thread(target=call)
            caller.start()
            time.sleep(0.01)  # both shares are spinning by now
            t0 = time.perf_counter()
            if not pool.cancel():
                raise RuntimeError("the run was not in flight when cancelled")
            if not raised.wait(10.0) or not stamp:
                raise RuntimeError("the cancelled run did not raise RunCancelled")
            caller.join()
            samples.append(stamp[0] - t0)
    return samples


def timeout_overshoot(kernel: sw.Kernel, repeat: int) -> list[float]:
    """Seconds past a 50 ms timeout at which a hung run raises RunTimeout."""
    samples: list[float] = []
    pool = HungPool(kernel)
    with pool:
        for _ in range(repeat):
            t0 = time.perf_counter()
            try:
                pool.hang(timeout=TIMEOUT)
            except sw.RunTimeout as exc:
                if "ready for the next run" not in str(exc):
                    raise RuntimeError(f"the hung run was not stopped: {exc}") from exc
            else:
                raise RuntimeError("a hung run returned")
            samples.append(time.perf_counter() - t0 - TIMEOUT)
    return samples


def close_latency(kernel: sw.Kernel, repeat: int) -> list[float]:
    """Seconds `close()` takes to stop a hung run and see every worker thread exit."""
    samples: list[float] = []
    for _ in range(repeat):
        pool = HungPool(kernel)
        caller = threading.Thread(target=_run_until_closed, args=(pool,))
        caller.start()
        time.sleep(0.01)  # both shares are spinning by now
        t0 = time.perf_counter()
        pool.close()
        samples.append(time.perf_counter() - t0)
        caller.join(10.0)
        if caller.is_alive():
            raise RuntimeError("the run's caller did not return after close()")
        alive = [t.name for t in threading.enumerate() if t.name.startswith(f"{pool.name}-w")]
        if alive:
            raise RuntimeError(f"close() returned with {alive} still running")
    return samples


def _run_until_closed(pool: HungPool) -> None:
    try:
        pool.hang()
    except sw.PoolClosedError:
        return
    raise RuntimeError("a hung run returned")


def compute_cost(kernel: sw.Kernel, nbytes: int, repeat: int) -> dict[str, list[float]]:
    pages = sw.WorkerPool.pages_needed(kernel, nbytes, WORKERS)
    out: dict[str, list[float]] = {}
    for name, interruptible in (("plain", False), ("interruptible", True)):
        memory = sw.Memory(pages, pages, interruptible=interruptible)
        with sw.WorkerPool(kernel, memory, WORKERS) as pool:
            x = pool.full(nbytes // 4, 1.0, np.float32)
            run = functools.partial(pool.run, "poly", x)
            out[name] = timeit(run, repeat=repeat)
    return out


def main() -> int:
    args = parser(str(__doc__).partition("\n")[0]).parse_args()
    repeat = 3 if args.quick else 30
    nbytes = (256 << 10) if args.quick else (8 << 20)
    with tempfile.TemporaryDirectory() as tmp:
        hang = sw.Kernel.from_file(build_wasm("hang_on_flag", Path(tmp)))
        poly = sw.Kernel.from_file(build_wasm("poly_scalar", Path(tmp)))
    emit(
        BENCH,
        "cancel_latency",
        workers=WORKERS,
        interruptible=True,
        **summarize(cancel_latency(hang, repeat)),
    )
    emit(
        BENCH,
        "timeout_overshoot",
        workers=WORKERS,
        interruptible=True,
        timeout_s=TIMEOUT,
        **summarize(timeout_overshoot(hang, max(2, repeat // 3))),
    )
    emit(
        BENCH,
        "close_latency",
        workers=WORKERS,
        interruptible=True,
        **summarize(close_latency(hang, max(2, repeat // 3))),
    )
    cost = compute_cost(poly, nbytes, max(3, repeat // 3))
    plain = statistics.median(cost["plain"])
    for name, samples in cost.items():
        emit(
            BENCH,
            name,
            workers=WORKERS,
            kernel="poly_scalar",
            bytes=nbytes,
            interruptible=name == "interruptible",
            ratio_vs_plain=statistics.median(samples) / plain,
            **summarize(samples),
        )
    return 0


if __name__ == "__main__":
    main_guard(main)
