// layout.mjs against sharedwasm._layout: the same constants, the same
// enums, and buildLayout giving what Layout.build gives, errors included.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";

import { LayoutError } from "../../src/sharedwasm/web/runtime/errors.mjs";
import * as layout from "../../src/sharedwasm/web/runtime/layout.mjs";
import { LAYOUT_AS_JS, PYTHON, ROOT, pythonJson } from "./_python.mjs";

const TIMEOUT = { timeout: 20_000 };

// Two grids of Layout.build's keyword arguments: the board alone, and a
// kernel with static data, a stack and thread-local data per worker.
const GRIDS = {
  board: {
    workers: [-1, 0, 1, 2, 3, 7, 16, 1024],
    status_offset: [-4, 0, 2, 4, 60, 64, 100, 4096],
    byte_length: [0, 64, 320, 512, 4096, 65536, 2 ** 32],
  },
  threads: {
    workers: [0, 1, 3],
    status_offset: [0, 1088, 1100, 4096],
    byte_length: [65536, 2 ** 20, 2 ** 32],
    static_end: [0, 1088, 5000],
    stack_size: [-16, 0, 8, 16, 65536],
    tls_size: [-1, 0, 4, 17],
    tls_align: [0, 1, 3, 32, 128],
  },
};
// What JavaScript calls each argument, and how Python's messages spell it.
const NAMES = {
  workers: "workers",
  status_offset: "statusOffset",
  byte_length: "byteLength",
  static_end: "staticEnd",
  stack_size: "stackSize",
  tls_size: "tlsSize",
  tls_align: "tlsAlign",
};

const EXPECTED = pythonJson(
  LAYOUT_AS_JS +
    `
import itertools, json, sys
from sharedwasm import _layout
from sharedwasm._layout import Layout
from sharedwasm._errors import LayoutError

grids = json.loads(sys.argv[1])
cases = {}
for grid_name, grid in grids.items():
    cases[grid_name] = grid_cases = []
    for values in itertools.product(*grid.values()):
        args = dict(zip(grid, values))
        try:
            lay = Layout.build(**args)
        except LayoutError as exc:
            grid_cases.append({"args": args, "error": "LayoutError", "message": str(exc)})
        except ValueError as exc:
            grid_cases.append({"args": args, "error": "RangeError", "message": str(exc)})
        else:
            fields = layout_as_js(lay)
            threads = fields.pop("threads")
            grid_cases.append({"args": args, "layout": fields, "threads": threads})
enums = {cls.__name__: {m.name: int(m) for m in cls}
         for cls in (_layout.Status, _layout.Control, _layout.Record, _layout.Command,
                     _layout.Schedule)}
constants = {name: getattr(_layout, name) for name in (
    "STATUS_SLOT_BYTES", "CACHE_LINE", "DATA_ALIGN", "CONTROL_WORDS", "CONTROL_BYTES",
    "RECORD_BYTES", "STACK_ALIGN")}
print(json.dumps({"cases": cases, "enums": enums, "constants": constants}))
`,
  { args: [JSON.stringify(GRIDS)] },
);

/** The number of cases in a grid: the product of its value counts. */
const gridSize = (grid) => Object.values(grid).reduce((n, values) => n * values.length, 1);

/** Check buildLayout against every case of a grid; return how many built a layout. */
function checkGrid(cases) {
  let built = 0;
  for (const { args, layout: want, threads, error, message } of cases) {
    const options = Object.fromEntries(
      Object.entries(args).map(([name, value]) => [NAMES[name], value]),
    );
    const label = JSON.stringify(options);
    const call = () => layout.buildLayout(options);
    if (want) {
      const got = call();
      assert.deepEqual({ ...got }, want, label);
      assert.deepEqual(
        threads.map((_, i) => [
          layout.tlsAddress(got, i),
          layout.stackBottom(got, i),
          layout.stackTop(got, i),
        ]),
        threads,
        label,
      );
      built++;
    } else {
      const errorClass = error === "LayoutError" ? LayoutError : RangeError;
      // The JavaScript messages name the parameters the way JavaScript spells them.
      let text = message;
      for (const [python, js] of Object.entries(NAMES)) text = text.replaceAll(python, js);
      assert.throws(call, (err) => err instanceof errorClass && err.message === text, label);
    }
  }
  return built;
}

test("the constants and enums equal sharedwasm._layout's", TIMEOUT, () => {
  for (const [name, value] of Object.entries(EXPECTED.constants)) {
    assert.equal(layout[name], value, name);
  }
  for (const [name, members] of Object.entries(EXPECTED.enums)) {
    assert.deepEqual({ ...layout[name] }, members, name);
    assert.ok(Object.isFrozen(layout[name]), `${name} is frozen`);
  }
});

test("buildLayout gives Layout.build's offsets and errors over a grid", TIMEOUT, () => {
  assert.equal(EXPECTED.cases.board.length, gridSize(GRIDS.board));
  assert.ok(checkGrid(EXPECTED.cases.board) > 50, "the grid builds layouts, not only errors");
});

test("with static data, stacks and thread-local blocks too", TIMEOUT, () => {
  const cases = EXPECTED.cases.threads;
  assert.equal(cases.length, gridSize(GRIDS.threads));
  assert.ok(checkGrid(cases) > 500, "the grid builds layouts, not only errors");
  // Every kind of refusal is in the grid, not only the first one checked.
  for (const start of [
    "workers must be",
    "stack_size must be",
    "tls_size must be",
    "status_offset must be >= 1088",
    "status_offset must leave room for data",
  ]) {
    assert.ok(
      cases.some((c) => c.message?.startsWith(start)),
      `the grid has a case whose message starts ${JSON.stringify(start)}`,
    );
  }
  assert.ok(
    cases.some((c) => c.message?.includes("thread areas of")),
    "the grid has thread areas that leave no room for data",
  );
});

test("buildLayout rejects non-integers with a TypeError naming the parameter", TIMEOUT, () => {
  const ok = { workers: 2, statusOffset: 0, byteLength: 65536 };
  for (const [name, bad] of [
    ["workers", 1.5],
    ["statusOffset", "0"],
    ["byteLength", undefined],
    ["workers", true],
    ["staticEnd", null],
    ["stackSize", 16.5],
    ["tlsSize", "4"],
    ["tlsAlign", 4.2],
  ]) {
    assert.throws(() => layout.buildLayout({ ...ok, [name]: bad }), {
      name: "TypeError",
      message: new RegExp(`^${name} must be an integer \\(got `),
    });
  }
  assert.deepEqual(
    { ...layout.buildLayout({ workers: 2n, statusOffset: 0n, byteLength: 65536n }) },
    { ...layout.buildLayout(ok) },
  );
});

test("layout.mjs is what gen_layout_js.py generates (--check exits 0)", TIMEOUT, () => {
  execFileSync(PYTHON, ["scripts/gen_layout_js.py", "--check"], { cwd: ROOT, timeout: 60_000 });
});
