// entries.mjs against sharedwasm._entries: the same entries in the same
// order, the same parameters and C types, the same KernelErrors; and a pool
// that dispatches on the entry index and hands each entry its arguments.

import assert from "node:assert/strict";
import { test } from "node:test";

import { cParam } from "../../src/sharedwasm/web/runtime/entries.mjs";
import { KernelError } from "../../src/sharedwasm/web/runtime/errors.mjs";
import { loadKernel } from "../../src/sharedwasm/web/runtime/kernel.mjs";
import { createPool } from "../../src/sharedwasm/web/runtime/sharedwasm.mjs";
import { pythonJson } from "./_python.mjs";

const TIMEOUT = { timeout: 30_000 };

const MEMORY = '(import "env" "memory" (memory 1 100 shared))';
const fn = (exportName, params = "(param i32 i32)", result = "") =>
  `(func (export "${exportName}") ${params} ${result})`;

// Each module's text and, optionally, the payload of its signature record
// (a JSON value, or a string taken as the raw payload).
const MODULES = {
  legacy: { wat: `(module ${MEMORY} ${fn("compute_partition")})` },
  several: {
    wat: `(module ${MEMORY}
      ${fn("entry:scale", "(param i32 i32 f32 i32)")}
      ${fn("helper", "(param i32) (result i32) (local.get 0)")}
      ${fn("compute_partition")}
      ${fn("entry:mix", "(param i32 i32 i64 f64 i32 f32)")}
      (global (export "entry_like") i32 (i32.const 0)))`,
  },
  typed: {
    wat: `(module ${MEMORY}
      ${fn("entry:saxpy", "(param i32 i32 f32 i32 i32)")}
      ${fn("entry:bits", "(param i32 i32 i64 i32 i32 i32 i32 f64)")}
      ${fn("entry:bare", "(param i32 i32 i32)")})`,
    record: {
      version: 1,
      entries: {
        saxpy: [
          { name: "a", type: "float", canonical: "float" },
          { name: "x", type: "const float *", canonical: "const float *" },
          { name: "y", type: "float *", canonical: "float *" },
        ],
        bits: [
          { name: "big", type: "int64_t", canonical: "long long" },
          { name: "small", type: "uint8_t", canonical: "unsigned char" },
          { name: "flag", type: "bool", canonical: "_Bool" },
          { name: "raw", type: "void *", canonical: "void *" },
          { name: "", type: "unsigned", canonical: "unsigned" },
          { name: "d", type: "double" },
        ],
      },
    },
  },
  no_entry: { wat: `(module ${MEMORY} ${fn("helper")})` },
  empty_name: { wat: `(module ${MEMORY} ${fn("entry:")})` },
  entry_global: { wat: `(module ${MEMORY} (global (export "entry:g") i32 (i32.const 0)))` },
  legacy_global: {
    wat: `(module ${MEMORY} (global (export "compute_partition") i32 (i32.const 0)))`,
  },
  returns: {
    wat: `(module ${MEMORY} ${fn("entry:r", "(param i32 i32)", "(result i32) i32.const 0")})`,
  },
  legacy_extra: { wat: `(module ${MEMORY} ${fn("compute_partition", "(param i32 i32 f32)")})` },
  v128: { wat: `(module ${MEMORY} ${fn("entry:v", "(param i32 i32 v128)")})` },
  too_many: {
    wat: `(module ${MEMORY} ${fn("entry:many", `(param i32 i32${" i32".repeat(33)})`)})`,
  },
  short: { wat: `(module ${MEMORY} ${fn("entry:short", "(param i32)")})` },
  version: {
    wat: `(module ${MEMORY} ${fn("entry:e")})`,
    record: { version: 2, entries: {} },
  },
  not_json: { wat: `(module ${MEMORY} ${fn("entry:e")})`, record: "{not json" },
  count: {
    wat: `(module ${MEMORY} ${fn("entry:e", "(param i32 i32 f32)")})`,
    record: { version: 1, entries: { e: [] } },
  },
  mismatch: {
    wat: `(module ${MEMORY} ${fn("entry:e", "(param i32 i32 i32)")})`,
    record: { version: 1, entries: { e: [{ name: "f", type: "float", canonical: "float" }] } },
  },
  struct: {
    wat: `(module ${MEMORY} ${fn("entry:e", "(param i32 i32 i32)")})`,
    record: {
      version: 1,
      entries: { e: [{ name: "s", type: "struct pair", canonical: "struct pair" }] },
    },
  },
  missing_type: {
    wat: `(module ${MEMORY} ${fn("entry:e", "(param i32 i32 i32)")})`,
    record: { version: 1, entries: { e: [{ name: "s" }] } },
  },
};

