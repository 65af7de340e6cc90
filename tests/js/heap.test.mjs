// The heap: typed arrays in the pool's memory, 64-byte aligned and never
// overlapping, reused after free or collection, and a memory that grows
// (never under a run) until its maximum, past which is OutOfMemory.

import assert from "node:assert/strict";
import { test } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { Worker } from "node:worker_threads";

import { Heap } from "../../src/sharedwasm/web/runtime/heap.mjs";
import {
  OutOfMemory,
  PoolClosedError,
  SharedWasmError,
  Status,
  createPool,
} from "../../src/sharedwasm/web/runtime/sharedwasm.mjs";
import { buildKernels } from "./_python.mjs";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc");

const TIMEOUT = { timeout: 30_000 };
const PAGE = 65536;

// Every call with a non-empty range parks until the i32 at byte 0 is non-zero.
const WASM = buildKernels({
  wat: {
    gate: `(module
      (import "env" "memory" (memory 1 64 shared))
      (func (export "compute_partition") (param $start i32) (param $end i32)
        (if (i32.ge_u (local.get $start) (local.get $end)) (then (return)))
        (block $open
          (loop $closed
            (br_if $open (i32.atomic.load (i32.const 0)))
            (drop (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const -1)))
            (br $closed)))))`,
  },
});

async function withPool(options, body) {
  const pool = await createPool({ module: WASM.gate, statusOffset: 64, workers: 2, ...options });
  try {
    return await body(pool);
  } finally {
    await pool.close();
  }
}

const span = (a) => [a.byteOffset, a.byteOffset + a.byteLength];

test("the allocator is first-fit, aligned, and coalesces what it frees", TIMEOUT, () => {
  const heap = new Heap(1024, 1024 + 4096);
  const a = heap.allocate(1);
  const b = heap.allocate(100);
  const c = heap.allocate(64);
  assert.deepEqual(
    [a, b, c].map((x) => [x.start, x.size]),
    [
      [1024, 64],
      [1088, 128],
      [1216, 64],
    ],
  );
  assert.equal(heap.allocate(4096), null, "nothing that large fits");
  heap.free(b);
  assert.equal(heap.find(1100, 4), null, "a freed block is found no more");
  assert.equal(heap.find(1216, 64), c);
  assert.equal(heap.find(1216, 65), null, "past the block's end");
  heap.free(a);
  // a and b coalesced into one range, before c; the tail stays one range.
  assert.deepEqual(heap.snapshot(), {
    live: [[1216, 1280]],
    free: [
      [1024, 1216],
      [1280, 5120],
    ],
  });
  assert.equal(heap.allocate(192).start, 1024, "first fit, in the coalesced range");
  heap.free(c);
  heap.free(c);
  assert.equal(heap.tailFree, 5120 - 1216);
  assert.equal(heap.shortfall(4096), 4096 - (5120 - 1216));
  heap.extend(8192);
  assert.equal(heap.largestFree, 8192 - 1216);
  assert.equal(heap.freeBytes, 8192 - 1024 - 192);
});

test(
  "arrays are 64-byte aligned, never overlap, and freed blocks are reused",
  TIMEOUT,
  async () => {
    await withPool({ memory: { initial: 4, maximum: 4 } }, async (pool) => {
      const kinds = [
        Uint8Array,
        Int16Array,
        Float32Array,
        Float64Array,
        BigInt64Array,
        Uint32Array,
      ];
      const arrays = [];
      for (let i = 0; i < 60; i++) arrays.push(pool.empty(kinds[i % kinds.length], (i * 37) % 301));
      arrays.push(pool.empty(Uint8Array, 0));
      for (const a of arrays) {
        assert.equal(a.buffer, pool.memory.buffer);
        assert.equal(a.byteOffset % 64, 0);
        assert.ok(a.byteOffset >= pool.dataOffset);
      }
      const spans = arrays.map(span).sort((p, q) => p[0] - q[0]);
      for (let i = 1; i < spans.length; i++) {
        assert.ok(spans[i - 1][1] <= spans[i][0], `${spans[i - 1]} overlaps ${spans[i]}`);
      }
      const victim = arrays[17];
      const [start] = span(victim);
      pool.free(victim);
      const again = pool.empty(victim.constructor, victim.length);
      assert.equal(again.byteOffset, start, "first fit takes the freed block");
      // zeros writes zeros over whatever the block held before.
      again.fill(again instanceof BigInt64Array ? 5n : 5);
      pool.free(again);
      const zeros = pool.zeros(again.constructor, again.length);
      assert.equal(zeros.byteOffset, start);
      assert.ok(zeros.every((v) => v == 0));
    });
  },
);

