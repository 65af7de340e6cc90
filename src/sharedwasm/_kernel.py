"""`Kernel`: a WebAssembly module compiled once and checked against the kernel ABI.

The ABI:

* imports its memory as `env.memory`, a shared 32-bit memory with a maximum;
* may import immutable i32 globals `env.data_offset`, `env.worker_index` and
  `env.total_workers`, which the pool provides per worker, so no kernel
  hard-codes the layout or the worker count;
* imports nothing else;
* exports at least one entry (see `_entries`): `compute_partition(start:
  i32, end: i32) -> ()`, or functions named `entry:NAME` that take
  `(start: i32, end: i32, ...)` and the run's arguments; each is called with
  a half-open range of element indices.

A kernel compiled from C (`sharedwasm build`) also exports what the pool
needs to run it on several threads at once:

* `__heap_base` (and `__data_end`): where its static data ends; the status
  board is placed after it;
* `__stack_pointer`, a mutable i32 global: each worker's instance gets its own
  stack, set before the first call and after a trap;
* `__wasm_init_tls`, `__tls_size`, `__tls_align`: each worker gets its own
  block for `_Thread_local` variables;
* `__set_stack_limits(base, limit)` (binaryen's stack check): each worker's
  stack bounds, so an overflow traps.

A module that has a `__stack_pointer` global (by its name section) but does
not export it is refused: every worker would push its frames onto one stack.

What every worker instantiates, in its own store, is not the kernel's module
alone but the kernel with the runner (the worker loop, `_runner`) merged in
(`_merge`), so that one instance per store imports the shared memory. The
merge and its validation happen when the kernel is built, so a kernel that
cannot be merged is refused there; the merged module compiles once per
engine, on the first pool over a plain or an interruptible memory (with its
epoch checks), and is kept. The compile goes through the compiled-code cache (`_cache`), so a
process that finds the code there loads it instead: an entry exists only for bytes that
compiled.
"""

from __future__ import annotations

import os
import threading
import types
from collections.abc import Mapping
from pathlib import Path

import wasmtime

from . import _binary, _cache, _wasmtime
from ._entries import SIGNATURE_SECTION, Entry, read_entries
from ._errors import KernelError, SharedWasmInternalError, error_cause

STACK_POINTER = "__stack_pointer"
SET_STACK_LIMITS = "__set_stack_limits"
INIT_TLS = "__wasm_init_tls"
CALL_CTORS = "__wasm_call_ctors"
PROVIDED_GLOBALS = ("data_offset", "worker_index", "total_workers")
_WASM_MAGIC = b"\0asm"


def _describe(imp: _binary.Import) -> str:
    # From the bytes, never from wasmtime's types: describing a v128 or GC
    # reference type through wasmtime-py's C layer aborts the process.
    if imp.signature is not None:
        return _describe_signature(imp.signature)
    if imp.global_type is not None:
        content, mutable = imp.global_type
        return f"{'mutable' if mutable else 'immutable'} {content} global"
    return "function" if imp.kind == "func" else imp.kind


def _describe_signature(signature: tuple[tuple[str, ...], tuple[str, ...]] | None) -> str:
    if signature is None:
        return "function of a non-function type"
    params, results = signature
    return f"function ({', '.join(params)}) -> ({', '.join(results)})"


