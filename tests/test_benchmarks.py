"""Smoke-run every benchmark in quick mode, so that none of them rots.

`benchmarks/run_all.py --quick` runs each `benchmarks/bench_*.py` once into a
temporary directory; the tests then check that every script printed valid
JSON lines with the keys its readers rely on.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
RUN_ALL = BENCHMARKS / "run_all.py"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("bench_*.py"))

RUN_ALL_TIMEOUT = 55.0
"""Seconds for the whole quick run; each benchmark gets at most PER_BENCH_TIMEOUT."""
PER_BENCH_TIMEOUT = 30.0

ENV_KEYS = {"cpus", "python", "wasmtime", "numpy", "node", "machine", "git"}
TIMING_KEYS = {"median_us", "p90_us", "p99_us", "min_us", "n"}

EXPECTED: dict[str, tuple[set[str], set[str]]] = {
    "bench_copy_vs_share.py": (
        {
            "numpy_1thread",
            "processpool_pickle",
            "processpool_roundtrip_only",
            "shared_memory",
            "sharedwasm",
        },
        {"workers", "bytes", "elements", "mb_per_s", "ratio_vs_sharedwasm", *TIMING_KEYS},
    ),
    "bench_schedule.py": (
        {"w1_static", "w2_static", "w2_dynamic", "w2_dynamic_chunk1"},
        {
            "workers",
            "schedule",
            "chunk",
            "width",
            "height",
            "max_iter",
            "perfect_us",
            "ratio_vs_perfect",
            "busy_us",
            "elements",
            "chunks",
            "imbalance",
            *TIMING_KEYS,
        },
    ),
    "bench_cancel.py": (
        {"cancel_latency", "timeout_overshoot", "close_latency", "plain", "interruptible"},
        {"workers", "interruptible", *TIMING_KEYS},
    ),
    "bench_idle.py": (
        {"baseline", "threadpool", "sharedwasm"},
        {
            "workers",
            "idle_s",
            "metric",
            "unit",
            "cpu_percent",
            "threads_cpu_percent",
            "context_switches_per_s",
            "n",
        },
    ),
    "bench_kernels.py": (
        {
            case
            for kernel in (
                "map_f32",
                "poly_scalar",
                "poly_simd",
                "saxpy_simd",
                "sum_f32",
                "max_f32",
                "mandelbrot",
                "histogram",
                "box_blur",
                "stack_heavy",
            )
            for case in (f"{kernel}/static/w1", f"{kernel}/static/w2", f"numpy/{kernel}")
        }
        | {"mandelbrot/dynamic/w1", "mandelbrot/dynamic/w2"},
        {
            "kernel",
            "workers",
            "elements",
            "unit",
            "units",
            "elements_per_s",
            "units_per_s",
            "gb_per_s",
            *TIMING_KEYS,
        },
    ),
    "bench_interrupt.py": (
        {
            *(
                f"{kernel}/{version}"
                for kernel in ("poly_scalar", "saxpy_simd", "poly_scalar.wat", "saxpy_scalar.wat")
                for version in (
                    "plain",
                    "all-loops",
                    "outer-loops",
                    "all-loops/fixed",
                    "outer-loops/fixed",
                    "epoch",
                )
            ),
        },
        {"kernel", "version", "workers", "ratio_vs_plain", "min_ratio_vs_plain", *TIMING_KEYS},
    ),
    "bench_dispatch.py": (
        {
            f"{case}/w{workers}{suffix}"
            for workers in (1, 2)
            for case, suffix in (
                ("sharedwasm", "/back-to-back"),
                ("sharedwasm", "/idle-1ms"),
                ("sharedwasm-empty", "/interleaved"),
                ("sharedwasm-four", "/interleaved"),
            )
        },
        {"workers", "mode", *TIMING_KEYS},
    ),
    "bench_cache.py": (
        {
            f"{kind}/{module}"
            for kind in ("compile", "hit")
            for module in ("map_f32", "box_blur", "runner", "atomics")
        }
        | {"process/cached", "process/uncached"},
        {"bench", "case", "median_us", *TIMING_KEYS},
    ),
}
"""Per script: the cases it must report, and the keys every one of its lines has."""


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("bench")
    cmd = [sys.executable, str(RUN_ALL), "--quick", "--no-chart", "--out", str(out)]
    cmd += ["--timeout", str(PER_BENCH_TIMEOUT)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_ALL_TIMEOUT)
    assert proc.returncode == 0, f"run_all failed:\n{proc.stderr}"
    assert not (out / "latest.png").exists()
    lines = (out / "latest.jsonl").read_text().splitlines()
    return out, [json.loads(line) for line in lines]


def test_every_benchmark_reported(quick_run):
    _, records = quick_run
    assert SCRIPTS, "no benchmarks found"
    assert set(EXPECTED) <= set(SCRIPTS)
    assert {r["script"] for r in records} == set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_lines_are_well_formed(quick_run, script):
    _, records = quick_run
    lines = [r for r in records if r["script"] == script]
    assert lines
    assert len({r["bench"] for r in lines}) == 1, "one script, one bench name"
    for line in lines:
        assert isinstance(line["case"], str)
        assert line["case"]
        assert set(line["env"]) >= ENV_KEYS
        if "median_us" in line:
            assert set(line) >= TIMING_KEYS
            assert line["min_us"] <= line["median_us"] <= line["p99_us"]
    cases, keys = EXPECTED.get(script, (set(), set()))
    assert {r["case"] for r in lines} >= cases
    for line in lines:
        if line["case"] in cases:
            assert set(line) >= keys, f"{line['case']} lacks {sorted(keys - set(line))}"


def test_copy_vs_share_figures(quick_run):
    _, records = quick_run
    lines = {r["case"]: r for r in records if r["script"] == "bench_copy_vs_share.py"}
    assert lines["sharedwasm"]["ratio_vs_sharedwasm"] == 1.0
    assert lines["processpool_pickle"]["workers"] == lines["sharedwasm"]["workers"] == 2
    assert len({r["bytes"] for r in lines.values()}) == 1


def test_dispatch_reports_arguments_and_allocation(quick_run):
    """The dispatch benchmark reports what four arguments and an allocation cost, per N."""
    _, records = quick_run
    lines = {r["case"]: r for r in records if r["script"] == "bench_dispatch.py"}
    for workers in (1, 2):
        four = lines[f"sharedwasm-four/w{workers}/interleaved"]
        empty = lines[f"sharedwasm-empty/w{workers}/interleaved"]
        assert (four["arguments"], empty["arguments"]) == (4, 0)
        diff = lines[f"four-minus-empty/w{workers}"]
        assert diff["difference_us"] == pytest.approx(four["median_us"] - empty["median_us"])
        assert diff["target_difference_us"] == 1.5
        assert isinstance(diff["difference_within_target"], bool)
        alloc = lines[f"alloc/w{workers}"]
        assert set(alloc) >= TIMING_KEYS
        assert alloc["target_us"] == 20.0
    assert lines["four-minus-empty/w2"]["target_four_median_us"] == 10.0


def test_schedule_accounts_for_every_row(quick_run):
    _, records = quick_run
    for line in records:
        if line["script"] == "bench_schedule.py":
            assert len(line["busy_us"]) == len(line["elements"]) == line["workers"]
            assert len(line["chunks"]) == line["workers"]
            assert sum(line["elements"]) == line["height"]
            assert line["ratio_vs_perfect"] > 0


def test_idle_percentages(quick_run):
    _, records = quick_run
    for line in records:
        if line["script"] == "bench_idle.py":
            assert line["metric"] == "cpu_percent"
            assert 0 <= line["cpu_percent"] < 100 * 8
            assert 0 <= line["threads_cpu_percent"] < 100 * 8


def test_cache_processes(quick_run):
    _, records = quick_run
    lines = {r["case"]: r for r in records if r["script"] == "bench_cache.py"}
    # The kernel with its runner merged in, and the atomics helper.
    assert lines["process/cached"]["compiles"] == 0
    assert lines["process/cached"]["hits"] >= 2
    assert lines["process/uncached"]["hits"] == 0
    assert lines["process/uncached"]["compiles"] >= 2
    for case in ("process/cached", "process/uncached"):
        assert {"load_us", "pool_us", "threads_us", "minus_threads_us", "again_us"} <= set(
            lines[case]
        )


def test_chart_from_results(quick_run, tmp_path):
    out, _ = quick_run
    cmd = [sys.executable, str(RUN_ALL), "--chart-from", str(out / "latest.jsonl")]
    cmd += ["--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_ALL_TIMEOUT)
    if importlib.util.find_spec("matplotlib") is None:
        assert proc.returncode == 2
        assert "needs matplotlib" in proc.stderr
    else:
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / "latest.png").read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "latest.jsonl").exists()


def _run_all_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_all", RUN_ALL)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_all_reports_bad_output(tmp_path):
    script = tmp_path / "bench_bad.py"
    script.write_text(
        textwrap.dedent("""
        import sys
        print('{"bench": "bad", "case": "fine"}')
        print("not json")
        print("[1, 2]")
        sys.exit(3)
        """)
    )
    records, problems, _ = _run_all_module().run_script(script, quick=True, timeout=10.0)
    assert [(r["case"], r["script"]) for r in records] == [("fine", "bench_bad.py")]
    text = "\n".join(problems)
    assert "stdout line 2" in text
    assert "stdout line 3" in text
    assert "exited with status 3" in text


def test_run_all_kills_on_timeout(tmp_path):
    script = tmp_path / "bench_slow.py"
    script.write_text('import time\nprint(\'{"bench": "slow", "case": "a"}\', flush=True)\n')
    script.write_text(script.read_text() + "time.sleep(30)\n")
    records, problems, elapsed = _run_all_module().run_script(script, quick=True, timeout=0.5)
    assert [r["case"] for r in records] == ["a"]
    assert problems[0] == "timed out after 0.5 s"
    assert elapsed < 10


def test_interrupt_summaries(quick_run):
    """The stop-check benchmark sums each version up over the library and times a stop."""
    _, records = quick_run
    lines = {r["case"]: r for r in records if r["script"] == "bench_interrupt.py"}
    for version in ("all-loops", "outer-loops", "all-loops/fixed", "outer-loops/fixed", "epoch"):
        summary = lines[f"summary/{version}"]
        assert summary["kernels"] == 10
        assert summary["geomean_ratio"] > 0
        assert summary["worst_ratio"] >= summary["geomean_ratio"] * 0.999
    assert lines["poly_scalar/plain"]["ratio_vs_plain"] == 1.0
    for mode in ("settable", "fixed"):
        assert set(lines[f"stop/{mode}"]) >= TIMING_KEYS
