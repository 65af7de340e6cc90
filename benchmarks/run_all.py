"""Run every benchmark, collect their JSON lines and draw one chart.

Each `benchmarks/bench_*.py` runs in its own subprocess, one after another
(never two at once: they time things), with a timeout. Their JSON lines go
to `OUT/latest.jsonl`, each tagged with the `script` it came from, and
`OUT/latest.png` gets one panel per benchmark with one bar per case: the
line's `median_us`, or the field its `metric` names; sharedwasm's bars are
orange, a dashed line marks a common `perfect_us`. Panels whose values span
more than a factor of 20 use a log scale.

Exit status: 0 if every benchmark succeeded, 1 if one failed, timed out or
printed a stdout line that is not a JSON object with `bench` and `case`
(everything else is still collected), 2 if the chart was asked for and
matplotlib is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results"
FULL_TIMEOUT = 600.0
QUICK_TIMEOUT = 60.0
LOG_SCALE_SPAN = 20.0
HIGHLIGHT, PLAIN = "#dd8452", "#4c72b0"
"""Bar colours: sharedwasm's cases, everyone else's."""
STAT_KEYS = {"median_us", "p90_us", "p99_us", "min_us", "n"}
"""Fields of `_harness.summarize`, never used to tell two cases apart."""


def scripts(only: Sequence[str] = ()) -> list[Path]:
    """Return the benchmark scripts, sorted, keeping those whose name contains one of `only`."""
    found = sorted(HERE.glob("bench_*.py"))
    if only:
        found = [p for p in found if any(word in p.stem for word in only)]
    return found


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""


def _kill_session(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def run_script(
    script: Path, *, quick: bool, timeout: float
) -> tuple[list[dict[str, Any]], list[str], float]:
    """Run one benchmark; return its JSON lines, its problems and its wall time.

    The script runs in its own session so that a timeout kills everything it
    started (a process pool's children included), not just the script.
    """
    cmd = [sys.executable, str(script), *(["--quick"] if quick else [])]
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        cwd=HERE.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    problems: list[str] = []
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(proc.pid)
        out, err = proc.communicate()
        problems.append(f"timed out after {timeout:g} s")
    elapsed = time.perf_counter() - t0
    _kill_session(proc.pid)  # whatever a crashed benchmark left behind
    out, err = _text(out), _text(err)
    if proc.returncode and not problems:
        problems.append(f"exited with status {proc.returncode}")
    records: list[dict[str, Any]] = []
    for number, line in enumerate(out.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not (
            isinstance(record, dict)
            and isinstance(record.get("bench"), str)
            and isinstance(record.get("case"), str)
        ):
            problems.append(
                f"stdout line {number} is not a JSON object with bench and case: {line!r:.200}"
            )
            continue
        records.append({**record, "script": script.name})
    if not records and not problems:
        problems.append("printed no JSON lines")
    if problems and err.strip():
        problems.append("stderr:\n" + "\n".join(err.strip().splitlines()[-30:]))
    return records, problems, elapsed


def metric_of(record: dict[str, Any]) -> tuple[str, float] | None:
    """Return the name and value of the figure a line asks to plot, if it has one."""
    name = record.get("metric", "median_us")
    value = record.get(name) if isinstance(name, str) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return name, float(value)


def labels(records: Sequence[dict[str, Any]]) -> list[str]:
    """Label each line by its case, adding the scalar fields that tell equal cases apart.

    Lines are only compared with lines of the same benchmark.
    """
    out = []
    for record in records:
        twins = [r for r in records if (r["bench"], r["case"]) == (record["bench"], record["case"])]
        extra = []
        if len(twins) > 1:
            for key, value in record.items():
                if key in STAT_KEYS or key in {"bench", "case", "env", "script", "metric"}:
                    continue
                if not isinstance(value, str | int | float | None):
                    continue
                if any(t.get(key) != value for t in twins):
                    extra.append(f"{key}={value}")
        out.append(" ".join([record["case"], *extra]))
    return out


def describe(record: dict[str, Any]) -> str:
    """Return a line's plotted figure, or else its float fields (ratios, say), as text."""
    found = metric_of(record)
    if found is not None:
        return f"{_fmt(found[1])} {found[0]}"
    floats = [
        f"{key}={_fmt(value)}"
        for key, value in record.items()
        if isinstance(value, float) and key not in STAT_KEYS
    ]
    return " ".join(floats) or "-"


def _fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.3g}"
    return f"{value:.2g}"