class Kernel:
    """A validated, ABI-checked kernel module. Immutable and safe to share between pools.

    Build one with `from_file`, `from_bytes` or `from_wat`.
    """

    def __init__(self, wasm: bytes, *, name: str = "kernel") -> None:
        self._wasm = wasm
        self._modules: dict[bool, wasmtime.Module] = {}
        self._compile_lock = threading.Lock()
        self.name = name
        try:
            sigs = _binary.read_signatures(wasm)
            statics = _binary.read_statics(wasm)
        except (IndexError, KeyError, ValueError) as exc:  # an encoding the reader does not know
            raise KernelError(
                f"kernel uses a WebAssembly encoding sharedwasm cannot read ({exc!r})"
            ) from exc
        self.memory_minimum, self.memory_maximum = self._check_abi(sigs)
        self._import_names = tuple(imp.name for imp in sigs.imports)
        self.entries: Mapping[str, Entry] = types.MappingProxyType(
            read_entries(
                sigs.exported_functions,
                sigs.exports,
                _binary.custom_section(wasm, SIGNATURE_SECTION),
            )
        )
        """The functions a pool can run, by entry name, in the module's export order."""
        self._read_statics(sigs, statics)
        self.globals: tuple[str, ...] = tuple(
            imp.name for imp in sigs.imports if imp.module == "env" and imp.name in PROVIDED_GLOBALS
        )
        self._merged = self._with_runner()

    def _with_runner(self) -> bytes:
        """Return the module every worker instantiates: this kernel with the runner merged in."""
        # Imported here: _runner, which instantiates kernels, imports this module.
        from ._runner import merged_wasm

        try:
            merged = merged_wasm(self._wasm, self.entries.values())
        except (IndexError, KeyError, ValueError) as exc:
            if isinstance(exc, KernelError):
                raise
            raise KernelError(
                f"kernel uses a WebAssembly encoding sharedwasm cannot read ({exc!r})"
            ) from exc
        try:
            wasmtime.Module.validate(_wasmtime.engine(), merged)
        except wasmtime.WasmtimeError as exc:
            raise SharedWasmInternalError(
                f"the worker loop merged into {self.name} is not valid WebAssembly: "
                f"{error_cause(str(exc), repr(exc))}"
            ) from exc
        return merged

    def __repr__(self) -> str:
        return (
            f"<sharedwasm.Kernel {self.name!r} entries={list(self.entries)} "
            f"memory={self.memory_minimum}..{self.memory_maximum} pages "
            f"globals={list(self.globals)}>"
        )

    @classmethod
    def from_bytes(cls, wasm: bytes | bytearray | memoryview, *, name: str = "kernel") -> Kernel:
        """Compile a kernel from WebAssembly binary bytes.

        Raises:
            TypeError: `wasm` is not bytes-like.
            KernelError: the bytes are not valid WebAssembly or break the ABI.
        """
        if not isinstance(wasm, bytes | bytearray | memoryview):
            raise TypeError(f"wasm must be bytes (got {type(wasm).__name__})")
        data = bytes(wasm)
        if not data.startswith(_WASM_MAGIC):
            raise KernelError(
                f"{name} is not WebAssembly: a module starts with b'\\0asm' (got {data[:4]!r})"
            )
        try:
            wasmtime.Module.validate(_wasmtime.engine(), data)
        except wasmtime.WasmtimeError as exc:
            raise KernelError(
                f"{name} is not valid WebAssembly: {error_cause(str(exc), repr(exc))}"
            ) from exc
        return cls(data, name=name)

    @classmethod
    def from_wat(cls, text: str, *, name: str = "kernel") -> Kernel:
        """Compile a kernel from WebAssembly text.

        Raises:
            TypeError: `text` is not a str.
            KernelError: the text does not parse, or the module breaks the ABI.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str of WebAssembly text (got {type(text).__name__})")
        try:
            wasm = wasmtime.wat2wasm(text)
        except UnicodeEncodeError as exc:  # lone surrogates cannot reach the parser
            raise KernelError(f"{name} is not valid WebAssembly text: {exc}") from exc
        except wasmtime.WasmtimeError as exc:
            raise KernelError(f"{name} is not valid WebAssembly text: {exc}") from exc
        return cls.from_bytes(wasm, name=name)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Kernel:
        """Compile a kernel from a `.wasm` binary or a `.wat` text file.

        The format is taken from the content: a file that starts with the wasm
        magic number is binary, anything else is parsed as text.

        Raises:
            OSError: the file cannot be read.
            KernelError: the file is not a valid kernel.
        """
        p = Path(path)
        data = p.read_bytes()
        if data.startswith(_WASM_MAGIC):
            return cls.from_bytes(data, name=p.name)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise KernelError(
                f"{p.name} is neither a WebAssembly binary nor UTF-8 WebAssembly text"
            ) from exc
        return cls.from_wat(text, name=p.name)

    @staticmethod
    def _check_abi(sigs: _binary.Signatures) -> tuple[int, int]:
        memory: tuple[int, int] | None = None
        for raw in sigs.imports:
            where = f"{raw.module}.{raw.name}"
            if raw.module == "env" and raw.name == "memory":
                if memory is not None:
                    # Each import of the memory is one more instance holding
                    # it in the worker's store, and wasmtime aborts the
                    # process on a fault in a memory two instances hold.
                    raise KernelError("kernel must import env.memory once (it imports it twice)")
                ty = raw.memory_type
                if ty is None:
                    raise KernelError(f"env.memory must be a memory import (got {_describe(raw)})")
                if ty.is_64:
                    raise KernelError("env.memory must be a 32-bit memory (got a memory64)")
                if not ty.shared:
                    raise KernelError(
                        "env.memory must be declared shared so every worker can import it "
                        "(got an unshared memory import)"
                    )
                assert ty.maximum is not None  # validation requires it for shared memories
                memory = (ty.minimum, ty.maximum)
            elif raw.module == "env" and raw.name in PROVIDED_GLOBALS:
                if raw.global_type != ("i32", False):
                    raise KernelError(
                        f"{where} must be an immutable i32 global (got {_describe(raw)})"
                    )
            else:
                raise KernelError(
                    f"unknown import {where} ({_describe(raw)}): a kernel may import only "
                    "env.memory, env.data_offset, env.worker_index and env.total_workers"
                )
        if memory is None:
            if "memory" in sigs.exports.values():
                raise KernelError(
                    "kernel must import its memory as env.memory (it defines its own memory)"
                )
            raise KernelError(
                "kernel must import a shared memory as env.memory (it imports no memory)"
            )
        return memory

    def _read_statics(self, sigs: _binary.Signatures, statics: _binary.Statics) -> None:
        if statics.computed_segments:
            raise KernelError(
                f"kernel's active data segment {statics.computed_segments[0]} has a computed "
                "offset (global.get or an extended constant expression), so where it lands "
                "is unknown: every worker copies it into the memory as it starts, and it could "
                "overwrite the pool's status board, control block or data; give it an "
                "i32.const offset, or copy the bytes from code"
            )
        ends = [statics.active_data_end]
        for name in ("__heap_base", "__data_end"):
            value, _ = statics.globals.get(name, (None, False))
            if value is not None:
                ends.append(value & 0xFFFFFFFF)
        if len(ends) == 1 and statics.passive_segments and statics.has_start:
            # wasm-ld's shape for a shared memory: passive segments copied in
            # by a start function, to addresses only its code knows.
            raise KernelError(
                f"kernel initialises {statics.passive_segments} passive data segment(s) from "
                "its start function but exports neither __heap_base nor __data_end, so where "
                "its static data ends is unknown and the pool's regions could overlap it: "
                "link with --export=__heap_base (sharedwasm build does)"
            )
        self.static_end: int = max(ends)
        """One past the last byte of the kernel's static data; 0 if it has none."""
        stack = statics.globals.get(STACK_POINTER)
        if stack is None:
            index = statics.named_globals.get(STACK_POINTER)
            if index is not None and index not in statics.exported_global_indices:
                raise KernelError(
                    f"kernel has a {STACK_POINTER} global but does not export it, so every "
                    f"worker would use the same stack: link with --export={STACK_POINTER} "
                    "(sharedwasm build does)"
                )
        elif not stack[1]:
            raise KernelError(
                f"{STACK_POINTER} must be a mutable i32 global (got an immutable one)"
            )
        self.uses_stack: bool = stack is not None
        """True if each worker needs a stack of its own (the kernel exports __stack_pointer)."""
        for name, wanted in ((INIT_TLS, (("i32",), ())), (SET_STACK_LIMITS, (("i32", "i32"), ()))):
            kind = sigs.exports.get(name)
            if kind is None:
                continue
            signature = sigs.exported_functions.get(name)
            if signature != wanted:
                got = _describe_signature(signature) if kind == "func" else kind
                raise KernelError(f"{name} must be a {_describe_signature(wanted)} (got {got})")
        self.stack_checked: bool = SET_STACK_LIMITS in sigs.exported_functions
        """True if the kernel checks its stack pointer against per-worker limits."""
        tls_size = statics.globals.get("__tls_size", (0, False))[0] or 0
        tls_align = statics.globals.get("__tls_align", (1, False))[0] or 1
        if tls_size and INIT_TLS not in sigs.exported_functions:
            raise KernelError(
                f"kernel has thread-local data ({tls_size} bytes) but does not export "
                f"{INIT_TLS}: link with --export={INIT_TLS} (sharedwasm build does)"
            )
        if tls_size and not self.uses_stack:
            raise KernelError(f"kernel has thread-local data but does not export {STACK_POINTER}")
        self.tls_size: int = tls_size
        if CALL_CTORS in sigs.exports and sigs.exported_functions.get(CALL_CTORS) != ((), ()):
            raise KernelError(f"{CALL_CTORS} must be a function () -> ()")
        self.constructors: bool = CALL_CTORS in sigs.exported_functions
        """True if the module exports `__wasm_call_ctors` (C++ global objects with
        constructors): each pool calls it once, on worker 0, before its first run."""
        wrapped = [n for n in statics.function_names if n.endswith(".command_export")]
        if wrapped:
            raise KernelError(
                f"kernel calls its constructors at the start of every exported function "
                f"(wasm-ld wrapped {wrapped[0].removesuffix('.command_export')!r}, as it does for "
                "a module with global constructors that does not export them): each call, "
                "on each worker, would construct the global objects again over the shared "
                f"statics; link with --export={CALL_CTORS} (sharedwasm build does) and the "
                "pool runs them once"
            )
        """Bytes of thread-local data each worker needs."""
        self.tls_align: int = tls_align if tls_align & (tls_align - 1) == 0 else 16

    def _module_for(self, interruptible: bool) -> wasmtime.Module:
        """Return the merged module compiled for the plain or the interruptible engine.

        Compiled on first use per engine, and kept; the caller waits for the compile.

        Raises:
            KernelError: wasmtime cannot compile the module.
        """
        with self._compile_lock:
            module = self._modules.get(interruptible)
            if module is None:
                try:
                    module = _cache.compile_module(self._merged, interruptible=interruptible)
                except wasmtime.WasmtimeError as exc:
                    raise KernelError(
                        f"{self.name} failed to compile: {error_cause(str(exc), repr(exc))}"
                    ) from exc
                self._modules[interruptible] = module
            return module

    def _imports(
        self, store: wasmtime.Store, memory: object, values: dict[str, int]
    ) -> list[object]:
        """Build this module's import list, in its declared order, for one worker."""
        externs: list[object] = []
        for name in self._import_names:
            if name == "memory":
                externs.append(memory)
            else:
                externs.append(_wasmtime.i32_global(store, values[name]))
        return externs