// C types as `sharedwasm build` records them, every spelling the mapping knows.
const C_TYPES = [
  "float",
  "double",
  "_Bool",
  "bool",
  "char",
  "signed char",
  "unsigned char",
  "short",
  "short int",
  "signed short",
  "unsigned short",
  "unsigned short int",
  "int",
  "signed",
  "signed int",
  "unsigned",
  "unsigned int",
  "long",
  "long int",
  "signed long",
  "unsigned long",
  "unsigned long int",
  "long long",
  "long long int",
  "signed long long",
  "unsigned long long",
  "unsigned long long int",
  "const int",
  "volatile unsigned char",
  "float *",
  "const float *",
  "const volatile unsigned char *",
  "double *",
  "long long *",
  "unsigned long long *",
  "_Bool *",
  "void *",
  "const void *",
  "struct pair *",
  "float **",
  "const char **",
  "float * *",
  "int[4]",
  "const double[]",
  "float *const",
  "const float *restrict",
  "struct pair",
  "long double",
  "__int128",
];

const PY = pythonJson(
  `
import base64, json, sys
import wasmtime
import sharedwasm as sw
from sharedwasm._entries import SIGNATURE_SECTION, c_param

def uleb(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)

def custom(name, payload):
    body = uleb(len(name.encode())) + name.encode() + payload
    return b"\\0" + uleb(len(body)) + body

def param(p):
    return {"name": p.name, "wasmType": p.wasm_type, "ctype": p.ctype, "pointer": p.pointer,
            "dtype": None if p.dtype is None else str(p.dtype), "const": p.const, "str": str(p)}

modules, c_types = json.loads(sys.argv[1])
out = {"modules": {}, "ctypes": {}}
for name, spec in modules.items():
    wasm = wasmtime.wat2wasm(spec["wat"])
    record = spec.get("record")
    if record is not None:
        payload = record.encode() if isinstance(record, str) else json.dumps(record).encode()
        wasm += custom(SIGNATURE_SECTION, payload)
    try:
        entries = [
            {"name": e.name, "export": e.export, "index": e.index, "typed": e.typed,
             "str": str(e), "params": [param(p) for p in e.params]}
            for e in sw.Kernel.from_bytes(wasm).entries.values()
        ]
        result = {"entries": entries}
    except sw.KernelError as exc:
        result = {"error": str(exc)}
    out["modules"][name] = {"wasm": base64.b64encode(wasm).decode(), **result}
for t in c_types:
    try:
        out["ctypes"][t] = param(c_param("x", t, t))
    except ValueError as exc:
        out["ctypes"][t] = {"error": str(exc)}
print(json.dumps(out))
`,
  { args: [JSON.stringify([MODULES, C_TYPES])] },
);

const describeParam = (p) => ({
  name: p.name,
  wasmType: p.wasmType,
  ctype: p.ctype,
  pointer: p.pointer,
  dtype: p.dtype,
  const: p.const,
  str: String(p),
});

test("every C type maps as the Python package maps it", TIMEOUT, () => {
  for (const t of C_TYPES) {
    const want = PY.ctypes[t];
    if (want.error) {
      assert.throws(() => cParam("x", t, t), { name: "RangeError", message: want.error }, t);
    } else {
      assert.deepEqual(describeParam(cParam("x", t, t)), want, t);
    }
  }
});

