// The pool's lifecycle under Node: pagesNeeded as the Python package counts
// pages, a pool that makes its own memory, and C++-style constructors run
// once per pool, on worker 0.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  KernelError,
  LayoutError,
  OutOfMemory,
  WorkerPool,
  createPool,
  pagesNeeded,
} from "../../src/sharedwasm/web/runtime/sharedwasm.mjs";
import { base64, buildKernels, pythonJson } from "./_python.mjs";

const TIMEOUT = { timeout: 30_000 };
const PAGE = 65536;

const CTORS_C = String.raw`
#include <sharedwasm.h>
static uint32_t constructed;
static uint32_t constructed_on = 99;
__attribute__((constructor)) static void construct(void) {
    constructed += 1;
    constructed_on = sw_worker_index();
}
SW_KERNEL(report, start, end, uint32_t *out) {
    if (start == 0 && end > 0) {
        out[0] = constructed;
        out[1] = constructed_on;
    }
}
`;

const MEMORY = '(import "env" "memory" (memory 3 40 shared))';
const ENTRY = '(func (export "compute_partition") (param i32 i32))';
const WASM = buildKernels({
  c: { ctors: CTORS_C },
  wat: {
    small: `(module ${MEMORY} ${ENTRY})`,
    wrapped: `(module ${MEMORY} (func $run.command_export) ${ENTRY})`,
    bad_ctors: `(module ${MEMORY} (func (export "__wasm_call_ctors") (param i32)) ${ENTRY})`,
  },
});

const GRID = {
  workers: [1, 2, 5],
  dataBytes: [0, 1, PAGE, 10 << 20],
  stackSizes: [null, 4096],
};

// The Python package's counts and errors for the same modules.
const PY = pythonJson(
  `
import base64, json, sys
import sharedwasm as sw

spec = json.loads(sys.argv[1])
kernels = {name: sw.Kernel.from_bytes(base64.b64decode(spec["kernels"][name]))
           for name in ("ctors", "small")}
grid = spec["grid"]
pages = {}
for name in ("ctors", "small"):
    kernel = kernels[name]
    for workers in grid["workers"]:
        for data in grid["dataBytes"]:
            for stack in grid["stackSizes"] if kernel.uses_stack else [None]:
                pages[f"{name}:{workers}:{data}:{stack}"] = sw.WorkerPool.pages_needed(
                    kernel, data, workers, stack_size=stack)
try:
    sw.WorkerPool.pages_needed(kernels["small"], 2**32, 1)
except sw.LayoutError as exc:
    too_big = str(exc)
auto = {}
for workers in (1, 3):
    with sw.WorkerPool(kernels["ctors"], workers=workers) as pool:
        out = pool.zeros(2, "uint32")
        pool.run("report", out, elements=1)
        auto[workers] = {"pages": pool.memory.pages, "maximum": pool.memory.maximum,
                         "report": out.tolist()}
errors = {}
for name in ("wrapped", "bad_ctors"):
    try:
        sw.Kernel.from_bytes(base64.b64decode(spec["kernels"][name]))
    except sw.KernelError as exc:
        errors[name] = str(exc)
print(json.dumps({"pages": pages, "too_big": too_big, "auto": auto, "errors": errors}))
`,
  {
    args: [
      JSON.stringify({
        kernels: Object.fromEntries(Object.entries(WASM).map(([n, b]) => [n, base64(b)])),
        grid: GRID,
      }),
    ],
  },
);

