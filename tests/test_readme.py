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
