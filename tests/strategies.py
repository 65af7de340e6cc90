"""Hypothesis strategies shared by the property tests."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from hypothesis import strategies as st

from sharedwasm._layout import STATUS_SLOT_BYTES

VIEW_DTYPES: tuple[np.dtype[np.generic], ...] = tuple(
    np.dtype(name)
    for name in (
        "u1",
        "i1",
        "<u2",
        ">i2",
        "<i4",
        ">u4",
        "<i8",
        "<u8",
        "<f2",
        "<f4",
        ">f4",
        "<f8",
        "<c8",
        "<c16",
    )
)
"""Fixed-size dtypes of every width and alignment a view supports, in both byte orders."""

INT_DTYPES: tuple[type[np.integer[Any]], ...] = (
    np.int8,
    np.uint8,
    np.int16,
    np.uint16,
    np.int32,
    np.uint32,
    np.int64,
    np.uint64,
)
"""Every integer type of 1, 2, 4 and 8 bytes, signed and unsigned."""

MAX_TOTAL = 10**7
"""Largest element count the partition properties try."""

MAX_WORKERS = 1024
"""Largest worker count the partition and layout properties try."""


@dataclasses.dataclass(frozen=True)
class ViewSpec:
    """Where to place a view: its dtype, a byte offset aligned for it, and an element count."""

    dtype: np.dtype[np.generic]
    offset: int
    count: int


@st.composite
def view_specs(draw: st.DrawFn, byte_length: int) -> ViewSpec:
    """Draw a dtype, an aligned offset and a count that fit in `byte_length` bytes."""
    dtype = draw(st.sampled_from(VIEW_DTYPES))
    slot = draw(st.integers(0, byte_length // dtype.alignment))
    offset = slot * dtype.alignment
    count = draw(st.integers(0, (byte_length - offset) // dtype.itemsize))
    return ViewSpec(dtype=dtype, offset=offset, count=count)


def totals() -> st.SearchStrategy[int]:
    """Draw element counts, with the small and edge cases drawn often."""
    return st.one_of(st.integers(0, 64), st.integers(0, MAX_TOTAL), st.just(MAX_TOTAL))


def worker_counts() -> st.SearchStrategy[int]:
    """Draw worker counts from 1 to `MAX_WORKERS`."""
    return st.one_of(st.integers(1, 16), st.integers(1, MAX_WORKERS))


def status_offsets(max_offset: int = 1 << 20) -> st.SearchStrategy[int]:
    """Draw status-board offsets that are valid: non-negative multiples of the slot size."""
    return st.integers(0, max_offset // STATUS_SLOT_BYTES).map(lambda k: k * STATUS_SLOT_BYTES)


# -- WebAssembly programs for the stop-check rewrite -------------------------------

PROGRAM_FUEL = 300
"""Loop iterations and self-calls a generated program may make in all, per call."""


@st.composite
def wat_programs(draw: st.DrawFn, max_functions: int = 4) -> str:
    """Draw the text of a module whose `run(i32) -> i32` always terminates.

    The functions mix nested and sibling loops, blocks, `if`/`else`, `br`,
    `br_if` and `br_table` to any enclosing label, calls (to earlier
    functions, and to itself while fuel lasts), `return_call`, SIMD (loads,
    lanes, shuffles, constants), atomics, bulk memory, saturating and
    sign-extension conversions, and integer division that may trap. Every
    label is named, so the name section holds label names. Termination: every
    loop header and every self-call first takes one unit of a global fuel
    and leaves when there is none, and other calls only go to earlier
    functions. Memory accesses stay inside the first page.
    """
    n = draw(st.integers(1, max_functions))
    counter = [0]

    def label(kind: str) -> str:
        counter[0] += 1
        return f"${kind}{counter[0]}"

    def address(depth: int, align: int) -> str:
        return f"(i32.and {i32(depth)} (i32.const {0xFF0 & -align}))"

    def i32(depth: int) -> str:
        leaf = draw(st.integers(0, 2 if depth <= 0 else 13))
        if leaf == 0:
            return f"(i32.const {draw(st.integers(-(2**31), 2**31 - 1))})"
        if leaf in (1, 2):
            return f"(local.get {draw(st.sampled_from(['$a', '$x', '$y', '$p']))})"
        d = depth - 1
        if leaf == 3:
            op = draw(st.sampled_from(["add", "sub", "mul", "xor", "and", "or", "shl", "rotl"]))
            return f"(i32.{op} {i32(d)} {i32(d)})"
        if leaf == 4:
            return f"(i32.load offset={draw(st.integers(0, 12))} {address(d, 4)})"
        if leaf == 5:
            return f"(i32.atomic.load {address(d, 4)})"
        if leaf == 6:
            return f"(i32x4.extract_lane {draw(st.integers(0, 3))} (local.get $v))"
        if leaf == 7:
            return f"(i32.extend8_s {i32(d)})"
        if leaf == 8:
            return f"(i32.trunc_sat_f32_s (f32.convert_i32_s {i32(d)}))"
        if leaf == 9:
            return f"(i32.wrap_i64 (i64.mul (i64.extend_i32_u {i32(d)}) (i64.const 0x100000001)))"
        if leaf == 10:
            return f"(select {i32(d)} {i32(d)} {i32(d)})"
        if leaf == 11:
            return f"(i32.div_u {i32(d)} {i32(d)})"  # may trap: a zero divisor
        if leaf == 12:
            return f"(i32.atomic.rmw.add {address(d, 4)} {i32(d)})"
        return "(memory.size)"

    def statements(depth: int, labels: list[str], function: int) -> str:
        return " ".join(statement(depth, labels, function) for _ in range(draw(st.integers(0, 4))))

    def statement(depth: int, labels: list[str], function: int) -> str:
        kind = draw(st.integers(0, 5 if depth <= 0 else 16))
        d = depth - 1
        if kind == 0:
            return f"(local.set {draw(st.sampled_from(['$x', '$y', '$p']))} {i32(2)})"
        if kind == 1:
            return f"(i32.store offset={draw(st.integers(0, 12))} {address(2, 4)} {i32(2)})"
        if kind == 2:
            return (
                f"(local.set $v (i32x4.add (local.get $v) (v128.load {address(1, 16)})))"
                f" (v128.store {address(1, 16)} (local.get $v))"
            )
        if kind == 3:
            lanes = " ".join(str(draw(st.integers(0, 31))) for _ in range(16))
            return (
                f"(local.set $v (i8x16.shuffle {lanes} (local.get $v)"
                f" (v128.const i32x4 {' '.join(str(draw(st.integers(0, 99))) for _ in range(4))})))"
            )
        if kind == 4:
            return (
                f"(local.set $v (v128.load32_lane {draw(st.integers(0, 3))} {address(1, 4)}"
                f" (local.get $v))) (atomic.fence)"
            )
        if kind == 5:
            return f"(memory.fill {address(1, 1)} {i32(1)} (i32.const {draw(st.integers(0, 64))}))"
        if kind in (6, 7):  # a loop, maybe with a body that branches anywhere
            exit_, loop = label("exit"), label("loop")
            inner = [*labels, exit_, loop]
            return (
                f"(block {exit_} (loop {loop} (br_if {exit_} (call $tick))"
                f" {statements(d, inner, function)}"
                f" (br_if {loop} (i32.and {i32(1)} (i32.const 1)))))"
            )
        if kind == 8:
            name = label("block")
            return f"(block {name} {statements(d, [*labels, name], function)})"
        if kind == 9:
            name = label("if")
            inner = [*labels, name]
            return (
                f"(if {name} {i32(1)} (then {statements(d, inner, function)})"
                f" (else {statements(d, inner, function)}))"
            )
        if kind == 10 and labels:
            return f"(br_if {draw(st.sampled_from(labels))} {i32(1)})"
        if kind == 11 and labels:
            targets = " ".join(draw(st.lists(st.sampled_from(labels), min_size=1, max_size=4)))
            return f"(br_table {targets} {i32(1)})"
        if kind == 12 and labels:
            # Last in its block: whatever follows it is dead code.
            return f"(br {draw(st.sampled_from(labels))})"
        if kind == 13 and function:
            callee = draw(st.integers(0, function - 1))
            return f"(local.set $x (call $f{callee} {i32(1)}))"
        if kind == 14:
            return f"(if (i32.eqz (call $tick)) (then (drop (call $f{function} {i32(1)}))))"
        if kind == 15:
            return (
                f"(memory.copy {address(1, 1)} {address(1, 1)}"
                f" (i32.const {draw(st.integers(0, 64))}))"
            )
        return f"(drop (i64.atomic.rmw.xor {address(1, 8)} (i64.extend_i32_s {i32(1)})))"

    functions = []
    for f in range(n):
        body = statements(3, [], f)
        tail = f"(i32.add (local.get $x) (i32.add (local.get $y) {i32(2)}))"
        if f and draw(st.booleans()):
            tail = f"(return_call $f{draw(st.integers(0, f - 1))} {tail})"
        functions.append(
            f"(func $f{f} (param $a i32) (result i32)"
            " (local $x i32) (local $y i32) (local $p i32) (local $v v128)"
            f" {body} {tail})"
        )
    return f"""(module
  (import "env" "memory" (memory 1 1 shared))
  (global $fuel (mut i32) (i32.const 0))
  ;; 1 when the fuel is gone, else 0 after taking one unit.
  (func $tick (result i32)
    (if (result i32) (i32.eqz (global.get $fuel))
      (then (i32.const 1))
      (else (global.set $fuel (i32.sub (global.get $fuel) (i32.const 1))) (i32.const 0))))
  {" ".join(functions)}
  (func (export "run") (param $a i32) (result i32)
    (global.set $fuel (i32.const {PROGRAM_FUEL}))
    (call $f{n - 1} (local.get $a))))"""
