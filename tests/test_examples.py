"""The examples run and equal numpy, and docs/writing-kernels.md works as printed."""

from __future__ import annotations

import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

import sharedwasm as sw
from conftest import TIMEOUT
from sharedwasm import _build

REPO = Path(__file__).parent.parent
EXAMPLES = REPO / "examples"
DOCS = (REPO / "docs" / "writing-kernels.md").read_text()
EXTRA = "pip install 'sharedwasm[examples]'"


def blocks(language: str) -> list[str]:
    """Return the docs' fenced code blocks in `language`, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```$", DOCS, re.S | re.M)


def c_snippets() -> dict[str, str]:
    """Return the docs' C and C++ kernels by the file name each one's first comment gives it."""
    named = {}
    for text in blocks("c") + blocks("cpp"):
        name = re.match(r"/\* (\w+\.(?:c|cc)): ", text)
        assert name is not None, f"a C snippet must open with /* NAME.c: ... */:\n{text}"
        named[name.group(1)] = text
    return named


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """A copy of examples/, so builds land in tmp_path and not in the source tree."""
    copy = tmp_path / "examples"
    copy.mkdir()
    for pattern in ("*.c", "*.py"):
        for path in EXAMPLES.glob(pattern):
            shutil.copy(path, copy)
    return copy


def run(script: Path, *args: str | Path, prelude: str = "") -> subprocess.CompletedProcess[str]:
    """Run an example as `python script args...`, after `prelude` if one is given."""
    argv = [str(script), *map(str, args)]
    if prelude:
        runner = f"{prelude}; import runpy, sys; sys.argv = sys.argv[1:]; "
        runner += "runpy.run_path(sys.argv[0], run_name='__main__')"
        argv = ["-c", runner, *argv]
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 3,
        cwd=script.parent,
        check=False,
    )


def box_blur(image: npt.NDArray[np.uint8], passes: int) -> npt.NDArray[np.uint8]:
    """The 3x3 mean per channel, edges repeated, rounded to nearest (9ths never tie)."""
    height, width = image.shape[:2]
    out = image.astype(np.float64)
    for _ in range(passes):
        padded = np.pad(out, ((1, 1), (1, 1), (0, 0)), mode="edge")
        total = sum(padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3))
        out = np.rint(total / 9)
    return out.astype(np.uint8)


@pytest.mark.parametrize(("mode", "channels"), [("L", 1), ("RGB", 3), ("RGBA", 4)])
def test_blur_equals_numpy(examples, tmp_path, mode, channels):
    """blur.py writes an image of the input's size and mode that equals a numpy box blur."""
    pixels = np.random.default_rng(7).integers(0, 256, (23, 37, channels), dtype=np.uint8)
    Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels).save(tmp_path / "in.png")
    proc = run(
        examples / "blur.py",
        tmp_path / "in.png",
        tmp_path / "out.png",
        "--workers",
        "3",
        "--passes",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    assert "check   output equals numpy" in proc.stdout
    with Image.open(tmp_path / "out.png") as out:
        assert (out.size, out.mode) == ((37, 23), mode)
        blurred = np.asarray(out).reshape(23, 37, channels)
    np.testing.assert_array_equal(blurred, box_blur(pixels, 2))


@pytest.mark.parametrize(("passes", "threshold"), [(1, 0), (2, 128), (3, 255)])
def test_blur_then_threshold_pipeline_equals_numpy(examples, tmp_path, passes, threshold):
    """blur.py --threshold T blurs, then thresholds the blurred image, as numpy does."""
    pixels = np.random.default_rng(threshold).integers(0, 256, (31, 19, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    proc = run(
        examples / "blur.py",
        tmp_path / "in.png",
        tmp_path / "out.png",
        "--passes",
        str(passes),
        "--threshold",
        str(threshold),
        "--workers",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    assert "pool    2 workers running blur.wasm (entries blur, threshold)" in proc.stdout
    assert re.search(rf"^run     threshold {threshold} over {pixels.size} bytes: ", proc.stdout,
                     re.M)  # fmt: skip
    assert "check   output equals numpy" in proc.stdout
    with Image.open(tmp_path / "out.png") as out:
        got = np.asarray(out)
    expected = np.where(box_blur(pixels, passes) >= threshold, 255, 0)
    np.testing.assert_array_equal(got, expected)
    assert set(np.unique(got)) <= {0, 255}


def test_blur_refuses_a_threshold_out_of_range(examples, tmp_path):
    """A threshold outside [0, 255] is a usage error."""
    proc = run(examples / "blur.py", "--demo", tmp_path / "o.png", "--threshold", "256")
    assert proc.returncode == 2
    assert "--threshold: must be in [0, 255] (got 256)" in proc.stderr


def test_blur_demo_builds_only_when_stale(examples, tmp_path):
    """blur.py --demo builds blur.wasm when it is missing or its source changed, not otherwise."""
    out = tmp_path / "demo.png"
    first = run(examples / "blur.py", "--demo", out, "--size", "50x30", "--workers", "2")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("image   test image: 50 x 30")
    assert re.search(r"^build   blur\.wasm from blur\.c in ", first.stdout, re.M)
    with Image.open(out) as image:
        assert (image.size, image.mode) == ((50, 30), "RGB")
    again = run(examples / "blur.py", "--demo", out, "--size", "50x30")
    assert again.returncode == 0, again.stderr
    assert not re.search(r"^build ", again.stdout, re.M)
    source = examples / "blur.c"
    source.write_text(source.read_text() + "/* changed */\n")
    changed = run(examples / "blur.py", "--demo", out, "--size", "50x30")
    assert re.search(r"^build   blur\.wasm from blur\.c in ", changed.stdout, re.M)


def test_blur_reports_an_unreadable_input(examples, tmp_path):
    """A file that is not an image is a one-line error and exit status 1."""
    (tmp_path / "in.png").write_text("not a png")
    proc = run(examples / "blur.py", tmp_path / "in.png", tmp_path / "out.png")
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"blur.py: cannot read {tmp_path / 'in.png'}: ")
    assert not (tmp_path / "out.png").exists()


def test_mandelbrot_renders(examples, tmp_path):
    """mandelbrot.py writes a PNG of the requested size; 1, N static and N dynamic agree."""
    out = tmp_path / "m.png"
    proc = run(
        examples / "mandelbrot.py",
        out,
        "--width",
        "64",
        "--height",
        "40",
        "--max-iter",
        "50",
        "--workers",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^run     2 workers, dynamic .* ms, speed-up ", proc.stdout, re.M)
    assert "check   the three renders are identical" in proc.stdout
    with Image.open(out) as image:
        assert (image.size, image.mode) == ((64, 40), "RGB")


def mandelbrot_numpy(view: Any) -> npt.NDArray[np.uint32]:
    """mandelbrot.c's counts in numpy float64, the kernel's operations in its order."""
    cr = view.x_min + np.arange(view.width, dtype=np.float64) * view.step
    ci = view.y_max - np.arange(view.height, dtype=np.float64)[:, None] * view.step
    shape = (view.height, view.width)
    cr, ci = np.broadcast_to(cr, shape), np.broadcast_to(ci, shape)
    zr, zi, zr2, zi2 = (np.zeros(cr.shape) for _ in range(4))
    counts = np.zeros(cr.shape, np.uint32)
    for _ in range(view.max_iter):
        going = zr2 + zi2 <= 4.0
        zi = np.where(going, 2.0 * zr * zi + ci, zi)
        zr = np.where(going, zr2 - zi2 + cr, zr)
        zr2, zi2 = zr * zr, zi * zi
        counts += going
    return counts


@pytest.mark.parametrize("workers", [1, 3])
def test_mandelbrot_counts_equal_numpy(examples, workers):
    """The example's render, static and dynamic, equals numpy's float64 iteration exactly."""
    module = runpy.run_path(str(examples / "mandelbrot.py"))
    kernel = module["load_kernel"]()
    view = module["View"](53, 37, 60, *module["viewport"](53, 37, (-0.75, 0.5), 3.0))
    expected = mandelbrot_numpy(view)
    assert len(np.unique(expected)) > 10
    for schedule in ("static", "dynamic"):
        counts, result = module["render"](kernel, view, workers, schedule)
        np.testing.assert_array_equal(counts, expected)
        assert sum(d.elements for d in result.done) == view.height


@pytest.mark.parametrize(
    ("script", "args"), [("blur.py", ["--demo", "o.png"]), ("mandelbrot.py", ["o.png"])]
)
def test_examples_name_the_extra_without_pillow(examples, script, args):
    """Without Pillow an example exits 1 and says which extra to install."""
    proc = run(examples / script, *args, prelude="import sys; sys.modules['PIL'] = None")
    assert proc.returncode == 1
    assert EXTRA in proc.stderr
    assert not (examples / "o.png").exists()


def test_documented_build_command(tmp_path):
    """The docs' `sharedwasm build examples/blur.c ...` builds what blur.py would build."""
    command = re.search(r"^sharedwasm build examples/blur\.c .*$", DOCS, re.M)
    assert command is not None
    argv = shlex.split(command.group(0))
    assert argv[argv.index("-o") + 1] == "blur.wasm"
    (tmp_path / "examples").mkdir()
    shutil.copy(EXAMPLES / "blur.c", tmp_path / "examples")
    script = Path(sys.executable).with_name("sharedwasm")
    program = [str(script)] if script.exists() else [sys.executable, "-m", "sharedwasm"]
    proc = subprocess.run(
        program + argv[1:],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 3,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("built blur.wasm: ")
    kernel = sw.Kernel.from_file(tmp_path / "blur.wasm")
    assert kernel.uses_stack
    assert kernel.stack_checked
    # The same options as blur.c's header comment and blur.py's build.
    assert "sharedwasm build examples/blur.c -O3 --simd\n" in (EXAMPLES / "blur.c").read_text()
    assert sw.build_is_current(
        tmp_path / "examples" / "blur.c", tmp_path / "blur.wasm", optimize="3", simd=True
    )


@pytest.mark.parametrize("name", sorted(c_snippets()))
def test_docs_c_snippet_builds(tmp_path, name):
    """Each C kernel in docs/writing-kernels.md builds without a warning, with typed entries."""
    source = tmp_path / name
    source.write_text(c_snippets()[name])
    kernel = sw.Kernel.from_file(sw.build(source))
    assert kernel.uses_stack
    assert kernel.entries
    assert all(
        entry.typed and entry.name != "compute_partition" for entry in kernel.entries.values()
    )


def test_docs_python_snippets_run(tmp_path, monkeypatch):
    """The docs' Python snippets run, in order, beside the docs' C kernels."""
    for name, text in c_snippets().items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    snippets = blocks("python")
    assert len(snippets) >= 3
    for snippet in snippets:
        exec(compile(snippet, "writing-kernels.md", "exec"), {"__name__": "snippet"})


def test_docs_build_by_hand(tmp_path):
    """The docs' clang and wasm-opt commands use sharedwasm build's flags and make a kernel."""
    (script,) = [b for b in blocks("sh") if "clang --target=wasm32" in b]
    # Words of the commands and of the variables they expand.
    words = set(script.replace("\\\n", " ").replace('"', " ").split())
    expected = {*_build._COMPILE_FLAGS, *_build._LINK_FLAGS, *_build._WASM_OPT_FEATURES}
    assert expected - words == set()
    assert {"--stack-check", "-g", "$INC/sharedwasm_abi.s"} <= words
    (tmp_path / "kernel.c").write_text(c_snippets()["scale.c"])
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        timeout=TIMEOUT * 3,
        check=True,
    )
    kernel = sw.Kernel.from_file(tmp_path / "kernel.wasm")
    assert kernel.uses_stack
    assert kernel.stack_checked
    # No signature record by hand: the entry is there, its parameters untyped.
    assert str(kernel.entries["scale"]) == "scale(start, end, f32 arg0, i32 arg1)"
