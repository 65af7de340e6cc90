"""Stop checks: a rewrite of a module's code so that the host can stop it from outside.

`add_stop_checks` inserts, at the top of every `loop` body the policy picks
(and at the entry of every function that makes a call), the sequence

    global.get $stop_address      ;; or, with settable=False: i32.const 0
    i32.atomic.load8_u            ;;                           ... offset=ADDRESS
    if
      unreachable
    end

where `$stop_address` is a global appended to the module and exported as
`STOP_ADDRESS_EXPORT`. The host points it at a byte of the memory, the stop
byte; storing a non-zero value there makes every thread running the module
trap ("unreachable") at its next check. A check right after the `loop`
instruction runs whenever the loop is entered and whenever a branch goes back
to it. The atomic load needs the threads proposal, which every engine that
runs shared memory has.

Two ways to find the byte. Settable (the default): each check reads the
mutable global, so each instance can have a byte of its own; that costs a
global read and a bounds check per check, and the atomic load makes both be
done again at every check. Fixed (`settable=False`): the address is a
constant in every check, inside the memory's minimum size, so the bounds
check is dropped at compile time and a check is one byte load and a branch;
the global, immutable, only says where the byte is.

Why these places suffice ("all-loops"): in structured wasm every cycle of
control flow runs through a `loop` header, so a thread that passes no check
can only run forward through code it has not run yet, or call. Calls are
covered by the entry checks: a function that calls anything checks on entry,
so unbounded or exponential recursion (`fib(60)`, a `return_call` cycle)
passes a check on every call that can call again; a function that calls
nothing and has no loop runs its body once. What no check reaches is a thread
parked in `memory.atomic.wait` with no timeout, and a single long instruction
(`memory.fill` of a gigabyte).

"outer-loops" checks only loops that no other loop of the same function
encloses: cheaper in tight inner loops, but a thread spinning forever in an
inner loop is not stopped. Which loops a policy checked is in the returned
`StopChecks`.

The rewrite keeps every index: the global comes after every imported and
defined one, the export after every export; only the code section (and the
global and export sections, and the name section's label names, which count
the inserted `if` blocks) change; every other section is copied byte for byte.
Custom sections that hold code offsets (DWARF `.debug_*`, `sourceMappingURL`,
`external_debug_info`, branch hints) would be wrong afterwards, so they are
dropped and listed: a debugger would rather have no line table than a wrong
one. A relocatable object (`linking`, `reloc.*`) is refused.

Every instruction of the code section is decoded, immediates and all: MVP,
sign extension, saturating truncation, bulk memory, reference types, typed
function references, tail calls, multi-value block types, SIMD and relaxed
SIMD, threads, wide arithmetic and exception handling (`try_table`). Anything
else (GC, stack switching, the legacy `try`/`catch`, shared-everything
threads, FP16), and any byte stream that does not decode, raises
`InstrumentError`: the rewrite never guesses.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Literal

from ._binary import encode_section, encode_uleb

STOP_ADDRESS_EXPORT = "sharedwasm:stop_address"
"""The export name of the global holding the stop byte's address. The colon
keeps it out of any C or WAT identifier a kernel could export."""

Policy = Literal["all-loops", "outer-loops"]
POLICIES: tuple[Policy, ...] = ("all-loops", "outer-loops")

_MAGIC = b"\0asm\x01\0\0\0"

# Canonical order of the known sections (custom sections go anywhere).
_ORDER = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 13: 6, 6: 7, 7: 8, 8: 9, 9: 10, 12: 11, 10: 12, 11: 13}
_GLOBAL, _EXPORT, _CODE = 6, 7, 10

# Custom sections that address code by byte offset: stale once code moves.
_OFFSET_SECTIONS = ("sourceMappingURL", "external_debug_info")
_OFFSET_PREFIXES = (".debug_", "metadata.code.")


class InstrumentError(ValueError):
    """A module the stop checks cannot be inserted into: a construct they do not know, or bad bytes.

    `offset` is the byte offset in the module where decoding stopped (None if
    the problem is not at one place); `function` the index, in the function
    index space, of the function being decoded (None outside code).
    """

    def __init__(self, message: str, *, offset: int | None = None, function: int | None = None):
        super().__init__(message)
        self.offset = offset
        self.function = function


@dataclasses.dataclass(frozen=True, slots=True)
class StopChecks:
    """What `add_stop_checks` did to a module."""

    policy: Policy
    global_index: int
    """Index of the appended global: imported plus defined globals before it."""
    address: int
    """The stop byte's address: the global's initial value."""
    settable: bool
    """Whether the checks read the address from the global (else it is built in)."""
    loops: int
    """Loops in the module's functions."""
    checked_loops: int
    """Loops that got a check."""
    checked_entries: int
    """Functions that got a check at entry (those that make a call)."""
    functions: int
    """Defined functions whose body changed."""
    dropped_sections: tuple[str, ...] = ()
    """Custom sections left out because they hold code offsets."""
    export: str = STOP_ADDRESS_EXPORT


