// The pool: one kernel run by N workers (Web Workers in a browser,
// worker_threads under Node) over one shared WebAssembly memory; the mirror
// of sharedwasm/_pool.py. It owns the run protocol on the main thread's side
// (publish, wait, cancel, grow, close; what comes before the first run is
// lifecycle.mjs's), and turns the workers' records and failures into results
// and errors.
//
// All N shares run in the workers: the main thread publishes a run in the
// control block and awaits PENDING with Atomics.waitAsync, so it never
// computes and never blocks (but see makeRoom).
//
// Guarantees:
//   Runs and grows happen one at a time, in call order (a promise queue), so
//   the argument slots, the control words and the heap's growth are only
//   ever touched by the thread that made the pool, with no run in flight,
//   except for cancel(), which stores CANCEL into the run in flight.
//
//   A run's arguments (its typed arrays and the heap blocks they lie in)
//   stay referenced and pinned until the run has landed, so no block a
//   worker may write is collected or reused while it can.

import { Binder, argumentSlots } from "./arguments.mjs";
import { checkConstructor, checkInteger, describe } from "./checks.mjs";
import {
  BrokenPoolError,
  KernelTrap,
  LayoutError,
  OutOfMemory,
  PoolClosedError,
  RunCancelled,
  RunTimeout,
  SharedWasmError,
} from "./errors.mjs";
import { Heap, HeapArrays, PAGE_SIZE, growFor } from "./heap.mjs";
import { loadKernel } from "./kernel.mjs";
import {
  CONTROL_WORDS,
  Command,
  Control,
  RECORD_BYTES,
  Record,
  Schedule,
  Status,
} from "./layout.mjs";
import {
  MAX_PAGES,
  autoMemory,
  checkIsolation,
  checkWorkers,
  makeMemory,
  pagesNeeded,
  planLayout,
  stackSizeFor,
  startThreads,
} from "./lifecycle.mjs";
import { Statistics, readDone, runResult } from "./results.mjs";

/** Element counts are unsigned 32-bit words in the control block. */
const MAX_ELEMENTS = 0xffffffff;
const MAX_CHUNK = 0x7fffffff;
/**
 * Default chunk count per worker of a dynamic run: fine enough to balance
 * uneven work, coarse enough that claiming a chunk (one compare-exchange)
 * costs nothing next to computing it.
 */
export const DYNAMIC_CHUNKS_PER_WORKER = 64;
/** How long a run that timed out is given to stop after it was cancelled, in ms. */
export const CANCEL_GRACE = 150;
/** How long a run awaits the message of a trapped share, in ms. */
const TRAP_MESSAGE_WAIT = 1000;
/** How long close() waits for the workers to leave their loop before terminating them, in ms. */
const CLOSE_TIMEOUT = 1000;
/** Slices, in ms, of a blocking wait for the run in flight (see makeRoom). */
const BLOCKING_SLICE = 100;

/** Memories that have a live pool: two pools' boards and data regions would overlap. */
const memoriesInUse = new WeakSet();

let poolIds = 0;

/** Whether this thread may block in Atomics.wait (a browser's main thread may not). */
const CAN_BLOCK = (() => {
  try {
    // 1 is not the value there: "not-equal" at once where waiting is allowed.
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 1, 0);
    return true;
  } catch {
    return false;
  }
})();

/** A promise that resolves after `ms`, with a cancel that clears its timer. */
function delay(ms) {
  let timer;
  const promise = new Promise((resolve) => {
    timer = setTimeout(resolve, ms, "timed-out");
  });
  return { promise, cancel: () => clearTimeout(timer) };
}

function wallNs() {
  return (
    BigInt(Math.round(performance.timeOrigin * 1000)) * 1000n +
    BigInt(Math.round(performance.now() * 1e6))
  );
}

const CONSTRUCT = Symbol("WorkerPool");

/**
 * A pool of workers running one kernel over one shared memory; made by `createPool`.
 *
 * Every method may be called at any time from the thread that made the pool;
 * runs and grows are queued and happen one at a time, in call order.
 */
