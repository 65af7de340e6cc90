// The main-thread API of the JavaScript runtime: run one WebAssembly kernel on
// a pool of workers (Web Workers in a browser, worker_threads under Node) over
// one shared WebAssembly memory, with the Python package's memory layout and
// run protocol, so the same kernels give the same bytes on both sides.
//
//   const memory = { initial: 128, maximum: 512 };
//   const pool = await createPool({ url: "/map_f32.wasm", memory });
//   pool.data(Float32Array).fill(Math.PI);
//   const { done } = await pool.run("batch-1");
//   await pool.close();
//
// All N shares run in the workers: the main thread publishes a run in the
// control block and awaits PENDING with Atomics.waitAsync, so it never
// computes and never blocks.
//
// A kernel compiled from C (`sharedwasm build`) keeps its static data at the
// bottom of the memory and needs a stack and a thread-local block per worker.
// What the runtime needs to place them (__heap_base, __tls_size, ...) is read
// from the module's bytes, never from an instance: instantiating the kernel
// runs its start function, which initialises the static data in the shared
// memory, and that must happen only in the workers, after the layout has
// been checked and [0, staticEnd) zeroed.

import { readModule } from "./binary.mjs";
import {
  BrokenPoolError,
  KernelError,
  KernelTrap,
  LayoutError,
  PoolClosedError,
  RunTimeout,
  SharedWasmError,
} from "./errors.mjs";
import {
  CACHE_LINE,
  CONTROL_WORDS,
  Command,
  DEFAULT_STACK_SIZE,
  Control,
  RECORD_BYTES,
  Record,
  STACK_ALIGN,
  Schedule,
  Status,
  alignUp,
  buildLayout,
} from "./layout.mjs";

export * from "./errors.mjs";
export {
  Command,
  Control,
  Record,
  Schedule,
  Status,
  buildLayout,
  stackBottom,
  stackTop,
  tlsAddress,
} from "./layout.mjs";

const isNode = typeof process !== "undefined" && Boolean(process.versions?.node);

const PAGE_SIZE = 65536;
const MAX_PAGES = 65536;
const MAX_WORKERS = 1024;
const MAX_ELEMENTS = 0x7fffffff;
/** How long a run awaits the message of a trapped share, in ms. */
const TRAP_MESSAGE_WAIT = 1000;
/** How long close() waits for the workers to leave their loop before terminating them, in ms. */
const CLOSE_TIMEOUT = 1000;
const ENTRY_POINT = "compute_partition";
const PROVIDED_GLOBALS = ["data_offset", "worker_index", "total_workers"];
const STACK_POINTER = "__stack_pointer";
const SET_STACK_LIMITS = "__set_stack_limits";
const INIT_TLS = "__wasm_init_tls";
/** Exports that only a kernel with static data or a stack has; see staticsOf. */
const C_SYMBOLS = [
  STACK_POINTER,
  "__heap_base",
  "__data_end",
  "__tls_size",
  INIT_TLS,
  SET_STACK_LIMITS,
];
const ISOLATION_HEADERS =
  "Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp";

/** Memories that have a live pool: two pools' boards and data regions would overlap. */
const memoriesInUse = new WeakSet();

const describe = (value) => {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "function") return value.name || "a function";
  if (value !== null && typeof value === "object") {
    return value.constructor?.name ? `a ${value.constructor.name}` : "an object";
  }
  return String(value);
};

function checkInteger(name, value, low, high, unit = "") {
  if (typeof value !== "number" || !Number.isInteger(value)) {
    throw new TypeError(`${name} must be an integer${unit} (got ${describe(value)})`);
  }
  if (value < low || value > high) {
    const range = high === Infinity ? `>= ${low}` : `in [${low}, ${high}]`;
    throw new RangeError(`${name} must be ${range}${unit} (got ${value})`);
  }
  return value;
}

