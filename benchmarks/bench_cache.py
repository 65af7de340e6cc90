"""The compiled-code cache: compiling a module against loading it, and a new process's pool start.

Per module, on the plain engine: every `kernels/*.wasm` as a pool compiles
it (with the worker loop merged in), the worker loop merged into an empty
one-entry kernel (`runner`), and the atomics helper. `compile/<name>` times
`wasmtime.Module(engine, wasm)`, what every process pays without the cache;
`hit/<name>` times `_cache.load_or_compile` on a stored entry (open the
directory and the key, read the entry, check its header and HMAC,
`Module.deserialize`); `ratio/<name>` holds compile over hit.

Then `process/cached` and `process/uncached`: a fresh Python process, with
sharedwasm and numpy imported before its clock starts, loads
`kernels/map_f32.wasm` with `Kernel.from_file` and starts a 2-worker pool on a
memory made beforehand, until the constructor returns (every worker READY);
the engines are made inside that window, as they would be. After closing the
pool it times starting 2 bare threads (the pool's stack size, each setting an
event the main thread waits for): `threads_us`, which `minus_threads_us`
takes off the start; and `again_us`, a second pool of the same kernel in the
same process, which has nothing left to compile or load: the floor of a
start. The cached process finds every module in a cache this benchmark
filled; the uncached one runs with SHAREDWASM_CACHE=0. They alternate. The
cache is a temporary directory, never the user's.
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _harness import ROOT, emit, main_guard, parser, summarize, timeit

BENCH = "cache"
KERNEL = ROOT / "kernels" / "map_f32.wasm"
WORKERS = 2
CHILD_TIMEOUT = 60.0

CHILD = """
import json, sys, threading, time
import numpy as np
import sharedwasm as sw
from sharedwasm import _cache, _stack

memory = sw.Memory(64, 64)
t0 = time.perf_counter()
kernel = sw.Kernel.from_file(sys.argv[1])
t1 = time.perf_counter()
pool = sw.WorkerPool(kernel, memory, int(sys.argv[2]))
t2 = time.perf_counter()
pool.close()
memory = sw.Memory(64, 64)
t5 = time.perf_counter()
sw.WorkerPool(kernel, memory, int(sys.argv[2])).close()
t6 = time.perf_counter()
events = [threading.Event() for _ in range(int(sys.argv[2]))]
t3 = time.perf_counter()
with _stack.thread_stack_size():
    threads = [threading.Thread(target=e.set) for e in events]
    for t in threads:
        t.start()
for e in events:
    e.wait(10)
t4 = time.perf_counter()
for t in threads:
    t.join(10)
stats = _cache.statistics()
print(json.dumps({"load": t1 - t0, "pool": t2 - t1, "threads": t4 - t3, "again": t6 - t5,
                  "hits": stats.hits, "compiles": stats.compiles}))
"""


def modules() -> dict[str, bytes | str]:
    """Return every module measured, by name: the merged kernels' bytes, the helper's text."""
    import sharedwasm as sw
    from sharedwasm import _atomics

    found: dict[str, bytes | str] = {
        path.stem: sw.Kernel.from_file(path)._merged
        for path in sorted((ROOT / "kernels").glob("*.wasm"))
    }
    empty = (
        '(module (import "env" "memory" (memory 1 65536 shared)) '
        '(func (export "entry:e") (param i32 i32)))'
    )
    found["runner"] = sw.Kernel.from_wat(empty)._merged
    found["atomics"] = _atomics._helper_wat()
    return found


def in_process(repeat: int) -> None:
    """Time compiling each module against loading it from the cache."""
    import wasmtime

    from sharedwasm import _cache, _wasmtime

    engine, key = _wasmtime.engine(False), _wasmtime.engine_key(False)
    for name, wasm in modules().items():
        _cache.load_or_compile(key, engine, wasm)  # stores the entry
        hits = _cache.statistics().hits
        compile_s = timeit(functools.partial(wasmtime.Module, engine, wasm), repeat=repeat)
        hit_s = timeit(functools.partial(_cache.load_or_compile, key, engine, wasm), repeat=repeat)
        if _cache.statistics().hits != hits + len(hit_s) + 3:  # 3 warm-up calls
            raise RuntimeError(f"{name} was not loaded from the cache every time")
        size = len(wasm) if isinstance(wasm, bytes) else len(wasm.encode())
        compiled = summarize(compile_s)
        loaded = summarize(hit_s)
        emit(BENCH, f"compile/{name}", module=name, source_bytes=size, **compiled)
        emit(BENCH, f"hit/{name}", module=name, source_bytes=size, **loaded)
        emit(
            BENCH,
            f"ratio/{name}",
            module=name,
            compile_over_hit=compiled["median_us"] / loaded["median_us"],
        )


def child(cache: Path, *, enabled: bool) -> dict[str, Any]:
    """Run one fresh process's pool start; return its timings in seconds and its cache counts."""
    env = dict(
        os.environ, SHAREDWASM_CACHE_DIR=str(cache), SHAREDWASM_CACHE="1" if enabled else "0"
    )
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(KERNEL), str(WORKERS)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"pool-start process failed ({proc.returncode}): {proc.stderr.strip()}")
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def processes(cache: Path, rounds: int) -> None:
    """Time a fresh process's kernel load and pool start, with and without a warm cache."""
    import sharedwasm as sw

    # Fill the cache with the kernel (its runner merged in) and the atomics helper.
    with sw.WorkerPool(sw.Kernel.from_file(KERNEL), sw.Memory(64, 64), WORKERS):
        pass
    samples: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
    for _ in range(rounds):
        for enabled in (True, False):
            samples[enabled].append(child(cache, enabled=enabled))
    for enabled, runs in samples.items():
        if enabled and any(r["compiles"] for r in runs):
            raise RuntimeError("a process with a warm cache compiled a module")
        start = [r["load"] + r["pool"] for r in runs]
        emit(
            BENCH,
            "process/cached" if enabled else "process/uncached",
            kernel=KERNEL.name,
            workers=WORKERS,
            load_us=statistics.median(r["load"] for r in runs) * 1e6,
            pool_us=statistics.median(r["pool"] for r in runs) * 1e6,
            threads_us=statistics.median(r["threads"] for r in runs) * 1e6,
            again_us=statistics.median(r["again"] for r in runs) * 1e6,
            minus_threads_us=statistics.median(
                s - r["threads"] for s, r in zip(start, runs, strict=True)
            )
            * 1e6,
            hits=runs[0]["hits"],
            compiles=runs[0]["compiles"],
            **summarize(start),
        )


def main() -> int:
    p = parser(__doc__ or "")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="sharedwasm-bench-cache-") as tmp:
        cache = Path(tmp) / "cache"
        os.environ["SHAREDWASM_CACHE_DIR"] = str(cache)
        os.environ.pop("SHAREDWASM_CACHE", None)
        in_process(3 if args.quick else 30)
        processes(cache, 1 if args.quick else 10)
    return 0


if __name__ == "__main__":
    main_guard(main)
