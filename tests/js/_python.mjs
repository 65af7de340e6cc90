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
