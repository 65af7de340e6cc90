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
