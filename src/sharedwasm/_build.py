"""`build`: C (or C++) to a shared-memory kernel, with Debian's clang, lld and binaryen.

What a kernel for a pool needs from the toolchain, and why each flag:

* `--target=wasm32 -ffreestanding -nostdlib`: a bare module, no libc, no WASI.
* `-matomics -mbulk-memory`: a shared memory needs both; with them wasm-ld
  makes the data segments passive and initialises them once per memory from
  a start function guarded by an atomic flag, so N workers instantiating
  together do not rewrite statics one of them already changed.
* `-mmutable-globals`: `__stack_pointer` is exported so the pool can give
  every worker its own stack; exporting a mutable global needs the feature.
* `-ftls-model=local-exec`: the only thread-local model wasm-ld supports
  without Emscripten; each worker's block is set up by `__wasm_init_tls`.
* `--import-memory --shared-memory --max-memory=4GiB`: the pool owns the
  memory; the largest maximum accepts any `Memory`.
* `--no-entry -z stack-size=0`: no `main`, and no linker stack, because the
  pool places one stack per worker after the worker records.
* `--export=__stack_pointer,__heap_base,__data_end` and the TLS symbols: what
  the pool reads to keep the status board off the static data and to give
  each worker its stack and thread-local block; `__sharedwasm_abi_version`
  (from the ABI stub) records the ABI and keeps the memory import in a
  kernel that never touches memory.
* `wasm-opt -O<level> --stack-check`: every change of the stack pointer is
  checked against limits the pool sets per worker (`__set_stack_limits`), so
  a kernel that overflows its stack traps instead of writing over a
  neighbour's; binaryen's optimiser runs at the same level first, as clang's
  driver would run it, and `-g` keeps the function names for trap messages.
  Without stack checks there is no wasm-opt step at all.

The output carries a `sharedwasm.build` custom section recording the digest
of everything that went into it, which `build_is_current` compares to decide
whether a `.wasm` is stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import _binary
from ._entries import ENTRY_PREFIX, SIGNATURE_SECTION, SIGNATURE_VERSION
from ._errors import BuildError, BuildWarning, ToolchainNotFoundError

INCLUDE_DIR = Path(__file__).with_name("include")
ABI_SOURCE = INCLUDE_DIR / "sharedwasm_abi.s"
HEADER = INCLUDE_DIR / "sharedwasm.h"
OPTIMIZE_LEVELS = ("0", "1", "2", "3", "s", "z")
BUILD_SECTION = "sharedwasm.build"
_CXX_SUFFIXES = {".cc", ".cpp", ".cxx", ".c++"}
_TIMEOUT = 300.0

_COMPILE_FLAGS = (
    "--target=wasm32",
    "-ffreestanding",
    "-nostdlib",
    "-matomics",
    "-mbulk-memory",
    "-mmutable-globals",
    "-ftls-model=local-exec",
    # A call to an undeclared function would otherwise compile, then fail at
    # link time as an undefined symbol far from the line that caused it.
    "-Werror=implicit-function-declaration",
)
_LINK_FLAGS = (
    "-Wl,--no-entry",
    "-Wl,--import-memory",
    "-Wl,--shared-memory",
    "-Wl,--max-memory=4294967296",
    "-Wl,-z,stack-size=0",
    "-Wl,--export-if-defined=compute_partition",
    "-Wl,--export=__stack_pointer",
    "-Wl,--export=__heap_base",
    "-Wl,--export=__data_end",
    "-Wl,--export=__sharedwasm_abi_version",
    "-Wl,--export-if-defined=__wasm_init_tls",
    "-Wl,--export-if-defined=__tls_size",
    "-Wl,--export-if-defined=__tls_align",
    # Exported, C++ constructors are the pool's to run, once per pool; left
    # alone, wasm-ld would wrap every export in a call to them (each call,
    # on each worker, would construct every global object again).
    "-Wl,--export-if-defined=__wasm_call_ctors",
)
_WASM_OPT_FEATURES = (
    "--enable-threads",
    "--enable-bulk-memory",
    "--enable-mutable-globals",
    "--enable-sign-ext",
)


def get_include() -> str:
    """Return the directory holding `sharedwasm.h` and `sharedwasm_abi.s`.

    For builds that drive clang directly: add `-I` with this directory and link
    `sharedwasm_abi.s` from it.
    """
    return str(INCLUDE_DIR)


def _tool(env: str, names: Sequence[str], package: str) -> str:
    override = os.environ.get(env)
    if override:
        found = shutil.which(override)
        if found is None:
            raise ToolchainNotFoundError(f"{env}={override!r} does not name an executable program")
        return found
    for name in names:
        found = shutil.which(name)
        if found is not None:
            return found
    raise ToolchainNotFoundError(
        f"{names[0]} was not found on PATH: install Debian's {package} "
        f"(apt-get install {package}) or set {env} to the program"
    )


def _clang() -> str:
    return _tool("SHAREDWASM_CLANG", ("clang", *(f"clang-{v}" for v in range(30, 13, -1))), "clang")


def _wasm_opt() -> str:
    return _tool("SHAREDWASM_WASM_OPT", ("wasm-opt",), "binaryen")


def _linker() -> str:
    # clang looks for wasm-ld on PATH; without it the error names a linker
    # the user never asked for, so say which package provides it.
    found = shutil.which("wasm-ld")
    if found is None:
        raise ToolchainNotFoundError(
            "wasm-ld was not found on PATH: install Debian's lld (apt-get install lld)"
        )
    return found


def toolchain() -> dict[str, str]:
    """Describe each program `build` uses: its version line, or why it is unusable."""
    described = {}
    for label, find in (("clang", _clang), ("wasm-ld", _linker), ("wasm-opt", _wasm_opt)):
        try:
            program = find()
        except ToolchainNotFoundError as exc:
            described[label] = f"missing: {exc}"
            continue
        try:
            proc = subprocess.run(
                [program, "--version"], capture_output=True, text=True, timeout=30, check=False
            )
            first = (proc.stdout or proc.stderr).strip().splitlines()
            described[label] = f"{first[0] if first else '?'} ({program})"
        except (OSError, subprocess.TimeoutExpired) as exc:
            described[label] = f"unusable: {exc} ({program})"
    return described


def _run(command: list[str], what: str, source: Path) -> str:
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, timeout=_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BuildError(
            f"{what} did not finish building {source.name} within {_TIMEOUT:.0f} s",
            command=command,
            stderr="",
            returncode=None,
        ) from exc
    if proc.returncode != 0:
        raise BuildError(
            f"{what} could not build {source.name} (exit {proc.returncode}):\n"
            f"{proc.stderr.strip()}",
            command=command,
            stderr=proc.stderr,
            returncode=proc.returncode,
        )
    return proc.stderr


def _digest(sources: Sequence[Path], flags: Sequence[str], stack_check: bool) -> str:
    """A digest of what determines the output: the sources, our header and
    ABI stub, the flags and the build recipe itself."""
    h = hashlib.sha256()
    parts = [*(src.read_bytes() for src in sources), HEADER.read_bytes(), ABI_SOURCE.read_bytes()]
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    recipe = {
        "flags": list(flags),
        "link": list(_LINK_FLAGS),
        "stack_check": stack_check,
        "steps": "compile, link, wasm-opt -O, entry signatures",
    }
    h.update(json.dumps(recipe, sort_keys=True).encode())
    return h.hexdigest()


def _sources(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(source, str | os.PathLike):
        return [Path(source)]
    if not isinstance(source, Sequence) or not source:
        raise TypeError(f"source must be a path or a non-empty list of paths (got {source!r})")
    return [Path(s) for s in source]


def _options(
    source: Path,
    optimize: str | int,
    simd: bool,
    stack_check: bool,
    defines: Iterable[str],
    cflags: Iterable[str],
) -> tuple[str, list[str]]:
    """Check the build options; return the optimisation level and clang's flags."""
    level = str(optimize)
    if level.startswith("-O"):
        level = level[2:]
    if level not in OPTIMIZE_LEVELS:
        raise ValueError(f"optimize must be one of {', '.join(OPTIMIZE_LEVELS)} (got {optimize!r})")
    if not isinstance(simd, bool) or not isinstance(stack_check, bool):
        raise TypeError(f"simd and stack_check must be bools (got {simd!r}, {stack_check!r})")
    if isinstance(defines, str) or isinstance(cflags, str):
        raise TypeError("defines and cflags must be sequences of strings, not one string")
    flags = [*_COMPILE_FLAGS, f"-O{level}"]
    if simd:
        flags.append("-msimd128")
    if source.suffix.lower() in _CXX_SUFFIXES:
        flags += ["-fno-exceptions", "-fno-rtti"]
    flags += [f"-D{d}" for d in defines]
    flags += [str(f) for f in cflags]
    return level, flags


