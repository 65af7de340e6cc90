"""Generate the JavaScript mirror of the memory layout, `web/runtime/layout.mjs`.

`sharedwasm._layout` is the single source of truth of the memory contract; the
JavaScript runtime imports the constants, the enums, `buildLayout` and the
thread-area helpers (`tlsAddress`, `stackBottom`, `stackTop`) from the module
this script writes, so both sides place the same words at the same addresses.
Values come from the imported module, their descriptions from its source
(attribute docstrings are not kept at runtime).

Usage:
    .venv/bin/python scripts/gen_layout_js.py          write the file
    .venv/bin/python scripts/gen_layout_js.py --check  exit 1 if it is outdated
"""

from __future__ import annotations

import argparse
import ast
import difflib
import enum
import inspect
import itertools
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from sharedwasm import _layout  # noqa: E402

TARGET = ROOT / "src" / "sharedwasm" / "web" / "runtime" / "layout.mjs"
COMMAND = ".venv/bin/python scripts/gen_layout_js.py"
ENUMS: tuple[type[enum.IntEnum], ...] = (
    _layout.Status,
    _layout.Control,
    _layout.Record,
    _layout.Command,
    _layout.Schedule,
)
CONSTANTS = (
    "STATUS_SLOT_BYTES",
    "CACHE_LINE",
    "DATA_ALIGN",
    "ARGUMENT_SLOTS",
    "ARGUMENT_SLOT_BYTES",
    "ARGUMENTS_WORD",
    "CONTROL_WORDS",
    "CONTROL_BYTES",
    "RECORD_BYTES",
    "STACK_ALIGN",
    "DEFAULT_STACK_SIZE",
)

HEADER = f"""\
// GENERATED FILE, DO NOT EDIT: written by `{COMMAND}`
// from src/sharedwasm/_layout.py, the single source of truth of the memory layout.
// `{COMMAND} --check` fails when this file is outdated.
"""

BUILD_LAYOUT = """\
const SLOT = BigInt(STATUS_SLOT_BYTES);
const LINE = BigInt(CACHE_LINE);
const ALIGN = BigInt(DATA_ALIGN);
const CONTROL = BigInt(CONTROL_BYTES);
const RECORD = BigInt(RECORD_BYTES);
const STACK = BigInt(STACK_ALIGN);

const describe = (value) => {
  if (typeof value === "string") return JSON.stringify(value);
  return typeof value === "bigint" ? `${value}n` : String(value);
};

const toIndex = (name, value) => {
  if (typeof value === "bigint") return value;
  if (typeof value === "number" && Number.isInteger(value)) return BigInt(value);
  throw new TypeError(`${name} must be an integer (got ${describe(value)})`);
};

/** Round `value` up to a multiple of `alignment` (a power of two); BigInts, like Python's ints. */
const alignUpBig = (value, alignment) =>
  ((value + alignment - 1n) / alignment) * alignment;

/**
 * Round `value` up to a multiple of `alignment` (a power of two).
 * @param {number} value
 * @param {number} alignment
 * @returns {number}
 */
export function alignUp(value, alignment) {
  return Number(alignUpBig(BigInt(value), BigInt(alignment)));
}

/**
 * Place the regions for `workers` workers in a memory of `byteLength` bytes,
 * exactly as `Layout.build` does. Integers may be numbers or BigInts; the
 * arithmetic is exact either way.
 *
 * `staticEnd` is where the kernel's static data ends (the board may not start
 * before it); `stackSize` and `tlsSize` are the bytes of stack and of
 * thread-local data each worker gets (0 for a kernel without), `tlsAlign` the
 * alignment of its thread-local block.
 *
 * @param {{workers: number, statusOffset: number, byteLength: number, staticEnd?: number,
 *   stackSize?: number, tlsSize?: number, tlsAlign?: number}} options
 * @returns {Readonly<{workers: number, statusOffset: number, controlOffset: number,
 *   recordsOffset: number, dataOffset: number, statusEnd: number, controlEnd: number,
 *   recordsEnd: number, staticEnd: number, threadsOffset: number, threadArea: number,
 *   tlsBlock: number, threadsEnd: number}>}
 * @throws {TypeError} an argument is not an integer.
 * @throws {RangeError} `workers` is not positive, `stackSize` is not a multiple of
 *   STACK_ALIGN, or `tlsAlign` is not a power of two.
 * @throws {LayoutError} the status offset is negative, misaligned or inside the
 *   kernel's static data, or the regions do not leave room for any data.
 */
export function buildLayout({
  workers,
  statusOffset,
  byteLength,
  staticEnd = 0,
  stackSize = 0,
  tlsSize = 0,
  tlsAlign = 1,
} = {}) {
  const n = toIndex("workers", workers);
  const status = toIndex("statusOffset", statusOffset);
  const length = toIndex("byteLength", byteLength);
  const statics = toIndex("staticEnd", staticEnd);
  const stack = toIndex("stackSize", stackSize);
  const tls = toIndex("tlsSize", tlsSize);
  const tlsAlignment = toIndex("tlsAlign", tlsAlign);
  if (n < 1n) throw new RangeError(`workers must be at least 1 (got ${n})`);
  if (stack < 0n || stack % STACK !== 0n) {
    throw new RangeError(
      `stackSize must be a non-negative multiple of ${STACK} bytes (got ${stack})`,
    );
  }
  if (tls < 0n || tlsAlignment < 1n || (tlsAlignment & (tlsAlignment - 1n)) !== 0n) {
    throw new RangeError(
      `tlsSize must be >= 0 and tlsAlign a power of two (got ${tls}, ${tlsAlignment})`,
    );
  }
  if (status < 0n) throw new LayoutError(`statusOffset must be >= 0 (got ${status})`);
  if (status % SLOT !== 0n) {
    throw new LayoutError(`statusOffset must be a multiple of ${SLOT} (got ${status})`);
  }
  if (status < statics) {
    throw new LayoutError(
      `statusOffset must be >= ${statics}: the kernel's static data (its data ` +
        `segments, up to __heap_base) ends there, and a status board inside it ` +
        `would be overwritten (got statusOffset=${status})`,
    );
  }
  const statusEnd = status + n * SLOT;
  const controlOffset = alignUpBig(statusEnd, LINE);
  const recordsOffset = alignUpBig(controlOffset + CONTROL, LINE);
  const recordsEnd = recordsOffset + n * RECORD;
  // Each area starts aligned for its TLS block and for the stack, whose top
  // (the area's end) must keep the 16-byte alignment clang assumes.
  const areaAlign = tlsAlignment > STACK ? tlsAlignment : STACK;
  const tlsBlock = tls ? alignUpBig(tls, STACK) : 0n;
  const threadArea = stack ? alignUpBig(tlsBlock + stack, areaAlign) : 0n;
  const threadsOffset = threadArea ? alignUpBig(recordsEnd, areaAlign) : recordsEnd;
  const threadsEnd = threadsOffset + n * threadArea;
  const dataOffset = alignUpBig(threadsEnd, ALIGN);
  if (dataOffset >= length) {
    const areas = threadArea ? ` and ${n} thread areas of ${threadArea} bytes` : "";
    throw new LayoutError(
      `statusOffset must leave room for data: a board for ${n} workers at ` +
        `${status}${areas} puts the data region at ${dataOffset}, but the memory ` +
        `is ${length} bytes (got statusOffset=${status})`,
    );
  }
  return Object.freeze({
    workers: Number(n),
    statusOffset: Number(status),
    controlOffset: Number(controlOffset),
    recordsOffset: Number(recordsOffset),
    dataOffset: Number(dataOffset),
    statusEnd: Number(statusEnd),
    controlEnd: Number(controlOffset + CONTROL),
    recordsEnd: Number(recordsEnd),
    staticEnd: Number(statics),
    threadsOffset: Number(threadsOffset),
    threadArea: Number(threadArea),
    tlsBlock: Number(threadArea ? tlsBlock : 0n),
    threadsEnd: Number(threadsEnd),
  });
}

/**
 * Byte address of a worker's thread-local block (`Layout.tls_address`).
 * @param {{threadsOffset: number, threadArea: number}} layout what buildLayout returned
 * @param {number} workerIndex
 * @returns {number}
 */
export function tlsAddress(layout, workerIndex) {
  return layout.threadsOffset + workerIndex * layout.threadArea;
}

/**
 * Lowest byte address a worker's stack may use (`Layout.stack_bottom`).
 * @param {{threadsOffset: number, threadArea: number, tlsBlock: number}} layout
 * @param {number} workerIndex
 * @returns {number}
 */
export function stackBottom(layout, workerIndex) {
  return tlsAddress(layout, workerIndex) + layout.tlsBlock;
}

/**
 * A worker's initial stack pointer; the stack grows down from here (`Layout.stack_top`).
 * @param {{threadsOffset: number, threadArea: number}} layout
 * @param {number} workerIndex
 * @returns {number}
 */
export function stackTop(layout, workerIndex) {
  return tlsAddress(layout, workerIndex) + layout.threadArea;
}
"""