test("pointers take the typed array of their pointee", TIMEOUT, () => {
  const arrays = Object.fromEntries(
    ["float *", "double *", "unsigned char *", "_Bool *", "long long *", "void *", "char *"].map(
      (t) => [t, cParam("x", t, t).array?.name ?? null],
    ),
  );
  assert.deepEqual(arrays, {
    "float *": "Float32Array",
    "double *": "Float64Array",
    "unsigned char *": "Uint8Array",
    "_Bool *": "Uint8Array",
    "long long *": "BigInt64Array",
    "void *": null,
    "char *": "Int8Array",
  });
});

test("entries, their order and their parameters equal the Python kernel's", TIMEOUT, async () => {
  for (const [name, want] of Object.entries(PY.modules)) {
    const module = Buffer.from(want.wasm, "base64");
    if (want.error) {
      await assert.rejects(loadKernel({ module }), (err) => {
        assert.ok(err instanceof KernelError, `${name}: ${err}`);
        // What is wrong with the JSON is each language's parser's own wording.
        const json = "custom section is not valid: ";
        const cut = (text) => (text.includes(json) ? text.slice(0, text.indexOf(json)) : text);
        assert.equal(cut(err.message), cut(want.error), name);
        return true;
      });
      continue;
    }
    const { entries } = await loadKernel({ module });
    const got = [...entries.values()].map((e) => ({
      name: e.name,
      export: e.export,
      index: e.index,
      typed: e.typed,
      str: String(e),
      params: e.params.map(describeParam),
    }));
    assert.deepEqual(got, want.entries, name);
  }
  // The entries keep the export section's order, helpers and globals left out.
  assert.deepEqual(
    PY.modules.several.entries.map((e) => [e.name, e.index]),
    [
      ["scale", 0],
      ["compute_partition", 1],
      ["mix", 2],
    ],
  );
});

test(
  "a compiled Module with entry: exports is refused; compute_partition alone runs",
  TIMEOUT,
  async () => {
    const several = new WebAssembly.Module(Buffer.from(PY.modules.several.wasm, "base64"));
    await assert.rejects(loadKernel({ module: several }), {
      name: "KernelError",
      message:
        /^kernel exports entry:scale, whose parameters the runtime must read from the module's/,
    });
    const legacy = new WebAssembly.Module(Buffer.from(PY.modules.legacy.wasm, "base64"));
    const { entries } = await loadKernel({ module: legacy });
    assert.deepEqual([...entries.keys()], ["compute_partition"]);
  },
);

// Three entries over one output array (u32 words at the pointer `out`):
// `ints` stores its range and an i32 and an i64 argument; `floats` stores
// the bits of an f32 and an f64 argument; compute_partition stores 7s. Each
// writes words [4*i, 4*i+4) for every element i of its range.
const DISPATCH_WAT = `
(module
  ${MEMORY}
  (func $row (param $out i32) (param $i i32) (result i32)
    (i32.add (local.get $out) (i32.shl (local.get $i) (i32.const 4))))
  (func (export "entry:ints")
    (param $s i32) (param $e i32) (param $out i32) (param $a i32) (param $b i64)
    (local $p i32)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $s) (local.get $e)))
      (local.set $p (call $row (local.get $out) (local.get $s)))
      (i32.store (local.get $p) (i32.const 1))
      (i32.store offset=4 (local.get $p) (local.get $a))
      (i64.store offset=8 (local.get $p) (local.get $b))
      (local.set $s (i32.add (local.get $s) (i32.const 1)))
      (br $next))))
  (func (export "compute_partition") (param $s i32) (param $e i32)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $s) (local.get $e)))
      (i32.store (i32.shl (local.get $s) (i32.const 2)) (i32.const 7))
      (local.set $s (i32.add (local.get $s) (i32.const 1)))
      (br $next))))
  (func (export "entry:floats")
    (param $s i32) (param $e i32) (param $out i32) (param $f f32) (param $d f64)
    (local $p i32)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $s) (local.get $e)))
      (local.set $p (call $row (local.get $out) (local.get $s)))
      (i32.store (local.get $p) (i32.const 2))
      (f32.store offset=4 (local.get $p) (local.get $f))
      (f64.store offset=8 (local.get $p) (local.get $d))
      (local.set $s (i32.add (local.get $s) (i32.const 1)))
      (br $next)))))`;