# -- reading ---------------------------------------------------------------------


class _Reader:
    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def fail(self, message: str) -> InstrumentError:
        return InstrumentError(message, offset=self.pos)

    def peek(self) -> int:
        """Return the next byte, or -1 at the end."""
        return self.data[self.pos] if self.pos < self.end else -1

    def byte(self) -> int:
        if self.pos >= self.end:
            raise self.fail("unexpected end of the module's bytes")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uleb(self, bits: int = 32) -> int:
        result = shift = 0
        data, pos, end = self.data, self.pos, self.end
        while True:
            if pos >= end:
                self.pos = pos
                raise self.fail("unexpected end of the module's bytes in a LEB128 number")
            b = data[pos]
            pos += 1
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
            if shift >= bits:
                self.pos = pos
                raise self.fail(f"LEB128 number longer than a u{bits} allows")
        self.pos = pos
        if result >> bits:
            raise self.fail(f"LEB128 number too large for a u{bits}")
        return result

    def sleb(self, bits: int) -> int:
        result = shift = 0
        for _ in range(-(-bits // 7)):
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result - (1 << shift) if b & 0x40 else result
        raise self.fail(f"LEB128 number longer than an s{bits} allows")

    def skip(self, n: int) -> None:
        if self.pos + n > self.end:
            raise self.fail("unexpected end of the module's bytes")
        self.pos += n

    def name(self) -> str:
        n = self.uleb()
        start = self.pos
        self.skip(n)
        try:
            return self.data[start : self.pos].decode("utf-8")
        except UnicodeDecodeError:
            raise InstrumentError("a name is not UTF-8", offset=start) from None

    def heaptype(self) -> None:
        b = self.peek()
        if b == 0x65:
            raise self.fail("shared heap types (shared-everything threads) cannot be instrumented")
        if 0x40 <= b <= 0x7F:  # an abstract heap type: one negative s33 byte
            if not 0x68 <= b <= 0x75:
                raise self.fail(f"unknown heap type {b:#04x}")
            self.pos += 1
        elif self.sleb(33) < 0:
            raise self.fail("heap type index is negative")

    def valtype(self) -> None:
        b = self.byte()
        if b in (0x63, 0x64):  # (ref null? heaptype)
            self.heaptype()
        elif b == 0x65:
            self.pos -= 1
            raise self.fail(
                "shared reference types (shared-everything threads) cannot be instrumented"
            )
        elif not (0x7B <= b <= 0x7F or 0x68 <= b <= 0x75):
            self.pos -= 1
            raise self.fail(f"unknown value type {b:#04x}")

    def blocktype(self) -> None:
        b = self.peek()
        if 0x40 <= b <= 0x7F:  # empty (0x40) or one value type, never an s33 index
            if b != 0x40:
                self.valtype()
            else:
                self.pos += 1
        elif self.sleb(33) < 0:
            raise self.fail("block type index is negative")

    def memarg(self) -> None:
        flags = self.uleb()
        if flags & 0x40:  # multi-memory: a memory index follows
            self.uleb()
        self.uleb(64)  # offset: a u64 on a 64-bit memory


def _limits(r: _Reader) -> tuple[bool, int]:
    """Skip a memory or table type's limits; return (64-bit, minimum size in bytes).

    For a table the size is meaningless and ignored.
    """
    flags = r.uleb()
    if flags & ~0x0F:
        raise r.fail(f"unknown limits flags {flags:#x}")
    minimum = r.uleb(64)
    if flags & 1:
        r.uleb(64)
    page_log2 = 16
    if flags & 8:  # custom page size: its log2
        page_log2 = r.uleb()
    return bool(flags & 4), minimum << min(page_log2, 64)


# -- the code section ------------------------------------------------------------

# Immediate kinds of the one-byte opcodes.
(
    _NONE,
    _BLOCK,
    _LOOP,
    _END,
    _U32,
    _CALL,
    _CALL_U32,
    _BR_TABLE,
    _SELECT_T,
    _TRY_TABLE,
    _MEMARG,
    _S32,
    _S64,
    _BYTES4,
    _BYTES8,
    _HEAPTYPE,
    _PREFIX_FC,
    _PREFIX_FD,
    _PREFIX_FE,
) = range(19)

_KIND: dict[int, int] = {
    0x00: _NONE,  # unreachable
    0x01: _NONE,  # nop
    0x02: _BLOCK,  # block
    0x03: _LOOP,
    0x04: _BLOCK,  # if
    0x05: _NONE,  # else
    0x08: _U32,  # throw tag
    0x0A: _NONE,  # throw_ref
    0x0B: _END,
    0x0C: _U32,  # br
    0x0D: _U32,  # br_if
    0x0E: _BR_TABLE,
    0x0F: _NONE,  # return
    0x10: _CALL,  # call f
    0x11: _CALL_U32,  # call_indirect type table
    0x12: _CALL,  # return_call f
    0x13: _CALL_U32,  # return_call_indirect type table
    0x14: _CALL,  # call_ref type
    0x15: _CALL,  # return_call_ref type
    0x1A: _NONE,  # drop
    0x1B: _NONE,  # select
    0x1C: _SELECT_T,
    0x1F: _TRY_TABLE,
    0x20: _U32,  # local.get
    0x21: _U32,  # local.set
    0x22: _U32,  # local.tee
    0x23: _U32,  # global.get
    0x24: _U32,  # global.set
    0x25: _U32,  # table.get
    0x26: _U32,  # table.set
    **dict.fromkeys(range(0x28, 0x3F), _MEMARG),  # loads and stores
    0x3F: _U32,  # memory.size memory
    0x40: _U32,  # memory.grow memory
    0x41: _S32,  # i32.const
    0x42: _S64,  # i64.const
    0x43: _BYTES4,  # f32.const
    0x44: _BYTES8,  # f64.const
    **dict.fromkeys(range(0x45, 0xC5), _NONE),  # numeric, then sign extension (0xC0-0xC4)
    0xD0: _HEAPTYPE,  # ref.null
    0xD1: _NONE,  # ref.is_null
    0xD2: _U32,  # ref.func
    0xD3: _NONE,  # ref.eq
    0xD4: _NONE,  # ref.as_non_null
    0xD5: _U32,  # br_on_null
    0xD6: _U32,  # br_on_non_null
    0xFC: _PREFIX_FC,
    0xFD: _PREFIX_FD,
    0xFE: _PREFIX_FE,
}

_REFUSED: dict[int, str] = {
    0x06: "the legacy exception handling instruction try (use try_table)",
    0x07: "the legacy exception handling instruction catch",
    0x09: "the legacy exception handling instruction rethrow",
    0x18: "the legacy exception handling instruction delegate",
    0x19: "the legacy exception handling instruction catch_all",
    **dict.fromkeys(range(0xE0, 0xE7), "a stack switching instruction"),
    0xFB: "a GC instruction",
}

# 0xFC: saturating truncation (0-7, none), bulk memory and tables (8-17),
# wide arithmetic (0x13-0x16, none): how many u32 immediates each has.
_FC_U32S = {
    **dict.fromkeys(range(8), 0),
    8: 2,  # memory.init data memory
    9: 1,  # data.drop
    10: 2,  # memory.copy memory memory
    11: 1,  # memory.fill memory
    12: 2,  # table.init elem table
    13: 1,  # elem.drop
    14: 2,  # table.copy table table
    15: 1,  # table.grow
    16: 1,  # table.size
    17: 1,  # table.fill
    **dict.fromkeys(range(0x13, 0x17), 0),
}

# 0xFD, SIMD and relaxed SIMD, by immediate.
_FD_MEMARG = frozenset((*range(0x0C), 0x5C, 0x5D))  # loads, splats, store, load_zero
_FD_LANE = frozenset(range(0x15, 0x23))  # extract_lane, replace_lane
_FD_MEMARG_LANE = frozenset(range(0x54, 0x5C))  # load*_lane, store*_lane
_FD_NONE = frozenset(range(0x0E, 0x15)) | frozenset(range(0x23, 0x54))
_FD_NONE |= frozenset(range(0x5E, 0x100)) - {
    0x9A, 0xA2, 0xA5, 0xA6, 0xAF, 0xB0, 0xB2, 0xB3, 0xB4, 0xBB,
    0xC2, 0xC5, 0xC6, 0xCF, 0xD0, 0xD2, 0xD3, 0xD4, 0xE2, 0xEE,
}  # fmt: skip
_FD_NONE |= frozenset(range(0x100, 0x114))  # relaxed SIMD

# 0xFE, threads: every one takes a memarg except atomic.fence (a zero byte).
_FE_MEMARG = frozenset((0x00, 0x01, 0x02, *range(0x10, 0x4F)))


@dataclasses.dataclass(slots=True)
class _Body:
    """What the scan of one function body found."""

    code_start: int
    """Offset of its first instruction (after the locals)."""
    loops: list[tuple[int, bool, int]]
    """Per loop: offset just after its block type, whether another loop encloses
    it, and its label index (the order of block, loop, if and try_table)."""
    calls: bool


def _scan_body(r: _Reader) -> _Body:
    """Decode one function body, from its locals to its final `end` at `r.end`."""
    for _ in range(r.uleb()):
        r.uleb()  # count
        r.valtype()
    code_start = r.pos
    loops: list[tuple[int, bool, int]] = []
    # One entry per open block: whether it is a loop; and how many loops are open.
    stack: list[bool] = []
    open_loops = 0
    labels = 0
    calls = False
    kinds = _KIND
    data, end = r.data, r.end
    while True:
        if r.pos >= end:
            raise r.fail("function body ends before its final end")
        op = data[r.pos]
        r.pos += 1
        kind = kinds.get(op)
        if kind is None:
            r.pos -= 1
            what = _REFUSED.get(op)
            if what is None:
                raise r.fail(f"unknown opcode {op:#04x}")
            raise r.fail(f"{what} ({op:#04x}) cannot be instrumented")
        if kind == _NONE:
            continue
        if kind == _U32:
            r.uleb()
        elif kind == _MEMARG:
            r.memarg()
        elif kind == _S32:
            r.sleb(32)
        elif kind == _END:
            if not stack:
                if r.pos != end:
                    raise r.fail("code after the final end of a function body")
                return _Body(code_start, loops, calls)
            if stack.pop():
                open_loops -= 1
        elif kind == _LOOP:
            r.blocktype()
            loops.append((r.pos, open_loops > 0, labels))
            labels += 1
            stack.append(True)
            open_loops += 1
        elif kind == _BLOCK:
            r.blocktype()
            labels += 1
            stack.append(False)
        elif kind == _CALL:
            r.uleb()
            calls = True
        elif kind == _CALL_U32:
            r.uleb()
            r.uleb()
            calls = True
        elif kind == _S64:
            r.sleb(64)
        elif kind == _BYTES4:
            r.skip(4)
        elif kind == _BYTES8:
            r.skip(8)
        elif kind == _BR_TABLE:
            for _ in range(r.uleb() + 1):
                r.uleb()
        elif kind == _SELECT_T:
            for _ in range(r.uleb()):
                r.valtype()
        elif kind == _TRY_TABLE:
            r.blocktype()
            for _ in range(r.uleb()):
                catch = r.byte()
                if catch in (0x00, 0x01):  # catch, catch_ref: tag label
                    r.uleb()
                elif catch not in (0x02, 0x03):  # catch_all, catch_all_ref: label
                    r.pos -= 1
                    raise r.fail(f"unknown catch clause {catch:#04x} of try_table")
                r.uleb()
            labels += 1
            stack.append(False)
        elif kind == _HEAPTYPE:
            r.heaptype()
        elif kind == _PREFIX_FC:
            _scan_fc(r, op)
        elif kind == _PREFIX_FD:
            _scan_fd(r, op)
        else:
            _scan_fe(r, op)


def _sub(r: _Reader) -> tuple[int, int]:
    """Read a prefixed opcode's sub-opcode; return it with the prefix's offset."""
    at = r.pos - 1
    return at, r.uleb()


def _refuse_sub(r: _Reader, at: int, prefix: int, sub: int, what: str) -> InstrumentError:
    r.pos = at
    return r.fail(f"unknown {what} instruction {prefix:#04x} {sub:#x}")


def _scan_fc(r: _Reader, prefix: int) -> None:
    at, sub = _sub(r)
    n = _FC_U32S.get(sub)
    if n is None:
        raise _refuse_sub(r, at, prefix, sub, "bulk memory, table or saturating conversion")
    for _ in range(n):
        r.uleb()


def _scan_fd(r: _Reader, prefix: int) -> None:
    at, sub = _sub(r)
    if sub in _FD_NONE:
        return
    if sub in _FD_MEMARG:
        r.memarg()
    elif sub in _FD_LANE:
        r.skip(1)
    elif sub in _FD_MEMARG_LANE:
        r.memarg()
        r.skip(1)
    elif sub in (0x0C, 0x0D):  # v128.const, i8x16.shuffle: 16 bytes
        r.skip(16)
    else:
        raise _refuse_sub(r, at, prefix, sub, "SIMD")


def _scan_fe(r: _Reader, prefix: int) -> None:
    at, sub = _sub(r)
    if sub in _FE_MEMARG:
        r.memarg()
    elif sub == 0x03:  # atomic.fence
        if r.byte() != 0:
            r.pos -= 1
            raise r.fail("atomic.fence must be followed by a zero byte")
    else:
        raise _refuse_sub(r, at, prefix, sub, "atomic")


# -- writing ---------------------------------------------------------------------


def _sleb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if (n == 0 and not b & 0x40) or (n == -1 and b & 0x40):
            out.append(b)
            return bytes(out)
        out.append(b | 0x80)


def check_sequence(
    global_index: int, *, address: int | None = None, memory64: bool = False
) -> bytes:
    """Return the bytes of one stop check.

    It reads the byte at the address held in global `global_index`, or, if
    `address` is given, the byte at that constant address (`memory64`: the
    memory takes i64 addresses).

    The load is atomic for what it forbids: the wasm memory model lets a
    compiler treat a plain load of a byte that the loop never stores as loop
    invariant, read it once before the loop, or reuse an outer check's value
    in an inner loop, and then the check never sees the stop. Cranelift keeps
    a plain byte load in the loop today, though it does hoist the global and
    bounds reads around it; an atomic load is a read of memory every time
    under any optimiser. On x86-64 and arm64 it is the same one instruction.
    It is one byte wide so that it needs no alignment check.
    """
    if address is None:
        load = b"\x23" + encode_uleb(global_index) + b"\xfe\x12\x00\x00"  # global.get; load8_u
    else:
        # Address 0 plus a constant offset: a compiler sees the whole access
        # and drops its bounds check when it lies within the minimum memory.
        zero = b"\x42\x00" if memory64 else b"\x41\x00"  # i64.const 0 / i32.const 0
        load = zero + b"\xfe\x12\x00" + encode_uleb(address)  # i32.atomic.load8_u offset=address
    return load + b"\x04\x40\x00\x0b"  # if (empty) unreachable end


# -- the module ------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Section:
    id: int
    start: int
    """Offset of the section id byte."""
    payload: int
    end: int
    name: str = ""
    """A custom section's name."""


def _read_sections(wasm: bytes) -> list[_Section]:
    if wasm[:8] != _MAGIC:
        if wasm[:4] == b"\0asm":
            raise InstrumentError(
                f"only core modules of version 1 can be instrumented (got version bytes "
                f"{wasm[4:8]!r}; a component is not a module)",
                offset=4,
            )
        raise InstrumentError(
            f"not a WebAssembly module: a module starts with b'\\0asm' (got {wasm[:4]!r})",
            offset=0,
        )
    r = _Reader(wasm, 8)
    sections: list[_Section] = []
    last = 0
    while r.pos < len(wasm):
        start = r.pos
        section_id = r.byte()
        size = r.uleb()
        payload = r.pos
        end = payload + size
        if end > len(wasm):
            raise InstrumentError(
                f"section {section_id} runs past the end of the module", offset=start
            )
        section = _Section(section_id, start, payload, end)
        if section_id == 0:
            section.name = _Reader(wasm, payload, end).name()
        elif section_id in _ORDER:
            if _ORDER[section_id] <= last:
                raise InstrumentError(f"section {section_id} is out of order", offset=start)
            last = _ORDER[section_id]
        else:
            raise InstrumentError(f"unknown section id {section_id}", offset=start)
        sections.append(section)
        r.pos = end
    return sections


@dataclasses.dataclass(slots=True)
class _Module:
    imported_functions: int = 0
    imported_globals: int = 0
    defined_globals: int = 0
    defined_functions: int = 0
    memory: tuple[bool, int] | None = None
    """Memory 0: whether it is 64-bit, and its minimum size in bytes; None if
    the module has no memory."""
    exports: tuple[str, ...] = ()


def _import(r: _Reader, m: _Module) -> None:
    """Read one import's type, counting it in `m`."""
    kind = r.byte()
    if kind == 0:  # function: type index
        r.uleb()
        m.imported_functions += 1
    elif kind == 1:  # table: reference type, limits
        r.valtype()
        _limits(r)
    elif kind == 2:
        memory = _limits(r)
        if m.memory is None:
            m.memory = memory
    elif kind == 3:  # global: value type, mutability
        r.valtype()
        r.byte()
        m.imported_globals += 1
    elif kind == 4:  # tag: attribute, type index
        r.byte()
        r.uleb()
    else:
        r.pos -= 1
        raise r.fail(f"unknown import kind {kind:#04x}")


def _read_module(wasm: bytes, sections: list[_Section]) -> _Module:
    m = _Module()
    for s in sections:
        r = _Reader(wasm, s.payload, s.end)
        if s.id == 2:
            for _ in range(r.uleb()):
                r.name()  # module
                if r.name() or r.peek() not in (0x7E, 0x7F):
                    _import(r, m)
                elif r.byte() == 0x7F:  # compact: (name, type) pairs of one module
                    for _ in range(r.uleb()):
                        r.name()
                        _import(r, m)
                else:  # compact: one type for many names
                    one = _Module()
                    _import(r, one)
                    names = r.uleb()
                    for _ in range(names):
                        r.name()
                    m.imported_functions += names * one.imported_functions
                    m.imported_globals += names * one.imported_globals
                    if m.memory is None and names:
                        m.memory = one.memory
        elif s.id == 3:
            m.defined_functions = r.uleb()
        elif s.id == 5:
            if r.uleb() and m.memory is None:
                m.memory = _limits(r)
        elif s.id == _GLOBAL:
            m.defined_globals = r.uleb()
        elif s.id == _EXPORT:
            exports = []
            for _ in range(r.uleb()):
                exports.append(r.name())
                r.byte()
                r.uleb()
            m.exports = tuple(exports)
        elif s.id == 0 and (s.name == "linking" or s.name.startswith("reloc.")):
            raise InstrumentError(
                f"a relocatable object file (it has a {s.name!r} section) cannot be "
                "instrumented: link it into a module first",
                offset=s.start,
            )
    return m


def _rewrite_code(
    wasm: bytes, section: _Section, m: _Module, policy: Policy, check: bytes, entry_checks: bool
) -> tuple[bytes, dict[int, tuple[int, list[int]]], int, int, int, int]:
    """Return the new code section payload and, per changed function, its label shifts.

    The shifts map a function index to (1 if it got an entry check else 0,
    the sorted label indices of its checked loops).
    """
    r = _Reader(wasm, section.payload, section.end)
    count = r.uleb()
    if count != m.defined_functions:
        raise r.fail(
            f"the code section has {count} bodies for {m.defined_functions} declared functions"
        )
    out = [encode_uleb(count)]
    shifts: dict[int, tuple[int, list[int]]] = {}
    loops = checked_loops = checked_entries = 0
    for i in range(count):
        function = m.imported_functions + i
        size = r.uleb()
        start = r.pos
        if start + size > section.end:
            raise r.fail(f"function {function}'s body runs past the code section")
        try:
            body = _scan_body(_Reader(wasm, start, start + size))
        except InstrumentError as exc:
            exc.function = function
            exc.args = (f"function {function}: {exc} (at byte {exc.offset:#x})",)
            raise
        r.pos = start + size
        loops += len(body.loops)
        points = [
            (at, label) for at, nested, label in body.loops if policy == "all-loops" or not nested
        ]
        entry = entry_checks and body.calls
        if not points and not entry:
            out.append(encode_uleb(size) + wasm[start : start + size])
            continue
        pieces = [wasm[start : body.code_start]]
        if entry:
            pieces.append(check)
            checked_entries += 1
        cursor = body.code_start
        for at, _ in points:
            pieces.append(wasm[cursor:at])
            pieces.append(check)
            cursor = at
        pieces.append(wasm[cursor : start + size])
        new_body = b"".join(pieces)
        out.append(encode_uleb(len(new_body)) + new_body)
        checked_loops += len(points)
        shifts[function] = (int(entry), [label for _, label in points])
    if r.pos != section.end:
        raise r.fail("bytes after the last function body of the code section")
    return b"".join(out), shifts, loops, checked_loops, checked_entries, len(shifts)


def _remap_labels(payload: bytes, shifts: dict[int, tuple[int, list[int]]]) -> bytes:
    """Return a name section's contents with label indices moved past the inserted `if`s.

    Label names (subsection 3) index a function's block, loop, if and
    try_table instructions in order, so each inserted check shifts the labels
    after it by one. A section that does not parse is returned as it was:
    engines ignore a broken name section, and it was broken before.
    """
    r = _Reader(payload)
    out = bytearray()
    try:
        while r.pos < len(payload):
            start = r.pos
            sub = r.byte()
            size = r.uleb()
            end = r.pos + size
            if end > len(payload):
                return payload
            if sub != 3:
                out += payload[start:end]
                r.pos = end
                continue
            functions = []
            for _ in range(r.uleb()):
                function = r.uleb()
                entry, checked = shifts.get(function, (0, []))
                names = []
                for _ in range(r.uleb()):
                    label = r.uleb()
                    name_start = r.pos
                    r.skip(r.uleb())
                    new = label + entry + bisect.bisect_left(checked, label)
                    names.append(encode_uleb(new) + payload[name_start : r.pos])
                functions.append(encode_uleb(function) + encode_uleb(len(names)) + b"".join(names))
            if r.pos != end:
                return payload
            content = encode_uleb(len(functions)) + b"".join(functions)
            out += bytes([sub]) + encode_uleb(len(content)) + content
    except InstrumentError:
        return payload
    return bytes(out)


def add_stop_checks(
    wasm: bytes | bytearray | memoryview,
    *,
    policy: Policy = "all-loops",
    address: int = 0,
    settable: bool = True,
    entry_checks: bool = True,
) -> tuple[bytes, StopChecks]:
    """Return `wasm` with stop checks inserted, and what was done.

    Each check reads one byte of memory 0, the stop byte, and traps if it is
    not zero. Storing 1 as the i32 at a 4-aligned stop address sets it.

    Args:
        wasm: a WebAssembly module with a memory.
        policy: which loops get a check: "all-loops", or "outer-loops" (those
            that no other loop of the same function encloses).
        address: the stop byte's address, and the initial value of the
            exported global: what the start function reads, and any code that
            runs before the host sets the global.
        settable: True: every check reads the address from the exported
            global, which is mutable, so each instance can have its own stop
            byte. False: `address` is written into every check and the global
            is immutable, only saying where the byte is; each check is then
            one load and a branch, with no global to read and no bounds
            check, and `address` must lie within the memory's minimum size.
        entry_checks: also check at the entry of every function that makes a
            call, so that recursion without loops can be stopped too.

    Returns:
        The new module's bytes and a `StopChecks`. The new global (i32, or
        i64 on a 64-bit memory) is exported as `STOP_ADDRESS_EXPORT`.

    Raises:
        TypeError: `wasm` is not bytes-like, or `address` not an int.
        ValueError: an unknown policy, or an address out of range.
        InstrumentError: the bytes are not a module this pass can rewrite: an
            instruction or encoding it does not know, a module without a
            memory, a relocatable object, or one that has stop checks already.
    """
    if not isinstance(wasm, bytes | bytearray | memoryview):
        raise TypeError(f"wasm must be bytes (got {type(wasm).__name__})")
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {', '.join(map(repr, POLICIES))} (got {policy!r})")
    if isinstance(address, bool) or not isinstance(address, int):
        raise TypeError(f"address must be an int (got {type(address).__name__})")
    if address < 0:
        raise ValueError(f"address must be non-negative (got {address!r})")
    data = bytes(wasm)
    sections = _read_sections(data)
    m = _read_module(data, sections)
    if m.memory is None:
        raise InstrumentError("module has no memory, so there is no byte a stop check could read")
    memory64, minimum = m.memory
    if address >> (64 if memory64 else 32):
        raise ValueError(f"address must fit the module's memory addresses (got {address!r})")
    if not settable and address >= minimum:
        raise ValueError(
            f"address must lie within the module's minimum memory ({minimum} bytes) when the "
            f"checks have it built in (got {address!r})"
        )
    if STOP_ADDRESS_EXPORT in m.exports:
        raise InstrumentError(
            f"module already exports {STOP_ADDRESS_EXPORT!r}: it has stop checks already"
        )
    global_index = m.imported_globals + m.defined_globals
    check = check_sequence(global_index, address=None if settable else address, memory64=memory64)
    mutable = b"\x01" if settable else b"\x00"
    if memory64:
        value = address - (1 << 64) if address >> 63 else address
        new_global = b"\x7e" + mutable + b"\x42" + _sleb(value) + b"\x0b"
    else:
        value = address - (1 << 32) if address >> 31 else address
        new_global = b"\x7f" + mutable + b"\x41" + _sleb(value) + b"\x0b"
    new_export = encode_uleb(len(STOP_ADDRESS_EXPORT)) + STOP_ADDRESS_EXPORT.encode() + b"\x03"
    new_export += encode_uleb(global_index)

    shifts: dict[int, tuple[int, list[int]]] = {}
    code = b""
    loops = checked_loops = checked_entries = functions = 0
    for s in sections:
        # First: a name section may come before the code whose labels it names.
        if s.id == _CODE:
            code, shifts, loops, checked_loops, checked_entries, functions = _rewrite_code(
                data, s, m, policy, check, entry_checks
            )
    out = [_MAGIC]
    dropped: list[str] = []
    pending = {_GLOBAL: encode_section(_GLOBAL, b"\x01" + new_global)}
    pending[_EXPORT] = encode_section(_EXPORT, b"\x01" + new_export)
    for s in sections:
        if s.id:
            for section_id in sorted(pending, key=_ORDER.__getitem__):
                if _ORDER[section_id] < _ORDER[s.id]:
                    out.append(pending.pop(section_id))
        raw = data[s.start : s.end]
        if s.id == _CODE:
            out.append(encode_section(_CODE, code))
        elif s.id in (_GLOBAL, _EXPORT):
            r = _Reader(data, s.payload, s.end)
            count = r.uleb()
            entry = new_global if s.id == _GLOBAL else new_export
            out.append(encode_section(s.id, encode_uleb(count + 1) + data[r.pos : s.end] + entry))
            del pending[s.id]
        elif s.id == 0 and (s.name in _OFFSET_SECTIONS or s.name.startswith(_OFFSET_PREFIXES)):
            dropped.append(s.name)
        elif s.id == 0 and s.name == "name" and shifts:
            r = _Reader(data, s.payload, s.end)
            r.name()
            contents = _remap_labels(data[r.pos : s.end], shifts)
            out.append(encode_section(0, data[s.payload : r.pos] + contents))
        else:
            out.append(raw)
    out.extend(pending[k] for k in sorted(pending, key=_ORDER.__getitem__))
    info = StopChecks(
        policy=policy,
        global_index=global_index,
        address=address,
        settable=settable,
        loops=loops,
        checked_loops=checked_loops,
        checked_entries=checked_entries,
        functions=functions,
        dropped_sections=tuple(dropped),
    )
    return b"".join(out), info
