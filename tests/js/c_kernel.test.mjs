// A kernel compiled from C under Node worker_threads: its static data stays
// below the status board, and every worker gets its own stack and
// thread-local block, placed where the Python pool places them.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";

import {
  KernelError,
  KernelTrap,
  LayoutError,
  createPool,
  stackBottom,
  stackTop,
  tlsAddress,
} from "../../src/sharedwasm/web/runtime/sharedwasm.mjs";
import { LAYOUT_AS_JS, PYTHON, ROOT, pythonJson } from "./_python.mjs";

const TIMEOUT = { timeout: 30_000 };

const SOURCE = fileURLToPath(new URL("./fixtures/stack_tls.c", import.meta.url));
const BUILD_DIR = mkdtempSync(join(tmpdir(), "sharedwasm-c-kernel-"));
after(() => rmSync(BUILD_DIR, { recursive: true, force: true }));
const WASM_PATH = join(BUILD_DIR, "stack_tls.wasm");
execFileSync(PYTHON, ["-m", "sharedwasm", "build", SOURCE, "-o", WASM_PATH], {
  cwd: ROOT,
  timeout: 120_000,
});
const WASM = readFileSync(WASM_PATH);

const MEMORY = '(import "env" "memory" (memory 1 65536 shared))';
const ENTRY = '(func (export "compute_partition") (param i32 i32))';
// Modules whose statics break the ABI, and one WAT kernel with an active data segment.
const WATS = {
  immutable_stack: `(module ${MEMORY} ${ENTRY}
    (global (export "__stack_pointer") i32 (i32.const 1024)))`,
  hidden_stack: `(module ${MEMORY} ${ENTRY}
    (global $__stack_pointer (mut i32) (i32.const 1024)))`,
  init_tls_signature: `(module ${MEMORY} ${ENTRY}
    (global (export "__stack_pointer") (mut i32) (i32.const 1024))
    (func (export "__wasm_init_tls")))`,
  limits_signature: `(module ${MEMORY} ${ENTRY}
    (global (export "__stack_pointer") (mut i32) (i32.const 1024))
    (func (export "__set_stack_limits") (param i32)))`,
  tls_without_init: `(module ${MEMORY} ${ENTRY}
    (global (export "__stack_pointer") (mut i32) (i32.const 1024))
    (global (export "__tls_size") i32 (i32.const 4)))`,
  tls_without_stack: `(module ${MEMORY} ${ENTRY}
    (global (export "__tls_size") i32 (i32.const 4))
    (func (export "__wasm_init_tls") (param i32)))`,
  active_data: `(module ${MEMORY} ${ENTRY} (data (i32.const 1000) "sharedwasm"))`,
};
// 0: the default stack size.
const STACK_SIZES = [0, 4096];

// What the Python package makes of the same modules: the kernel's statics,
// its layout for 1 to 4 workers, and the KernelError of each bad module.
const PY = pythonJson(
  LAYOUT_AS_JS +
    `
import base64, json, sys
import wasmtime
from sharedwasm import Kernel, KernelError, Memory, WorkerPool

path, wats, stack_sizes = json.loads(sys.argv[1])
kernel = Kernel.from_file(path)
layouts = {}
for stack_size in stack_sizes:
    for workers in range(1, 5):
        # The pool's own defaults (status offset, stack size) for this kernel.
        with WorkerPool(kernel, Memory(8, 8), workers, stack_size=stack_size or None) as pool:
            layouts[f"{stack_size}:{workers}"] = layout_as_js(pool.layout)
modules, errors = {}, {}
for name, text in wats.items():
    wasm = wasmtime.wat2wasm(text)
    modules[name] = base64.b64encode(wasm).decode()
    try:
        errors[name] = Kernel.from_bytes(wasm).static_end
    except KernelError as exc:
        errors[name] = str(exc)
print(json.dumps({
    "kernel": {"static_end": kernel.static_end, "tls_size": kernel.tls_size,
               "uses_stack": kernel.uses_stack, "stack_checked": kernel.stack_checked},
    "layouts": layouts, "modules": modules, "errors": errors,
}))
`,
  { args: [JSON.stringify([WASM_PATH, WATS, STACK_SIZES])] },
);
const MODULES = Object.fromEntries(
  Object.entries(PY.modules).map(([name, b64]) => [name, Buffer.from(b64, "base64")]),
);

const HEADER_WORDS = 16;
const ELEMENTS = 4099;
const INITIAL_RUNS = 100;
const PRIMES = [2, 3, 5, 7, 11, 13, 17, 19];

/** The fixture's descend() in u32 arithmetic. */
function descend(depth, seed) {
  const frame = new Uint32Array(64);
  for (let k = 0; k < 64; k++) frame[k] = Math.imul(seed, k + 1) + depth;
  const below = depth ? descend(depth - 1, (seed ^ frame[depth & 63]) >>> 0) : 0;
  return (frame[(seed + depth) & 63] + Math.imul(below, 31)) >>> 0;
}

const DESCENT = Uint32Array.from({ length: ELEMENTS }, (_, i) =>
  descend(i % 64, Math.imul(i, PRIMES[i % 8]) >>> 0),
);

