"""`sharedwasm.build` and `sharedwasm build`: C to a kernel module, and every way that fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import sharedwasm as sw
from sharedwasm._build import build_info, build_is_current

DOUBLE = r"""
#include <sharedwasm.h>
SW_KERNEL(start, end) {
    float *x = SW_DATA(float);
    for (uint32_t i = start; i < end; i++) x[i] = x[i] * 2.0f;
}
"""

SIMD = r"""
#include <sharedwasm.h>
#include <wasm_simd128.h>
SW_KERNEL(start, end) {
    float *x = SW_DATA(float);
    for (uint32_t i = start; i + 4 <= end; i += 4)
        wasm_v128_store(x + i, wasm_f32x4_add(wasm_v128_load(x + i), wasm_f32x4_splat(1.0f)));
}
"""


def source(tmp_path: Path, text: str, name: str = "kernel.c") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_build_writes_a_kernel_next_to_the_source(tmp_path):
    out = sw.build(source(tmp_path, DOUBLE))
    assert out == tmp_path / "kernel.wasm"
    kernel = sw.Kernel.from_file(out)
    assert kernel.uses_stack
    assert kernel.stack_checked
    assert kernel.globals == ("data_offset",)
    assert kernel.memory_maximum == 65536
    info = build_info(out.read_bytes())
    assert info is not None
    assert info["optimize"] == "2"
    assert info["stack_check"] is True


def test_build_is_current_follows_source_and_options(tmp_path):
    src = source(tmp_path, DOUBLE)
    out = sw.build(src, tmp_path / "out" / "k.wasm", optimize=3)
    assert out.is_file()
    assert build_is_current(src, out, optimize="3")
    assert not build_is_current(src, out, optimize="2")
    assert not build_is_current(src, out, optimize="3", defines=["X=1"])
    assert not build_is_current(src, tmp_path / "missing.wasm")
    src.write_text(DOUBLE + "\n// changed\n")
    assert not build_is_current(src, out, optimize="3")


def test_compiler_errors_are_build_errors_with_clangs_message(tmp_path):
    src = source(tmp_path, DOUBLE.replace("x[i] * 2.0f;", "x[i] * ;"))
    with pytest.raises(
        sw.BuildError, match=r"kernel\.c:\d+:\d+: error: expected expression"
    ) as info:
        sw.build(src)
    err = info.value
    assert isinstance(err, sw.KernelError)
    assert isinstance(err, ValueError)
    assert err.returncode == 1
    assert "expected expression" in err.stderr
    assert any(arg.endswith("kernel.c") for arg in err.command)
    assert not (tmp_path / "kernel.wasm").exists()
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "#include <sharedwasm.h>\nfloat expf(float);\n"
            "SW_KERNEL(s, e) { float *x = SW_DATA(float); x[s] = expf(x[s]); }",
            "undefined symbol: expf",
        ),
        (
            "#include <sharedwasm.h>\nSW_KERNEL(s, e) { helper(); }",
            "implicit declaration of function 'helper'",
        ),
        (
            "#include <sharedwasm.h>\n#include <stdio.h>\nSW_KERNEL(s, e) {}",
            "stdio.h",
        ),
    ],
    ids=["libm", "undeclared", "libc-header"],
)
def test_link_and_freestanding_errors(tmp_path, text, match):
    with pytest.raises(sw.BuildError, match=match):
        sw.build(source(tmp_path, text))


def test_a_module_without_an_entry_is_not_a_kernel(tmp_path):
    """It links, and the ABI check refuses it before anything is written."""
    src = source(tmp_path, "#include <sharedwasm.h>\nvoid other(uint32_t s, uint32_t e) {}")
    with pytest.raises(sw.KernelError, match="kernel must export an entry: compute_partition"):
        sw.build(src)
    assert not src.with_suffix(".wasm").exists()


def test_simd_needs_the_simd_option(tmp_path):
    src = source(tmp_path, SIMD)
    with pytest.raises(sw.BuildError, match="simd128"):
        sw.build(src)
    kernel = sw.Kernel.from_file(sw.build(src, simd=True))
    assert kernel.uses_stack


def test_compiler_warnings_are_build_warnings(tmp_path):
    text = DOUBLE.replace("float *x", "int unused = 1; float *x")
    with pytest.warns(sw.BuildWarning, match="unused variable 'unused'"):
        sw.build(source(tmp_path, text), cflags=["-Wall"])


def test_cxx_sources_build(tmp_path):
    text = DOUBLE.replace("float *x = SW_DATA(float);", "auto *x = SW_DATA(float);")
    out = sw.build(source(tmp_path, text, "kernel.cpp"))
    assert sw.Kernel.from_file(out).uses_stack


def test_without_stack_checks_no_limits_are_exported(tmp_path):
    kernel = sw.Kernel.from_file(sw.build(source(tmp_path, DOUBLE), stack_check=False))
    assert kernel.uses_stack
    assert not kernel.stack_checked


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"optimize": "4"}, ValueError, "optimize must be one of 0, 1, 2, 3, s, z"),
        ({"optimize": "-O9"}, ValueError, "got '-O9'"),
        ({"simd": 1}, TypeError, "bools"),
        ({"defines": "X=1"}, TypeError, "sequences of strings"),
    ],
)
def test_bad_options(tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        sw.build(source(tmp_path, DOUBLE), **kwargs)


def test_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        sw.build(tmp_path / "nowhere.c")


def test_missing_clang_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("SHAREDWASM_CLANG", str(tmp_path / "no-clang"))
    with pytest.raises(sw.ToolchainNotFoundError, match="SHAREDWASM_CLANG") as info:
        sw.build(source(tmp_path, DOUBLE))
    assert isinstance(info.value, FileNotFoundError)


def test_missing_binaryen_is_named_and_avoidable(tmp_path, monkeypatch):
    # A PATH with clang and wasm-ld but no wasm-opt.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("clang", "wasm-ld"):
        found = shutil.which(tool)
        assert found is not None
        # Debian's clang runs its linker by a versioned name (wasm-ld-14).
        for path in Path(found).parent.glob(f"{tool}*"):
            (bin_dir / path.name).symlink_to(path)
    monkeypatch.setenv("PATH", str(bin_dir))
    src = source(tmp_path, DOUBLE)
    with pytest.raises(sw.ToolchainNotFoundError, match=r"apt-get install binaryen"):
        sw.build(src)
    assert sw.Kernel.from_file(sw.build(src, stack_check=False)).uses_stack


def test_get_include_builds_by_hand(tmp_path):
    """The documented manual build: clang with the header and the ABI stub."""
    include = Path(sw.get_include())
    src = source(tmp_path, DOUBLE)
    out = tmp_path / "by-hand.wasm"
    command = [
        "clang", "--target=wasm32", "-O2", "-ffreestanding", "-nostdlib", "-matomics",
        "-mbulk-memory", "-mmutable-globals", "-I", str(include),
        "-Wl,--no-entry,--import-memory,--shared-memory,--max-memory=4294967296",
        "-Wl,--export=__stack_pointer,--export=__heap_base,--export=__data_end",
        str(src), str(include / "sharedwasm_abi.s"), "-o", str(out),
    ]  # fmt: skip
    subprocess.run(command, check=True, timeout=120)
    kernel = sw.Kernel.from_file(out)
    assert kernel.uses_stack
    assert not kernel.stack_checked


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sharedwasm", "build", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        check=False,
    )


def test_cli_builds_with_options(tmp_path):
    source(tmp_path, SIMD)
    proc = cli("kernel.c", "-O3", "--simd", "-o", "out/simd.wasm", "-D", "UNUSED=1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("built out/simd.wasm: ")
    assert "a stack per worker, checked" in proc.stdout
    info = build_info((tmp_path / "out" / "simd.wasm").read_bytes())
    assert info is not None
    assert (info["optimize"], info["simd"]) == ("3", True)


def test_cli_reports_clang_errors(tmp_path):
    source(tmp_path, DOUBLE.replace("2.0f;", "2.0f"))
    proc = cli("kernel.c", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("sharedwasm build: clang could not build kernel.c")
    assert "error: expected ';'" in proc.stderr


def test_cli_reports_a_missing_source(tmp_path):
    proc = cli("nowhere.c", cwd=tmp_path)
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr


def test_cli_prints_warnings_and_succeeds(tmp_path):
    source(tmp_path, DOUBLE.replace("SW_KERNEL", "static int f(void) {}\nSW_KERNEL"))
    proc = cli("kernel.c", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr
    assert (tmp_path / "kernel.wasm").is_file()
