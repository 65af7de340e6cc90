"""A minimal reader of the WebAssembly binary format, for what the ABI check needs.

wasmtime-py describes imports and function types through the C API, which
aborts the whole process when a signature holds a type it cannot convert
(`v128`, GC references). So the ABI check reads signatures from the bytes
itself: the type, import, function and export sections. It runs only on
modules wasmtime has already validated, so it assumes well-formed input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

_VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128"}
_PACKED = {0x78: "i8", 0x77: "i16"}
_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


@dataclasses.dataclass(frozen=True, slots=True)
class Import:
    """One import: `kind` is "func", "table", "memory", "global" or "tag"."""

    module: str
    name: str
    kind: str
    signature: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    """Params and results of a function import."""
    global_type: tuple[str, bool] | None = None
    """Value type and mutability of a global import."""
    type_index: int | None = None
    """Type index of a function import."""
    memory_type: MemoryType | None = None
    """Limits of a memory import."""


@dataclasses.dataclass(frozen=True, slots=True)
class MemoryType:
    """A memory's limits, in pages."""

    minimum: int
    maximum: int | None
    shared: bool
    is_64: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Signatures:
    """What the ABI check reads: imports, and each exported function's signature."""

    imports: list[Import]
    exported_functions: dict[str, tuple[tuple[str, ...], tuple[str, ...]] | None]
    """Signature per exported function name; None for a type that is not a function type."""
    exports: dict[str, str]
    """Kind per export name."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uleb(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    def name(self) -> str:
        n = self.uleb()
        raw = self.data[self.pos : self.pos + n]
        self.pos += n
        return raw.decode("utf-8", "replace")

    def valtype(self) -> str:
        b = self.byte()
        if b in _VALTYPES:
            return _VALTYPES[b]
        if b in _PACKED:
            return _PACKED[b]
        if b in (0x63, 0x64):  # (ref null? heaptype): skip the s33 heap type, same bytes as a u32
            self.uleb()
        return "ref"

    def sleb(self) -> int:
        # The same groups of 7 bits as an unsigned number; the top bit read
        # (bit 6 of the last byte) is the sign.
        start = self.pos
        value = self.uleb()
        bits = 7 * (self.pos - start)
        return value - (1 << bits) if value >> (bits - 1) & 1 else value

    def const_expr(self) -> int | None:
        """Read a constant expression; return its value if it is one `i32.const`.

        Extended constant expressions (several instructions, with integer
        add, sub and mul) are read through to their `end`; their value is
        not computed, so they return None.
        """
        value: int | None = None
        count = 0
        while True:
            op = self.byte()
            if op == 0x0B:  # end
                return value if count == 1 else None
            count += 1
            value = None
            if op == 0x41:  # i32.const
                value = self.sleb()
            elif op == 0x42:  # i64.const
                self.sleb()
            elif op in (0x43, 0x44):  # f32.const, f64.const
                self.pos += 4 if op == 0x43 else 8
            elif op in (0x23, 0xD2):  # global.get, ref.func
                self.uleb()
            elif op == 0xD0:  # ref.null heaptype
                self.sleb()
            elif op == 0xFD:  # v128.const
                self.uleb()
                self.pos += 16
            elif op not in (0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E):  # i32/i64 add, sub, mul
                raise ValueError(f"constant expression with opcode {op:#x}")

    def limits(self) -> bool:
        """Skip a limits record; return whether it is shared."""
        flags = self.byte()
        self.uleb()
        if flags & 1:
            self.uleb()
        if flags & 8:  # custom page size: its log2
            self.uleb()
        return bool(flags & 2)

    def comptype(self) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        form = self.byte()
        if form == 0x60:
            params = tuple(self.valtype() for _ in range(self.uleb()))
            results = tuple(self.valtype() for _ in range(self.uleb()))
            return params, results
        if form == 0x5F:  # struct: fields of (storage type, mutability)
            for _ in range(self.uleb()):
                self.valtype()
                self.byte()
        elif form == 0x5E:  # array: one field
            self.valtype()
            self.byte()
        return None

    def subtype(self) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
        if self.data[self.pos] in (0x50, 0x4F):  # sub / sub final: supertypes, then the type
            self.byte()
            for _ in range(self.uleb()):
                self.uleb()
        return self.comptype()


@dataclasses.dataclass(frozen=True, slots=True)
class Statics:
    """What a module says about the static part of its memory."""

    globals: dict[str, tuple[int | None, bool]]
    """Per exported i32 global defined by the module: its initial value (None
    if not a plain constant) and whether it is mutable."""
    active_data_end: int
    """One past the last byte an active data segment writes (0 if none)."""
    passive_segments: int
    """How many data segments are passive."""
    computed_segments: tuple[int, ...]
    """Indices of the active data segments whose offset is not a plain
    `i32.const` (a `global.get`, an extended constant expression)."""
    named_globals: dict[str, int]
    """Global index per name, from the name section (wasm-ld writes one)."""
    exported_global_indices: frozenset[int]
    """Indices of the globals the module exports."""
    has_start: bool
    """Whether the module has a start function."""
    function_names: tuple[str, ...] = ()
    """Function names from the name section."""


def encode_uleb(value: int) -> bytes:
    """Encode a non-negative integer as unsigned LEB128."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_section(section: int, payload: bytes) -> bytes:
    """Encode one section: its id, its size, its payload."""
    return bytes([section]) + encode_uleb(len(payload)) + payload


def encode_custom_section(name: str, payload: bytes) -> bytes:
    """Encode a custom section called `name` (see `custom_section` to read one)."""
    encoded = name.encode()
    return encode_section(0, encode_uleb(len(encoded)) + encoded + payload)


