// The kernel: a WebAssembly module compiled once, checked against the kernel
// ABI, with what the pool needs to run it read from its bytes; the mirror of
// sharedwasm/_kernel.py.
//
// A compiled WebAssembly.Module shows its imports' and exports' names and
// kinds only. The rest (the entries' parameters, where a C kernel's static
// data ends, its stack and thread-local block, the memory's limits) is read
// from the module's bytes, never from an instance: instantiating the kernel
// runs its start function, which initialises the static data in the shared
// memory, and that must happen only in the workers, after the layout has
// been checked and [0, staticEnd) zeroed.

import { readModule } from "./binary.mjs";
import { describe } from "./checks.mjs";
import { ENTRY_PREFIX, Entry, LEGACY_ENTRY, SIGNATURE_SECTION, readEntries } from "./entries.mjs";
import { KernelError } from "./errors.mjs";

export const PROVIDED_GLOBALS = Object.freeze(["data_offset", "worker_index", "total_workers"]);
export const STACK_POINTER = "__stack_pointer";
export const SET_STACK_LIMITS = "__set_stack_limits";
export const INIT_TLS = "__wasm_init_tls";
export const CALL_CTORS = "__wasm_call_ctors";
/** Exports that only a kernel with static data or a stack has; see staticsOf. */
const C_SYMBOLS = [
  STACK_POINTER,
  "__heap_base",
  "__data_end",
  "__tls_size",
  INIT_TLS,
  SET_STACK_LIMITS,
];
const COMMAND_EXPORT = ".command_export";

async function compileBytes(bytes, name) {
  const head = bytes.subarray(0, 4);
  const magic = [0x00, 0x61, 0x73, 0x6d];
  if (head.length < 4 || magic.some((byte, i) => head[i] !== byte)) {
    const got = Array.from(head, (b) => `\\x${b.toString(16).padStart(2, "0")}`).join("");
    throw new KernelError(`${name} is not WebAssembly: a module starts with \\0asm (got "${got}")`);
  }
  try {
    return await WebAssembly.compile(bytes);
  } catch (err) {
    throw new KernelError(`${name} is not valid WebAssembly: ${err.message}`, { cause: err });
  }
}

