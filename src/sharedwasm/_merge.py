"""One module per store: the runner's sections spliced into the kernel's binary.

wasmtime attributes a fault in linear memory to the one instance of the store
that holds the faulting address, and every import of a `SharedMemory` into a
store makes a hidden instance that holds it. With two importers per store (the
kernel and the runner, as two modules) an out-of-bounds access would find the
memory twice and abort the process, so the runner is merged into the kernel's
module and each store instantiates that one module.

The merge decodes no instruction. The runner's text (`_runner.runner_wat`) is
generated per kernel so that its index spaces start with the kernel's: the
kernel's types, in order, then one import per kernel function (with its type),
global and table. The runner's own types, functions, tables and globals then
take the indices that follow the kernel's, which is where they land when its
entries are appended to the kernel's sections, so its code is copied as
compiled. Everything else (imports, start, elements, data, custom sections)
is the kernel's.

This needs a kernel whose functions and tables are all defined (the ABI allows
no function or table import) and whose types can be written as text; what
cannot be merged is a `KernelError` that says why.
"""

from __future__ import annotations

import dataclasses

from ._binary import _Reader, encode_section, encode_uleb, section_payloads
from ._errors import KernelError, SharedWasmInternalError

TYPE, IMPORT, FUNCTION, TABLE, MEMORY, GLOBAL, EXPORT = 1, 2, 3, 4, 5, 6, 7
START, ELEMENT, CODE, DATA, DATA_COUNT, TAG = 8, 9, 10, 11, 12, 13
_EXPORT_KINDS = {0: "function", 1: "table", 2: "memory", 3: "global", 4: "tag"}

# Where each known section must stand (the tag section comes between memory
# and global, the data count before code).
_ORDER = {
    TYPE: 1,
    IMPORT: 2,
    FUNCTION: 3,
    TABLE: 4,
    MEMORY: 5,
    TAG: 6,
    GLOBAL: 7,
    EXPORT: 8,
    START: 9,
    ELEMENT: 10,
    DATA_COUNT: 11,
    CODE: 12,
    DATA: 13,
}
# Sections whose entries the runner adds to; the type section is the runner's own.
_APPENDED = (FUNCTION, TABLE, GLOBAL, EXPORT, CODE)