test("pagesNeeded counts the pages the Python package counts", TIMEOUT, () => {
  for (const [key, want] of Object.entries(PY.pages)) {
    const [name, workers, dataBytes, stack] = key.split(":");
    const options = { workers: Number(workers) };
    if (stack !== "None") options.stackSize = Number(stack);
    assert.equal(pagesNeeded(WASM[name], Number(dataBytes), options), want, key);
    assert.equal(WorkerPool.pagesNeeded(WASM[name], Number(dataBytes), options), want, key);
  }
  // The kernel's declared minimum counts too.
  assert.equal(pagesNeeded(WASM.small, 0, { workers: 1 }), 3);
  assert.throws(() => pagesNeeded(WASM.small, 2 ** 32, { workers: 1 }), {
    name: "LayoutError",
    message: PY.too_big.replace("data_bytes", "dataBytes"),
  });
  assert.throws(() => pagesNeeded(WASM.small, -1, { workers: 1 }), {
    name: "RangeError",
    message: "dataBytes must be >= 0 bytes (got -1)",
  });
  assert.throws(() => pagesNeeded(WASM.small, 0, { workers: 1, stackSize: 4096 }), {
    name: "RangeError",
    message: /^stackSize applies only to a kernel that exports __stack_pointer/,
  });
  assert.throws(() => pagesNeeded("small.wasm", 0), {
    name: "TypeError",
    message: /^module must be a WebAssembly.Module, an ArrayBuffer or a typed array/,
  });
  // A compiled module shows no statics and no minimum, but counts the board.
  const compiled = new WebAssembly.Module(WASM.small);
  assert.equal(pagesNeeded(compiled, PAGE, { workers: 1 }), 2);
});

test(
  "a pool without a memory makes one of just enough pages, with constructors run once",
  TIMEOUT,
  async () => {
    for (const workers of [1, 3]) {
      const pool = await createPool({ module: WASM.ctors, workers });
      try {
        const want = PY.auto[workers];
        assert.equal(pool.memory.buffer.byteLength, want.pages * PAGE);
        assert.equal(want.pages, pagesNeeded(WASM.ctors, 1 << 20, { workers }));
        assert.equal(pool.memory.buffer.byteLength - pool.dataOffset >= 1 << 20, true);
        const out = pool.zeros(Uint32Array, 2);
        await pool.run("report", { args: [out], elements: 1 });
        // Once per pool, on worker 0, as in the Python pool.
        assert.deepEqual([...out], want.report);
        assert.deepEqual(want.report, [1, 0]);
        // The heap grows the memory as arrays are made.
        const big = pool.empty(Uint8Array, 3 << 20);
        assert.ok(pool.memory.buffer.byteLength >= big.byteOffset + big.byteLength);
        for (let run = 0; run < 3; run++) {
          await pool.run("again", { args: [out], elements: 1 });
          assert.deepEqual([...out], [1, 0], "the constructors ran once, not once per run");
        }
      } finally {
        await pool.close();
      }
    }
  },
);

test("a pool's own memory grows up to the kernel's declared maximum", TIMEOUT, async () => {
  const pool = await createPool({ module: WASM.small, workers: 2 });
  try {
    assert.equal(
      pool.memory.buffer.byteLength,
      pagesNeeded(WASM.small, 1 << 20, { workers: 2 }) * PAGE,
    );
    const a = pool.empty(Uint8Array, 30 * PAGE);
    assert.ok(a.byteOffset + a.byteLength <= 40 * PAGE);
    assert.throws(
      () => pool.empty(Uint8Array, 10 * PAGE),
      (err) => {
        assert.ok(err instanceof OutOfMemory, String(err));
        assert.match(err.message, /grown to its maximum of 40 pages/);
        return true;
      },
    );
  } finally {
    await pool.close();
  }
});

test(
  "a compiled Module without a memory, and constructors that cannot run once, are refused",
  TIMEOUT,
  async () => {
    await assert.rejects(createPool({ module: new WebAssembly.Module(WASM.small), workers: 1 }), {
      name: "TypeError",
      message:
        "memory must be given for a kernel passed as a compiled WebAssembly.Module, whose memory " +
        "limits the runtime cannot see: pass memory, or pass module as bytes or its url",
    });
    for (const name of ["wrapped", "bad_ctors"]) {
      await assert.rejects(createPool({ module: WASM[name], workers: 1 }), (err) => {
        assert.ok(err instanceof KernelError, String(err));
        assert.equal(err.message, PY.errors[name]);
        return true;
      });
    }
    // A memory too small for the regions, with the status offset left to the pool.
    await assert.rejects(
      createPool({ module: WASM.ctors, workers: 4, memory: { initial: 2, maximum: 2 } }),
      (err) => {
        assert.ok(err instanceof LayoutError, String(err));
        assert.match(
          err.message,
          new RegExp(
            "^memory must have at least \\d+ pages for the pool's own regions .* or be left " +
              "out for one that grows \\(got a memory of 2 pages\\)$",
          ),
        );
        return true;
      },
    );
  },
);
