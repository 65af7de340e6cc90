"""Entries: the functions of a kernel module that a pool can run, and their parameters.

How an entry is recognised, in every language that compiles to wasm:

* an exported function named `compute_partition`, the original ABI, taking
  `(start: i32, end: i32)` only; its entry name is `compute_partition`;
* an exported function whose export name is `entry:NAME`, taking
  `(start: i32, end: i32, ...)` with at most `ARGUMENT_SLOTS` further
  `i32`, `i64`, `f32` or `f64` parameters and returning nothing; its entry
  name is `NAME`. C's `SW_KERNEL(NAME, start, end, ...)` exports that name;
  in WAT, Rust or Zig it is the export name given.

No other export is an entry, so a helper function exported for any other
reason is never taken for one, and an `entry:` export with another shape is
refused instead of being skipped silently.

What the wasm types do not say (that an `i32` is a `const float *`, or a
`uint8_t`), the module may say in a `sharedwasm.entries` custom section,
written by `sharedwasm build` from the C source: JSON,
`{"version": 1, "entries": {NAME: [{"name": P, "type": T, "canonical": C}]}}`
with the parameters after `(start, end)`, `type` as written and `canonical`
with every typedef resolved. With it the pool checks each argument against
the C type (an array's dtype, `const`, a scalar's range) and takes keyword
arguments by parameter name. Without it (hand-written WAT) arguments are
checked against the wasm types alone.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping

import numpy as np

from ._errors import KernelError
from ._layout import ARGUMENT_SLOTS

LEGACY_ENTRY = "compute_partition"
ENTRY_PREFIX = "entry:"
SIGNATURE_SECTION = "sharedwasm.entries"
SIGNATURE_VERSION = 1

WASM_TYPES = ("i32", "i64", "f32", "f64")

# C scalar types on wasm32 (char is signed, long is 32 bits): numpy dtype and wasm type.
_C_SCALARS: dict[str, tuple[str, str]] = {
    "float": ("float32", "f32"),
    "double": ("float64", "f64"),
    "_Bool": ("bool", "i32"),
    "bool": ("bool", "i32"),
    "char": ("int8", "i32"),
    "signed char": ("int8", "i32"),
    "unsigned char": ("uint8", "i32"),
    "short": ("int16", "i32"),
    "unsigned short": ("uint16", "i32"),
    "int": ("int32", "i32"),
    "unsigned int": ("uint32", "i32"),
    "long": ("int32", "i32"),
    "unsigned long": ("uint32", "i32"),
    "long long": ("int64", "i64"),
    "unsigned long long": ("uint64", "i64"),
}
_QUALIFIERS = re.compile(r"\b(const|volatile|restrict|__restrict|__restrict__)\b")
_SPELLINGS = {
    "signed": "int",
    "unsigned": "unsigned int",
    "signed int": "int",
    "short int": "short",
    "signed short": "short",
    "unsigned short int": "unsigned short",
    "long int": "long",
    "signed long": "long",
    "unsigned long int": "unsigned long",
    "long long int": "long long",
    "signed long long": "long long",
    "unsigned long long int": "unsigned long long",
}


def _base_type(spelling: str) -> str:
    """A C type without qualifiers, in one canonical spelling."""
    bare = " ".join(_QUALIFIERS.sub(" ", spelling).split())
    return _SPELLINGS.get(bare, bare)


@dataclasses.dataclass(frozen=True, slots=True)
class Param:
    """One parameter of an entry after `(start, end)`."""

    name: str
    """The author's name for it, or `argN` when the module does not say."""
    wasm_type: str
    """`i32`, `i64`, `f32` or `f64`."""
    ctype: str | None = None
    """The C type as written (`const float *`), or None when the module does not say."""
    pointer: bool = False
    """True if it is a pointer: an array argument, passed as its byte address."""
    dtype: np.dtype[np.generic] | None = None
    """The dtype of the pointee (arrays) or of the scalar; None when unchecked
    (`void *`, a struct, or an untyped `i32`)."""
    const: bool = False
    """True for a pointer to const: the kernel only reads the array."""

    def __str__(self) -> str:
        if self.ctype is None:
            return f"{self.wasm_type} {self.name}"
        sep = "" if self.ctype.endswith("*") else " "
        return f"{self.ctype}{sep}{self.name}"


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """A function of the kernel module that `WorkerPool.run` can call (`entry=name`)."""

    name: str
    export: str
    """The export name: `entry:NAME`, or `compute_partition`."""
    index: int
    """Its position among the module's entries (the runner's dispatch index)."""
    params: tuple[Param, ...]
    """Parameters after `(start, end)`."""
    typed: bool
    """True when the module records the C signature (`sharedwasm build` does)."""

    def __str__(self) -> str:
        return f"{self.name}({', '.join(['start', 'end', *map(str, self.params)])})"

    @property
    def wasm_params(self) -> tuple[str, ...]:
        """The wasm types of the parameters after `(start, end)`."""
        return tuple(p.wasm_type for p in self.params)


_TOP_QUALIFIERS = re.compile(r"\*(\s*\b(const|volatile|restrict|__restrict|__restrict__)\b)+\s*$")
"""Qualifiers of the pointer itself (`float *const x`, `float *restrict x`): they say
nothing about the array, so they are dropped before the pointee is read."""