const DISPATCH = pythonJson(
  `
import base64, json, sys
import numpy as np
import sharedwasm as sw

kernel = sw.Kernel.from_wat(sys.argv[1])
with sw.WorkerPool(kernel, sw.Memory(2, 100), 3, status_offset=4096) as pool:
    out = pool.zeros((37, 4), np.uint32)
    pool.run("ints", out, -5, -(2**63), entry="ints", elements=37)
    ints = out.tobytes()
    pool.run("floats", out, -1.5, 2.0**-1074, entry="floats", elements=37, schedule="dynamic",
             chunk=4)
    floats = out.tobytes()
print(json.dumps({"ints": base64.b64encode(ints).decode(),
                  "floats": base64.b64encode(floats).decode(),
                  "wasm": base64.b64encode(kernel._wasm).decode()}))
`,
  { args: [DISPATCH_WAT] },
);

test(
  "a pool dispatches on the entry and hands each its arguments, as the Python pool does",
  TIMEOUT,
  async () => {
    const module = Buffer.from(DISPATCH.wasm, "base64");
    const pool = await createPool({
      module,
      memory: { initial: 2, maximum: 100 },
      workers: 3,
      statusOffset: 4096,
    });
    try {
      assert.deepEqual([...pool.entries.keys()], ["ints", "compute_partition", "floats"]);
      const out = pool.zeros(Uint32Array, 37 * 4);
      const bytes = () => Buffer.from(out.buffer, out.byteOffset, out.byteLength);
      // An untyped i32 takes a typed array (its address) or a number; an i64 a BigInt or a number.
      const ints = await pool.run("ints", {
        args: [out, -5, -(2n ** 63n)],
        entry: "ints",
        elements: 37,
      });
      assert.equal(
        ints.done.reduce((n, d) => n + d.elements, 0),
        37,
      );
      assert.deepEqual(bytes(), Buffer.from(DISPATCH.ints, "base64"));
      await pool.run("floats", {
        args: [out, -1.5, 2 ** -1074],
        entry: "floats",
        elements: 37,
        schedule: "dynamic",
        chunk: 4,
      });
      assert.deepEqual(bytes(), Buffer.from(DISPATCH.floats, "base64"));
      // compute_partition writes from address 0 up: 8 words, below the board.
      await pool.run("legacy", { entry: "compute_partition", elements: 8 });
      assert.deepEqual([...new Uint32Array(pool.memory.buffer, 0, 9)], [7, 7, 7, 7, 7, 7, 7, 7, 0]);
      // Untyped parameters are positional only, and checked against the wasm types.
      await assert.rejects(pool.run("named", { args: { arg0: out }, entry: "ints" }), {
        name: "TypeError",
        message:
          "ints takes its arguments by position only: the module does not record its " +
          "parameter names (got names arg0)",
      });
      await assert.rejects(pool.run("wide", { args: [out, 2 ** 32, 0], entry: "ints" }), {
        name: "RangeError",
        message:
          "ints: argument 'arg1' (i32 arg1) must be in [-2147483648, 4294967295] (got 4294967296)",
      });
      await assert.rejects(pool.run("text", { args: ["out", 1, 0], entry: "ints" }), {
        name: "TypeError",
        message: `ints: argument 'arg0' (i32 arg0) must be an integer or a typed array (got "out")`,
      });
      await assert.rejects(pool.run("i64", { args: [out, 1, 2n ** 64n], entry: "ints" }), {
        name: "RangeError",
        message:
          "ints: argument 'arg2' (i64 arg2) must be in [-9223372036854775808, " +
          "18446744073709551615] (got 18446744073709551616n)",
      });
    } finally {
      await pool.close();
    }
  },
);
