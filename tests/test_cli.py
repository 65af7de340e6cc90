"""The command line: `sharedwasm demo` and `sharedwasm info`."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import TIMEOUT
from sharedwasm._cli import main


def test_demo_runs_the_reference_scenario(capsys):
    """The demo fills the data with pi, runs batch-1, prints one DONE per worker and checks."""
    assert main(["demo", "--workers", "3", "--pages", "2", "--maximum", "8"]) == 0
    out = capsys.readouterr().out
    assert "2 pages" in out
    assert "run     batch-1" in out
    done = re.findall(r"DONE  worker (\d+)  \[(\d+), (\d+)\)", out)
    assert [int(d[0]) for d in done] == [0, 1, 2]
    total = int(re.search(r"input   (\d+) float32", out).group(1))  # type: ignore[union-attr]
    assert int(done[0][1]) == 0
    assert int(done[-1][2]) == total
    assert "status  [1, 1, 1]" in out
    assert f"check   {total}/{total} elements equal numpy" in out


def test_demo_with_an_element_count(capsys):
    """--elements limits the run and the check covers the untouched rest."""
    assert (
        main(["demo", "--workers", "2", "--pages", "1", "--maximum", "1", "--elements", "7"]) == 0
    )
    out = capsys.readouterr().out
    assert "[0, 4)" in out
    assert "[4, 7)" in out
    assert "check   7/7 elements equal numpy" in out


def test_demo_refuses_bad_sizes(capsys):
    """Inconsistent sizes are reported with exit status 2, not a traceback."""
    assert main(["demo", "--pages", "8", "--maximum", "4"]) == 2
    assert "--pages (8) must be <= --maximum (4)" in capsys.readouterr().err
    assert main(["demo", "--pages", "1", "--maximum", "1", "--elements", "99999999"]) == 2
    assert "--elements must be in [0," in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--workers", "0"])
    assert exc.value.code == 2


def test_python_dash_m_info():
    """`python -m sharedwasm info` prints the versions and CPU count."""
    proc = subprocess.run(
        [sys.executable, "-m", "sharedwasm", "info"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 3,
        check=True,
    )
    assert re.search(r"^wasmtime   50\.", proc.stdout, re.M)
    assert re.search(r"^cpus       \d+ usable", proc.stdout, re.M)
    assert re.search(r"^clang      .*clang version \d+", proc.stdout, re.M)
    assert re.search(r"^wasm-opt   wasm-opt version \d+", proc.stdout, re.M)
