// The JavaScript runtime under Node worker_threads: the same kernels, the
// same layout and the same output bytes as the Python pool.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { syncBuiltinESMExports } from "node:module";
import { test } from "node:test";
import workerThreads from "node:worker_threads";

import {
  BrokenPoolError,
  KernelError,
  KernelTrap,
  LayoutError,
  PoolClosedError,
  RunTimeout,
  SharedWasmError,
  Status,
  createPool,
} from "../../src/sharedwasm/web/runtime/sharedwasm.mjs";
import { pythonJson } from "./_python.mjs";

const TIMEOUT = { timeout: 10_000 };

// Every worker the runtime starts, with whether Node reported its exit: the
// runtime imports node:worker_threads when it spawns, so it gets this class.
const spawned = [];
workerThreads.Worker = class TrackedWorker extends workerThreads.Worker {
  constructor(...args) {
    super(...args);
    const entry = { worker: this, exited: false };
    spawned.push(entry);
    this.once("exit", () => {
      entry.exited = true;
    });
  }
};
syncBuiltinESMExports();

// Element i becomes i + 1, except that worker k traps when bit k of the i32
// at byte 0 is set; byte 0 lies below status_offset, in the kernel's own bytes.
const TRAP_WAT = `
(module
  (import "env" "memory" (memory 1 65536 shared))
  (import "env" "data_offset" (global $data i32))
  (import "env" "worker_index" (global $index i32))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (if (i32.and (i32.atomic.load (i32.const 0)) (i32.shl (i32.const 1) (global.get $index)))
      (then unreachable))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $start) (local.get $end)))
        (i32.store
          (i32.add (global.get $data) (i32.shl (local.get $start) (i32.const 2)))
          (i32.add (local.get $start) (i32.const 1)))
        (local.set $start (i32.add (local.get $start) (i32.const 1)))
        (br $next)))))`;

// Every call with a non-empty range parks until the i32 at byte 0 is non-zero.
const GATE_WAT = `
(module
  (import "env" "memory" (memory 1 65536 shared))
  (func (export "compute_partition") (param $start i32) (param $end i32)
    (if (i32.ge_u (local.get $start) (local.get $end)) (then (return)))
    (block $open
      (loop $closed
        (br_if $open (i32.atomic.load (i32.const 0)))
        (drop (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const -1)))
        (br $closed)))))`;

const MEMORY = "(import \"env\" \"memory\" (memory 1 65536 shared))";
const ABI_WATS = {
  no_export: `(module ${MEMORY})`,
  unknown_import: `(module ${MEMORY} (import "env" "log" (func (param i32)))
    (func (export "compute_partition") (param i32 i32)))`,
  own_memory: `(module (memory (export "memory") 1 1 shared)
    (func (export "compute_partition") (param i32 i32)))`,
  no_memory: "(module (func (export \"compute_partition\") (param i32 i32)))",
  not_a_function: `(module ${MEMORY} (global (export "compute_partition") i32 (i32.const 0)))`,
  global_is_function: `(module ${MEMORY} (import "env" "data_offset" (func))
    (func (export "compute_partition") (param i32 i32)))`,
  float_global: `(module ${MEMORY} (import "env" "data_offset" (global f32))
    (func (export "compute_partition") (param i32 i32)))`,
  big_minimum: `(module (import "env" "memory" (memory 100 65536 shared))
    (func (export "compute_partition") (param i32 i32)))`,
};

// The ramp every pool computes over: element i is fround(pi + 0.37 i).
const ELEMENTS = 100_003;
const INPUT = Float32Array.from({ length: ELEMENTS }, (_, i) => Math.PI + 0.37 * i);

