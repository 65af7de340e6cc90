// Kernels with arguments under Node: several entries of one C module run on
// the same typed arrays of the pool's heap, with the same bytes as the Python
// pool, and every argument checked against its C type, with messages that
// name the entry and the parameter.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { OutOfMemory, createPool } from "../../src/sharedwasm/web/runtime/sharedwasm.mjs";
import { base64, buildKernels, pythonJson } from "./_python.mjs";

const TIMEOUT = { timeout: 30_000 };

const SOURCE = readFileSync(new URL("./fixtures/entries.c", import.meta.url), "utf8");
const { entries: WASM } = buildKernels({ c: { entries: SOURCE } });

const N = 10_007;
const WORKERS = 3;
// Integer-valued floats, so that any order of summing them is exact.
const X = Float32Array.from({ length: N }, (_, i) => ((i * 7919) % 2003) - 1000);
const Y = Float32Array.from({ length: N }, (_, i) => Math.fround(Math.sin(i) * 900));
const ARGS = { a: 2.5, limit: 500, scale: 0.75, bias: -(2 ** 40), shift: 33 };
const ECHO = [
  -128,
  65535,
  -(2 ** 31),
  2 ** 32 - 1,
  -(2n ** 63n),
  2n ** 64n - 1n,
  true,
  -0.1,
  1e-45,
];

// The Python pool's bytes for the same module, arguments and worker count.
const PY = pythonJson(
  `
import base64, json, sys
import numpy as np
import sharedwasm as sw

spec = json.loads(sys.argv[1])
wasm = base64.b64decode(spec["wasm"])
x0 = np.frombuffer(base64.b64decode(spec["x"]), np.float32)
y0 = np.frombuffer(base64.b64decode(spec["y"]), np.float32)
a = spec["args"]
b64 = lambda arr: base64.b64encode(arr.tobytes()).decode()
out = {}
with sw.WorkerPool(sw.Kernel.from_bytes(wasm), workers=spec["workers"]) as pool:
    x, y = pool.asarray(x0), pool.asarray(y0)
    pool.run("saxpy", a["a"], x, y, entry="saxpy")
    out["saxpy"] = b64(y)
    pool.run("clamp", y, a["limit"], a["scale"], a["bias"], a["shift"], entry="clamp_scale")
    out["clamp"] = b64(y)
    partial = pool.partials()
    pool.run("sum", x, partial, entry="sum")
    out["sum"] = b64(partial)
    top = pool.partials(np.float32, -np.inf)
    pool.run("max", y, top, entry="maximum")
    out["max"] = b64(top)
    echo = pool.zeros(9, np.int64)
    e = spec["echo"]
    pool.run("echo", echo, e[0], e[1], e[2], e[3], int(e[4]), int(e[5]), e[6], e[7], e[8],
             entry="echo", elements=1)
    out["echo"] = b64(echo)
print(json.dumps(out))
`,
  {
    args: [
      JSON.stringify({
        wasm: base64(WASM),
        x: base64(X),
        y: base64(Y),
        args: ARGS,
        workers: WORKERS,
        echo: ECHO.map((v) => (typeof v === "bigint" ? String(v) : v)),
      }),
    ],
  },
);
const pyBytes = (name) => Buffer.from(PY[name], "base64");
const bytesOf = (view) => Buffer.from(view.buffer, view.byteOffset, view.byteLength);

/** Make a pool of the module (its memory left to the runtime), run `body`, and always close it. */
async function withPool(options, body) {
  const pool = await createPool({ module: WASM, workers: WORKERS, ...options });
  try {
    return await body(pool);
  } finally {
    await pool.close();
  }
}

/** Replace console.warn for `body`; return the messages it got. */
async function capturingWarnings(body) {
  const warnings = [];
  const original = console.warn;
  console.warn = (...args) => warnings.push(args.join(" "));
  try {
    await body();
  } finally {
    console.warn = original;
  }
  return warnings;
}

const SAXPY = "saxpy(start, end, float a, const float *x, float *y)";
const NAMES = '["saxpy", "clamp_scale", "sum", "maximum", "echo", "count", "copy_bytes"]';
const clampArgs = (y) => [y, ARGS.limit, ARGS.scale, ARGS.bias, ARGS.shift];

