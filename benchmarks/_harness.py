"""Shared benchmark plumbing: timing, statistics and one JSON line per case.

Every benchmark prints JSON lines to stdout, one per measured case, each with
the environment metadata so a line stands on its own. Comparisons are made
within one process run, alternating the contenders, because these machines
are noisy: never compare figures from separate runs.
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "benchmarks"
NODE_BENCH = HERE / "peers" / "bench.mjs"
NODE_TIMEOUT = 120.0


def build_wasm(name: str, directory: Path) -> Path:
    """Assemble kernels/<name>.wat once, so that Python and Node load the same bytes."""
    import wasmtime

    path = directory / f"{name}.wasm"
    path.write_bytes(wasmtime.wat2wasm((HERE / "kernels" / f"{name}.wat").read_text()))
    return path


def run_node_peer(
    peer: str, wasm: Path, options: list[str], *, timeout: float = NODE_TIMEOUT
) -> dict[str, Any]:
    """Run `peers/bench.mjs` for one peer and .wasm with more options; return its JSON result."""
    argv = ["node", str(NODE_BENCH), "--peer", peer, "--wasm", str(wasm), *options]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"node peer {peer} failed ({proc.returncode}): {proc.stderr.strip()}")
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


@functools.cache
def environment() -> dict[str, Any]:
    """Return the metadata attached to every JSON line."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except OSError:
        sha = ""
    try:
        node = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except OSError:
        node = ""
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "wasmtime": importlib.metadata.version("wasmtime"),
        "numpy": importlib.metadata.version("numpy"),
        "node": node,
        "machine": platform.machine(),
        "git": sha or "unknown",
    }


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """Return median, p90, p99, min and count of samples given in seconds, in microseconds."""
    ordered = sorted(samples)
    n = len(ordered)

    def pct(q: float) -> float:
        return ordered[min(n - 1, int(q * n))] * 1e6

    return {
        "median_us": statistics.median(ordered) * 1e6,
        "p90_us": pct(0.90),
        "p99_us": pct(0.99),
        "min_us": ordered[0] * 1e6,
        "n": n,
    }


def timeit(fn: Callable[[], object], *, repeat: int, warmup: int = 3) -> list[float]:
    """Call `fn` `warmup` times untimed, then `repeat` times; return each duration in seconds."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def emit(bench: str, case: str, **fields: Any) -> dict[str, Any]:
    """Print one JSON line for a measured case and return it."""
    line = {"bench": bench, "case": case, **fields, "env": environment()}
    print(json.dumps(line), flush=True)
    return line


def parser(description: str) -> argparse.ArgumentParser:
    """Return an argument parser with the options every benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and few repeats: a smoke test, not a figure",
    )
    return p


def main_guard(main: Callable[[], int]) -> None:
    """Run a benchmark's main and exit with its status."""
    sys.exit(main())
