// Dynamic runs, cancel, timeouts and statistics under Node: the Python
// runner's claim loop (compare-exchange on NEXT), its cancel word and its
// statistics, on the same layout.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  KernelTrap,
  RunCancelled,
  RunTimeout,
  Status,
  createPool,
} from "../../src/sharedwasm/web/runtime/sharedwasm.mjs";
import { buildKernels, pythonJson } from "./_python.mjs";

const TIMEOUT = { timeout: 30_000 };
const MEMORY = '(import "env" "memory" (memory 1 64 shared))';

// count: every element of the range gets one more hit (u32 words of the
// data region), except that the element whose index + 1 is the i32 at byte 8
// traps. gate: every non-empty call counts itself in the i32 at byte 4, then
// parks until the i32 at byte 0 is non-zero.
const WASM = buildKernels({
  wat: {
    count: `(module ${MEMORY}
      (import "env" "data_offset" (global $data i32))
      (func (export "compute_partition") (param $s i32) (param $e i32)
        (local $p i32)
        (block $done (loop $next
          (br_if $done (i32.ge_u (local.get $s) (local.get $e)))
          (if (i32.eq (i32.load (i32.const 8)) (i32.add (local.get $s) (i32.const 1)))
            (then unreachable))
          (local.set $p (i32.add (global.get $data) (i32.shl (local.get $s) (i32.const 2))))
          (i32.store (local.get $p) (i32.add (i32.load (local.get $p)) (i32.const 1)))
          (local.set $s (i32.add (local.get $s) (i32.const 1)))
          (br $next)))))`,
    gate: `(module ${MEMORY}
      (func (export "compute_partition") (param $s i32) (param $e i32)
        (if (i32.ge_u (local.get $s) (local.get $e)) (then (return)))
        (drop (i32.atomic.rmw.add (i32.const 4) (i32.const 1)))
        (drop (memory.atomic.notify (i32.const 4) (i32.const -1)))
        (block $open (loop $closed
          (br_if $open (i32.atomic.load (i32.const 0)))
          (drop (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const -1)))
          (br $closed)))))`,
  },
});

async function withPool(module, options, body) {
  const pool = await createPool({
    module,
    memory: { initial: 4, maximum: 4 },
    statusOffset: 64,
    ...options,
  });
  try {
    return await body(pool);
  } finally {
    await pool.close();
  }
}