test(
  "several entries run on the same heap arrays with the Python pool's bytes",
  TIMEOUT,
  async () => {
    await withPool({}, async (pool) => {
      assert.deepEqual(
        [...pool.entries.keys()],
        ["saxpy", "clamp_scale", "sum", "maximum", "echo", "count", "copy_bytes"],
      );
      const x = pool.asarray(X);
      const y = pool.asarray(Y);
      assert.equal(pool.asarray(x), x, "an array of the heap is itself");
      const { done } = await pool.run("saxpy", { args: [ARGS.a, x, y], entry: "saxpy" });
      // elements defaults to the first array argument's length.
      assert.equal(done.at(-1).end, N);
      assert.deepEqual(bytesOf(y), pyBytes("saxpy"));
      await pool.run("clamp", { args: clampArgs(y), entry: "clamp_scale" });
      assert.deepEqual(bytesOf(y), pyBytes("clamp"));
      const partial = pool.partials();
      await pool.run("sum", { args: [x, partial], entry: "sum" });
      assert.deepEqual(bytesOf(partial), pyBytes("sum"));
      const top = pool.partials(Float32Array, -Infinity);
      await pool.run("max", { args: [y, top], entry: "maximum" });
      assert.deepEqual(bytesOf(top), pyBytes("max"));
    });
  },
);

test("arguments by name, as an object, are the arguments by position", TIMEOUT, async () => {
  await withPool({}, async (pool) => {
    const x = pool.asarray(X);
    const y = pool.asarray(Y);
    await pool.run("named", { args: { y, x, a: ARGS.a }, entry: "saxpy" });
    assert.deepEqual(bytesOf(y), pyBytes("saxpy"));
    const { limit, scale, bias, shift } = ARGS;
    await pool.run("named", { args: { y, shift, bias, scale, limit }, entry: "clamp_scale" });
    assert.deepEqual(bytesOf(y), pyBytes("clamp"));
  });
});

test("every scalar reaches the kernel as its C type holds it", TIMEOUT, async () => {
  await withPool({}, async (pool) => {
    const out = pool.zeros(BigInt64Array, 9);
    await pool.run("echo", { args: [out, ...ECHO], entry: "echo", elements: 1 });
    assert.deepEqual(bytesOf(out), pyBytes("echo"));
    const doubles = new Float64Array(out.buffer, out.byteOffset + 7 * 8, 2);
    assert.deepEqual(
      [...out.subarray(0, 7)],
      [-128n, 65535n, -(2n ** 31n), 2n ** 32n - 1n, -(2n ** 63n), -1n, 1n],
    );
    assert.deepEqual([...doubles], [-0.1, Math.fround(1e-45)]);
    // BigInts and numbers both go to any integer parameter; bool takes 0 and 1 too.
    await pool.run("echo", {
      args: [out, -1n, 7n, 3, 4n, -5, 6, 0, 1n, 2n ** 70n],
      entry: "echo",
      elements: 1,
    });
    assert.deepEqual([...out.subarray(0, 7)], [-1n, 7n, 3n, 4n, -5n, 6n, 0n]);
    assert.equal(new Float64Array(out.buffer, out.byteOffset + 8 * 8, 1)[0], Math.fround(2 ** 70));
  });
});