def c_param(name: str, written: str, canonical: str) -> Param:
    """Describe a parameter of C type `canonical` (typedefs resolved); `written` is for messages.

    Raises:
        ValueError: the type cannot be passed to a kernel entry.
    """
    canonical = _TOP_QUALIFIERS.sub("*", canonical.strip())
    if canonical.rstrip().endswith("*") or "[" in canonical:
        pointee = canonical.rstrip()
        pointee = pointee[: pointee.rindex("*")] if pointee.endswith("*") else pointee
        if pointee.endswith("*"):  # a pointer to pointers: unchecked, like void *
            return Param(name, "i32", written, pointer=True)
        const = re.search(r"\bconst\b", pointee) is not None
        base = _base_type(pointee.split("[")[0])
        scalar = _C_SCALARS.get(base)
        dtype = np.dtype(scalar[0]) if scalar is not None else None
        return Param(name, "i32", written, pointer=True, dtype=dtype, const=const)
    base = _base_type(canonical)
    scalar = _C_SCALARS.get(base)
    if scalar is None:
        raise ValueError(
            f"parameter {name!r} has type {written!r}, which a kernel entry cannot take: "
            "use a number type (int, uint8_t, float, double, ...) or a pointer"
        )
    return Param(name, scalar[1], written, dtype=np.dtype(scalar[0]))


def _record(payload: bytes | None) -> Mapping[str, list[Mapping[str, str]]]:
    if payload is None:
        return {}
    try:
        record = json.loads(payload.decode("utf-8"))
        if record.get("version") != SIGNATURE_VERSION:
            raise KernelError(
                f"{SIGNATURE_SECTION} must be version {SIGNATURE_VERSION} "
                f"(got {record.get('version')!r}): rebuild the kernel with this sharedwasm"
            )
        entries = record["entries"]
        if not isinstance(entries, dict):
            raise TypeError("entries is not an object")
        return entries
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        if isinstance(exc, KernelError):
            raise
        raise KernelError(f"the {SIGNATURE_SECTION} custom section is not valid: {exc}") from exc


def read_entries(
    exported: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]] | None],
    exports: Mapping[str, str],
    signature_section: bytes | None,
) -> dict[str, Entry]:
    """Find the entries among a module's exports, in export order, with their parameters.

    Raises:
        KernelError: there is none, one has the wrong shape, or the signature
            record disagrees with the wasm types.
    """
    record = _record(signature_section)
    entries: dict[str, Entry] = {}
    for export, kind in exports.items():
        if export == LEGACY_ENTRY:
            name = LEGACY_ENTRY
        elif export.startswith(ENTRY_PREFIX):
            name = export[len(ENTRY_PREFIX) :]
            if not name:
                raise KernelError(f"export {export!r} must name its entry after {ENTRY_PREFIX!r}")
        else:
            continue
        signature = exported.get(export) if kind == "func" else None
        if signature is None:
            got = "a function of a non-function type" if kind == "func" else f"a {kind}"
            raise KernelError(f"{export} must be a function (i32, i32, ...) -> () (got {got})")
        params, results = signature
        extra = params[2:]
        shape_ok = params[:2] == ("i32", "i32") and not results
        if name == LEGACY_ENTRY and (extra or not shape_ok):
            raise KernelError(
                f"{LEGACY_ENTRY} must be a function (i32, i32) -> () (got function "
                f"({', '.join(params)}) -> ({', '.join(results)})); an entry with more "
                f"parameters is exported as {ENTRY_PREFIX}NAME"
            )
        if not shape_ok or any(t not in WASM_TYPES for t in extra):
            raise KernelError(
                f"{export} must be a function (i32 start, i32 end, then i32, i64, f32 or f64 "
                f"parameters) -> () (got function ({', '.join(params)}) -> ({', '.join(results)}))"
            )
        if len(extra) > ARGUMENT_SLOTS:
            raise KernelError(
                f"{export} must take at most {ARGUMENT_SLOTS} parameters after (start, end) "
                f"(got {len(extra)})"
            )
        described = record.get(name)
        if described is None:
            typed = False
            plist = tuple(Param(f"arg{i}", t) for i, t in enumerate(extra))
        else:
            typed = True
            plist = _typed_params(export, described, extra)
        entries[name] = Entry(name, export, len(entries), plist, typed)
    if not entries:
        raise KernelError(
            f"kernel must export an entry: {LEGACY_ENTRY}(start: i32, end: i32), or functions "
            f"named {ENTRY_PREFIX}NAME taking (start: i32, end: i32, ...) (it has none)"
        )
    return entries


def _typed_params(
    export: str, described: list[Mapping[str, str]], extra: tuple[str, ...]
) -> tuple[Param, ...]:
    if not isinstance(described, list) or len(described) != len(extra):
        count = len(described) if isinstance(described, list) else described
        raise KernelError(
            f"{export}'s recorded signature must list its {len(extra)} parameter(s) after "
            f"(start, end) (got {count!r}): the module's {SIGNATURE_SECTION} section does not "
            "match its code"
        )
    params: list[Param] = []
    for i, (item, wasm_type) in enumerate(zip(described, extra, strict=True)):
        try:
            name, written = str(item["name"]), str(item["type"])
            canonical = str(item.get("canonical", written))
            param = c_param(name or f"arg{i}", written, canonical)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise KernelError(f"{export}'s recorded parameter {i} is not valid: {exc}") from exc
        if param.wasm_type != wasm_type:
            raise KernelError(
                f"{export}'s parameter {param.name!r} is recorded as {written!r}, which is "
                f"{param.wasm_type} in wasm, but the function takes {wasm_type}: the module's "
                f"{SIGNATURE_SECTION} section does not match its code"
            )
        params.append(param)
    return tuple(params)