/** A promise that resolves after `ms`, with a cancel that clears its timer. */
function delay(ms) {
  let timer;
  const promise = new Promise((resolve) => {
    timer = setTimeout(resolve, ms, "timed-out");
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

function checkIsolation() {
  const notIsolated = globalThis.crossOriginIsolated === false;
  if (notIsolated || typeof SharedArrayBuffer === "undefined") {
    throw new SharedWasmError(
      "shared WebAssembly memory needs SharedArrayBuffer, which a browser gives only to a " +
        "cross-origin isolated page: serve the page with the headers " +
        `${ISOLATION_HEADERS} (crossOriginIsolated is ${globalThis.crossOriginIsolated})`,
    );
  }
}

async function compileBytes(bytes, name) {
  const view = bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : bytes;
  const head = new Uint8Array(view.buffer, view.byteOffset, Math.min(4, view.byteLength));
  const magic = [0x00, 0x61, 0x73, 0x6d];
  if (head.length < 4 || magic.some((byte, i) => head[i] !== byte)) {
    const got = Array.from(head, (b) => `\\x${b.toString(16).padStart(2, "0")}`).join("");
    throw new KernelError(
      `${name} is not WebAssembly: a module starts with \\0asm (got "${got}")`,
    );
  }
  try {
    return await WebAssembly.compile(view);
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
  // The runtime reads the kernel's globals from its bytes: keep a copy of
  // the body while the original streams into the compiler.
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

async function loadModule(module, url) {
  if ((module === undefined) === (url === undefined)) {
    throw new TypeError(
      `pass exactly one of module or url (got ${module === undefined ? "neither" : "both"})`,
    );
  }
  if (url !== undefined) {
    if (typeof url !== "string" && !(url instanceof URL)) {
      throw new TypeError(`url must be a string or a URL (got ${describe(url)})`);
    }
    return compileUrl(url);
  }
  if (module instanceof WebAssembly.Module) return { module, name: "kernel", bytes: null };
  if (module instanceof ArrayBuffer || ArrayBuffer.isView(module)) {
    const view =
      module instanceof ArrayBuffer
        ? new Uint8Array(module)
        : new Uint8Array(module.buffer, module.byteOffset, module.byteLength);
    // A copy: the caller may change its buffer while the pool starts.
    const bytes = view.slice();
    return { module: await compileBytes(bytes, "kernel"), name: "kernel", bytes };
  }
  throw new TypeError(
    "module must be a WebAssembly.Module, an ArrayBuffer or a typed array " +
      `(got ${describe(module)})`,
  );
}

/** Check the kernel ABI as far as the module's reflection shows it. */
function checkAbi(module, name) {
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
  const exports = new Map(WebAssembly.Module.exports(module).map((e) => [e.name, e.kind]));
  if (!memory) {
    if ([...exports.values()].includes("memory")) {
      throw new KernelError(
        `${name} must import its memory as env.memory (it defines its own memory)`,
      );
    }
    throw new KernelError(
      `${name} must import a shared memory as env.memory (it imports no memory)`,
    );
  }
  const kind = exports.get(ENTRY_POINT);
  if (kind === undefined) {
    throw new KernelError(
      `${name} must export ${ENTRY_POINT}(start: i32, end: i32) (it has no such export)`,
    );
  }
  if (kind !== "function") {
    throw new KernelError(`${ENTRY_POINT} must be a function (i32, i32) -> () (got ${kind})`);
  }
}

const describeSignature = (signature) =>
  signature === null
    ? "function of a non-function type"
    : `function (${signature.params.join(", ")}) -> (${signature.results.join(", ")})`;

/**
 * Read what the pool needs to run a kernel on several threads at once, as
 * the Python package's Kernel does: where its static data ends, and whether
 * it needs a stack and a thread-local block per worker.
 *
 * A compiled WebAssembly.Module does not show its globals' values, so a
 * kernel with static data or a stack must come as bytes or a url; a module
 * without those exports is taken to have neither (its active data segments,
 * if any, cannot be seen: pass a statusOffset past them).
 *
 * @returns {{staticEnd: number, usesStack: boolean, stackChecked: boolean,
 *   tlsSize: number, tlsAlign: number}}
 */
function staticsOf({ module, name, bytes }) {
  if (bytes === null) {
    const exported = new Set(WebAssembly.Module.exports(module).map((e) => e.name));
    const symbol = C_SYMBOLS.find((each) => exported.has(each));
    if (symbol !== undefined) {
      throw new KernelError(
        `${name} exports ${symbol}, so the runtime must read its static data and stack ` +
          "symbols from its bytes, which a compiled WebAssembly.Module does not show: pass " +
          "module as an ArrayBuffer or a typed array, or pass its url",
      );
    }
    return { staticEnd: 0, usesStack: false, stackChecked: false, tlsSize: 0, tlsAlign: 1 };
  }
  let read;
  try {
    read = readModule(bytes);
  } catch (err) {
    throw new KernelError(
      `${name} uses a WebAssembly encoding sharedwasm cannot read (${err.message})`,
      { cause: err },
    );
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
  return {
    staticEnd,
    usesStack,
    stackChecked: functions.has(SET_STACK_LIMITS),
    tlsSize,
    // An alignment that is not a power of two cannot be honoured exactly; 16 covers any type.
    tlsAlign: (tlsAlign & (tlsAlign - 1)) === 0 ? tlsAlign : 16,
  };
}

/** Return the stack bytes per worker: the default, or `stackSize` checked against the kernel. */
function stackSizeFor(stackSize, statics, name) {
  if (stackSize === undefined || stackSize === null) {
    return statics.usesStack ? DEFAULT_STACK_SIZE : 0;
  }
  if (typeof stackSize !== "number" || !Number.isInteger(stackSize)) {
    throw new TypeError(`stackSize must be an integer (got ${describe(stackSize)})`);
  }
  if (!statics.usesStack) {
    throw new RangeError(
      `stackSize applies only to a kernel that exports ${STACK_POINTER}; ${name} uses no ` +
        `stack (got stackSize=${stackSize})`,
    );
  }
  if (stackSize < STACK_ALIGN) {
    throw new RangeError(`stackSize must be >= ${STACK_ALIGN} bytes (got ${stackSize})`);
  }
  return stackSize;
}

/** Return `{memory, maximum}`; `maximum` is null for a memory passed in (the JS API hides it). */
function makeMemory(memory) {
  if (memory instanceof WebAssembly.Memory) {
    if (!(memory.buffer instanceof SharedArrayBuffer)) {
      throw new TypeError(
        "memory must be a shared WebAssembly.Memory, so every worker can import it " +
          "(got an unshared one; create it with shared: true)",
      );
    }
    return { memory, maximum: null };
  }
  if (memory === null || typeof memory !== "object") {
    throw new TypeError(
      `memory must be a shared WebAssembly.Memory or {initial, maximum} (got ${describe(memory)})`,
    );
  }
  const { initial, maximum } = memory;
  checkInteger("initial", initial, 0, MAX_PAGES, " pages");
  if (maximum === undefined || maximum === null) {
    throw new TypeError(
      "maximum is required for shared memory: pass {initial, maximum}, maximum the " +
        "ceiling in pages the memory may grow to",
    );
  }
  checkInteger("maximum", maximum, 0, MAX_PAGES, " pages");
  if (initial > maximum) {
    throw new RangeError(`initial must be <= maximum=${maximum} pages (got initial=${initial})`);
  }
  try {
    return { memory: new WebAssembly.Memory({ initial, maximum, shared: true }), maximum };
  } catch (err) {
    throw new RangeError(
      `could not reserve a shared memory of maximum=${maximum} pages: ${err.message}`,
      { cause: err },
    );
  }
}

async function defaultWorkers() {
  if (isNode) {
    const os = await import("node:os");
    return os.availableParallelism?.() ?? os.cpus().length;
  }
  return globalThis.navigator?.hardwareConcurrency || 1;
}

/**
 * One worker, with the message API of Web Workers and of worker_threads
 * behind the same few calls.
 */
class Thread {
  static async spawn() {
    const url = new URL("./worker.mjs", import.meta.url);
    if (isNode) {
      const { Worker } = await import("node:worker_threads");
      return new Thread(new Worker(url), true);
    }
    return new Thread(new Worker(url, { type: "module" }), false);
  }

  constructor(worker, node) {
    this.worker = worker;
    this.node = node;
    this.onmessage = () => {};
    /** Called with an Error when the worker fails or exits on its own. */
    this.onfailure = () => {};
    this.terminated = false;
    if (node) {
      worker.on("message", (data) => this.onmessage(data));
      worker.on("error", (err) => this.onfailure(err));
      worker.on("exit", (code) => {
        if (!this.terminated) this.onfailure(new Error(`it exited with code ${code}`));
      });
    } else {
      worker.onmessage = (event) => this.onmessage(event.data);
      worker.onerror = (event) => {
        event.preventDefault?.();
        this.onfailure(new Error(event.message || "error event"));
      };
      worker.onmessageerror = () => this.onfailure(new Error("a message could not be read"));
    }
  }

  post(message) {
    this.worker.postMessage(message);
  }

  /** Keep the Node process alive while the pool waits on this worker (a no-op in browsers). */
  ref(on) {
    if (this.node && !this.terminated) (on ? this.worker.ref() : this.worker.unref());
  }

  /** Stop the worker; resolves once it has stopped. */
  async terminate() {
    this.terminated = true;
    if (this.node) {
      await this.worker.terminate();
    } else {
      this.worker.terminate();
    }
  }
}

/**
 * A pool of workers running one kernel over one shared memory; made by `createPool`.
 *
 * Every method may be called at any time from the thread that made the pool;
 * runs and grows are queued and happen one at a time, in call order.
 */
export class WorkerPool {
  #memory;
  #maximum;
  #layout;
  #statics;
  #threads;
  #status;
  #control;
  #control64;
  #rec32;
  #rec64;
  #state = "open";
  #failure = null;
  #tail = Promise.resolve();
  #inFlight = null;
  #holds = 0;
  #closing = null;
  #trapMessages = new Map();
  #trapWaiters = new Map();
  #exits;

  /** @hideconstructor */
  constructor(token, { memory, maximum, layout, statics, threads }) {
    if (token !== CONSTRUCT) throw new TypeError("make a WorkerPool with createPool()");
    this.#memory = memory;
    this.#maximum = maximum;
    this.#layout = layout;
    this.#statics = statics;
    this.#threads = threads;
    const buffer = memory.buffer;
    // The board, control block and records sit below the data region, so
    // these views stay valid after a grow (a shared buffer never detaches).
    this.#status = new Int32Array(buffer, layout.statusOffset, layout.workers);
    this.#control = new Int32Array(buffer, layout.controlOffset, CONTROL_WORDS);
    this.#control64 = new BigInt64Array(buffer, layout.controlOffset, CONTROL_WORDS / 2);
    this.#rec32 = new Int32Array(buffer, layout.recordsOffset, (layout.workers * RECORD_BYTES) / 4);
    this.#rec64 = new BigInt64Array(
      buffer,
      layout.recordsOffset,
      (layout.workers * RECORD_BYTES) / 8,
    );
    this.#exits = threads.map(() => {
      let resolve;
      const promise = new Promise((r) => {
        resolve = r;
      });
      return { promise, resolve };
    });
    threads.forEach((thread, index) => {
      thread.onmessage = (message) => this.#onMessage(index, message);
      thread.onfailure = (err) => this.#onFailure(index, err);
    });
  }

  /** The worker count, N. */
  get workers() {
    return this.#layout.workers;
  }

  /** The shared WebAssembly.Memory every worker imports as env.memory. */
  get memory() {
    return this.#memory;
  }

  /** The byte offsets of the regions (see buildLayout). */
  get layout() {
    return this.#layout;
  }

  /** The first byte of the data region. */
  get dataOffset() {
    return this.#layout.dataOffset;
  }

  /** An Int32Array view of the status board, one slot per worker (Status values). */
  get status() {
    return this.#status;
  }

  /** True once close() was called. */
  get closed() {
    return this.#state === "closed";
  }

  /**
   * Return a fresh view of the data region, `[dataOffset, byteLength)` at the
   * memory's current length; a view made before a grow keeps its old length.
   *
   * @param {Function} [Ctor] a typed array constructor (default Float32Array)
   */
  data(Ctor = Float32Array) {
    if (typeof Ctor !== "function" || !Number.isInteger(Ctor.BYTES_PER_ELEMENT)) {
      throw new TypeError(`Ctor must be a typed array constructor (got ${describe(Ctor)})`);
    }
    const buffer = this.#memory.buffer;
    const count = Math.floor((buffer.byteLength - this.dataOffset) / Ctor.BYTES_PER_ELEMENT);
    return new Ctor(buffer, this.dataOffset, count);
  }

  /**
   * Run every partition of the kernel once. Never blocks the calling thread.
   *
   * Worker i gets `[i*chunk, min((i+1)*chunk, total))` with `chunk = ceil(total / N)`.
   *
   * @param {string} [runId] a name for the run, returned in the result and used in errors
   * @param {{elements?: number, elementSize?: number, timeout?: number}} [options]
   *   `elements` defaults to as many `elementSize`-byte elements as the data
   *   region holds now; `timeout` in seconds covers the wait for earlier calls too
   * @returns {Promise<{runId: string, elapsed: number,
   *   done: {workerIndex: number, start: number, end: number, elapsed: number}[]}>}
   *   elapsed times in seconds
   * @throws {KernelTrap} a share trapped (after every other share ended); the pool stays usable
   * @throws {RunTimeout} the timeout passed; the run goes on and the next call waits for it
   * @throws {LayoutError} `elements` does not fit the data region
   * @throws {PoolClosedError} the pool is closed, or was closed during the run
   */
  async run(runId = "run", { elements, elementSize = 4, timeout } = {}) {
    this.#checkUsable();
    runId = String(runId);
    checkInteger("elementSize", elementSize, 1, Infinity, " bytes");
    if (elements !== undefined && elements !== null) {
      checkInteger("elements", elements, 0, Infinity);
    }
    if (timeout !== undefined && timeout !== null) {
      if (typeof timeout !== "number" || Number.isNaN(timeout)) {
        throw new TypeError(`timeout must be a number of seconds (got ${describe(timeout)})`);
      }
      if (timeout < 0) throw new RangeError(`timeout must be >= 0 seconds (got ${timeout})`);
    } else {
      timeout = null;
    }
    const deadline = timeout === null ? Infinity : performance.now() + timeout * 1000;
    const late = () =>
      new RunTimeout(`run ${JSON.stringify(runId)}: earlier calls held the pool for ${timeout} s`);
    return this.#enqueue(deadline, late, () =>
      this.#run(runId, elements, elementSize, timeout, deadline),
    );
  }

  /**
   * Grow the memory by `deltaPages` pages once the run in flight has ended;
   * return the previous page count. The next run partitions the new data region.
   *
   * @throws {RangeError} the memory would pass its maximum; nothing changes
   * @throws {PoolClosedError} the pool is closed
   */
  async grow(deltaPages) {
    this.#checkUsable();
    checkInteger("deltaPages", deltaPages, 0, MAX_PAGES, " pages");
    return this.#enqueue(Infinity, null, async () => {
      await this.#land(Infinity, null);
      const current = this.#memory.buffer.byteLength / PAGE_SIZE;
      if (this.#maximum !== null && current + deltaPages > this.#maximum) {
        throw new RangeError(
          `deltaPages must be <= ${this.#maximum - current} to stay within ` +
            `maximum=${this.#maximum} pages from ${current} (got ${deltaPages})`,
        );
      }
      try {
        return this.#memory.grow(deltaPages);
      } catch (err) {
        throw new RangeError(
          `deltaPages must keep the memory within its maximum (got ${deltaPages}, ` +
            `from ${current} pages): ${err.message}`,
          { cause: err },
        );
      }
    });
  }

  /**
   * Stop the workers: publish EXIT, wait (about a second at most) for them to
   * leave their loop, then terminate them. Resolves once every worker has
   * terminated. Idempotent; a run in flight or queued rejects with
   * PoolClosedError, and so does any later run or grow. A share stuck in the
   * kernel is terminated with its worker.
   */
  close() {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  async #shutdown() {
    this.#state = "closed";
    this.#hold(true);
    const control = this.#control;
    // Wake a run awaiting PENDING: it finds the pool closed.
    Atomics.notify(control, Control.PENDING);
    Atomics.store(control, Control.COMMAND, Command.EXIT);
    Atomics.add(control, Control.GENERATION, 1);
    Atomics.notify(control, Control.GENERATION);
    const timer = delay(CLOSE_TIMEOUT);
    await Promise.race([Promise.all(this.#exits.map((e) => e.promise)), timer.promise]);
    timer.cancel();
    await Promise.all(this.#threads.map((thread) => thread.terminate()));
    for (const resolve of this.#trapWaiters.values()) resolve(null);
    memoriesInUse.delete(this.#memory);
  }

  #checkUsable() {
    if (this.#state === "closed") throw new PoolClosedError("the pool is closed");
    if (this.#state === "broken") {
      throw new BrokenPoolError(`the pool is broken by an earlier failure: ${this.#failure}`, {
        cause: this.#failure,
      });
    }
  }

  /** Keep Node alive while the pool awaits its workers (Atomics.waitAsync alone does not). */
  #hold(on) {
    this.#holds += on ? 1 : -1;
    if (on ? this.#holds === 1 : this.#holds === 0) {
      for (const thread of this.#threads) thread.ref(on);
    }
  }

  /** Run `operation` after every earlier call; give up with `late()` at `deadline`. */
  async #enqueue(deadline, late, operation) {
    const previous = this.#tail;
    let release;
    this.#tail = new Promise((resolve) => {
      release = resolve;
    });
    this.#hold(true);
    try {
      if (deadline !== Infinity) {
        const timer = delay(Math.max(0, deadline - performance.now()));
        const turn = await Promise.race([previous.then(() => "turn"), timer.promise]);
        timer.cancel();
        if (turn !== "turn") {
          // Keep the queue's order: whoever comes next waits for `previous`.
          previous.then(release);
          release = null;
          throw late();
        }
      } else {
        await previous;
      }
      this.#checkUsable();
      return await operation();
    } finally {
      release?.();
      this.#hold(false);
    }
  }

  /** Await PENDING == 0 without blocking; false if `deadline` passed or the pool stopped. */
  async #waitPending(deadline) {
    const control = this.#control;
    for (;;) {
      if (this.#state !== "open") return false;
      const pending = Atomics.load(control, Control.PENDING);
      if (pending === 0) return true;
      const left = deadline - performance.now();
      if (left <= 0) return false;
      // Only the last worker out notifies, so other decrements leave this
      // waiting; a notify wakes it whatever value it registered with.
      const result = Atomics.waitAsync(control, Control.PENDING, pending, left);
      if (result.async) await result.value;
    }
  }

  /** Wait for a run that outlived its timeout, so that nothing else overlaps it. */
  async #land(deadline, late) {
    if (this.#inFlight === null) return;
    const landed = await this.#waitPending(deadline);
    this.#checkUsable();
    if (!landed) {
      const { runId } = this.#inFlight;
      throw late(`run ${JSON.stringify(runId)}, which outlived its timeout, still held the pool`);
    }
    this.#inFlight = null;
  }

  async #run(runId, elements, elementSize, timeout, deadline) {
    await this.#land(
      deadline,
      (why) => new RunTimeout(`run ${JSON.stringify(runId)}: ${why} after ${timeout} s`),
    );
    const total = this.#elements(elements, elementSize);
    const control = this.#control;
    const workers = this.workers;
    this.#trapMessages.clear();
    // Reset every slot first, so DONE always means "done with this run".
    for (let i = 0; i < workers; i++) Atomics.store(this.#status, i, Status.RUNNING);
    Atomics.store(control, Control.ELEMENTS, total);
    Atomics.store(control, Control.ELEMENT_SIZE, elementSize);
    Atomics.store(control, Control.SCHEDULE, Schedule.STATIC);
    Atomics.store(control, Control.CHUNK, 0);
    Atomics.store(control, Control.NEXT, 0);
    Atomics.store(control, Control.PENDING, workers);
    Atomics.store(control, Control.COMMAND, Command.RUN);
    Atomics.store(this.#control64, Control.PUBLISH_TIME / 2, wallNs());
    const started = performance.now();
    // The bump is the release of everything above; then wake the parked.
    const generation = (Atomics.add(control, Control.GENERATION, 1) + 1) | 0;
    Atomics.notify(control, Control.GENERATION);
    this.#inFlight = { runId, generation };
    const finished = await this.#waitPending(deadline);
    const elapsed = (performance.now() - started) / 1000;
    this.#checkUsable();
    if (!finished) {
      throw new RunTimeout(
        `run ${JSON.stringify(runId)} did not finish within ${timeout} s; it keeps running ` +
          `in the workers and the next call waits for it first; board [${this.#status}]`,
      );
    }
    this.#inFlight = null;
    return this.#collect(runId, generation, elapsed);
  }

  #elements(elements, elementSize) {
    const dataBytes = this.#memory.buffer.byteLength - this.dataOffset;
    const capacity = Math.floor(dataBytes / elementSize);
    if (elements === undefined || elements === null) elements = capacity;
    if (elements > capacity) {
      throw new LayoutError(
        `elements must be <= ${capacity}, the ${elementSize}-byte elements the data ` +
          `region holds from byte ${this.dataOffset} (got ${elements})`,
      );
    }
    if (elements > MAX_ELEMENTS) {
      throw new RangeError(`elements must fit an i32, <= ${MAX_ELEMENTS} (got ${elements})`);
    }
    return elements;
  }

  async #collect(runId, generation, elapsed) {
    const statuses = Array.from(this.#status);
    const trapped = [];
    statuses.forEach((status, index) => status === Status.TRAPPED && trapped.push(index));
    if (trapped.length) {
      const traps = await Promise.all(
        trapped.map(async (index) => {
          const message = await this.#trapMessage(generation, index);
          const hint = this.#hint(message.message);
          return new KernelTrap(index, message.start, message.end, message.message, [], hint);
        }),
      );
      const [first, ...rest] = traps;
      throw new KernelTrap(
        first.workerIndex,
        first.start,
        first.end,
        first.trap,
        rest,
        this.#hint(first.trap),
      );
    }
    if (statuses.some((status) => status !== Status.DONE)) {
      throw new SharedWasmError(
        `run ${JSON.stringify(runId)} ended with statuses [${statuses}]; every slot should ` +
          "read DONE (1) or TRAPPED (-1)",
      );
    }
    const r32 = this.#rec32;
    const r64 = this.#rec64;
    const words32 = RECORD_BYTES / 4;
    const words64 = RECORD_BYTES / 8;
    const done = statuses.map((_, i) => ({
      workerIndex: i,
      start: r32[i * words32 + Record.START / 4],
      end: r32[i * words32 + Record.END / 4],
      elapsed:
        Number(r64[i * words64 + Record.T_END / 8] - r64[i * words64 + Record.T_START / 8]) * 1e-9,
    }));
    return { runId, elapsed, done };
  }

  #hint(trap) {
    // A stack check's failure is an `unreachable` with no word of its own.
    if (this.#statics.stackChecked && String(trap).includes("unreachable")) {
      const { threadArea, tlsBlock } = this.#layout;
      return (
        "with stack checks this is also how a stack overflow ends: each worker has " +
        `${threadArea - tlsBlock} bytes of stack (createPool stackSize)`
      );
    }
    return "";
  }

  /** The "trap" message of a worker's share, awaited for at most TRAP_MESSAGE_WAIT. */
  async #trapMessage(generation, index) {
    const key = `${generation}:${index}`;
    let message = this.#trapMessages.get(key);
    if (message === undefined) {
      const timer = delay(TRAP_MESSAGE_WAIT);
      const arrived = new Promise((resolve) => this.#trapWaiters.set(key, resolve));
      message = await Promise.race([arrived, timer.promise]);
      timer.cancel();
      this.#trapWaiters.delete(key);
    }
    this.#trapMessages.delete(key);
    if (message !== null && typeof message === "object") return message;
    // Not delivered in time: name the range from the worker's record.
    const base = index * (RECORD_BYTES / 4);
    return {
      start: this.#rec32[base + Record.CUR_START / 4],
      end: this.#rec32[base + Record.CUR_END / 4],
      message: `trap (its message did not arrive within ${TRAP_MESSAGE_WAIT} ms)`,
    };
  }

  #onMessage(index, message) {
    if (message?.type === "trap") {
      const key = `${message.generation}:${index}`;
      const waiter = this.#trapWaiters.get(key);
      if (waiter) waiter(message);
      else this.#trapMessages.set(key, message);
    } else if (message?.type === "exit") {
      this.#exits[index].resolve();
    }
  }

  #onFailure(index, err) {
    // A dead worker has left its loop: close() need not wait for its "exit".
    this.#exits[index].resolve();
    if (this.#state !== "open") return;
    this.#state = "broken";
    this.#failure = new Error(`worker ${index} failed outside the kernel: ${err.message ?? err}`, {
      cause: err,
    });
    // Wake a run awaiting PENDING: the dead worker will never count out.
    Atomics.notify(this.#control, Control.PENDING);
  }
}