test(
  "a value that does not fit its parameter is refused, naming the entry and the parameter",
  TIMEOUT,
  async () => {
    await withPool({ workers: 1 }, async (pool) => {
      const x = pool.asarray(X);
      const y = pool.asarray(Y);
      const out = pool.zeros(BigInt64Array, 9);
      const echo = (index, value) => () => {
        const args = [out, 0, 0, 0, 0, 0, 0, false, 0, 0];
        args[index + 1] = value;
        return pool.run("bad", { args, entry: "echo", elements: 1 });
      };
      const cases = [
        [
          echo(0, 128),
          "RangeError",
          "argument 'a' (signed char a) must be in [-128, 127] (got 128)",
        ],
        [
          echo(1, -1),
          "RangeError",
          "argument 'b' (unsigned short b) must be in [0, 65535] (got -1)",
        ],
        [
          echo(2, 2 ** 31),
          "RangeError",
          "argument 'c' (int c) must be in [-2147483648, 2147483647] (got 2147483648)",
        ],
        [echo(3, 1.5), "TypeError", "argument 'd' (unsigned int d) must be an integer (got 1.5)"],
        [
          echo(4, 2n ** 63n),
          "RangeError",
          "argument 'e' (long long e) must be in [-9223372036854775808, " +
            "9223372036854775807] (got 9223372036854775808n)",
        ],
        [
          echo(5, -1n),
          "RangeError",
          "argument 'f' (unsigned long long f) must be in [0, 18446744073709551615] (got -1n)",
        ],
        [echo(6, 2), "RangeError", "argument 'g' (bool g) must be in [0, 1] (got 2)"],
        [echo(0, true), "TypeError", "argument 'a' (signed char a) must be an integer (got true)"],
        [echo(2, "3"), "TypeError", "argument 'c' (int c) must be an integer (got \"3\")"],
        [echo(2, Number.NaN), "TypeError", "argument 'c' (int c) must be an integer (got NaN)"],
        [echo(7, "0.5"), "TypeError", "argument 'h' (double h) must be a number (got \"0.5\")"],
        [
          echo(8, 1e39),
          "RangeError",
          "argument 'k' (float k) must fit a float32, at most 3.40282e+38 (got 1e+39)",
        ],
      ];
      for (const [call, name, message] of cases) {
        await assert.rejects(call(), { name, message: `echo: ${message}` });
      }
      // Infinities and NaN are floats like any other.
      await echo(8, -Infinity)();
      assert.equal(new Float64Array(out.buffer, out.byteOffset + 8 * 8, 1)[0], -Infinity);
      const saxpy = (args) => () => pool.run("bad", { args, entry: "saxpy" });
      const more = [
        [
          saxpy([2, new Float64Array(4), y]),
          "TypeError",
          "saxpy: argument 'x' (const float *x) must be a Float32Array (got Float64Array)",
        ],
        [
          saxpy([2, [1, 2, 3], y]),
          "TypeError",
          "saxpy: argument 'x' (const float *x) must be a Float32Array (got an Array of length 3)",
        ],
        [
          saxpy([2, x, 7]),
          "TypeError",
          "saxpy: argument 'y' (float *y) must be a Float32Array (got 7)",
        ],
        [saxpy([2, x]), "TypeError", `saxpy takes 3 argument(s) after runId (${SAXPY}) (got 2)`],
        [
          saxpy({ a: 2, x, y, z: y }),
          "TypeError",
          `saxpy has no parameter 'z' (${SAXPY}); argument names must name one`,
        ],
        [saxpy({ a: 2, x }), "TypeError", `saxpy is missing argument(s) ['y'] (${SAXPY})`],
        [
          saxpy(x),
          "TypeError",
          "args must be an array (by position) or an object (by parameter name) (got Float32Array)",
        ],
        [
          () => pool.run("bad", { args: [new Float32Array(4), y] }),
          "TypeError",
          `entry must name one of kernel's entries ${NAMES} ` +
            "(got undefined, and there is more than one)",
        ],
        [
          () => pool.run("bad", { entry: "nope" }),
          "RangeError",
          `entry must be one of kernel's entries ${NAMES} (got "nope")`,
        ],
        [
          () => pool.run(7, { args: [2, x, y], entry: "saxpy" }),
          "TypeError",
          "runId must be a string (got 7); the kernel's arguments go in options.args: " +
            'pool.run("label", { args: [x, y] })',
        ],
      ];
      for (const [call, name, message] of more) {
        await assert.rejects(call(), { name, message });
      }
      // An unchecked pointer (void *) takes any typed array.
      const bytes = pool.asarray(Uint8Array.from({ length: 64 }, (_, i) => i));
      const words = pool.zeros(Uint32Array, 16);
      await pool.run("copy", { args: [bytes, words], entry: "copy_bytes" });
      assert.deepEqual(Buffer.from(words.buffer, words.byteOffset, 64), bytesOf(bytes));
    });
  },
);

test(
  "an ordinary typed array is copied in, and back unless const, warning once per pool",
  TIMEOUT,
  async () => {
    await withPool({}, async (pool) => {
      const x = X.slice();
      const y = Y.slice();
      const warnings = await capturingWarnings(async () => {
        await pool.run("copied", { args: [ARGS.a, x, y], entry: "saxpy" });
        await pool.run("again", { args: clampArgs(y), entry: "clamp_scale" });
      });
      assert.deepEqual(bytesOf(y), pyBytes("clamp"), "y went in and came back out, twice");
      assert.deepEqual(x, X, "x is const: only read");
      assert.equal(warnings.length, 1, warnings.join("\n"));
      assert.equal(
        warnings[0],
        `${pool.name} copied a ${4 * N}-byte typed array into its shared memory for a run (and ` +
          "copies it back after, unless the parameter is const); make arrays with pool.asarray / " +
          "empty / zeros / full to pass them with no copy. Shown once per pool.",
      );
      // The temporary blocks went back to the heap: the same arrays fit again and again.
      for (let i = 0; i < 5; i++) await pool.run("loop", { args: [0, x, y], entry: "saxpy" });
    });
  },
);