def build(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str] | None = None,
    *,
    optimize: str | int = "2",
    simd: bool = False,
    stack_check: bool = True,
    defines: Iterable[str] = (),
    cflags: Iterable[str] = (),
) -> Path:
    """Compile C or C++ source files into one kernel module and return its path.

    Args:
        source: the `.c` file, or a list of them linked into one module whose
            entries are those of every file (`.cc`/`.cpp` compile as C++
            without exceptions).
        output: where to write the module; default, the (first) source with
            `.wasm`.
        optimize: clang's level: "0", "1", "2", "3", "s" or "z".
        simd: allow 128-bit SIMD (`-msimd128`, `<wasm_simd128.h>`).
        stack_check: make a stack overflow trap (binaryen's `--stack-check`)
            instead of silently writing below the worker's stack.
        defines: `NAME` or `NAME=VALUE` macro definitions.
        cflags: more clang arguments, passed as given; those that start
            with `-Wl,` go to the link.

    Raises:
        FileNotFoundError: `source` does not exist.
        ValueError: an option is out of range.
        ToolchainNotFoundError: clang, wasm-ld or wasm-opt is not installed.
        BuildError: clang, wasm-ld or wasm-opt failed; the message holds
            their diagnostics.
        KernelError: the module built but is not a usable kernel.
    """
    from ._kernel import Kernel

    sources = _sources(source)
    for path in sources:
        if not path.is_file():
            raise FileNotFoundError(f"kernel source {str(path)!r} does not exist or is not a file")
    src = sources[0]
    if output is not None and Path(output).suffix.lower() in {".c", ".h", *_CXX_SUFFIXES}:
        raise ValueError(
            f"output must be the module to write, not a source file (got {str(output)!r}); "
            "pass several sources as a list: build(['a.c', 'b.c'], 'out.wasm')"
        )
    level, flags = _options(src, optimize, simd, stack_check, defines, cflags)
    per_source = [
        _options(path, optimize, simd, stack_check, defines, cflags)[1] for path in sources
    ]
    out = Path(output) if output is not None else src.with_suffix(".wasm")
    clang = _clang()
    _linker()
    wasm_opt = _wasm_opt() if stack_check else None
    link_flags = [f for f in flags if f.startswith("-Wl,")]
    with tempfile.TemporaryDirectory(prefix="sharedwasm-build-") as tmp:
        objects = [Path(tmp) / f"kernel{i}.o" for i in range(len(sources))]
        objects.append(Path(tmp) / "abi.o")
        linked = Path(tmp) / "linked.wasm"
        # Compile and link apart: given an -O flag, clang's link step runs
        # wasm-opt on its own whenever one is on PATH, which would make the
        # output depend on PATH and drop the name section.
        diagnostics = ""
        for path, obj, path_flags in zip(sources, objects, per_source, strict=False):
            compile_only = [f for f in path_flags if not f.startswith("-Wl,")]
            diagnostics += _run(
                [clang, *compile_only, "-I", str(INCLUDE_DIR), "-c", str(path), "-o", str(obj)],
                "clang",
                path,
            )
        _run([clang, *_COMPILE_FLAGS, "-c", str(ABI_SOURCE), "-o", str(objects[-1])], "clang", src)
        diagnostics += _run(
            [clang, "--target=wasm32", "-nostdlib", *link_flags, *_LINK_FLAGS, *map(str, objects),
             "-o", str(linked)],
            "wasm-ld",
            src,
        )  # fmt: skip
        final = linked
        if wasm_opt is not None:
            final = Path(tmp) / "checked.wasm"
            features = [*_WASM_OPT_FEATURES, *(["--enable-simd"] if simd else [])]
            optimise = [] if level == "0" else [f"-O{level}"]
            # -g keeps the name section, so traps name the kernel's functions.
            _run(
                [wasm_opt, "-g", *optimise, *features, "--stack-check", str(linked), "-o",
                 str(final)],
                "wasm-opt",
                src,
            )  # fmt: skip
        signatures = _signatures(clang, sources, per_source)
        info = {
            "digest": _digest(sources, flags, stack_check),
            "source": src.name,
            "sources": [path.name for path in sources],
            "optimize": level,
            "simd": simd,
            "stack_check": stack_check,
        }
        wasm = final.read_bytes()
        wasm += _binary.encode_custom_section(
            SIGNATURE_SECTION, _signature_record(wasm, signatures)
        )
        wasm += _binary.encode_custom_section(
            BUILD_SECTION, json.dumps(info, sort_keys=True).encode()
        )
    Kernel.from_bytes(wasm, name=out.name)  # the ABI check, before anything is written
    if diagnostics.strip():
        warnings.warn(BuildWarning(diagnostics.strip()), stacklevel=2)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_bytes(wasm)
    os.replace(partial, out)
    return out


