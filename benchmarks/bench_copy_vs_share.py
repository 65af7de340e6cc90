"""Copy versus share: one 10 MiB float32 job, end to end, on 2 workers.

The headline of the reference design: handing 10 MB to workers by copying it
costs milliseconds, sharing it costs nothing but the synchronisation. Every
contender turns the same input array into the same output array,
`(x * x) * 0.25 + sqrt(x)` in float32 (the `map_f32` kernel's math), and
its output is checked against numpy before anything is timed:

* `numpy_1thread`: numpy in the main process, for scale.
* `processpool_pickle`: `concurrent.futures.ProcessPoolExecutor`, one chunk
  per worker pickled to the child, computed there with numpy, pickled back
  and reassembled.
* `processpool_roundtrip_only`: the same trip with a child that returns its
  chunk untouched: the pure cost of copying the data there and back.
* `shared_memory`: a `multiprocessing.shared_memory` block that every child
  attached once; the input is written into it and each child computes its
  slice with numpy into the block's output half. No copies of the data, only
  process coordination (one small task per child through the executor).
* `sharedwasm`: the input is written into an array of the pool's heap,
  `pool.run` computes into another (`kernels/map_f32_copy.wat`, out of
  place, 4 lanes at a time) and the output is read where it is.
* `shared_memory_resident`, `sharedwasm_resident`: the same without writing
  the input, for data that already lives in the shared memory (produced there
  by an earlier step): the case where sharing costs no transfer at all.

The process pool is started (spawn) and warmed up outside the timing.
Contenders alternate within each round. Each line reports the wall-clock time
of one job and `ratio_vs_sharedwasm`, its median over sharedwasm's.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import multiprocessing
import sys
import time
from collections.abc import Callable
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from _harness import emit, main_guard, parser, summarize

import sharedwasm as sw

BENCH = "copy_vs_share"
KERNEL = Path(__file__).resolve().parent / "kernels" / "map_f32_copy.wat"
WORKERS = 2
FULL_BYTES = 10 * 1024 * 1024
QUICK_BYTES = 1024 * 1024

F32 = npt.NDArray[np.float32]


def compute(x: F32) -> F32:
    """Return the job's output for `x`, with the kernel's float32 rounding steps."""
    return (x * x) * np.float32(0.25) + np.sqrt(x)


# -- child side (module level, so spawned children can unpickle them) ---------

_child_shm: shared_memory.SharedMemory | None = None
_child_view: F32 | None = None


def _attach(name: str, elements: int) -> None:
    global _child_shm, _child_view
    _child_shm = shared_memory.SharedMemory(name=name)
    _child_view = np.ndarray((2 * elements,), dtype=np.float32, buffer=_child_shm.buf)


def _compute_chunk(chunk: F32) -> F32:
    return compute(chunk)


def _echo_chunk(chunk: F32) -> F32:
    return chunk


def _compute_slice(start: int, end: int, elements: int) -> None:
    assert _child_view is not None
    _child_view[elements + start : elements + end] = compute(_child_view[start:end])


# -- host side ----------------------------------------------------------------


def bounds(elements: int, workers: int) -> list[tuple[int, int]]:
    """Split [0, elements) into one contiguous range per worker."""
    edges = np.linspace(0, elements, workers + 1).astype(int)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def run_rounds(contenders: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Time every contender once per round, rotating who goes first."""
    names = list(contenders)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t0 = time.perf_counter()
            contenders[name]()
            samples[name].append(time.perf_counter() - t0)
    return samples


def main() -> int:
    p = parser(str(__doc__).partition("\n")[0])
    p.add_argument("--rounds", type=int, default=None, help="timed rounds per contender")
    args = p.parse_args()
    nbytes = QUICK_BYTES if args.quick else FULL_BYTES
    rounds = args.rounds or (5 if args.quick else 50)
    elements = nbytes // 4

    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 100.0, elements).astype(np.float32)
    expected = compute(x)
    ranges = bounds(elements, WORKERS)

    # Input in the first half of the block, output in the second.
    shm = shared_memory.SharedMemory(create=True, size=2 * nbytes)
    executor = concurrent.futures.ProcessPoolExecutor(
        WORKERS,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_attach,
        initargs=(shm.name, elements),
    )
    pool = sw.WorkerPool(sw.Kernel.from_file(KERNEL), workers=WORKERS)
    try:
        block: F32 = np.ndarray((2 * elements,), dtype=np.float32, buffer=shm.buf)
        shm_in, shm_out = block[:elements], block[elements:]
        wasm_in = pool.empty(elements, np.float32)
        wasm_out = pool.empty(elements, np.float32)

        def numpy_1thread() -> F32:
            return compute(x)

        def processpool_pickle() -> F32:
            chunks = [x[a:b] for a, b in ranges]
            return np.concatenate(list(executor.map(_compute_chunk, chunks)))

        def processpool_roundtrip_only() -> F32:
            chunks = [x[a:b] for a, b in ranges]
            return np.concatenate(list(executor.map(_echo_chunk, chunks)))

        def shared_memory_resident() -> F32:
            futures = [executor.submit(_compute_slice, a, b, elements) for a, b in ranges]
            for f in futures:
                f.result()
            return shm_out

        def shared_memory_numpy() -> F32:
            shm_in[...] = x
            return shared_memory_resident()

        def sharedwasm_resident() -> F32:
            pool.run(BENCH, wasm_in, wasm_out)
            return wasm_out

        def sharedwasm() -> F32:
            wasm_in[...] = x
            return sharedwasm_resident()

        contenders: dict[str, Callable[[], F32]] = {
            "numpy_1thread": numpy_1thread,
            "processpool_pickle": processpool_pickle,
            "processpool_roundtrip_only": processpool_roundtrip_only,
            "shared_memory": shared_memory_numpy,
            "shared_memory_resident": shared_memory_resident,
            "sharedwasm": sharedwasm,
            "sharedwasm_resident": sharedwasm_resident,
        }
        wants = dict.fromkeys(contenders, expected)
        wants["processpool_roundtrip_only"] = x
        shm_in[...] = x
        wasm_in[...] = x
        for name, fn in contenders.items():
            shm_out[...] = np.nan
            wasm_out[...] = np.nan
            out = fn()
            if not np.array_equal(out, wants[name]):
                bad = int(np.count_nonzero(out != wants[name]))
                print(f"{name}: {bad} of {elements} elements differ", file=sys.stderr)
                return 1
            for _ in range(3):  # warm up: child imports, page faults, caches
                fn()

        samples = run_rounds(contenders, rounds)
        ref = summarize(samples["sharedwasm"])["median_us"]
        for name, times in samples.items():
            stats = summarize(times)
            fields: dict[str, Any] = {
                "workers": 1 if name == "numpy_1thread" else WORKERS,
                "bytes": nbytes,
                "elements": elements,
                **stats,
                "mb_per_s": nbytes / stats["median_us"],
                "ratio_vs_sharedwasm": stats["median_us"] / ref,
            }
            emit(BENCH, name, **fields)
    finally:
        pool.close()
        executor.shutdown(wait=True, cancel_futures=True)
        shm.close()
        shm.unlink()
    return 0


if __name__ == "__main__":
    main_guard(main)