def attribute_docs(cls: type) -> dict[str, str]:
    """Return the docstrings written under the assignments of a class body."""
    tree = ast.parse(inspect.getsource(cls))
    node = tree.body[0]
    assert isinstance(node, ast.ClassDef)
    body = node.body
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.targets[0].id] = " ".join(after.value.value.split())
    return docs


def jsdoc(text: str, indent: str) -> list[str]:
    """Return `text` as a one-line or wrapped JSDoc comment."""
    words, lines, line = text.split(), [], ""
    width = 96 - len(indent)
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    if len(lines) == 1 and len(lines[0]) <= width - 7:
        return [f"{indent}/** {lines[0]} */"]
    return [f"{indent}/**", *(f"{indent} * {each}" for each in lines), f"{indent} */"]


def emit_enum(cls: type[enum.IntEnum]) -> list[str]:
    """Return a frozen object with the members of `cls`, each with its description."""
    docs = attribute_docs(cls)
    out = jsdoc(" ".join((cls.__doc__ or cls.__name__).split()), "")
    out.append(f"export const {cls.__name__} = Object.freeze({{")
    for member in cls:
        if member.name in docs:
            out.extend(jsdoc(docs[member.name], "  "))
        out.append(f"  {member.name}: {int(member)},")
    out.append("});")
    return out


def generate() -> str:
    """Return the text of `layout.mjs` for the `_layout` module imported here."""
    out = [HEADER.rstrip("\n"), ""]
    out.append('import { LayoutError } from "./errors.mjs";')
    out.append("")
    for name in CONSTANTS:
        value = getattr(_layout, name)
        assert type(value) is int, name
        out.append(f"export const {name} = {value};")
    for cls in ENUMS:
        out.append("")
        out.extend(emit_enum(cls))
    out.append("")
    out.append(BUILD_LAYOUT.rstrip("\n"))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write `layout.mjs`, or with `--check` report whether it is outdated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file on disk is outdated"
    )
    args = parser.parse_args(argv)
    text = generate()
    relative = TARGET.relative_to(ROOT)
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current == text:
            return 0
        diff = difflib.unified_diff(
            current.splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile=f"{relative} (on disk)",
            tofile=f"{relative} (generated)",
        )
        sys.stderr.writelines(diff)
        sys.stderr.write(f"{relative} is outdated; regenerate it with `{COMMAND}`\n")
        return 1
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {relative}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
