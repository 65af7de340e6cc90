// Run the repository's Python (its .venv) from the JavaScript tests, so that
// expected values come from the Python package itself, never from a fixture.

import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../../", import.meta.url));
export const PYTHON = fileURLToPath(new URL("../../.venv/bin/python", import.meta.url));

/** Run `code` with the venv's Python in the repository root; return its stdout as a Buffer. */
export function python(code, { input, args = [] } = {}) {
  return execFileSync(PYTHON, ["-c", code, ...args], {
    cwd: ROOT,
    input,
    maxBuffer: 1 << 28,
    timeout: 60_000,
  });
}

/** Run `code`, which prints one JSON document; return it parsed. */
export function pythonJson(code, options) {
  return JSON.parse(python(code, options).toString("utf8"));
}

/**
 * Python source of `layout_as_js(lay)`: a `Layout` as the object `buildLayout`
 * returns, plus each worker's `[tlsAddress, stackBottom, stackTop]` under
 * `threads`. Put it before a snippet that compares layouts.
 */
export const LAYOUT_AS_JS = `
def layout_as_js(lay):
    return {
        "workers": lay.workers, "statusOffset": lay.status_offset,
        "controlOffset": lay.control_offset, "recordsOffset": lay.records_offset,
        "dataOffset": lay.data_offset, "statusEnd": lay.status_end,
        "controlEnd": lay.control_end, "recordsEnd": lay.records_end,
        "staticEnd": lay.static_end, "threadsOffset": lay.threads_offset,
        "threadArea": lay.thread_area, "tlsBlock": lay.tls_block,
        "threadsEnd": lay.threads_end,
        "threads": [[lay.tls_address(i), lay.stack_bottom(i), lay.stack_top(i)]
                    for i in range(lay.workers)],
    }
`;

/**
 * Build test kernels with the Python package, in one process: `c` maps a
 * name to a C source (compiled with `sharedwasm.build`, several files per
 * name if the value is an array), `wat` maps a name to WebAssembly text.
 * Returns `{name: Buffer}` of the modules' bytes.
 */
export function buildKernels({ c = {}, wat = {} } = {}) {
  const built = pythonJson(
    `
import base64, json, sys, tempfile, pathlib
import wasmtime
import sharedwasm as sw

sources = json.loads(sys.argv[1])
out = {}
with tempfile.TemporaryDirectory(prefix="sharedwasm-js-") as tmp:
    for name, files in sources["c"].items():
        paths = []
        for i, text in enumerate(files if isinstance(files, list) else [files]):
            path = pathlib.Path(tmp, f"{name}_{i}.c")
            path.write_text(text)
            paths.append(str(path))
        wasm = sw.build(paths, str(pathlib.Path(tmp, f"{name}.wasm")))
        out[name] = base64.b64encode(pathlib.Path(wasm).read_bytes()).decode()
for name, text in sources["wat"].items():
    out[name] = base64.b64encode(wasmtime.wat2wasm(text)).decode()
print(json.dumps(out))
`,
    { args: [JSON.stringify({ c, wat })] },
  );
  return Object.fromEntries(
    Object.entries(built).map(([name, b64]) => [name, Buffer.from(b64, "base64")]),
  );
}

/** `bytes` (a Buffer or typed array) as base64, for handing to Python. */
export const base64 = (bytes) =>
  Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64");