def draw(records: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Draw one panel per (benchmark, metric) with a bar per case into a PNG.

    Raises:
        ImportError: matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[tuple[str, str], list[tuple[dict[str, Any], float]]] = {}
    for record in records:
        found = metric_of(record)
        if found is not None:
            panels.setdefault((record["bench"], found[0]), []).append((record, found[1]))
    if not panels:
        panels[("no results", "")] = []
    cols = 1 if len(panels) == 1 else 2
    rows = math.ceil(len(panels) / cols)
    sizes = [len(lines) for lines in panels.values()]
    # Each row of panels is as tall as its longest list of bars.
    heights = [1.2 + 0.35 * max(1, *sizes[r * cols : (r + 1) * cols]) for r in range(rows)]
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(7.5 * cols, sum(heights)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
        layout="constrained",
    )
    for ax, ((bench, metric), bars) in zip(axes.flat, panels.items(), strict=False):
        lines = [record for record, _ in bars]
        values = [value for _, value in bars]
        names = labels(lines)
        y = list(range(len(values)))
        colors = [HIGHLIGHT if "sharedwasm" in name else PLAIN for name in names]
        ax.barh(y, values, color=colors)
        perfect = {r.get("perfect_us") for r in lines}
        if metric == "median_us" and len(perfect) == 1 and isinstance(p := perfect.pop(), float):
            ax.axvline(p, color="#555555", linestyle="--", linewidth=1)
            ax.annotate("perfect", (p, 0), xytext=(2, -12), textcoords="offset points", fontsize=7)
        ax.set_yticks(y, names, fontsize=8)
        ax.invert_yaxis()
        positive = [v for v in values if v > 0]
        if (
            positive
            and max(positive) / min(positive) > LOG_SCALE_SPAN
            and len(positive) == len(values)
        ):
            ax.set_xscale("log")
        for i, v in enumerate(values):
            ax.annotate(
                _fmt(v), (v, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7
            )
        unit = "median µs" if metric == "median_us" else str(lines[0].get("unit", metric))
        ax.set_title(bench, fontsize=10, loc="left")
        ax.set_xlabel(unit, fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.margins(x=0.15)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def chart_title(records: Sequence[dict[str, Any]], quick: bool) -> str:
    """Return the chart's title: the environment of the first line, and the mode."""
    env = records[0].get("env", {}) if records else {}
    parts = [f"{k} {env[k]}" for k in ("git", "cpus", "python", "wasmtime", "numpy") if k in env]
    return (
        "sharedwasm benchmarks"
        + (" (quick)" if quick else "")
        + ("  —  " if parts else "")
        + ", ".join(parts)
    )


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.partition("\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})"
    )
    p.add_argument("--no-chart", action="store_true", help="write the JSON lines only")
    p.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per benchmark (default 600, 60 with --quick)",
    )
    p.add_argument(
        "--only",
        nargs="+",
        default=(),
        metavar="WORD",
        help="run the benchmarks whose file name contains WORD",
    )
    p.add_argument(
        "--chart-from",
        type=Path,
        default=None,
        metavar="JSONL",
        help="run nothing: draw the chart of an earlier latest.jsonl",
    )
    args = p.parse_args(argv)
    timeout = args.timeout or (QUICK_TIMEOUT if args.quick else FULL_TIMEOUT)
    jsonl = args.out / "latest.jsonl"
    png = args.out / "latest.png"

    failed = False
    if args.chart_from is not None:
        records = [
            json.loads(line) for line in args.chart_from.read_text().splitlines() if line.strip()
        ]
    else:
        records = []
        found = scripts(args.only)
        if not found:
            print(f"run_all: no benchmark matches {list(args.only)}", file=sys.stderr)
            return 1
        for script in found:
            print(f"run_all: {script.name} ...", file=sys.stderr, flush=True)
            lines, problems, elapsed = run_script(script, quick=args.quick, timeout=timeout)
            records.extend(lines)
            status = "FAILED" if problems else "ok"
            print(
                f"run_all: {script.name} {status}, {len(lines)} lines in {elapsed:.1f} s",
                file=sys.stderr,
            )
            for problem in problems:
                print(f"run_all:   {problem}", file=sys.stderr)
            failed = failed or bool(problems)
        args.out.mkdir(parents=True, exist_ok=True)
        jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
        print(f"run_all: wrote {jsonl}", file=sys.stderr)

    names = labels(records)
    width = max((len(name) for name in names), default=0)
    for record, label in zip(records, names, strict=True):
        print(f"{record['bench']:<16} {label:<{width}}  {describe(record)}")

    if not args.no_chart:
        try:
            draw(records, png, chart_title(records, args.quick))
        except ImportError as exc:
            print(
                f"run_all: drawing the chart needs matplotlib ({exc}); install it with "
                "`.venv/bin/pip install matplotlib`, or pass --no-chart",
                file=sys.stderr,
            )
            return 2
        print(f"run_all: wrote {png}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