/** The output after every worker's `runs` reached `runs`. */
const expected = (runs) => DESCENT.map((value) => (value + runs) >>> 0);

const memory = () => ({ initial: 8, maximum: 8 });

/** Make a pool of the fixture, run `body` with it and its views, and always close it. */
async function withPool(options, body) {
  const pool = await createPool({ module: WASM, memory: memory(), ...options });
  try {
    const data = pool.data(Uint32Array);
    const header = data.subarray(0, HEADER_WORDS);
    const out = data.subarray(HEADER_WORDS, HEADER_WORDS + ELEMENTS);
    return await body(pool, header, out);
  } finally {
    await pool.close();
  }
}

/** The static counter values the workers wrote in the last run, sorted. */
const counters = (header, workers) =>
  Array.from(header.subarray(1, 1 + workers)).sort((a, b) => a - b);

/** The range worker `index` of `workers` gets, as the runtime partitions. */
function range(index, workers) {
  const chunk = Math.ceil(ELEMENTS / workers);
  const start = Math.min(index * chunk, ELEMENTS);
  return [start, Math.min(start + chunk, ELEMENTS)];
}

const run = (pool, id) => pool.run(id, { elements: ELEMENTS });

/** Each worker's TLS address, stack bottom and stack top. */
const threadAreas = (layout) =>
  Array.from({ length: layout.workers }, (_, i) => [
    tlsAddress(layout, i),
    stackBottom(layout, i),
    stackTop(layout, i),
  ]);

test("the fixture builds into a checked kernel with static and thread-local data", TIMEOUT, () => {
  assert.ok(PY.kernel.uses_stack && PY.kernel.stack_checked, "the fixture is built checked");
  assert.ok(PY.kernel.tls_size > 0, "the fixture has thread-local data");
  assert.ok(PY.kernel.static_end > 1024, "the fixture has static data past 1024");
});

test("every worker's results equal the values computed in JS, run after run", TIMEOUT, async () => {
  for (let workers = 1; workers <= 4; workers++) {
    await withPool({ workers }, async (pool, header, out) => {
      const { threads, ...want } = PY.layouts[`0:${workers}`];
      assert.deepEqual({ ...pool.layout }, want, `layout for ${workers} workers`);
      assert.deepEqual(threadAreas(pool.layout), threads);
      const indices = [...Array(workers).keys()];
      for (let r = 1; r <= 3; r++) {
        out.fill(0);
        await run(pool, `run-${r}`);
        assert.deepEqual(out, expected(INITIAL_RUNS + r), `${workers} workers, run ${r}`);
        // Each call added one to the static counter: a fresh one counts 1..N*r.
        const last = counters(header, workers);
        assert.deepEqual(
          last,
          indices.map((i) => workers * (r - 1) + i + 1),
          `counter after run ${r}`,
        );
      }
    });
  }
});

test("a too-deep recursion is a KernelTrap; the next run is correct", TIMEOUT, async () => {
  const workers = 3;
  await withPool({ workers }, async (pool, header, out) => {
    let runs = INITIAL_RUNS;
    for (const victim of [1, 1, 0, 2]) {
      const [start, end] = range(victim, workers);
      // Element start + 5 recurses a million levels deep.
      header[0] = 1 + start + 5;
      await assert.rejects(run(pool, `deep-${victim}`), (err) => {
        assert.ok(err instanceof KernelTrap, String(err));
        assert.equal(err.workerIndex, victim);
        assert.deepEqual([err.start, err.end], [start, end]);
        assert.equal(err.traps.length, 1);
        assert.match(err.message, /unreachable/);
        assert.match(err.message, /each worker has 65536 bytes of stack \(createPool stackSize\)/);
        return true;
      });
      runs++;
      // Without the stack pointer put back at its top, the victim would
      // start this run at the bottom of its stack and trap again.
      header[0] = 0;
      out.fill(0);
      await run(pool, "after");
      runs++;
      assert.deepEqual(out, expected(runs), `the run after worker ${victim} trapped`);
    }
  });
});

test("a smaller stackSize overflows sooner; stackSize is checked", TIMEOUT, async () => {
  await withPool({ workers: 2, stackSize: 4096 }, async (pool, _, out) => {
    const { threads, ...want } = PY.layouts["4096:2"];
    assert.deepEqual({ ...pool.layout }, want);
    assert.deepEqual(threadAreas(pool.layout), threads);
    // 256 bytes a level: depth 63 needs 16 KiB, so both workers overflow.
    await assert.rejects(run(pool, "small"), (err) => {
      assert.ok(err instanceof KernelTrap, String(err));
      assert.equal(err.traps.length, 2);
      assert.match(err.message, /each worker has 4096 bytes of stack/);
      return true;
    });
    // Short descents fit: the first 12 elements go 11 levels deep at most.
    await pool.run("short", { elements: 12 });
    assert.deepEqual(out.subarray(0, 12), expected(INITIAL_RUNS + 2).subarray(0, 12));
  });
  const options = { module: WASM, workers: 1 };
  for (const [stackSize, error, message] of [
    [8, RangeError, "stackSize must be >= 16 bytes (got 8)"],
    [100, RangeError, "stackSize must be a non-negative multiple of 16 bytes (got 100)"],
    [1.5, TypeError, "stackSize must be an integer (got 1.5)"],
    ["4096", TypeError, 'stackSize must be an integer (got "4096")'],
  ]) {
    await assert.rejects(createPool({ ...options, memory: memory(), stackSize }), (err) => {
      assert.ok(err instanceof error, String(err));
      assert.equal(err.message, message);
      return true;
    });
  }
  await assert.rejects(
    createPool({ module: MODULES.active_data, memory: memory(), stackSize: 4096 }),
    {
      name: "RangeError",
      message:
        "stackSize applies only to a kernel that exports __stack_pointer; kernel uses no " +
        "stack (got stackSize=4096)",
    },
  );
});