async function compileUrl(url) {
  const name = String(url).split(/[?#]/)[0].split("/").pop() || String(url);
  let response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw new KernelError(`${url} could not be fetched: ${err.message}`, { cause: err });
  }
  if (!response.ok) {
    throw new KernelError(`${url} could not be fetched: HTTP ${response.status}`);
  }
  const type = response.headers.get("content-type");
  const mime = (type ?? "").split(";")[0].trim().toLowerCase();
  if (mime !== "application/wasm") {
    throw new KernelError(
      `${url} is served as ${type === null ? "no content type" : JSON.stringify(type)}, ` +
        "but WebAssembly.compileStreaming needs Content-Type: application/wasm; serve .wasm " +
        "files with that type, or fetch the bytes yourself and pass them as module",
    );
  }
  // The runtime reads the kernel's entries and globals from its bytes: keep
  // a copy of the body while the original streams into the compiler.
  const copy = response.clone();
  let compiled;
  try {
    compiled = await WebAssembly.compileStreaming(response);
  } catch (err) {
    throw new KernelError(`${name} is not valid WebAssembly: ${err.message}`, { cause: err });
  }
  let bytes;
  try {
    bytes = new Uint8Array(await copy.arrayBuffer());
  } catch (err) {
    throw new KernelError(`${url} could not be fetched: ${err.message}`, { cause: err });
  }
  return { module: compiled, name, bytes };
}

/** Return `module` as a copy of its bytes, or null for a compiled WebAssembly.Module. */
function bytesOf(module, name = "module") {
  if (module instanceof WebAssembly.Module) return null;
  if (module instanceof ArrayBuffer || ArrayBuffer.isView(module)) {
    const view =
      module instanceof ArrayBuffer
        ? new Uint8Array(module)
        : new Uint8Array(module.buffer, module.byteOffset, module.byteLength);
    // A copy: the caller may change its buffer while the pool starts.
    return view.slice();
  }
  throw new TypeError(
    `${name} must be a WebAssembly.Module, an ArrayBuffer or a typed array ` +
      `(got ${describe(module)})`,
  );
}

/** Check the kernel ABI's imports as far as the module's reflection shows them. */
function checkImports(module, name) {
  let memory = false;
  for (const { module: from, name: field, kind } of WebAssembly.Module.imports(module)) {
    const where = `${from}.${field}`;
    if (from === "env" && field === "memory") {
      if (kind !== "memory") {
        throw new KernelError(`env.memory must be a memory import (got ${kind})`);
      }
      memory = true;
    } else if (from === "env" && PROVIDED_GLOBALS.includes(field)) {
      if (kind !== "global") {
        throw new KernelError(`${where} must be an immutable i32 global (got ${kind})`);
      }
    } else {
      throw new KernelError(
        `unknown import ${where} (${kind}): a kernel may import only ` +
          "env.memory, env.data_offset, env.worker_index and env.total_workers",
      );
    }
  }
  if (!memory) {
    const kinds = WebAssembly.Module.exports(module).map((e) => e.kind);
    if (kinds.includes("memory")) {
      throw new KernelError(
        `${name} must import its memory as env.memory (it defines its own memory)`,
      );
    }
    throw new KernelError(
      `${name} must import a shared memory as env.memory (it imports no memory)`,
    );
  }
}

/**
 * The entries of a compiled module whose bytes the runtime does not have:
 * only compute_partition, whose signature reflection does not show (the
 * engine's call checks nothing either: it converts what it is given).
 */
function entriesByReflection(module, name) {
  const exports = new Map(WebAssembly.Module.exports(module).map((e) => [e.name, e.kind]));
  for (const exportName of exports.keys()) {
    if (exportName.startsWith(ENTRY_PREFIX)) {
      throw new KernelError(
        `${name} exports ${exportName}, whose parameters the runtime must read from the ` +
          "module's bytes, which a compiled WebAssembly.Module does not show: pass module as " +
          "an ArrayBuffer or a typed array, or pass its url",
      );
    }
  }
  const kind = exports.get(LEGACY_ENTRY);
  if (kind === undefined) {
    return readEntries(new Map(), new Map(), null); // throws: the module has no entry
  }
  if (kind !== "function") {
    throw new KernelError(
      `${LEGACY_ENTRY} must be a function (i32, i32, ...) -> () (got a ${kind})`,
    );
  }
  return new Map([[LEGACY_ENTRY, new Entry(LEGACY_ENTRY, LEGACY_ENTRY, 0, [], false)]]);
}

/** Read a module's bytes (see binary.mjs). */
function readBytes(bytes, name) {
  try {
    return readModule(bytes);
  } catch (err) {
    throw new KernelError(
      `${name} uses a WebAssembly encoding sharedwasm cannot read (${err.message})`,
      { cause: err },
    );
  }
}

const describeSignature = (signature) =>
  signature === null
    ? "function of a non-function type"
    : `function (${signature.params.join(", ")}) -> (${signature.results.join(", ")})`;

/**
 * Read what the pool needs to run a kernel on several threads at once, as
 * the Python package's Kernel does: where its static data ends, whether it
 * needs a stack and a thread-local block per worker, whether it has C++
 * constructors to run, and its memory's limits.
 *
 * A compiled WebAssembly.Module does not show its globals' values, so a
 * kernel with static data or a stack must come as bytes or a url; a module
 * without those exports is taken to have neither (its active data segments,
 * if any, cannot be seen: pass a statusOffset past them).
 *
 * @returns {{staticEnd: number, usesStack: boolean, stackChecked: boolean,
 *   tlsSize: number, tlsAlign: number, constructors: boolean,
 *   memoryLimits: {minimum: number, maximum: number | null} | null, read: object | null}}
 */
export function staticsOf(
  { module, name, bytes },
  read = bytes === null ? null : readBytes(bytes, name),
) {
  if (read === null) {
    const exported = new Map(WebAssembly.Module.exports(module).map((e) => [e.name, e.kind]));
    const symbol = C_SYMBOLS.find((each) => exported.has(each));
    if (symbol !== undefined) {
      throw new KernelError(
        `${name} exports ${symbol}, so the runtime must read its static data and stack ` +
          "symbols from its bytes, which a compiled WebAssembly.Module does not show: pass " +
          "module as an ArrayBuffer or a typed array, or pass its url",
      );
    }
    return {
      staticEnd: 0,
      usesStack: false,
      stackChecked: false,
      tlsSize: 0,
      tlsAlign: 1,
      constructors: exported.get(CALL_CTORS) === "function",
      memoryLimits: null,
      read: null,
    };
  }
  const { globals, exportedFunctions: functions } = read;
  let staticEnd = read.activeDataEnd;
  for (const symbol of ["__heap_base", "__data_end"]) {
    const value = globals.get(symbol)?.value;
    if (value !== undefined && value !== null) staticEnd = Math.max(staticEnd, value >>> 0);
  }
  const stack = globals.get(STACK_POINTER);
  if (stack === undefined) {
    const index = read.namedGlobals.get(STACK_POINTER);
    if (index !== undefined && !read.exportedGlobalIndices.has(index)) {
      throw new KernelError(
        `${name} has a ${STACK_POINTER} global but does not export it, so every worker ` +
          `would use the same stack: link with --export=${STACK_POINTER} ` +
          "(sharedwasm build does)",
      );
    }
  } else if (!stack.mutable) {
    throw new KernelError(`${STACK_POINTER} must be a mutable i32 global (got an immutable one)`);
  }
  const checkSignature = (symbol, params) => {
    if (!functions.has(symbol)) return;
    const signature = functions.get(symbol);
    const ok =
      signature !== null &&
      signature.results.length === 0 &&
      signature.params.length === params.length &&
      signature.params.every((each, i) => each === params[i]);
    if (!ok) {
      throw new KernelError(
        `${symbol} must be a function (${params.join(", ")}) -> () ` +
          `(got ${describeSignature(signature)})`,
      );
    }
  };
  checkSignature(INIT_TLS, ["i32"]);
  checkSignature(SET_STACK_LIMITS, ["i32", "i32"]);
  const usesStack = stack !== undefined;
  const tlsSize = globals.get("__tls_size")?.value || 0;
  const tlsAlign = globals.get("__tls_align")?.value || 1;
  if (tlsSize && !functions.has(INIT_TLS)) {
    throw new KernelError(
      `${name} has thread-local data (${tlsSize} bytes) but does not export ${INIT_TLS}: ` +
        `link with --export=${INIT_TLS} (sharedwasm build does)`,
    );
  }
  if (tlsSize && !usesStack) {
    throw new KernelError(`${name} has thread-local data but does not export ${STACK_POINTER}`);
  }
  if (read.exports.has(CALL_CTORS)) {
    const signature = functions.get(CALL_CTORS) ?? null;
    if (signature === null || signature.params.length || signature.results.length) {
      throw new KernelError(`${CALL_CTORS} must be a function () -> ()`);
    }
  }
  const wrapped = read.functionNames.find((each) => each.endsWith(COMMAND_EXPORT));
  if (wrapped !== undefined) {
    const original = wrapped.slice(0, -COMMAND_EXPORT.length);
    throw new KernelError(
      `kernel calls its constructors at the start of every exported function (wasm-ld ` +
        `wrapped '${original}', as it does for a module with global constructors that does ` +
        "not export them): each call, on each worker, would construct the global objects " +
        `again over the shared statics; link with --export=${CALL_CTORS} (sharedwasm build ` +
        "does) and the pool runs them once",
    );
  }
  const limits = read.memoryImport;
  return {
    staticEnd,
    usesStack,
    stackChecked: functions.has(SET_STACK_LIMITS),
    tlsSize,
    // An alignment that is not a power of two cannot be honoured exactly; 16 covers any type.
    tlsAlign: (tlsAlign & (tlsAlign - 1)) === 0 ? tlsAlign : 16,
    constructors: functions.has(CALL_CTORS),
    memoryLimits: limits === null ? null : { minimum: limits.minimum, maximum: limits.maximum },
    read,
  };
}

/**
 * Fetch or take the kernel, compile it once, and check it: its imports, its
 * entries, its statics. The workers only instantiate the result.
 *
 * @param {{module?: WebAssembly.Module | ArrayBuffer | ArrayBufferView, url?: string | URL}} source
 * @returns {Promise<{module: WebAssembly.Module, name: string, bytes: Uint8Array | null,
 *   statics: ReturnType<typeof staticsOf>, entries: Map<string, Entry>}>}
 * @throws {TypeError} neither or both of module and url, or one of the wrong type
 * @throws {KernelError} the module is not wasm or breaks the kernel ABI
 */
export async function loadKernel({ module, url }) {
  if ((module === undefined) === (url === undefined)) {
    throw new TypeError(
      `pass exactly one of module or url (got ${module === undefined ? "neither" : "both"})`,
    );
  }
  let kernel;
  if (url !== undefined) {
    if (typeof url !== "string" && !(url instanceof URL)) {
      throw new TypeError(`url must be a string or a URL (got ${describe(url)})`);
    }
    kernel = await compileUrl(url);
  } else {
    const bytes = bytesOf(module);
    const name = "kernel";
    const compiled = bytes === null ? module : await compileBytes(bytes, name);
    kernel = { module: compiled, name, bytes };
  }
  checkImports(kernel.module, kernel.name);
  if (kernel.bytes === null) {
    const statics = staticsOf(kernel);
    return { ...kernel, statics, entries: entriesByReflection(kernel.module, kernel.name) };
  }
  // In the Python package's order: imports, then entries, then statics.
  const read = readBytes(kernel.bytes, kernel.name);
  const entries = readEntries(
    read.exportedFunctions,
    read.exports,
    read.customSections.get(SIGNATURE_SECTION) ?? null,
  );
  return { ...kernel, statics: staticsOf(kernel, read), entries };
}

/**
 * The statics of a module given as bytes or compiled, without compiling it:
 * what pagesNeeded counts.
 *
 * @throws {TypeError} `module` is not a WebAssembly.Module or bytes
 * @throws {KernelError} its statics break the ABI
 */
export function describeKernel(module) {
  const bytes = bytesOf(module);
  return staticsOf({ module, name: "kernel", bytes });
}