/** Wait, for at most `ms`, until `condition()` holds; fail otherwise. */
async function until(condition, what, ms = 5000) {
  const deadline = performance.now() + ms;
  while (!condition()) {
    if (performance.now() > deadline) assert.fail(`timed out waiting until ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test("a dynamic run hits every element exactly once, in claimed chunks", TIMEOUT, async () => {
  await withPool(WASM.count, { workers: 3 }, async (pool) => {
    const total = 50_001;
    for (const [chunk, chunks] of [
      [1, total],
      [7, Math.ceil(total / 7)],
      [100_000, 1],
      // The default: 64 claims per worker.
      [undefined, Math.ceil(total / Math.ceil(total / (3 * 64)))],
    ]) {
      const hits = pool.data(Uint32Array).subarray(0, total + 1);
      hits.fill(0);
      const { done } = await pool.run("dynamic", { schedule: "dynamic", chunk, elements: total });
      assert.ok(
        hits.subarray(0, total).every((h) => h === 1),
        `chunk ${chunk}`,
      );
      assert.equal(hits[total], 0, "nothing past the run");
      assert.equal(
        done.reduce((n, d) => n + d.elements, 0),
        total,
      );
      assert.equal(
        done.reduce((n, d) => n + d.chunks, 0),
        chunks,
        `chunk ${chunk}`,
      );
      for (const d of done) {
        // A worker's span runs from its first claim to the end of its last.
        if (d.chunks) assert.ok(d.start < d.end && d.end - d.start >= d.elements);
        else assert.deepEqual([d.start, d.end, d.elements], [total, total, 0]);
      }
    }
    // No elements at all: nobody claims anything.
    const { done } = await pool.run("none", { schedule: "dynamic", elements: 0 });
    assert.deepEqual(
      done.map((d) => d.chunks),
      [0, 0, 0],
    );
  });
});

test("the claims of a dynamic run report what the Python pool reports", TIMEOUT, async () => {
  // With one worker the claims are deterministic: compare the whole record.
  const py = pythonJson(
    `
import json
import sharedwasm as sw
wasm = open(0, "rb").read()
with sw.WorkerPool(sw.Kernel.from_bytes(wasm), sw.Memory(4, 4), 1, status_offset=64) as pool:
    done = pool.run("d", elements=1000, schedule="dynamic", chunk=64).done
print(json.dumps([[d.start, d.end, d.elements, d.chunks] for d in done]))
`,
    { input: WASM.count },
  );
  await withPool(WASM.count, { workers: 1 }, async (pool) => {
    const { done } = await pool.run("d", { elements: 1000, schedule: "dynamic", chunk: 64 });
    assert.deepEqual(
      done.map((d) => [d.start, d.end, d.elements, d.chunks]),
      py,
    );
  });
});

test("schedule and chunk are checked like the Python package's", TIMEOUT, async () => {
  await withPool(WASM.count, { workers: 1 }, async (pool) => {
    for (const [options, name, message] of [
      [
        { chunk: 4 },
        "RangeError",
        'chunk must be left out with schedule "static", which makes one range per worker (got 4)',
      ],
      [
        { schedule: "guided" },
        "RangeError",
        'schedule must be "static" or "dynamic" (got "guided")',
      ],
      [
        { schedule: "dynamic", chunk: 0 },
        "RangeError",
        "chunk must be in [1, 2147483647] elements (got 0)",
      ],
      [
        { schedule: "dynamic", chunk: 1.5 },
        "TypeError",
        "chunk must be an integer elements (got 1.5)",
      ],
      [{ elements: 2 ** 32 }, "RangeError", "elements must be < 2**32 (got 4294967296)"],
    ]) {
      await assert.rejects(pool.run("bad", options), { name, message });
    }
  });
});

test(
  "a trap in a dynamic run names its chunk; the other claims finish the rest",
  TIMEOUT,
  async () => {
    await withPool(WASM.count, { workers: 2 }, async (pool) => {
      const total = 4000;
      const hits = pool.data(Uint32Array).subarray(0, total);
      hits.fill(0);
      new Int32Array(pool.memory.buffer, 8, 1)[0] = 1234 + 1;
      const err = await pool
        .run("trap", { schedule: "dynamic", chunk: 100, elements: total })
        .catch((e) => e);
      assert.ok(err instanceof KernelTrap, String(err));
      assert.deepEqual([err.start, err.end], [1200, 1300]);
      assert.match(err.message, /trapped in compute_partition\(1200, 1300\): .*unreachable/);
      const missed = [...hits.keys()].filter((i) => hits[i] !== 1);
      assert.deepEqual(
        missed,
        Array.from({ length: 66 }, (_, k) => 1234 + k),
        "only the trapped chunk's rest",
      );
      new Int32Array(pool.memory.buffer, 8, 1)[0] = 0;
      await pool.run("after", { schedule: "dynamic", elements: total });
    });
  },
);

test(
  "cancel stops a dynamic run from claiming; its promise rejects with RunCancelled",
  TIMEOUT,
  async () => {
    await withPool(WASM.gate, { workers: 2 }, async (pool) => {
      const words = new Int32Array(pool.memory.buffer, 0, 2);
      assert.equal(pool.cancel(), false, "nothing in flight");
      const running = pool.run("gated", { schedule: "dynamic", chunk: 1, elements: 1000 });
      const outcome = running.catch((e) => e);
      await until(() => Atomics.load(words, 1) === 2, "both workers are inside their first chunk");
      assert.equal(pool.cancel(), true);
      assert.equal(pool.cancel(), true, "still in flight");
      Atomics.store(words, 0, 1);
      Atomics.notify(words, 0);
      const err = await outcome;
      assert.ok(err instanceof RunCancelled, String(err));
      assert.match(
        err.message,
        new RegExp(
          '^run "gated" was cancelled: worker\\(s\\) \\[0, 1\\] of sharedwasm-\\d+ stopped ' +
            "before finishing their share; statuses \\[-2, -2\\]$",
        ),
      );
      assert.equal(Atomics.load(words, 1), 2, "no chunk was claimed after the cancel");
      assert.deepEqual([...pool.status], [Status.CANCELLED, Status.CANCELLED]);
      assert.equal(pool.cancel(), false, "the cancelled run has landed");
      // The next run clears the cancel and runs whole.
      const { done } = await pool.run("next", { schedule: "dynamic", chunk: 10, elements: 100 });
      assert.equal(
        done.reduce((n, d) => n + d.elements, 0),
        100,
      );
      assert.equal(Atomics.load(words, 1), 2 + 10);
      assert.equal(pool.statistics().runs, 1, "a cancelled run is not counted");
    });
  },
);

test(
  "a run past its timeout is cancelled: it claims nothing more and the pool is ready",
  TIMEOUT,
  async () => {
    await withPool(WASM.gate, { workers: 2 }, async (pool) => {
      const words = new Int32Array(pool.memory.buffer, 0, 2);
      const started = performance.now();
      await assert.rejects(
        pool.run("slow", { schedule: "dynamic", chunk: 1, elements: 500, timeout: 0.1 }),
        (err) => {
          assert.ok(err instanceof RunTimeout, String(err));
          assert.match(
            err.message,
            new RegExp(
              '^run "slow" did not finish within 0.1 s and it was asked to stop, but a call ' +
                "already inside the kernel cannot be interrupted in JavaScript; it keeps running",
            ),
          );
          return true;
        },
      );
      assert.ok(performance.now() - started >= 95);
      const next = pool.run("next", { elements: 2 });
      Atomics.store(words, 0, 1);
      Atomics.notify(words, 0);
      await next;
      assert.equal(
        Atomics.load(words, 1),
        2 + 2,
        "the timed-out run stopped after its first calls",
      );
      // A run that ends within the grace period after its timeout is stopped, and said so.
      Atomics.store(words, 0, 0);
      const late = pool.run("late", { elements: 2, timeout: 0.05 });
      setTimeout(() => {
        Atomics.store(words, 0, 1);
        Atomics.notify(words, 0);
      }, 80);
      await assert.rejects(late, {
        name: "RunTimeout",
        message:
          /^run "late" did not finish within 0.05 s; it was stopped and sharedwasm-\d+ is ready/,
      });
      await pool.run("ready", { elements: 2 });
    });
  },
);

test("statistics count the runs, each worker's busy time and elements", TIMEOUT, async () => {
  const pool = await createPool({
    module: WASM.count,
    memory: { initial: 4, maximum: 4 },
    statusOffset: 64,
    workers: 3,
  });
  const empty = pool.statistics();
  assert.deepEqual(empty, {
    workers: 3,
    runs: 0,
    busy: [0, 0, 0],
    elements: [0, 0, 0],
    dispatchLatencyMedian: null,
    dispatchLatencyP99: null,
  });
  for (let i = 0; i < 5; i++) await pool.run(`r${i}`, { elements: 3000 });
  await pool.run("dynamic", { elements: 3000, schedule: "dynamic" });
  new Int32Array(pool.memory.buffer, 8, 1)[0] = 1;
  await assert.rejects(pool.run("trap", { elements: 3000 }), KernelTrap);
  new Int32Array(pool.memory.buffer, 8, 1)[0] = 0;
  const stats = pool.statistics();
  assert.ok(Object.isFrozen(stats) && Object.isFrozen(stats.busy));
  assert.equal(stats.runs, 6, "the trapped run is not counted");
  assert.equal(
    stats.elements.reduce((a, b) => a + b, 0),
    6 * 3000,
  );
  assert.ok(
    stats.elements.every((n) => n >= 5000),
    "each did its static shares",
  );
  assert.ok(stats.busy.every((s) => s >= 0));
  assert.ok(
    stats.dispatchLatencyMedian >= 0 && stats.dispatchLatencyP99 >= stats.dispatchLatencyMedian,
  );
  await pool.close();
  assert.deepEqual(pool.statistics(), stats, "a closed pool keeps its figures");
});
