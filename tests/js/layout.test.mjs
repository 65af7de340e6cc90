// layout.mjs against sharedwasm._layout: the same constants, the same
// enums, and buildLayout giving what Layout.build gives, errors included.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";

import { LayoutError } from "../../src/sharedwasm/web/runtime/errors.mjs";
import * as layout from "../../src/sharedwasm/web/runtime/layout.mjs";
import { PYTHON, ROOT, pythonJson } from "./_python.mjs";

const TIMEOUT = { timeout: 20_000 };

const WORKERS = [-1, 0, 1, 2, 3, 7, 16, 1024];
const STATUS_OFFSETS = [-4, 0, 2, 4, 60, 64, 100, 4096];
const BYTE_LENGTHS = [0, 64, 320, 512, 4096, 65536, 2 ** 32];

const EXPECTED = pythonJson(
  `
import json, sys
from sharedwasm import _layout
from sharedwasm._layout import Layout
from sharedwasm._errors import LayoutError

workers, offsets, lengths = json.loads(sys.argv[1])
cases = []
for w in workers:
    for s in offsets:
        for b in lengths:
            try:
                lay = Layout.build(workers=w, status_offset=s, byte_length=b)
            except LayoutError as exc:
                cases.append({"args": [w, s, b], "error": "LayoutError", "message": str(exc)})
            except ValueError as exc:
                cases.append({"args": [w, s, b], "error": "RangeError", "message": str(exc)})
            else:
                cases.append({"args": [w, s, b], "layout": {
                    "workers": lay.workers, "statusOffset": lay.status_offset,
                    "controlOffset": lay.control_offset, "recordsOffset": lay.records_offset,
                    "dataOffset": lay.data_offset, "statusEnd": lay.status_end,
                    "controlEnd": lay.control_end, "recordsEnd": lay.records_end}})
enums = {cls.__name__: {m.name: int(m) for m in cls}
         for cls in (_layout.Status, _layout.Control, _layout.Record, _layout.Command,
                     _layout.Schedule)}
constants = {name: getattr(_layout, name) for name in (
    "STATUS_SLOT_BYTES", "CACHE_LINE", "DATA_ALIGN", "CONTROL_WORDS", "CONTROL_BYTES",
    "RECORD_BYTES")}
print(json.dumps({"cases": cases, "enums": enums, "constants": constants}))
`,
  { args: [JSON.stringify([WORKERS, STATUS_OFFSETS, BYTE_LENGTHS])] },
);

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
  assert.equal(EXPECTED.cases.length, WORKERS.length * STATUS_OFFSETS.length * BYTE_LENGTHS.length);
  let built = 0;
  for (const { args, layout: want, error, message } of EXPECTED.cases) {
    const [workers, statusOffset, byteLength] = args;
    const call = () => layout.buildLayout({ workers, statusOffset, byteLength });
    if (want) {
      assert.deepEqual({ ...call() }, want, `buildLayout(${args})`);
      built++;
    } else {
      const errorClass = error === "LayoutError" ? LayoutError : RangeError;
      // The JavaScript messages name the parameter the way JavaScript spells it.
      const text = message.replaceAll("status_offset", "statusOffset");
      assert.throws(call, (err) => err instanceof errorClass && err.message === text, `${args}`);
    }
  }
  assert.ok(built > 50, "the grid builds layouts, not only errors");
});

test("buildLayout rejects non-integers with a TypeError naming the parameter", TIMEOUT, () => {
  const ok = { workers: 2, statusOffset: 0, byteLength: 65536 };
  for (const [name, bad] of [
    ["workers", 1.5],
    ["statusOffset", "0"],
    ["byteLength", undefined],
    ["workers", true],
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
