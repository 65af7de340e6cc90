"""Coverage-guided fuzzing of kernel loading with atheris (libFuzzer for Python).

Run by hand from the repository root (atheris is not a dependency of the project)::

    .venv/bin/pip install atheris
    .venv/bin/python fuzz/fuzz_kernel.py -atheris_runs=100000
    .venv/bin/python fuzz/fuzz_kernel.py -max_total_time=60 fuzz/corpus   # keep a corpus

Any libFuzzer flag works (`-help=1` lists them). Each input is fed to
`Kernel.from_bytes` or, decoded, to `Kernel.from_wat`. Its first byte picks
how, so that most inputs get past the wasm header and reach the ABI check:

0. the bytes as they are;
1. the bytes after a valid wasm header;
2. a valid kernel (one of `tests/kernels/*.wat`) with edits the input spells out;
3. the input as WebAssembly text;
4. the input as text inside a module that already imports a shared memory
   and exports compute_partition.

Only `KernelError` may escape. Any other exception, or a crash of the
interpreter, is a finding: libFuzzer writes the input to `crash-<sha1>` and
stops; replay it with `.venv/bin/python fuzz/fuzz_kernel.py crash-<sha1>`.
Accepted kernels are inspected, never run: a mutant may loop forever.

Known finding: a module with v128 or a GC reference type in an import or in
compute_partition's signature aborts the process inside wasmtime ("support for
v128 is not implemented"; see the xfail tests in tests/test_fuzz.py). To go on
past it, add `-fork=1 -ignore_crashes=1`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import wasmtime

import sharedwasm as sw
from sharedwasm._kernel import PROVIDED_GLOBALS

ROOT = Path(__file__).resolve().parent.parent
HEADER = b"\0asm\x01\0\0\0"
MEMORY = '(import "env" "memory" (memory 1 65536 shared))'
ENTRY = '(func (export "compute_partition") (param i32 i32))'


class DataProvider(Protocol):
    """The part of `atheris.FuzzedDataProvider` this harness uses."""

    def ConsumeIntInRange(self, low: int, high: int) -> int: ...
    def ConsumeInt(self, size: int) -> int: ...
    def ConsumeBytes(self, count: int) -> bytes: ...
    def ConsumeUnicodeNoSurrogates(self, count: int) -> str: ...


def seeds() -> list[bytes]:
    """Return the binaries of the test kernels and the built-in one."""
    paths = sorted((ROOT / "tests" / "kernels").glob("*.wat"))
    paths.append(ROOT / "src" / "sharedwasm" / "_kernels" / "map_f32.wat")
    return [bytes(wasmtime.wat2wasm(p.read_text())) for p in paths]


SEEDS = seeds()


def check(kind: str, payload: bytes | str) -> None:
    """Compile `payload`; a Kernel must be sound, and KernelError is the only error allowed."""
    try:
        if isinstance(payload, str):
            kernel = sw.Kernel.from_wat(payload, name=kind)
        else:
            kernel = sw.Kernel.from_bytes(payload, name=kind)
    except sw.KernelError:
        return
    assert repr(kernel).startswith(f"<sharedwasm.Kernel {kind!r} memory=")
    assert 0 <= kernel.memory_minimum <= kernel.memory_maximum <= 65536
    assert set(kernel.globals) <= set(PROVIDED_GLOBALS)


def edit(seed: bytes, fdp: DataProvider) -> bytes:
    """Apply the edits the input spells out (overwrite, insert, delete, truncate) to `seed`."""
    data = bytearray(seed)
    for _ in range(fdp.ConsumeIntInRange(0, 8)):
        pos = fdp.ConsumeIntInRange(0, len(data))
        op = fdp.ConsumeIntInRange(0, 3)
        if op == 0 and pos < len(data):
            data[pos] = fdp.ConsumeInt(1) & 0xFF
        elif op == 1:
            data[pos:pos] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 8))
        elif op == 2:
            del data[pos : pos + fdp.ConsumeIntInRange(1, 16)]
        else:
            del data[pos:]
    return bytes(data)


def one_input(data: bytes, provider: Callable[[bytes], DataProvider]) -> None:
    """Feed one libFuzzer input to the kernel loader, in the way its first byte picks."""
    if not data:
        return
    mode, rest = data[0] % 5, data[1:]
    if mode == 0:
        check("bytes", rest)
    elif mode == 1:
        check("after-header", HEADER + rest)
    elif mode == 2:
        fdp = provider(rest)
        seed = SEEDS[fdp.ConsumeIntInRange(0, len(SEEDS) - 1)]
        check("mutant", edit(seed, fdp))
    else:
        # No lone surrogates: from_wat lets those out as UnicodeEncodeError, a known bug.
        text = provider(rest).ConsumeUnicodeNoSurrogates(len(rest))
        check("text", text if mode == 3 else f"(module {MEMORY} {ENTRY} {text})")


def main() -> None:
    """Instrument the Python code and hand control to libFuzzer."""
    import atheris  # type: ignore[import-not-found, import-untyped, unused-ignore]

    # Mutants are compiled once each: caching their code would only fill the
    # user's compiled-code cache and add a write to every input.
    os.environ.setdefault("SHAREDWASM_CACHE", "0")
    atheris.instrument_all()
    atheris.Setup(sys.argv, lambda data: one_input(data, atheris.FuzzedDataProvider))
    atheris.Fuzz()


if __name__ == "__main__":
    main()