const CONSTRUCT = Symbol("WorkerPool");

function wallNs() {
  return (
    BigInt(Math.round(performance.timeOrigin * 1000)) * 1000n +
    BigInt(Math.round(performance.now() * 1e6))
  );
}

/** Start the workers; resolve once each has instantiated the kernel (READY). */
async function startThreads(module, memory, layout, statics) {
  const threads = [];
  try {
    for (let i = 0; i < layout.workers; i++) threads.push(await Thread.spawn());
    await new Promise((resolve, reject) => {
      let ready = 0;
      threads.forEach((thread, index) => {
        thread.onmessage = (message) => {
          if (message?.type === "ready" && ++ready === threads.length) resolve();
          if (message?.type === "error") {
            reject(
              new KernelError(
                `kernel failed to instantiate in worker ${index}: ${message.name}: ` +
                  message.message,
              ),
            );
          }
        };
        thread.onfailure = (err) =>
          reject(
            new BrokenPoolError(`worker ${index} failed before it was ready: ${err.message}`, {
              cause: err,
            }),
          );
        thread.post({
          type: "init",
          module,
          memory,
          index,
          workers: layout.workers,
          layout: { ...layout, controlWords: CONTROL_WORDS },
          kernel: {
            usesStack: statics.usesStack,
            stackChecked: statics.stackChecked,
            tlsSize: statics.tlsSize,
          },
        });
      });
    });
  } catch (err) {
    await Promise.all(threads.map((thread) => thread.terminate()));
    throw err;
  }
  return threads;
}

