// The pool's lifecycle around its runs, the mirror of sharedwasm/_lifecycle.py:
// how many workers, where the regions go (planLayout) and how many pages
// they need (pagesNeeded), the memory a pool is made on or makes, and the
// workers' start-up. The run protocol itself is pool.mjs's.

import { checkInteger, describe } from "./checks.mjs";
import { BrokenPoolError, KernelError, LayoutError, SharedWasmError } from "./errors.mjs";
import { PAGE_SIZE } from "./heap.mjs";
import { describeKernel } from "./kernel.mjs";
import {
  CACHE_LINE,
  CONTROL_WORDS,
  DEFAULT_STACK_SIZE,
  STACK_ALIGN,
  alignUp,
  buildLayout,
} from "./layout.mjs";

const isNode = typeof process !== "undefined" && Boolean(process.versions?.node);
const os = isNode ? await import("node:os") : null;

export const MAX_PAGES = 65536;
export const MAX_WORKERS = 1024;
/** Bytes of data region a pool made without a memory starts with. */
export const AUTO_MEMORY_DATA = 1 << 20;
const ISOLATION_HEADERS =
  "Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp";

export function checkIsolation() {
  const notIsolated = globalThis.crossOriginIsolated === false;
  if (notIsolated || typeof SharedArrayBuffer === "undefined") {
    throw new SharedWasmError(
      "shared WebAssembly memory needs SharedArrayBuffer, which a browser gives only to a " +
        "cross-origin isolated page: serve the page with the headers " +
        `${ISOLATION_HEADERS} (crossOriginIsolated is ${globalThis.crossOriginIsolated})`,
    );
  }
}

/** The CPUs this thread may use: navigator.hardwareConcurrency, or Node's count. */
function defaultWorkers() {
  if (os !== null) return os.availableParallelism?.() ?? os.cpus().length;
  return globalThis.navigator?.hardwareConcurrency || 1;
}

export function checkWorkers(workers) {
  if (workers === undefined || workers === null) return defaultWorkers();
  return checkInteger("workers", workers, 1, MAX_WORKERS);
}

/** Return the stack bytes per worker: the default, or `stackSize` checked against the kernel. */
export function stackSizeFor(stackSize, statics, name) {
  if (stackSize === undefined || stackSize === null) {
    return statics.usesStack ? DEFAULT_STACK_SIZE : 0;
  }
  if (typeof stackSize !== "number" || !Number.isInteger(stackSize)) {
    throw new TypeError(`stackSize must be an integer (got ${describe(stackSize)})`);
  }
  if (!statics.usesStack) {
    throw new RangeError(
      `stackSize applies only to a kernel that exports __stack_pointer; ${name} uses no ` +
        `stack (got stackSize=${stackSize})`,
    );
  }
  if (stackSize < STACK_ALIGN) {
    throw new RangeError(`stackSize must be >= ${STACK_ALIGN} bytes (got ${stackSize})`);
  }
  return stackSize;
}

/**
 * Lay out a pool of a kernel with `statics` on `workers` workers, applying
 * the defaults, as the Python package's `_plan` does. With `pages` (a memory
 * the pool is made on), a defaulted statusOffset that leaves no room for data
 * names the pages the memory needs.
 */
export function planLayout(statics, workers, statusOffset, stackSize, byteLength, pages = null) {
  const defaulted = statusOffset === undefined || statusOffset === null;
  const offset = defaulted ? alignUp(statics.staticEnd, CACHE_LINE) : statusOffset;
  const build = (length) =>
    buildLayout({
      workers,
      statusOffset: offset,
      byteLength: length,
      staticEnd: statics.staticEnd,
      stackSize,
      tlsSize: statics.tlsSize,
      tlsAlign: statics.tlsAlign,
    });
  if (defaulted && pages !== null) {
    const needed = build(MAX_PAGES * PAGE_SIZE).dataOffset;
    if (needed >= byteLength) {
      throw new LayoutError(
        `memory must have at least ${Math.floor(needed / PAGE_SIZE) + 1} pages for the pool's ` +
          "own regions (the kernel's static data, the status board, the control block, the " +
          `worker records and ${workers} workers' stacks take ${needed} bytes before any ` +
          `data), or be left out for one that grows (got a memory of ${pages} pages)`,
      );
    }
  }
  return build(byteLength);
}