def build_info(wasm: bytes) -> dict[str, object] | None:
    """Return the `sharedwasm.build` record of a module, or None if it has none."""
    payload = _binary.custom_section(wasm, BUILD_SECTION)
    if payload is None:
        return None
    try:
        info = json.loads(payload)
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


def build_is_current(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    optimize: str | int = "2",
    simd: bool = False,
    stack_check: bool = True,
    defines: Iterable[str] = (),
    cflags: Iterable[str] = (),
) -> bool:
    """True if `output` was built from `source` as it is now, with these options."""
    sources, out = _sources(source), Path(output)
    if not out.is_file():
        return False
    _, flags = _options(sources[0], optimize, simd, stack_check, defines, cflags)
    info = build_info(out.read_bytes())
    return info is not None and info.get("digest") == _digest(sources, flags, stack_check)


Signature = list[dict[str, str]]


def _signatures(
    clang: str, sources: Sequence[Path], per_source: Sequence[list[str]]
) -> dict[str, Signature]:
    """Read every function's parameters after (start, end) from clang's JSON AST of each source.

    The types come as written (`real *`) and with typedefs resolved (`float *`),
    which is what the pool maps to dtypes. Only the functions that the module
    exports as entries are kept (see `_signature_record`).
    """
    found: dict[str, Signature] = {}
    for path, path_flags in zip(sources, per_source, strict=True):
        compile_only = [f for f in path_flags if not f.startswith("-Wl,")]
        command = [clang, *compile_only, "-I", str(INCLUDE_DIR), "-fsyntax-only", "-Xclang",
                   "-ast-dump=json", str(path)]  # fmt: skip
        try:
            proc = subprocess.run(command, capture_output=True, timeout=_TIMEOUT, check=False)
            tree = json.loads(proc.stdout) if proc.returncode == 0 else None
        except (OSError, subprocess.TimeoutExpired, ValueError):
            tree = None
        if tree is None:
            raise BuildError(
                f"clang could not describe the functions of {path.name} (its JSON AST)",
                command=command,
                stderr="",
                returncode=None,
            )
        typedefs: dict[str, str] = {}
        functions: list[dict[str, object]] = []
        stack = [tree]
        while stack:
            node = stack.pop()
            kind = node.get("kind")
            if kind == "TypedefDecl" and "name" in node:
                ty = node.get("type", {})
                typedefs[node["name"]] = ty.get("desugaredQualType", ty.get("qualType", ""))
            elif kind == "FunctionDecl":
                inner = node.get("inner", [])
                if any(child.get("kind") == "CompoundStmt" for child in inner):
                    functions.append(node)
            elif kind in ("TranslationUnitDecl", "LinkageSpecDecl", "NamespaceDecl"):
                stack.extend(node.get("inner", []))
        for node in functions:
            inner = node.get("inner", [])
            assert isinstance(inner, list)
            params = [c for c in inner if c.get("kind") == "ParmVarDecl"]
            found[str(node.get("name", ""))] = [
                {
                    "name": p.get("name", ""),
                    "type": p["type"]["qualType"],
                    "canonical": _resolve(
                        p["type"].get("desugaredQualType", p["type"]["qualType"]), typedefs
                    ),
                }
                for p in params[2:]
            ]
    return found


def _resolve(spelling: str, typedefs: dict[str, str]) -> str:
    """Replace typedef names in a C type by what they stand for (`const uint8_t *`
    -> `const unsigned char *`): clang desugars a typedef, not a pointer to one."""
    for _ in range(8):  # typedefs of typedefs, a few levels deep at most
        words = re.split(r"(\w+)", spelling)
        replaced = [typedefs.get(w, w) for w in words]
        if replaced == words:
            break
        spelling = "".join(replaced)
    return spelling


def _signature_record(wasm: bytes, signatures: dict[str, Signature]) -> bytes:
    """The `sharedwasm.entries` section: the signature of each `entry:NAME` export whose
    function (by the name SW_KERNEL gives it) was found in the sources."""
    exports = _binary.read_signatures(wasm).exports
    entries = {}
    for export, kind in exports.items():
        if kind == "func" and export.startswith(ENTRY_PREFIX):
            name = export[len(ENTRY_PREFIX) :]
            if name in signatures:
                entries[name] = signatures[name]
    record = {"version": SIGNATURE_VERSION, "entries": entries}
    return json.dumps(record, sort_keys=True).encode()