test(
  "arrays of another pool, freed blocks and views outside the heap are refused",
  TIMEOUT,
  async () => {
    await withPool({ workers: 2 }, async (pool) => {
      await withPool({ workers: 1 }, async (other) => {
        const theirs = other.zeros(Float32Array, 8);
        await assert.rejects(
          pool.run("other", { args: [1, theirs, pool.zeros(Float32Array, 8)], entry: "saxpy" }),
          {
            name: "RangeError",
            message:
              "saxpy: argument 'x' (const float *x) is an array of another sharedwasm memory",
          },
        );
      });
      const x = pool.asarray(X);
      const y = pool.zeros(Float32Array, N);
      pool.free(y);
      pool.free(y); // twice: nothing more happens
      await assert.rejects(pool.run("freed", { args: [1, x, y], entry: "saxpy" }), {
        name: "RangeError",
        message: "saxpy: argument 'y' (float *y) was freed with pool.free",
      });
      const data = pool.data(Float32Array);
      const outside = data.subarray(data.length - 16);
      await assert.rejects(pool.run("outside", { args: [1, x, outside], entry: "saxpy" }), {
        name: "RangeError",
        message: new RegExp(
          `^saxpy: argument 'y' \\(float \\*y\\) lies at byte ${outside.byteOffset} ` +
            "of the pool's " +
            "memory but not inside a live array of its heap",
        ),
      });
      // A view inside a live block passes by address: the kernel writes through it.
      const z = pool.zeros(Float32Array, 100);
      const middle = z.subarray(10, 20);
      await pool.run("view", { args: [1, x.subarray(0, 10), middle], entry: "saxpy" });
      assert.deepEqual([...z.subarray(10, 20)], [...X.subarray(0, 10)]);
      assert.ok(z.subarray(0, 10).every((v) => v === 0) && z.subarray(20).every((v) => v === 0));
    });
  },
);

test("partials: a static run's sum and max are the same run after run", TIMEOUT, async () => {
  await withPool({}, async (pool) => {
    const x = pool.asarray(X);
    const partial = pool.partials();
    assert.equal(partial.length, WORKERS);
    const sums = [];
    for (let i = 0; i < 3; i++) {
      // No reset by hand: the pool refills the partials before each run.
      await pool.run("sum", { args: [x, partial], entry: "sum" });
      sums.push(Buffer.from(bytesOf(partial)));
    }
    assert.deepEqual(sums, [pyBytes("sum"), pyBytes("sum"), pyBytes("sum")]);
    const top = pool.partials(Float32Array, -Infinity);
    for (let i = 0; i < 2; i++) {
      await pool.run("max", { args: [x, top], entry: "maximum" });
      assert.equal(Math.max(...top), Math.max(...X));
    }
  });
});

test("partials are correct for a dynamic run, whoever claims what", TIMEOUT, async () => {
  await withPool({}, async (pool) => {
    const x = pool.asarray(X);
    const total = X.reduce((s, v) => s + v, 0);
    const partial = pool.partials();
    for (const chunk of [1, 7, 1000, undefined]) {
      const { done } = await pool.run("sum", {
        args: [x, partial],
        entry: "sum",
        schedule: "dynamic",
        chunk,
      });
      assert.equal(
        partial.reduce((s, v) => s + v, 0),
        total,
        `chunk ${chunk}`,
      );
      assert.equal(
        done.reduce((n, d) => n + d.elements, 0),
        N,
      );
    }
    const hits = pool.zeros(Uint32Array, N);
    await pool.run("count", { args: [hits], entry: "count", schedule: "dynamic", chunk: 3 });
    assert.ok(
      hits.every((h) => h === 1),
      "every element claimed exactly once",
    );
  });
});

test("a copy that does not fit even at the memory's maximum is OutOfMemory", TIMEOUT, async () => {
  await withPool({ workers: 1, memory: { initial: 20, maximum: 21 } }, async (pool) => {
    const huge = new Float32Array(1 << 19);
    await assert.rejects(
      pool.run("huge", { args: [1, huge, pool.zeros(Float32Array, 4)], entry: "saxpy" }),
      (err) => {
        assert.ok(err instanceof OutOfMemory, String(err));
        assert.equal(err.requested, 4 << 19);
        assert.ok(err.available < err.requested);
        return true;
      },
    );
    // The failed run changed nothing: the next one runs.
    const y = pool.zeros(Float32Array, 4);
    await pool.run("small", { args: [1, pool.full(Float32Array, 4, 2), y], entry: "saxpy" });
    assert.deepEqual([...y], [2, 2, 2, 2]);
  });
});