export class WorkerPool {
  #name;
  #memory;
  #maximum;
  #layout;
  #kernel;
  #threads;
  #status;
  #control;
  #control64;
  #rec32;
  #rec64;
  #heap;
  #arrays;
  #slots;
  #binders = new Map();
  #copyWarned = false;
  #statistics;
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
  constructor(token, { memory, maximum, layout, kernel, threads }) {
    if (token !== CONSTRUCT) throw new TypeError("make a WorkerPool with createPool()");
    this.#name = `sharedwasm-${++poolIds}`;
    this.#memory = memory;
    this.#maximum = maximum;
    this.#layout = layout;
    this.#kernel = kernel;
    this.#threads = threads;
    const buffer = memory.buffer;
    // The board, control block and records sit below the data region, so
    // these views stay valid after a grow (a shared buffer never detaches).
    this.#status = new Int32Array(buffer, layout.statusOffset, layout.workers);
    this.#control = new Int32Array(buffer, layout.controlOffset, CONTROL_WORDS);
    this.#control64 = new BigInt64Array(buffer, layout.controlOffset, CONTROL_WORDS / 2);
    // Unsigned: element indices go up to 2**32 - 1.
    this.#rec32 = new Uint32Array(
      buffer,
      layout.recordsOffset,
      (layout.workers * RECORD_BYTES) / 4,
    );
    this.#rec64 = new BigInt64Array(
      buffer,
      layout.recordsOffset,
      (layout.workers * RECORD_BYTES) / 8,
    );
    this.#slots = argumentSlots(buffer, layout);
    this.#heap = new Heap(layout.dataOffset, buffer.byteLength);
    this.#arrays = new HeapArrays(memory, this.#heap, (nbytes) => this.#makeRoom(nbytes));
    this.#statistics = new Statistics(layout.workers);
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

  /**
   * The fewest pages a memory needs for a pool of `module` to hold
   * `dataBytes` of data; see the exported pagesNeeded.
   */
  static pagesNeeded(module, dataBytes, options = {}) {
    return pagesNeeded(module, dataBytes, options);
  }

  /** The pool's name in messages, `sharedwasm-N`. */
  get name() {
    return this.#name;
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

  /** The kernel's entries by name, in entry order (see entries.mjs). */
  get entries() {
    return new Map(this.#kernel.entries);
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
    checkConstructor("Ctor", Ctor);
    const buffer = this.#arrays.buffer();
    const count = Math.floor((buffer.byteLength - this.dataOffset) / Ctor.BYTES_PER_ELEMENT);
    return new Ctor(buffer, this.dataOffset, count);
  }

  // -- arrays in the shared memory ------------------------------------------

  /**
   * Return a new uninitialised typed array of `length` elements in the
   * pool's heap. It lives in the shared memory (64-byte aligned), so it
   * passes to a kernel with no copy. Its block is freed once the array is
   * garbage (views cut from it do not keep it alive), or at `free`. When the
   * heap is full the memory grows, up to its maximum, after the run in
   * flight, if any (see makeRoom).
   *
   * @param {Function} Ctor a typed array constructor (Float32Array, ...)
   * @param {number} length
   * @throws {TypeError | RangeError} a wrong constructor or length
   * @throws {OutOfMemory} the array does not fit, even at the memory's maximum
   * @throws {PoolClosedError} the pool is closed
   */
  empty(Ctor, length) {
    this.#checkClosed();
    return this.#arrays.empty(Ctor, length);
  }

  /** Return a new array of zeros in the pool's heap (see `empty`). */
  zeros(Ctor, length) {
    this.#checkClosed();
    return this.#arrays.full(Ctor, length, 0);
  }

  /** Return a new array filled with `value` in the pool's heap (see `empty`). */
  full(Ctor, length, value) {
    this.#checkClosed();
    return this.#arrays.full(Ctor, length, value);
  }

  /** Return a new uninitialised array of `prototype`'s length and type (or `Ctor`). */
  emptyLike(prototype, Ctor = undefined) {
    const { type, length } = this.#arrays.like(prototype, Ctor);
    return this.empty(type, length);
  }

  /** Return a new array of zeros of `prototype`'s length and type (or `Ctor`). */
  zerosLike(prototype, Ctor = undefined) {
    const { type, length } = this.#arrays.like(prototype, Ctor);
    return this.zeros(type, length);
  }

  /** Return a new array of `prototype`'s length and type (or `Ctor`) filled with `value`. */
  fullLike(prototype, value, Ctor = undefined) {
    const { type, length } = this.#arrays.like(prototype, Ctor);
    return this.full(type, length, value);
  }

  /**
   * Return `a` as an array of the pool's heap: itself if it already is one
   * (of type `Ctor`, when given), else a copy in a new block. An Array
   * becomes a Float64Array (a BigInt64Array if it holds BigInts) unless
   * `Ctor` says otherwise.
   */
  asarray(a, Ctor = undefined) {
    this.#checkClosed();
    return this.#arrays.asarray(a, Ctor);
  }

  /**
   * Return an array with one element per worker, reset to `fill` before
   * each run it is passed to. For reductions: worker i adds its share's
   * result into element i (C: `SW_PARTIAL(p) += ...`), and the caller
   * combines the N elements after the run, in worker order, so a static
   * run's result is the same on every run. Use 0 for a sum, -Infinity for a
   * max, Infinity for a min.
   */
  partials(Ctor = Float64Array, fill = 0) {
    this.#checkClosed();
    return this.#arrays.partials(Ctor, this.workers, fill);
  }

  /**
   * Free the heap block that `a` (an array of this pool's heap, or a view
   * inside one) is in, at once, whatever views still exist: using them
   * afterwards reads and writes memory that a later array may own, and
   * passing them to a run is refused. Freeing the same block twice does nothing.
   *
   * @throws {TypeError} `a` is not a typed array
   * @throws {RangeError} `a` is not in this pool's heap
   */
  free(a) {
    this.#arrays.free(a, this.#name);
  }

  /**
   * Make room for `nbytes` in a full heap: grow the memory by at least 1/8 of
   * its pages, up to its maximum. Never while a run is in flight: then this
   * thread blocks in Atomics.wait until the run's workers have counted out,
   * which a browser's main thread may not do; there it throws instead (await
   * the run first, or make the arrays before it starts).
   */
  #makeRoom(nbytes) {
    const control = this.#control;
    if (this.#inFlight !== null && Atomics.load(control, Control.PENDING) !== 0) {
      if (!CAN_BLOCK) {
        throw new SharedWasmError(
          `${this.#name} must grow its memory for ${nbytes} bytes, which it never does while ` +
            `run ${JSON.stringify(this.#inFlight.runId)} is in flight, and this thread may not ` +
            "wait for it (a browser's main thread cannot block): await the run first, or make " +
            "the arrays before it starts",
        );
      }
      // The last worker out notifies PENDING; the slices notice a close.
      for (;;) {
        const pending = Atomics.load(control, Control.PENDING);
        if (pending === 0 || this.#state !== "open") break;
        Atomics.wait(control, Control.PENDING, pending, BLOCKING_SLICE);
      }
      this.#checkUsable();
    }
    // A memory made elsewhere hides its maximum; the kernel's declared one
    // bounds it, and the engine refuses a grow past the real one.
    const known = this.#maximum;
    const limit = known ?? this.#kernel.statics.memoryLimits?.maximum ?? null;
    if (growFor(this.#memory, this.#heap, nbytes, limit) !== null) return;
    const pages = this.#memory.buffer.byteLength / PAGE_SIZE;
    const ceiling = known ?? pages;
    const room = (ceiling - pages) * PAGE_SIZE;
    const available = Math.max(this.#heap.largestFree, this.#heap.tailFree + room);
    const grown =
      known === null
        ? `as far as it goes (${pages} pages, ${pages * PAGE_SIZE} bytes)`
        : `to its maximum of ${known} pages (${known * PAGE_SIZE} bytes)`;
    throw new OutOfMemory(
      `${this.#name} cannot allocate ${nbytes} bytes: its heap has ${available} bytes in one ` +
        `piece at most, with the memory grown ${grown}; free arrays or use a memory with a ` +
        "larger maximum",
      { requested: nbytes, available },
    );
  }

  // -- running ----------------------------------------------------------------

  /**
   * Run an entry of the kernel on every worker. Never blocks the calling thread.
   *
   * With `schedule: "static"` (the default) worker i gets one call,
   * `entry(start, end, ...args)`, with `chunk = ceil(elements / N)`,
   * `start = min(i * chunk, elements)`. With `schedule: "dynamic"` the
   * workers claim `chunk` elements at a time until none are left, which
   * balances uneven work.
   *
   * @param {string} [runId] a label carried into the result and the errors
   * @param {object} [options]
   * @param {unknown[] | Record<string, unknown>} [options.args] the entry's
   *   arguments after (start, end): by position, or by parameter name when the
   *   module records the names (`sharedwasm build` does). A typed array goes
   *   to a pointer parameter as its address: one of this pool's heap with no
   *   copy, an ordinary one copied in for the run (and back out unless the
   *   pointer is to const)
   * @param {string} [options.entry] which entry to run; default, the kernel's
   *   only one, or compute_partition
   * @param {number} [options.elements] element count; default, the length of
   *   the first array argument, or with none as many `elementSize`-byte
   *   elements as the data region holds now
   * @param {number} [options.elementSize] bytes per element for that last default, 4
   * @param {"static" | "dynamic"} [options.schedule]
   * @param {number} [options.chunk] elements per claim of a dynamic run;
   *   default, enough for 64 claims per worker; only for a dynamic run
   * @param {number} [options.timeout] seconds, covering the wait for earlier
   *   calls too; when it passes the run is cancelled (see cancel)
   * @returns {Promise<{runId: string, elapsed: number, done: {workerIndex: number,
   *   start: number, end: number, elapsed: number, elements: number, chunks: number}[]}>}
   *   elapsed times in seconds
   * @throws {KernelTrap} a share trapped (after every other share ended); the pool stays usable
   * @throws {RunTimeout} the timeout passed; if the run did not stop within
   *   CANCEL_GRACE ms it goes on and the next call waits for it
   * @throws {RunCancelled} cancel() stopped the run
   * @throws {LayoutError} `elements` does not fit the data region
   * @throws {OutOfMemory} an ordinary array does not fit in the heap
   * @throws {PoolClosedError} the pool is closed, or was closed during the run
   * @throws {TypeError | RangeError} an argument does not fit its parameter
   *   (the message names it), or `runId` is not a string
   */
  async run(
    runId = "run",
    { args = [], entry, elements, elementSize = 4, schedule = "static", chunk, timeout } = {},
  ) {
    if (typeof runId !== "string") {
      throw new TypeError(
        `runId must be a string (got ${describe(runId)}); the kernel's arguments go in ` +
          `options.args: pool.run("label", { args: [x, y] })`,
      );
    }
    const binder = this.#binder(entry);
    const byName = !Array.isArray(args);
    if (byName && !this.#isPlainObject(args)) {
      throw new TypeError(
        "args must be an array (by position) or an object (by parameter name) " +
          `(got ${describe(args)})`,
      );
    }
    checkInteger("elementSize", elementSize, 1, Infinity, " bytes");
    if (elements !== undefined && elements !== null) {
      checkInteger("elements", elements, 0, Infinity);
    }
    this.#schedule(schedule, chunk, 0);
    if (timeout !== undefined && timeout !== null) {
      if (typeof timeout !== "number" || Number.isNaN(timeout)) {
        throw new TypeError(`timeout must be a number of seconds (got ${describe(timeout)})`);
      }
      if (timeout < 0) throw new RangeError(`timeout must be >= 0 seconds (got ${timeout})`);
    } else {
      timeout = null;
    }
    this.#checkUsable();
    const deadline = timeout === null ? Infinity : performance.now() + timeout * 1000;
    const late = () =>
      new RunTimeout(`run ${JSON.stringify(runId)}: earlier calls held the pool for ${timeout} s`);
    const request = { runId, binder, args, elements, elementSize, schedule, chunk, timeout };
    return this.#enqueue(deadline, late, () => this.#run(request, deadline));
  }

  #isPlainObject(value) {
    if (value === null || typeof value !== "object") return false;
    const proto = Object.getPrototypeOf(value);
    return proto === Object.prototype || proto === null;
  }

  /** The Binder of an entry, made once per pool and entry. */
  #binder(entry) {
    let binder = this.#binders.get(entry);
    if (binder === undefined) {
      binder = new Binder(this.#entry(entry), this.#slots, this.#arrays, (nbytes) =>
        this.#warnCopy(nbytes),
      );
      this.#binders.set(entry, binder);
    }
    return binder;
  }

  #entry(entry) {
    const entries = this.#kernel.entries;
    const names = `[${[...entries.keys()].map((n) => JSON.stringify(n)).join(", ")}]`;
    if (entry === undefined || entry === null) {
      if (entries.size === 1) return entries.values().next().value;
      if (entries.has("compute_partition")) return entries.get("compute_partition");
      throw new TypeError(
        `entry must name one of ${this.#kernel.name}'s entries ${names} ` +
          "(got undefined, and there is more than one)",
      );
    }
    if (typeof entry !== "string") {
      throw new TypeError(`entry must be a string (got ${describe(entry)})`);
    }
    const found = entries.get(entry);
    if (found === undefined) {
      throw new RangeError(
        `entry must be one of ${this.#kernel.name}'s entries ${names} (got ${describe(entry)})`,
      );
    }
    return found;
  }

  #warnCopy(nbytes) {
    if (this.#copyWarned) return;
    this.#copyWarned = true;
    console.warn(
      `${this.#name} copied a ${nbytes}-byte typed array into its shared memory for a run ` +
        "(and copies it back after, unless the parameter is const); make arrays with " +
        "pool.asarray / empty / zeros / full to pass them with no copy. Shown once per pool.",
    );
  }

  #schedule(schedule, chunk, total) {
    const given = chunk !== undefined && chunk !== null;
    if (schedule === "static") {
      if (given) {
        throw new RangeError(
          'chunk must be left out with schedule "static", which makes one range per worker ' +
            `(got ${describe(chunk)})`,
        );
      }
      return [Schedule.STATIC, 0];
    }
    if (schedule !== "dynamic") {
      throw new RangeError(`schedule must be "static" or "dynamic" (got ${describe(schedule)})`);
    }
    if (!given) {
      return [
        Schedule.DYNAMIC,
        Math.max(1, Math.ceil(total / (this.workers * DYNAMIC_CHUNKS_PER_WORKER))),
      ];
    }
    return [Schedule.DYNAMIC, checkInteger("chunk", chunk, 1, MAX_CHUNK, " elements")];
  }

  #elements(elements, elementSize, bounded) {
    const dataBytes = this.#memory.buffer.byteLength - this.dataOffset;
    const capacity = Math.floor(dataBytes / elementSize);
    if (elements === undefined || elements === null) elements = capacity;
    if (elements > MAX_ELEMENTS) {
      throw new RangeError(`elements must be < 2**32 (got ${elements})`);
    }
    if (bounded && elements > capacity) {
      throw new LayoutError(
        `elements must be <= ${capacity}, the ${elementSize}-byte elements the data ` +
          `region holds from byte ${this.dataOffset} (got ${elements})`,
      );
    }
    return elements;
  }

  async #run(request, deadline) {
    const { runId, binder, args, elementSize, timeout } = request;
    await this.#land(
      deadline,
      (why) => new RunTimeout(`run ${JSON.stringify(runId)}: ${why} after ${timeout} s`),
    );
    // The slots are free now: no run is in flight to read them.
    const bound = binder.bind(args);
    const control = this.#control;
    let generation;
    try {
      const hasArgs = Array.isArray(args) ? args.length > 0 : Object.keys(args).length > 0;
      const total = this.#elements(request.elements ?? bound.first, elementSize, !hasArgs);
      const [kind, chunk] = this.#schedule(request.schedule, request.chunk, total);
      this.#trapMessages.clear();
      // Reset every slot first, so DONE always means "done with this run".
      for (let i = 0; i < this.workers; i++) Atomics.store(this.#status, i, Status.RUNNING);
      Atomics.store(control, Control.ELEMENTS, total | 0);
      Atomics.store(control, Control.ELEMENT_SIZE, elementSize | 0);
      Atomics.store(control, Control.SCHEDULE, kind);
      Atomics.store(control, Control.CHUNK, chunk);
      Atomics.store(control, Control.NEXT, 0);
      Atomics.store(control, Control.ENTRY, binder.entry.index);
      Atomics.store(control, Control.PENDING, this.workers);
      Atomics.store(control, Control.COMMAND, Command.RUN);
      Atomics.store(this.#control64, Control.PUBLISH_TIME / 2, wallNs());
      // Clear a cancel left from an earlier run: CANCEL = the old generation,
      // which is never current again until the counter wraps. Only this
      // thread stores CANCEL (cancel() runs here too), so unlike the Python
      // runner this needs no compare-exchange.
      Atomics.store(control, Control.CANCEL, Atomics.load(control, Control.GENERATION));
    } catch (err) {
      bound.release();
      throw err;
    }
    const started = performance.now();
    // The bump is the release of everything above, the argument slots'
    // plain stores included; then wake the parked.
    generation = (Atomics.add(control, Control.GENERATION, 1) + 1) | 0;
    Atomics.notify(control, Control.GENERATION);
    const flight = { runId, generation, bound };
    this.#inFlight = flight;
    const finished = await this.#waitPending(deadline);
    const elapsed = (performance.now() - started) / 1000;
    if (this.#state !== "open") {
      this.#landFlight(flight);
      this.#checkUsable();
    }
    if (!finished) return this.#stopAfterTimeout(flight, timeout);
    try {
      return await this.#collect(runId, generation, elapsed);
    } finally {
      // Landed, trapped or cancelled: the shares that ran wrote their
      // output, as they would have in an array of the heap.
      bound.finish();
      this.#landFlight(flight);
    }
  }

  /** Mark the run in flight as over and let go of what it held. */
  #landFlight(flight) {
    if (this.#inFlight === flight) this.#inFlight = null;
    flight.bound.release();
  }

  /** Cancel a run that outlived its timeout, give it CANCEL_GRACE, and throw. */
  async #stopAfterTimeout(flight, timeout) {
    const name = JSON.stringify(flight.runId);
    this.cancel();
    const stopped = await this.#waitPending(performance.now() + CANCEL_GRACE);
    this.#checkUsable();
    if (!stopped) {
      throw new RunTimeout(
        `run ${name} did not finish within ${timeout} s and it was asked to stop, but a ` +
          "call already inside the kernel cannot be interrupted in JavaScript; it keeps " +
          `running in the workers and the next call waits for it first; board [${this.#status}]`,
      );
    }
    this.#landFlight(flight);
    const message =
      `run ${name} did not finish within ${timeout} s; it was stopped and ${this.#name} is ` +
      `ready for the next run; board [${this.#status}]`;
    try {
      await this.#collect(flight.runId, flight.generation, 0);
    } catch (err) {
      if (err instanceof RunCancelled) throw new RunTimeout(message);
      throw err;
    }
    // Every share ended in the grace period (a trap would have been thrown,
    // which outranks the timeout), but past the deadline.
    throw new RunTimeout(message);
  }

  /**
   * Cancel the run in flight, if any; return true if there was one.
   *
   * The run's promise rejects with RunCancelled (the shares that finished
   * keep their output). The workers start no more work for it: no new
   * chunk of a dynamic run, no share not yet begun; a call already inside
   * the kernel runs to its end (JavaScript cannot interrupt it). The pool
   * is ready for the next run as soon as the cancelled one ends. Never
   * blocks; a queued run that has not started is not affected. On a closed
   * pool it does nothing and returns false.
   */
  cancel() {
    const flight = this.#inFlight;
    if (flight === null || this.#state === "closed") return false;
    // Workers compare CANCEL with GENERATION before every call; the run's
    // generation is current until the next publish, which clears it.
    Atomics.store(this.#control, Control.CANCEL, flight.generation);
    return true;
  }

  /**
   * Return a frozen snapshot of the successful runs so far: `{workers, runs,
   * busy, elements, dispatchLatencyMedian, dispatchLatencyP99}` (seconds;
   * busy and elements per worker; the latencies, from publishing a run to a
   * worker seeing it, over the last 1024 samples, null before any). Works on
   * a closed pool too.
   */
  statistics() {
    return this.#statistics.snapshot();
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

  #checkClosed() {
    if (this.#state === "closed") throw new PoolClosedError(`${this.#name} is closed`);
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
    const flight = this.#inFlight;
    if (flight === null) return;
    const landed = await this.#waitPending(deadline);
    this.#checkUsable();
    if (!landed) {
      throw late(
        `run ${JSON.stringify(flight.runId)}, which outlived its timeout, still held the pool`,
      );
    }
    this.#landFlight(flight);
  }

  async #collect(runId, generation, elapsed) {
    const control = this.#control;
    if (Atomics.load(control, Control.GENERATION) !== generation) {
      this.#break(
        `GENERATION reads ${Atomics.load(control, Control.GENERATION)} after run ` +
          `${JSON.stringify(runId)}, which was published as ${generation}`,
      );
    }
    const statuses = Array.from(this.#status);
    const entryIndex = Atomics.load(control, Control.ENTRY);
    const entry = [...this.#kernel.entries.values()].find((e) => e.index === entryIndex);
    const options = { entry: entry ? entry.name : "compute_partition" };
    const trapped = [];
    statuses.forEach((status, index) => status === Status.TRAPPED && trapped.push(index));
    if (trapped.length) {
      const traps = await Promise.all(
        trapped.map(async (index) => {
          const message = await this.#trapMessage(generation, index);
          const hint = this.#hint(message.message);
          return new KernelTrap(
            index,
            message.start,
            message.end,
            message.message,
            [],
            hint,
            options,
          );
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
        options,
      );
    }
    const stopped = [];
    statuses.forEach((status, index) => status === Status.CANCELLED && stopped.push(index));
    if (stopped.length) {
      throw new RunCancelled(
        `run ${JSON.stringify(runId)} was cancelled: worker(s) [${stopped.join(", ")}] of ` +
          `${this.#name} stopped before finishing their share; statuses [${statuses.join(", ")}]`,
      );
    }
    if (statuses.some((status) => status !== Status.DONE)) {
      throw new SharedWasmError(
        `run ${JSON.stringify(runId)} ended with statuses [${statuses}]; every slot should ` +
          "read DONE (1), TRAPPED (-1) or CANCELLED (-2)",
      );
    }
    const done = readDone(this.#rec32, this.#rec64, this.workers);
    const published = this.#control64[Control.PUBLISH_TIME / 2];
    const wakes = done.map((_, i) => this.#rec64[(i * RECORD_BYTES + Record.WAKE_TIME) / 8]);
    this.#statistics.add(done, published, wakes);
    return runResult(runId, elapsed, done);
  }

  /** Mark the pool broken because its own words were overwritten, and throw. */
  #break(what) {
    this.#checkClosed();
    this.#state = "broken";
    this.#failure = new Error(what);
    throw new BrokenPoolError(
      `${this.#name} is broken: ${what}. The status board and control block live in the ` +
        "kernel's memory, so a kernel that writes outside its data (a stray pointer, a wrong " +
        `offset) can overwrite them; board [${this.#status}]`,
    );
  }

  #hint(trap) {
    // A stack check's failure is an `unreachable` with no word of its own.
    if (this.#kernel.statics.stackChecked && String(trap).includes("unreachable")) {
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

/**
 * Make a pool of `workers` workers running one kernel over one shared memory.
 *
 * Resolves once every worker has instantiated the kernel (READY), and
 * worker 0 has run its C++ constructors, if it has any. Call it from a
 * cross-origin isolated page (or under Node).
 *
 * @param {object} options
 * @param {WebAssembly.Module | ArrayBuffer | ArrayBufferView} [options.module]
 *   the kernel, compiled or as bytes; exactly one of module and url
 * @param {string | URL} [options.url] where to fetch the kernel (served as application/wasm)
 * @param {WebAssembly.Memory | {initial: number, maximum: number}} [options.memory]
 *   a shared memory, or its size in 64 KiB pages. Left out: a memory of just
 *   enough pages for the pool's regions and 1 MiB of data (see pagesNeeded),
 *   with the kernel's declared maximum, which the heap grows as arrays are made
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
  const kernel = await loadKernel({ module, url });
  const statics = kernel.statics;
  const count = checkWorkers(workers);
  const stack = stackSizeFor(stackSize, statics, kernel.name);
  const shared =
    memory === undefined || memory === null
      ? autoMemory(kernel, count, statusOffset, stack)
      : makeMemory(memory);
  const byteLength = shared.memory.buffer.byteLength;
  const layout = planLayout(
    statics,
    count,
    statusOffset,
    stack,
    byteLength,
    byteLength / PAGE_SIZE,
  );
  if (memoriesInUse.has(shared.memory)) {
    throw new LayoutError(
      "memory is already used by another pool: two pools' boards and data regions would " +
        "overlap; close the other pool first",
    );
  }
  const buffer = shared.memory.buffer;
  new Int32Array(buffer, layout.statusOffset, count).fill(Status.RUNNING);
  const control = new Int32Array(buffer, layout.controlOffset, CONTROL_WORDS);
  control.fill(0);
  new Uint8Array(buffer, layout.recordsOffset, count * RECORD_BYTES).fill(0);
  Atomics.store(control, Control.WORKERS, count);
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
    threads = await startThreads(kernel, shared.memory, layout);
  } catch (err) {
    memoriesInUse.delete(shared.memory);
    throw err;
  }
  const pool = new WorkerPool(CONSTRUCT, { ...shared, layout, kernel, threads });
  // Idle workers do not keep Node alive, as the Python package's threads are daemons.
  for (const thread of threads) thread.ref(false);
  return pool;
}