/**
 * Make a pool of `workers` workers running one kernel over one shared memory.
 *
 * Resolves once every worker has instantiated the kernel (READY). Call it
 * from a cross-origin isolated page (or under Node).
 *
 * @param {object} options
 * @param {WebAssembly.Module | ArrayBuffer | ArrayBufferView} [options.module]
 *   the kernel, compiled or as bytes; exactly one of module and url
 * @param {string | URL} [options.url] where to fetch the kernel (served as application/wasm)
 * @param {WebAssembly.Memory | {initial: number, maximum: number}} options.memory
 *   a shared memory, or its size in 64 KiB pages
 * @param {number} [options.workers] default: navigator.hardwareConcurrency
 *   (os.availableParallelism() under Node)
 * @param {number} [options.statusOffset] byte offset of the status board; bytes
 *   before it are never touched, except the kernel's static data. Default: just
 *   past the kernel's static data (0 for most WAT kernels), rounded up to a cache line
 * @param {number} [options.stackSize] bytes of stack each worker gets, for a kernel
 *   that uses a stack (one compiled from C exports __stack_pointer); a multiple of 16.
 *   Default 64 KiB. Must be left out for a kernel without a stack
 * @returns {Promise<WorkerPool>}
 * @throws {SharedWasmError} the page is not cross-origin isolated
 * @throws {KernelError} the module is not wasm, breaks the kernel ABI or fails to
 *   instantiate, or is a compiled C kernel (pass its bytes or url)
 * @throws {LayoutError} the regions do not fit, the status board would overlap the
 *   kernel's static data, or the memory already has a pool
 * @throws {TypeError | RangeError} an argument has the wrong type or is out of range
 */