test("the array constructors mirror the Python pool's", TIMEOUT, async () => {
  await withPool({ memory: { initial: 2, maximum: 2 } }, async (pool) => {
    assert.deepEqual([...pool.full(Int8Array, 3, -2)], [-2, -2, -2]);
    assert.deepEqual([...pool.full(BigUint64Array, 2, 7)], [7n, 7n]);
    const proto = Float32Array.of(1, 2, 3);
    const like = pool.emptyLike(proto);
    assert.ok(like instanceof Float32Array && like.length === 3);
    assert.deepEqual([...pool.zerosLike(proto, Int32Array)], [0, 0, 0]);
    assert.deepEqual([...pool.fullLike([1, 2], 9)], [9, 9]);
    // asarray: a copy unless the array is the heap's, of the type asked for.
    const copied = pool.asarray(proto);
    assert.notEqual(copied, proto);
    assert.deepEqual([...copied], [1, 2, 3]);
    assert.equal(pool.asarray(copied), copied);
    assert.equal(pool.asarray(copied, Float32Array), copied);
    const widened = pool.asarray(copied, Float64Array);
    assert.ok(widened instanceof Float64Array && widened !== copied);
    assert.ok(pool.asarray([1.5, 2]) instanceof Float64Array);
    assert.deepEqual([...pool.asarray([1n, 2n])], [1n, 2n]);
    assert.deepEqual([...pool.asarray(new Set([4, 5]), Uint8Array)], [4, 5]);
    assert.deepEqual([...pool.asarray(Int32Array.of(3, 4), BigInt64Array)], [3n, 4n]);
    const partials = pool.partials(Float32Array, -Infinity);
    assert.deepEqual([...partials], [-Infinity, -Infinity]);
    assert.deepEqual([...pool.partials(BigInt64Array)], [0n, 0n]);
    for (const [call, name, message] of [
      [() => pool.empty(Array, 3), "TypeError", /^Ctor must be a typed array constructor/],
      [() => pool.empty(Float32Array, -1), "RangeError", /^length must be >= 0 \(got -1\)$/],
      [() => pool.empty(Float32Array, 1.5), "TypeError", /^length must be an integer/],
      [() => pool.asarray(5), "TypeError", /^a must be a typed array or an array \(got 5\)$/],
      [() => pool.free([1]), "TypeError", /^a must be a typed array of the pool's heap/],
      [
        () => pool.free(new Float32Array(2)),
        "RangeError",
        /^a must be an array of sharedwasm-\d+'s heap \(got Float32Array\)$/,
      ],
      [
        () => pool.free(pool.data().subarray(-2)),
        "RangeError",
        /^a must be an array of sharedwasm-\d+'s heap: it lies at byte/,
      ],
    ]) {
      assert.throws(call, { name, message });
    }
  });
});

test("a collected array's block goes back to the heap", TIMEOUT, async () => {
  await withPool({ memory: { initial: 2, maximum: 2 } }, async (pool) => {
    const offset = (() => pool.empty(Float64Array, 1000).byteOffset)();
    const keep = pool.empty(Float64Array, 1000);
    assert.notEqual(keep.byteOffset, offset);
    let reused = false;
    // The registry's callbacks run in a task of their own after a collection.
    for (let i = 0; i < 100 && !reused; i++) {
      gc();
      await new Promise((resolve) => setTimeout(resolve, 10));
      const probe = pool.empty(Float64Array, 1000);
      reused = probe.byteOffset === offset;
      pool.free(probe);
    }
    assert.ok(reused, "the collected array's block was allocated again");
  });
});

test(
  "a full heap grows the memory by at least 1/8; past the maximum is OutOfMemory",
  TIMEOUT,
  async () => {
    await withPool({ memory: { initial: 16, maximum: 40 } }, async (pool) => {
      const before = pool.memory.buffer.byteLength;
      const room = before - pool.dataOffset;
      const first = pool.empty(Uint8Array, room - 64);
      assert.equal(pool.memory.buffer.byteLength, before, "it fits without growing");
      // One more small array: the memory grows by max(1 page, 16 / 8) pages.
      const small = pool.empty(Float32Array, 100);
      assert.equal(pool.memory.buffer.byteLength, before + 2 * PAGE);
      assert.equal(small.buffer, pool.memory.buffer, "over the grown buffer");
      assert.ok(small.byteOffset + small.byteLength <= pool.memory.buffer.byteLength);
      small.fill(3);
      assert.equal(new Float32Array(pool.memory.buffer, small.byteOffset, 1)[0], 3);
      // A larger one grows by what it needs: the tail's 2 pages less the
      // 384 bytes of `small` past the old end are free, so 9 pages more.
      const big = pool.empty(Uint8Array, 10 * PAGE);
      assert.equal(pool.memory.buffer.byteLength, before + 11 * PAGE);
      assert.equal(pool.data(Uint8Array).length, pool.memory.buffer.byteLength - pool.dataOffset);
      // 14 pages would need 14 more, with 13 left to the maximum of 40.
      let error;
      assert.throws(
        () => pool.empty(Uint8Array, 14 * PAGE),
        (err) => {
          error = err;
          return err instanceof OutOfMemory;
        },
      );
      assert.ok(error instanceof SharedWasmError);
      assert.equal(error.requested, 14 * PAGE);
      assert.equal(error.available, 13 * PAGE + (PAGE - 384));
      assert.match(
        error.message,
        new RegExp(
          `^sharedwasm-\\d+ cannot allocate ${14 * PAGE} bytes: its heap has ${error.available} ` +
            "bytes in one piece at most, with the memory grown to its maximum of 40 pages " +
            `\\(${40 * PAGE} bytes\\); free arrays or use a memory with a larger maximum$`,
        ),
      );
      assert.equal(pool.memory.buffer.byteLength, before + 11 * PAGE, "nothing changed");
      // Freed, the first array's block holds it.
      const offset = first.byteOffset;
      pool.free(first);
      assert.equal(pool.empty(Uint8Array, 14 * PAGE).byteOffset, offset);
    });
  },
);

test("a memory that hides its maximum grows as far as the engine lets it", TIMEOUT, async () => {
  const memory = new WebAssembly.Memory({ initial: 2, maximum: 5, shared: true });
  await withPool({ memory }, async (pool) => {
    pool.empty(Uint8Array, 2 * PAGE);
    assert.equal(memory.buffer.byteLength, 3 * PAGE);
    pool.empty(Uint8Array, 2 * PAGE);
    assert.equal(memory.buffer.byteLength, 5 * PAGE);
    assert.throws(() => pool.empty(Uint8Array, 2 * PAGE), {
      name: "OutOfMemory",
      message: /with the memory grown as far as it goes \(5 pages, 327680 bytes\)/,
    });
  });
});

test("growth waits for the run in flight to end", TIMEOUT, async () => {
  await withPool({ memory: { initial: 2, maximum: 8 } }, async (pool) => {
    const gate = new Int32Array(pool.memory.buffer, 0, 1);
    const running = pool.run("gated", { elements: 2 });
    // A task later the run is published (its queue is a few promises long).
    await new Promise((resolve) => setTimeout(resolve, 50));
    // Another thread opens the gate in 200 ms; this one blocks in the
    // allocation meanwhile, since the memory must grow.
    const opener = new Worker(
      `const { workerData: gate } = require("node:worker_threads");
       Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 200);
       Atomics.store(gate, 0, 1);
       Atomics.notify(gate, 0);`,
      { eval: true, workerData: gate },
    );
    const started = performance.now();
    const big = pool.empty(Uint8Array, 3 * PAGE);
    const waited = performance.now() - started;
    assert.ok(waited >= 150, `the allocation returned after ${waited} ms, before the run ended`);
    assert.deepEqual([...pool.status], [Status.DONE, Status.DONE], "the run ended first");
    assert.ok(big.byteOffset + big.byteLength <= pool.memory.buffer.byteLength);
    await running;
    await opener.terminate();
  });
});

test("arrays cannot be made on a closed pool", TIMEOUT, async () => {
  const pool = await createPool({ module: WASM.gate, statusOffset: 64, workers: 1 });
  const kept = pool.zeros(Float32Array, 4);
  await pool.close();
  assert.throws(() => pool.empty(Float32Array, 4), PoolClosedError);
  assert.deepEqual([...kept], [0, 0, 0, 0], "arrays made before stay valid");
});
