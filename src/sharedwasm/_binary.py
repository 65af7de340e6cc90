"""A minimal reader of the WebAssembly binary format, for what the ABI check needs.

wasmtime-py describes imports and function types through the C API, which
aborts the whole process when a signature holds a type it cannot convert
(`v128`, GC references). So the ABI check reads signatures from the bytes
itself: the type, import, function and export sections. It runs only on
modules wasmtime has already validated, so it assumes well-formed input.
"""

from __future__ import annotations

import dataclasses

_VALTYPES = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128"}
_PACKED = {0x78: "i8", 0x77: "i16"}


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

    def limits(self) -> bool:
        """Skip a limits record; return whether it is shared."""
        flags = self.byte()
        self.uleb()
        if flags & 1:
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


def read_signatures(wasm: bytes) -> Signatures:
    """Read the imports and exported function signatures of a validated module."""
    r = _Reader(wasm)
    r.pos = 8  # magic and version
    types: list[tuple[tuple[str, ...], tuple[str, ...]] | None] = []
    imports: list[Import] = []
    func_types: list[int] = []
    exports: dict[str, tuple[str, int]] = {}
    kinds = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}
    while r.pos < len(wasm):
        section = r.byte()
        size = r.uleb()
        end = r.pos + size
        if section == 1:
            for _ in range(r.uleb()):
                if wasm[r.pos] == 0x4E:  # rec group: each subtype is one type index
                    r.byte()
                    types.extend(r.subtype() for _ in range(r.uleb()))
                else:
                    types.append(r.subtype())
        elif section == 2:
            for _ in range(r.uleb()):
                module, name, kind = r.name(), r.name(), kinds.get(r.byte(), "?")
                if kind == "func":
                    index = r.uleb()
                    func_types.append(index)
                    imports.append(Import(module, name, kind, signature=types[index]))
                elif kind == "table":
                    r.valtype()
                    r.limits()
                    imports.append(Import(module, name, kind))
                elif kind == "memory":
                    shared = r.limits()
                    imports.append(Import(module, name, "shared memory" if shared else kind))
                elif kind == "global":
                    content = r.valtype()
                    mutable = bool(r.byte())
                    imports.append(Import(module, name, kind, global_type=(content, mutable)))
                else:  # tag: attribute, type index
                    r.byte()
                    r.uleb()
                    imports.append(Import(module, name, kind))
        elif section == 3:
            func_types.extend(r.uleb() for _ in range(r.uleb()))
        elif section == 7:
            for _ in range(r.uleb()):
                name = r.name()
                kind = kinds.get(r.byte(), "?")
                exports[name] = (kind, r.uleb())
        r.pos = end
    return Signatures(
        imports=imports,
        exported_functions={
            name: types[func_types[index]]
            for name, (kind, index) in exports.items()
            if kind == "func"
        },
        exports={name: kind for name, (kind, _) in exports.items()},
    )