_NUMERIC = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128"}
# Abstract heap types: the shorthand reference type, and the heap type's name.
_HEAP = {
    0x70: ("funcref", "func"),
    0x6F: ("externref", "extern"),
    0x6E: ("anyref", "any"),
    0x6D: ("eqref", "eq"),
    0x6C: ("i31ref", "i31"),
    0x6B: ("structref", "struct"),
    0x6A: ("arrayref", "array"),
    0x69: ("exnref", "exn"),
    0x71: ("nullref", "none"),
    0x72: ("nullexternref", "noextern"),
    0x73: ("nullfuncref", "nofunc"),
    0x74: ("nullexnref", "noexn"),
}
_NOT_FUNCTION_TYPES = {
    0x4E: "a recursive type group",
    0x50: "a subtype declaration",
    0x4F: "a final subtype declaration",
    0x5F: "a struct type",
    0x5E: "an array type",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Shape:
    """A kernel's index spaces: what the runner's text must reproduce before its own."""

    types: tuple[str, ...]
    """Each type as WebAssembly text, `(func (param ...) (result ...))`."""
    encoded_types: tuple[bytes, ...]
    """Each type's bytes in the kernel's type section."""
    functions: tuple[int, ...]
    """The type index of each function (all defined: the ABI allows no function import)."""
    globals: int
    """Globals, imported and defined."""
    tables: int
    """Tables (all defined: the ABI allows no table import)."""
    exports: dict[str, tuple[str, int]]
    """Kind ("function", "memory", ...) and index per export name."""


def _valtype(r: _Reader, where: str) -> str:
    b = r.byte()
    if b in _NUMERIC:
        return _NUMERIC[b]
    if b in _HEAP:
        return _HEAP[b][0]
    if b in (0x63, 0x64):  # (ref null? heaptype)
        null = " null" if b == 0x63 else ""
        heap = r.data[r.pos]
        if heap in _HEAP:
            r.pos += 1
            return f"(ref{null} {_HEAP[heap][1]})"
        return f"(ref{null} {r.uleb()})"  # a type index: a non-negative s33 reads as a uleb
    raise KernelError(
        f"{where} has a value of type {b:#04x}, which sharedwasm cannot write as "
        "WebAssembly text to merge its worker loop into the module"
    )


def read_shape(wasm: bytes) -> Shape:
    """Read a validated kernel's index spaces and exports.

    Raises:
        KernelError: the module has a construct the runner cannot be merged with.
    """
    types: list[str] = []
    encoded: list[bytes] = []
    functions: list[int] = []
    globals_ = tables = 0
    exports: dict[str, tuple[str, int]] = {}
    for section, payload in section_payloads(wasm):
        r = _Reader(payload)
        if section == TYPE:
            for index in range(r.uleb()):
                start = r.pos
                form = r.byte()
                if form != 0x60:
                    what = _NOT_FUNCTION_TYPES.get(form, f"a type of form {form:#04x}")
                    raise KernelError(
                        f"kernel's type {index} must be a function type (got {what}, from "
                        "WebAssembly GC): sharedwasm merges its worker loop into the kernel's "
                        "module, which it can do only with function types"
                    )
                where = f"kernel's type {index}"
                params = [_valtype(r, where) for _ in range(r.uleb())]
                results = [_valtype(r, where) for _ in range(r.uleb())]
                text = "(func"
                text += f" (param {' '.join(params)})" if params else ""
                text += f" (result {' '.join(results)})" if results else ""
                types.append(text + ")")
                encoded.append(payload[start : r.pos])
        elif section == IMPORT:
            for _ in range(r.uleb()):
                module, name, kind = r.name(), r.name(), r.byte()
                if kind == 2:
                    r.limits()
                elif kind == 3:
                    r.valtype()
                    r.byte()
                    globals_ += 1
                else:  # the ABI check refuses these first
                    raise KernelError(
                        f"kernel must not import {module}.{name}, a "
                        f"{_EXPORT_KINDS.get(kind, 'thing')}: the worker loop is merged into "
                        "the kernel's module behind its functions and tables"
                    )
        elif section == FUNCTION:
            functions.extend(r.uleb() for _ in range(r.uleb()))
        elif section == TABLE:
            tables = r.uleb()
        elif section == GLOBAL:
            globals_ += r.uleb()
        elif section == EXPORT:
            for _ in range(r.uleb()):
                name = r.name()
                exported = _EXPORT_KINDS.get(r.byte(), "?")
                exports[name] = (exported, r.uleb())
    return Shape(tuple(types), tuple(encoded), tuple(functions), globals_, tables, exports)


def _count(payload: bytes) -> tuple[int, bytes]:
    """Split a vector section into its entry count and the entries' bytes."""
    r = _Reader(payload)
    n = r.uleb()
    return n, payload[r.pos :]


def _type_entries(payload: bytes) -> list[bytes]:
    """Split a type section of plain function types into each type's bytes."""
    r = _Reader(payload)
    entries = []
    for _ in range(r.uleb()):
        start = r.pos
        r.byte()  # 0x60
        for _ in range(2):  # params, results
            for _ in range(r.uleb()):
                _valtype(r, "the runner's type")
        entries.append(payload[start : r.pos])
    return entries


def _export_names(payload: bytes) -> list[str]:
    r = _Reader(payload)
    names = []
    for _ in range(r.uleb()):
        names.append(r.name())
        r.byte()
        r.uleb()
    return names


def splice(kernel: bytes, runner: bytes, shape: Shape) -> bytes:
    """Return the kernel's module with the runner's own entries appended to its sections.

    `runner` is the compiled text of `_runner.runner_wat` for this `shape`.

    Raises:
        KernelError: the kernel's types do not come out of the text as they
            went in, or an export name is taken by both.
    """
    sections = dict(section_payloads(runner))
    unexpected = set(sections) - {0, TYPE, IMPORT, *_APPENDED}
    if unexpected:
        raise SharedWasmInternalError(f"the runner has sections {sorted(unexpected)}")
    runner_types = _type_entries(sections[TYPE])
    if len(runner_types) < len(shape.encoded_types):
        raise SharedWasmInternalError("the runner's text lost some of the kernel's types")
    for index, theirs in enumerate(shape.encoded_types):
        if runner_types[index] != theirs:
            raise KernelError(
                f"kernel's type {index}, {shape.types[index]}, is encoded as {theirs.hex()}, "
                f"which WebAssembly text encodes as {runner_types[index].hex()}: sharedwasm "
                "merges its worker loop into the kernel's module and needs the kernel's "
                "types byte for byte"
            )
    taken = sorted(set(shape.exports) & set(_export_names(sections[EXPORT])))
    if taken:
        raise KernelError(
            f"kernel must not export {taken[0]!r}: the worker loop merged into its module "
            "exports that name"
        )
    appended = {section: _count(sections.get(section, b"\0")) for section in _APPENDED}

    def merged(section: int, payload: bytes) -> bytes:
        if section == TYPE:
            # The kernel's types come first in the runner's, byte for byte.
            return sections[TYPE]
        added, entries = appended[section]
        count, own = _count(payload)
        return encode_uleb(count + added) + own + entries

    out = bytearray(kernel[:8])
    pending = sorted({TYPE, *_APPENDED}, key=_ORDER.__getitem__)
    for section, payload in section_payloads(kernel):
        rank = _ORDER.get(section)
        if rank is not None:
            # A section the kernel lacks goes before the first that ranks after it.
            while pending and _ORDER[pending[0]] < rank:
                missing = pending.pop(0)
                out += encode_section(missing, merged(missing, b"\0"))
            if pending and pending[0] == section:
                payload = merged(pending.pop(0), payload)
        out += encode_section(section, payload)
    for missing in pending:
        out += encode_section(missing, merged(missing, b"\0"))
    return bytes(out)