// One Python process: compile every kernel, and run the Python pool over the
// ramp, so the bytes to compare with are the Python package's own.
const PY = pythonJson(
  `
import base64, json, sys
import numpy as np
import wasmtime
import sharedwasm as sw

wats = json.loads(sys.argv[1])
wats["map_f32"] = open("src/sharedwasm/_kernels/map_f32.wat").read()
kernels = {name: base64.b64encode(wasmtime.wat2wasm(text)).decode() for name, text in wats.items()}
errors = {}
for name, text in wats.items():
    try:
        sw.Kernel.from_wat(text)
    except sw.KernelError as exc:
        errors[name] = str(exc)
data = sys.stdin.buffer.read()
n = len(data) // 4
mem = sw.Memory(initial=8, maximum=8)
with sw.WorkerPool(sw.Kernel.from_wat(wats["map_f32"]), mem, workers=2) as pool:
    x = pool.data(np.float32)
    x[:n] = np.frombuffer(data, dtype=np.float32)
    pool.run("reference", elements=n)
    output = base64.b64encode(x[:n].tobytes()).decode()
print(json.dumps({"kernels": kernels, "output": output, "errors": errors}))
`,
  {
    args: [JSON.stringify({ trap: TRAP_WAT, gate: GATE_WAT, ...ABI_WATS })],
    input: Buffer.from(INPUT.buffer),
  },
);
const WASM = Object.fromEntries(
  Object.entries(PY.kernels).map(([name, b64]) => [name, Buffer.from(b64, "base64")]),
);
const PYTHON_OUTPUT = Buffer.from(PY.output, "base64");

/** The kernel's formula in float32 steps: x*x*0.25 + sqrt(x). */
const f = (x) => {
  const r = Math.fround;
  return r(r(r(x * x) * 0.25) + r(Math.sqrt(x)));
};

/** Make a pool, run `body` with it, and always close it. */
async function withPool(options, body) {
  const pool = await createPool(options);
  try {
    return await body(pool);
  } finally {
    await pool.close();
  }
}

const bytesOf = (view) => Buffer.from(view.buffer, view.byteOffset, view.byteLength);

test("map_f32 over pi equals the float32 formula on every element", TIMEOUT, async () => {
  await withPool(
    { module: WASM.map_f32, memory: { initial: 4, maximum: 8 }, workers: 2 },
    async (pool) => {
      const x = pool.data(Float32Array);
      x.fill(Math.PI);
      const result = await pool.run("batch-1");
      assert.equal(result.runId, "batch-1");
      assert.deepEqual([...pool.status], [Status.DONE, Status.DONE]);
      const want = f(Math.fround(Math.PI));
      assert.ok(x.every((v) => v === want), `every element is ${want}`);
      assert.deepEqual(
        result.done.map(({ workerIndex, start, end }) => [workerIndex, start, end]),
        [
          [0, 0, Math.ceil(x.length / 2)],
          [1, Math.ceil(x.length / 2), x.length],
        ],
      );
      assert.ok(result.elapsed > 0 && result.done.every((d) => d.elapsed >= 0));
    },
  );
});

test("the output bytes equal the Python pool's, for 1 to 4 workers", TIMEOUT, async () => {
  const memory = new WebAssembly.Memory({ initial: 8, maximum: 8, shared: true });
  for (let workers = 1; workers <= 4; workers++) {
    await withPool({ module: WASM.map_f32, memory, workers }, async (pool) => {
      const x = pool.data(Float32Array);
      x.fill(-1);
      x.set(INPUT);
      const { done } = await pool.run(`n${workers}`, { elements: ELEMENTS });
      assert.deepEqual(bytesOf(x.subarray(0, ELEMENTS)), PYTHON_OUTPUT, `${workers} workers`);
      assert.equal(x[ELEMENTS], -1, "elements past the run are untouched");
      const chunk = Math.ceil(ELEMENTS / workers);
      done.forEach(({ workerIndex, start, end }) => {
        assert.equal(start, Math.min(workerIndex * chunk, ELEMENTS));
        assert.equal(end, Math.min(start + chunk, ELEMENTS));
      });
    });
  }
  assert.ok(PYTHON_OUTPUT.equals(bytesOf(Float32Array.from(INPUT, f))), "and the formula's");
});

test("concurrent runs are queued and each runs whole", TIMEOUT, async () => {
  await withPool(
    { module: WASM.map_f32, memory: { initial: 1, maximum: 1 }, workers: 3 },
    async (pool) => {
      const x = pool.data(Float32Array);
      x.fill(2);
      const results = await Promise.all(["a", "b", "c"].map((id) => pool.run(id)));
      assert.deepEqual(
        results.map((r) => r.runId),
        ["a", "b", "c"],
      );
      const want = f(f(f(2)));
      assert.ok(x.every((v) => v === want));
    },
  );
});