/** The fewest pages for `dataBytes` of data after the regions of such a pool. */
function pagesFor(statics, dataBytes, workers, statusOffset, stackSize) {
  const layout = planLayout(statics, workers, statusOffset, stackSize, MAX_PAGES * PAGE_SIZE);
  const pages = Math.ceil((layout.dataOffset + Math.max(dataBytes, 1)) / PAGE_SIZE);
  if (pages > MAX_PAGES) {
    throw new LayoutError(
      `dataBytes must fit a 4 GiB memory after the data offset ${layout.dataOffset} ` +
        `(got ${dataBytes})`,
    );
  }
  return Math.max(pages, statics.memoryLimits?.minimum ?? 0);
}

/**
 * Return the fewest pages a memory needs for a pool of `module` to hold
 * `dataBytes` of data, counting what goes before the data region: the
 * kernel's static data, the board, the records and the workers' stacks.
 * The options are createPool's. Synchronous: the module is read, not
 * compiled.
 *
 * @param {WebAssembly.Module | ArrayBuffer | ArrayBufferView} module the kernel
 *   (as bytes for a kernel compiled from C, as createPool needs too)
 * @param {number} dataBytes
 * @param {{workers?: number, statusOffset?: number, stackSize?: number}} [options]
 * @returns {number}
 * @throws {TypeError | RangeError | LayoutError | KernelError} as createPool would
 */
export function pagesNeeded(module, dataBytes, { workers, statusOffset, stackSize } = {}) {
  const statics = describeKernel(module);
  const count = checkWorkers(workers);
  checkInteger("dataBytes", dataBytes, 0, Infinity, " bytes");
  const stack = stackSizeFor(stackSize, statics, "kernel");
  return pagesFor(statics, dataBytes, count, statusOffset, stack);
}

/** Return `{memory, maximum}`; `maximum` is null for a memory passed in (the JS API hides it). */
export function makeMemory(memory) {
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
      "memory must be a shared WebAssembly.Memory, {initial, maximum} or left out " +
        `(got ${describe(memory)})`,
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
  return reserve(initial, maximum);
}

function reserve(initial, maximum) {
  try {
    return { memory: new WebAssembly.Memory({ initial, maximum, shared: true }), maximum };
  } catch (err) {
    throw new RangeError(
      `could not reserve a shared memory of maximum=${maximum} pages: ${err.message}`,
      { cause: err },
    );
  }
}

/**
 * A memory for a pool made without one: room for its regions and
 * AUTO_MEMORY_DATA of data; the heap grows it as arrays are made, up to what
 * the kernel declares.
 */
export function autoMemory(kernel, workers, statusOffset, stackSize) {
  const limits = kernel.statics.memoryLimits;
  if (limits === null) {
    throw new TypeError(
      "memory must be given for a kernel passed as a compiled WebAssembly.Module, whose " +
        "memory limits the runtime cannot see: pass memory, or pass module as bytes or its url",
    );
  }
  const initial = pagesFor(kernel.statics, AUTO_MEMORY_DATA, workers, statusOffset, stackSize);
  const maximum = limits.maximum ?? MAX_PAGES;
  if (initial > maximum) {
    throw new LayoutError(
      `${kernel.name} declares env.memory with maximum ${maximum} pages, fewer than the ` +
        `${initial} a pool of ${workers} workers needs for its regions and ` +
        `${AUTO_MEMORY_DATA} bytes of data`,
    );
  }
  return reserve(initial, maximum);
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
    if (this.node && !this.terminated) on ? this.worker.ref() : this.worker.unref();
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

/** Start the workers; resolve once each has instantiated the kernel (READY). */
export async function startThreads(kernel, memory, layout) {
  const { statics, entries } = kernel;
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
                `${kernel.name} failed to instantiate in worker ${index}: ${message.name}: ` +
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
          module: kernel.module,
          memory,
          index,
          workers: layout.workers,
          layout: { ...layout, controlWords: CONTROL_WORDS },
          kernel: {
            usesStack: statics.usesStack,
            stackChecked: statics.stackChecked,
            tlsSize: statics.tlsSize,
            constructors: statics.constructors,
            entries: [...entries.values()].map((e) => ({
              exportName: e.export,
              params: e.wasmParams,
            })),
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
