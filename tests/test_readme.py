"""The README's examples work as printed."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

import sharedwasm as sw

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_readme_kernel_example_runs(make_pool):
    """The kernel in the README's ABI section compiles and computes sqrt in place."""
    wat = re.search(r"```wat\n(.*?)```", README, re.S)
    assert wat is not None
    kernel = sw.Kernel.from_wat(wat.group(1))
    pool = make_pool(kernel, sw.Memory(2, 4), 2)
    x = pool.data(np.float32)
    x[:] = np.arange(len(x), dtype=np.float32)
    expected = np.sqrt(x.copy())
    pool.run("readme")
    np.testing.assert_array_equal(pool.data(np.float32), expected)


def test_readme_quickstart_is_two_commands():
    """The Quickstart is exactly two commands: the demo and the tests."""
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert [c for c in commands if c] == ["make demo", "make test"]
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert ci.strip().splitlines()[-1] == "make test"


def test_readme_example_runs_as_printed(tmp_path, monkeypatch, capsys):
    """The Example's C kernel builds as its comment says, and its Python runs and is right."""
    section = README.split("## Example", 1)[1].split("\n## ", 1)[0]
    (c_source,) = re.findall(r"^```c\n(.*?)^```$", section, re.S | re.M)
    (python_source,) = re.findall(r"^```python\n(.*?)^```$", section, re.S | re.M)
    (tmp_path / "saxpy.c").write_text(c_source)
    sw.build(tmp_path / "saxpy.c", optimize="3", simd=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(python_source, "README.md", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "saxpy(start, end, float a, const float *x, float *y)"
    x = np.linspace(0, 1, 10_000_000, dtype=np.float32)
    y = np.float32(2.0) * x + np.float32(1.0)
    np.testing.assert_array_equal(namespace["y"], y)
    total = namespace["total"]
    assert isinstance(total, np.ndarray)
    np.testing.assert_allclose(total.sum(), y.astype(np.float64).sum(), rtol=1e-12)