test("a trap is a KernelTrap naming the worker; the next run works", TIMEOUT, async () => {
  await withPool(
    { module: WASM.trap, memory: { initial: 1, maximum: 2 }, workers: 3, statusOffset: 64 },
    async (pool) => {
      assert.equal(pool.layout.statusOffset, 64);
      const gate = new Int32Array(pool.memory.buffer, 0, 1);
      const elements = 3000;
      Atomics.store(gate, 0, 0b010);
      const err = await pool.run("bad", { elements }).catch((e) => e);
      assert.ok(err instanceof KernelTrap, String(err));
      assert.ok(err instanceof SharedWasmError);
      assert.equal(err.name, "KernelTrap");
      assert.deepEqual([err.workerIndex, err.start, err.end], [1, 1000, 2000]);
      assert.match(err.trap, /unreachable/);
      const named = /^worker 1 trapped in compute_partition\(1000, 2000\): .*unreachable/;
      assert.match(err.message, named);
      assert.deepEqual(err.traps, [err]);
      assert.deepEqual([...pool.status], [Status.DONE, Status.TRAPPED, Status.DONE]);

      Atomics.store(gate, 0, 0b101);
      const two = await pool.run("worse", { elements }).catch((e) => e);
      assert.ok(two instanceof KernelTrap);
      assert.deepEqual(
        two.traps.map((t) => [t.workerIndex, t.start, t.end]),
        [
          [0, 0, 1000],
          [2, 2000, 3000],
        ],
      );

      Atomics.store(gate, 0, 0);
      const result = await pool.run("good", { elements });
      assert.equal(result.done.length, 3);
      assert.deepEqual([...pool.status], [Status.DONE, Status.DONE, Status.DONE]);
      const x = pool.data(Int32Array).subarray(0, elements);
      assert.ok(x.every((v, i) => v === i + 1));
    },
  );
});

test("grow returns the old size and the next run covers the new pages", TIMEOUT, async () => {
  await withPool(
    { module: WASM.trap, memory: { initial: 1, maximum: 3 }, workers: 2, statusOffset: 64 },
    async (pool) => {
      const before = pool.data(Int32Array).length;
      assert.equal(await pool.grow(1), 1);
      assert.equal(pool.memory.buffer.byteLength, 2 * 65536);
      const { done } = await pool.run("grown");
      const x = pool.data(Int32Array);
      assert.equal(x.length, before + 16384);
      assert.equal(done[1].end, x.length);
      assert.ok(x.every((v, i) => v === i + 1));
      await assert.rejects(pool.grow(2), {
        name: "RangeError",
        message: "deltaPages must be <= 1 to stay within maximum=3 pages from 2 (got 2)",
      });
      assert.equal(pool.memory.buffer.byteLength, 2 * 65536, "nothing changed");
      await assert.rejects(pool.grow(-1), RangeError);
      await assert.rejects(pool.run("too many", { elements: x.length + 1 }), LayoutError);
    },
  );
});

test("a run past its timeout is a RunTimeout; the next run waits for it", TIMEOUT, async () => {
  await withPool(
    { module: WASM.gate, memory: { initial: 1, maximum: 1 }, workers: 2, statusOffset: 64 },
    async (pool) => {
      const gate = new Int32Array(pool.memory.buffer, 0, 1);
      const started = performance.now();
      await assert.rejects(pool.run("stuck", { timeout: 0.2 }), (err) => {
        assert.ok(err instanceof RunTimeout);
        assert.match(err.message, /run "stuck" did not finish within 0.2 s/);
        return true;
      });
      const waited = performance.now() - started;
      assert.ok(waited >= 190 && waited < 2000, `${waited} ms`);
      assert.deepEqual([...pool.status], [Status.RUNNING, Status.RUNNING]);
      // Queued behind the stuck run, which still holds the pool.
      const next = pool.run("next");
      await assert.rejects(pool.run("impatient", { timeout: 0.05 }), RunTimeout);
      Atomics.store(gate, 0, 1);
      Atomics.notify(gate, 0);
      const result = await next;
      assert.equal(result.runId, "next");
      assert.deepEqual([...pool.status], [Status.DONE, Status.DONE]);
    },
  );
});