test("a statusOffset inside the static data is a LayoutError", TIMEOUT, async () => {
  const staticEnd = PY.kernel.static_end;
  for (const statusOffset of [0, 64, staticEnd - 4]) {
    await assert.rejects(createPool({ module: WASM, memory: memory(), statusOffset }), (err) => {
      assert.ok(err instanceof LayoutError, String(err));
      assert.equal(
        err.message,
        `statusOffset must be >= ${staticEnd}: the kernel's static data (its data segments, ` +
          "up to __heap_base) ends there, and a status board inside it would be overwritten " +
          `(got statusOffset=${statusOffset})`,
      );
      return true;
    });
  }
  // Right at the end of the static data, or well past it, is fine.
  for (const statusOffset of [staticEnd, 8192]) {
    await withPool({ workers: 2, statusOffset }, async (pool, header, out) => {
      assert.equal(pool.layout.statusOffset, statusOffset);
      await run(pool, "placed");
      assert.deepEqual(out, expected(INITIAL_RUNS + 1));
    });
  }
});

test("a second pool on the memory starts from fresh statics", TIMEOUT, async () => {
  const shared = new WebAssembly.Memory({ ...memory(), shared: true });
  const workers = 2;
  for (const which of ["first", "second"]) {
    await withPool({ workers, memory: shared }, async (pool, header, out) => {
      await run(pool, "one");
      // Zeroed statics: wasm-ld's start function initialised them again,
      // so the counter restarts, and new instances start `runs` at 100.
      assert.deepEqual(counters(header, workers), [1, 2], `${which} pool`);
      assert.deepEqual(out, expected(INITIAL_RUNS + 1));
      await run(pool, "two");
      assert.deepEqual(counters(header, workers), [3, 4]);
    });
  }
});

test("a C kernel from a url runs; a compiled Module of one is refused", TIMEOUT, async () => {
  const server = createServer((request, response) => {
    response.writeHead(200, { "content-type": "application/wasm" });
    response.end(WASM);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const url = `http://127.0.0.1:${server.address().port}/stack_tls.wasm`;
    const pool = await createPool({ url, memory: memory(), workers: 2 });
    try {
      assert.equal(pool.layout.staticEnd, PY.kernel.static_end);
      const out = pool.data(Uint32Array).subarray(HEADER_WORDS, HEADER_WORDS + ELEMENTS);
      await run(pool, "fetched");
      assert.deepEqual(out, expected(INITIAL_RUNS + 1));
    } finally {
      await pool.close();
    }
  } finally {
    server.close();
  }
  await assert.rejects(
    createPool({ module: new WebAssembly.Module(WASM), memory: memory(), workers: 1 }),
    (err) => {
      assert.ok(err instanceof KernelError, String(err));
      assert.match(err.message, /^kernel exports __stack_pointer, so the runtime must read/);
      assert.match(err.message, /pass module as an ArrayBuffer or a typed array, or pass its url$/);
      return true;
    },
  );
});

test("statics that break the ABI are the Python package's KernelErrors", TIMEOUT, async () => {
  for (const [name, pythonMessage] of Object.entries(PY.errors)) {
    if (typeof pythonMessage !== "string") continue;
    await assert.rejects(
      createPool({ module: MODULES[name], memory: memory(), workers: 1 }),
      (err) => {
        assert.ok(err instanceof KernelError, `${name}: ${err}`);
        assert.equal(err.message, pythonMessage, name);
        return true;
      },
    );
  }
  assert.equal(Object.values(PY.errors).filter((e) => typeof e === "string").length, 6);
});

test("a WAT kernel's active data segment keeps the board past it", TIMEOUT, async () => {
  const staticEnd = PY.errors.active_data;
  assert.equal(staticEnd, 1010);
  const pool = await createPool({ module: MODULES.active_data, memory: memory(), workers: 2 });
  try {
    assert.equal(pool.layout.staticEnd, staticEnd);
    assert.equal(pool.layout.statusOffset, 1024);
    assert.equal(pool.layout.threadArea, 0);
    const bytes = new Uint8Array(pool.memory.buffer, 1000, 10);
    assert.equal(Buffer.from(bytes).toString(), "sharedwasm");
    await pool.run("empty", { elements: 10 });
  } finally {
    await pool.close();
  }
});