def section_payloads(wasm: bytes) -> list[tuple[int, bytes]]:
    """Return each section of a validated module as its id and payload, in order."""
    return [(section, wasm[r.pos : end]) for section, r, end in _sections(wasm)]


def _sections(wasm: bytes) -> Iterator[tuple[int, _Reader, int]]:
    r = _Reader(wasm)
    r.pos = 8  # magic and version
    while r.pos < len(wasm):
        section = r.byte()
        size = r.uleb()
        end = r.pos + size
        yield section, r, end
        r.pos = end


def custom_section(wasm: bytes, wanted: str) -> bytes | None:
    """Return the payload of the last custom section called `wanted`, or None."""
    found = None
    for section, r, end in _sections(wasm):
        if section == 0 and r.name() == wanted:
            found = wasm[r.pos : end]
    return found


def read_statics(wasm: bytes) -> Statics:
    """Read exported i32 globals and data segments of a validated module."""
    imported_globals = 0
    defined: list[tuple[int | None, bool] | None] = []
    exported: dict[str, int] = {}
    data_end = passive = 0
    computed: list[int] = []
    named: dict[str, int] = {}
    function_names: list[str] = []
    has_start = False
    for section, r, end in _sections(wasm):
        if section == 0 and r.name() == "name":
            while r.pos < end:
                sub, sub_size = r.byte(), r.uleb()
                sub_end = r.pos + sub_size
                if sub == 7:  # global names
                    for _ in range(r.uleb()):
                        index = r.uleb()
                        named[r.name()] = index
                elif sub == 1:  # function names
                    for _ in range(r.uleb()):
                        r.uleb()
                        function_names.append(r.name())
                r.pos = sub_end
        elif section == 2:
            for imp in _read_imports(r, []):
                imported_globals += imp.kind == "global"
        elif section == 6:
            for _ in range(r.uleb()):
                content = r.valtype()
                mutable = bool(r.byte())
                try:
                    value = r.const_expr()
                except ValueError:
                    break  # the rest cannot be followed; none of ours is past it
                defined.append((value, mutable) if content == "i32" else None)
        elif section == 7:
            for _ in range(r.uleb()):
                name = r.name()
                kind = r.byte()
                index = r.uleb()
                if kind == 3:
                    exported[name] = index
        elif section == 8:
            has_start = True
        elif section == 11:
            for segment in range(r.uleb()):
                flags = r.uleb()
                offset: int | None = None
                if flags in (0, 2):
                    if flags == 2:
                        r.uleb()  # memory index
                    offset = r.const_expr()
                    if offset is None:
                        computed.append(segment)
                else:
                    passive += 1
                size = r.uleb()
                r.pos += size
                if offset is not None:
                    data_end = max(data_end, (offset & 0xFFFFFFFF) + size)
    globals_: dict[str, tuple[int | None, bool]] = {}
    for name, index in exported.items():
        local = index - imported_globals
        if 0 <= local < len(defined) and (entry := defined[local]) is not None:
            globals_[name] = entry
    return Statics(
        globals=globals_,
        active_data_end=data_end,
        passive_segments=passive,
        computed_segments=tuple(computed),
        named_globals=named,
        exported_global_indices=frozenset(exported.values()),
        has_start=has_start,
        function_names=tuple(function_names),
    )


def _read_imports(
    r: _Reader, types: list[tuple[tuple[str, ...], tuple[str, ...]] | None]
) -> list[Import]:
    imports: list[Import] = []
    for _ in range(r.uleb()):
        module, name, kind = r.name(), r.name(), _KINDS.get(r.byte(), "?")
        if kind == "func":
            index = r.uleb()
            signature = types[index] if index < len(types) else None
            imports.append(Import(module, name, kind, signature=signature, type_index=index))
        elif kind == "table":
            r.valtype()
            r.limits()
            imports.append(Import(module, name, kind))
        elif kind == "memory":
            flags = r.byte()
            minimum = r.uleb()
            maximum = r.uleb() if flags & 1 else None
            if flags & 8:  # custom page size: its log2
                r.uleb()
            ty = MemoryType(minimum, maximum, bool(flags & 2), bool(flags & 4))
            kind = "shared memory" if ty.shared else kind
            imports.append(Import(module, name, kind, memory_type=ty))
        elif kind == "global":
            content = r.valtype()
            mutable = bool(r.byte())
            imports.append(Import(module, name, kind, global_type=(content, mutable)))
        else:  # tag: attribute, type index
            r.byte()
            r.uleb()
            imports.append(Import(module, name, kind))
    return imports


def read_signatures(wasm: bytes) -> Signatures:
    """Read the imports and exported function signatures of a validated module."""
    types: list[tuple[tuple[str, ...], tuple[str, ...]] | None] = []
    imports: list[Import] = []
    func_types: list[int] = []
    exports: dict[str, tuple[str, int]] = {}
    for section, r, _ in _sections(wasm):
        if section == 1:
            for _ in range(r.uleb()):
                if wasm[r.pos] == 0x4E:  # rec group: each subtype is one type index
                    r.byte()
                    types.extend(r.subtype() for _ in range(r.uleb()))
                else:
                    types.append(r.subtype())
        elif section == 2:
            for imp in _read_imports(r, types):
                imports.append(imp)
                if imp.type_index is not None:
                    func_types.append(imp.type_index)
        elif section == 3:
            func_types.extend(r.uleb() for _ in range(r.uleb()))
        elif section == 7:
            for _ in range(r.uleb()):
                name = r.name()
                kind = _KINDS.get(r.byte(), "?")
                exports[name] = (kind, r.uleb())
    return Signatures(
        imports=imports,
        exported_functions={
            name: types[func_types[index]]
            for name, (kind, index) in exports.items()
            if kind == "func"
        },
        exports={name: kind for name, (kind, _) in exports.items()},
    )