test("close terminates every worker, even one stuck in the kernel", TIMEOUT, async () => {
  const first = spawned.length;
  const pool = await createPool({
    module: WASM.gate,
    memory: { initial: 1, maximum: 1 },
    workers: 3,
    statusOffset: 64,
  });
  const workers = spawned.slice(first);
  assert.equal(workers.length, 3);
  await assert.rejects(pool.run("stuck", { elements: 1, timeout: 0.05 }), RunTimeout);
  const queued = assert.rejects(pool.run("queued"), PoolClosedError);
  assert.equal(pool.closed, false);
  const closing = pool.close();
  assert.equal(pool.close(), closing, "close is idempotent");
  assert.equal(pool.closed, true);
  await closing;
  assert.deepEqual(
    workers.map((w) => w.exited),
    [true, true, true],
  );
  await queued;
  await assert.rejects(pool.run("after"), PoolClosedError);
  await assert.rejects(pool.grow(1), PoolClosedError);
  await pool.close();
});

test("close after runs lets every worker leave its loop", TIMEOUT, async () => {
  const first = spawned.length;
  const pool = await createPool({ module: WASM.map_f32, memory: { initial: 1, maximum: 1 } });
  const workers = spawned.slice(first);
  assert.equal(workers.length, pool.workers);
  await pool.run();
  const started = performance.now();
  await pool.close();
  assert.ok(performance.now() - started < 900, "no worker needed the close timeout");
  assert.ok(workers.every((w) => w.exited));
});

test("a second pool on a memory is a LayoutError until the first closes", TIMEOUT, async () => {
  const memory = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
  const pool = await createPool({ module: WASM.map_f32, memory, workers: 1 });
  await assert.rejects(createPool({ module: WASM.map_f32, memory, workers: 1 }), {
    name: "LayoutError",
    message: /memory is already used by another pool/,
  });
  // A memory made elsewhere does not show its maximum: the engine's refusal is reported.
  await assert.rejects(pool.grow(1), { name: "RangeError", message: /^deltaPages must keep/ });
  assert.equal(memory.buffer.byteLength, 65536);
  await pool.close();
  await (await createPool({ module: WASM.map_f32, memory, workers: 1 })).close();
});

test("a worker that dies breaks the pool, for the run in flight too", TIMEOUT, async () => {
  const first = spawned.length;
  const pool = await createPool({
    module: WASM.gate,
    memory: { initial: 1, maximum: 1 },
    workers: 2,
    statusOffset: 64,
  });
  const running = assert.rejects(pool.run("doomed"), (err) => {
    assert.ok(err instanceof BrokenPoolError, String(err));
    assert.match(err.message, /worker 1 failed outside the kernel: it exited with code 1/);
    return true;
  });
  await spawned[first + 1].worker.terminate();
  await running;
  await assert.rejects(pool.run("next"), BrokenPoolError);
  // Let worker 0 finish its share, so that it sees EXIT and leaves at once.
  const gate = new Int32Array(pool.memory.buffer, 0, 1);
  Atomics.store(gate, 0, 1);
  Atomics.notify(gate, 0);
  const started = performance.now();
  await pool.close();
  assert.ok(performance.now() - started < 900, "worker 0 left without the close timeout");
  assert.ok(spawned.slice(first).every((w) => w.exited));
  await assert.rejects(pool.run("closed"), PoolClosedError);
});

test("arguments are checked like the Python package's", TIMEOUT, async () => {
  const module = WASM.map_f32;
  await assert.rejects(createPool({ module, memory: { initial: 1 } }), {
    name: "TypeError",
    message: /^maximum is required for shared memory/,
  });
  await assert.rejects(createPool({ module, memory: { initial: 2, maximum: 1 } }), {
    name: "RangeError",
    message: "initial must be <= maximum=1 pages (got initial=2)",
  });
  const unshared = new WebAssembly.Memory({ initial: 1, maximum: 1 });
  await assert.rejects(createPool({ module, memory: unshared }), /must be a shared/);
  const memory = { initial: 1, maximum: 1 };
  const pool0 = () =>
    withPool({ module, memory, workers: 1 }, (pool) => pool.run("x", { elements: -1 }));
  await assert.rejects(createPool({ memory }), /pass exactly one of module or url \(got neither\)/);
  await assert.rejects(createPool({ module, url: "x", memory }), /\(got both\)/);
  await assert.rejects(pool0(), {
    name: "RangeError",
    message: "elements must be >= 0 (got -1)",
  });
  await assert.rejects(createPool({ module, memory, workers: 0 }), {
    name: "RangeError",
    message: "workers must be in [1, 1024] (got 0)",
  });
  await assert.rejects(createPool({ module, memory, workers: 1, statusOffset: 2 }), {
    name: "LayoutError",
    message: "statusOffset must be a multiple of 4 (got 2)",
  });
  await assert.rejects(createPool({ module, memory, workers: 1, statusOffset: 65536 }), {
    name: "LayoutError",
    message: /^statusOffset must leave room for data/,
  });
});