export async function createPool({ module, url, memory, workers, statusOffset, stackSize } = {}) {
  checkIsolation();
  const kernel = await loadModule(module, url);
  checkAbi(kernel.module, kernel.name);
  const statics = staticsOf(kernel);
  const shared = makeMemory(memory);
  if (workers === undefined || workers === null) workers = await defaultWorkers();
  checkInteger("workers", workers, 1, MAX_WORKERS);
  const stack = stackSizeFor(stackSize, statics, kernel.name);
  if (statusOffset === undefined || statusOffset === null) {
    statusOffset = alignUp(statics.staticEnd, CACHE_LINE);
  }
  const layout = buildLayout({
    workers,
    statusOffset,
    byteLength: shared.memory.buffer.byteLength,
    staticEnd: statics.staticEnd,
    stackSize: stack,
    tlsSize: statics.tlsSize,
    tlsAlign: statics.tlsAlign,
  });
  if (memoriesInUse.has(shared.memory)) {
    throw new LayoutError(
      "memory is already used by another pool: two pools' boards and data regions would " +
        "overlap; close the other pool first",
    );
  }
  const buffer = shared.memory.buffer;
  new Int32Array(buffer, layout.statusOffset, workers).fill(Status.RUNNING);
  const control = new Int32Array(buffer, layout.controlOffset, CONTROL_WORDS);
  control.fill(0);
  new Uint8Array(buffer, layout.recordsOffset, workers * RECORD_BYTES).fill(0);
  Atomics.store(control, Control.WORKERS, workers);
  Atomics.store(control, Control.DATA_OFFSET, layout.dataOffset);
  if (statics.staticEnd) {
    // A fresh start for the kernel's statics: wasm-ld's start function, run
    // by every instance, initialises them only while its flag word (among
    // them) reads 0, and an earlier pool may have left anything there.
    new Uint8Array(buffer, 0, statics.staticEnd).fill(0);
  }
  memoriesInUse.add(shared.memory);
  let threads;
  try {
    threads = await startThreads(kernel.module, shared.memory, layout, statics);
  } catch (err) {
    memoriesInUse.delete(shared.memory);
    throw err;
  }
  const pool = new WorkerPool(CONSTRUCT, { ...shared, layout, statics, threads });
  // Idle workers do not keep Node alive, as the Python package's threads are daemons.
  for (const thread of threads) thread.ref(false);
  return pool;
}