test("kernels that break the ABI are KernelErrors that say what", TIMEOUT, async () => {
  const memory = { initial: 1, maximum: 1 };
  const cases = {
    // The Python package's own messages, for what both sides read from the bytes.
    no_export: PY.errors.no_export,
    unknown_import: /^unknown import env\.log \(function\): a kernel may import only/,
    own_memory: /defines its own memory/,
    no_memory: /it imports no memory/,
    not_a_function: PY.errors.not_a_function,
    global_is_function: /^env\.data_offset must be an immutable i32 global \(got function\)/,
    float_global: /^kernel failed to instantiate in worker \d: LinkError: .*data_offset/,
    big_minimum: /^kernel failed to instantiate in worker \d: LinkError: .*memory/,
  };
  const first = spawned.length;
  for (const [name, message] of Object.entries(cases)) {
    await assert.rejects(createPool({ module: WASM[name], memory, workers: 2 }), (err) => {
      assert.ok(err instanceof KernelError, `${name}: ${err}`);
      if (typeof message === "string") assert.equal(err.message, message, name);
      else assert.match(err.message, message, name);
      return true;
    });
  }
  await assert.rejects(createPool({ module: new Uint8Array([1, 2, 3, 4, 5]), memory }), {
    name: "KernelError",
    message: /^kernel is not WebAssembly/,
  });
  const broken = new Uint8Array([0, 0x61, 0x73, 0x6d, 9, 9, 9, 9]);
  await assert.rejects(createPool({ module: broken, memory }), /^KernelError: kernel is not valid/);
  await assert.rejects(createPool({ module: "map_f32.wasm", memory }), TypeError);
  // The workers of the pools that failed to start were all terminated.
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.ok(spawned.slice(first).every((w) => w.exited));
});

test("a url is fetched and compiled; a wrong content type is named", TIMEOUT, async () => {
  const server = createServer((req, res) => {
    const type = req.url === "/map_f32.wasm" ? "application/wasm" : "text/plain";
    res.writeHead(req.url === "/missing.wasm" ? 404 : 200, { "Content-Type": type });
    res.end(WASM.map_f32);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  try {
    const memory = { initial: 1, maximum: 1 };
    await withPool({ url: `${base}/map_f32.wasm`, memory, workers: 1 }, async (pool) => {
      pool.data().fill(4);
      await pool.run();
      assert.equal(pool.data()[0], f(4));
    });
    await assert.rejects(createPool({ url: `${base}/plain.wasm`, memory, workers: 1 }), {
      name: "KernelError",
      message: /as "text\/plain", but .*compileStreaming needs Content-Type: application\/wasm/,
    });
    await assert.rejects(createPool({ url: new URL(`${base}/missing.wasm`), memory }), /HTTP 404/);
  } finally {
    server.close();
  }
});

test("without cross-origin isolation the error names both headers", TIMEOUT, async () => {
  globalThis.crossOriginIsolated = false;
  try {
    await assert.rejects(createPool({}), (err) => {
      assert.ok(err instanceof SharedWasmError);
      assert.ok(err.message.includes("Cross-Origin-Opener-Policy: same-origin"));
      assert.ok(err.message.includes("Cross-Origin-Embedder-Policy: require-corp"));
      return true;
    });
  } finally {
    delete globalThis.crossOriginIsolated;
  }
});

test("the errors carry the Python package's names", TIMEOUT, () => {
  const classes = [KernelError, LayoutError, KernelTrap, RunTimeout, PoolClosedError];
  for (const cls of [...classes, BrokenPoolError]) {
    const err = cls === KernelTrap ? new KernelTrap(0, 0, 1, "unreachable") : new cls("x");
    assert.equal(err.name, cls.name);
    assert.ok(err instanceof SharedWasmError && err instanceof Error);
  }
});
