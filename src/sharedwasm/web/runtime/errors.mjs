// The errors of the JavaScript runtime, with the names of the Python package's:
//
//   SharedWasmError(Error)
//    ├─ KernelError        not wasm, breaks the kernel ABI, or fails to instantiate
//    ├─ LayoutError        regions overlap, or an offset or count does not fit
//    ├─ KernelTrap         a partition trapped; .workerIndex .start .end .trap .traps
//    ├─ RunTimeout         a run did not finish within its timeout
//    ├─ RunCancelled       a run was cancelled
//    ├─ PoolClosedError    the pool was closed by its owner
//    ├─ BrokenPoolError    a worker died; the pool cannot be used
//    └─ OutOfMemory        the heap is full and the memory at its maximum;
//                          .requested .available
//
// Plain argument mistakes throw the builtin TypeError / RangeError, as the
// Python package raises TypeError / ValueError.

/** Base class of the errors sharedwasm throws on purpose. */
export class SharedWasmError extends Error {}

/** A module cannot be used as a kernel: not wasm, or it breaks the kernel ABI. */
export class KernelError extends SharedWasmError {}

/** A region of the shared memory is misplaced, misaligned or overlaps another. */
export class LayoutError extends SharedWasmError {}

/** The line of a trap's text that says what happened (the last non-empty one). */
function trapCause(trap) {
  const lines = String(trap)
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
  return lines.length ? lines[lines.length - 1] : "trap";
}

/**
 * A worker's partition trapped.
 *
 * `workerIndex`, `start` and `end` name the call that trapped, `trap` is the
 * engine's message, and `traps` lists every trap of the run, this one first.
 */
export class KernelTrap extends SharedWasmError {
  /**
   * @param {number} workerIndex
   * @param {number} start
   * @param {number} end
   * @param {string} trap
   * @param {KernelTrap[]} [traps] the other traps of the same run
   * @param {string} [hint] what else the trap may mean, added to the message
   * @param {ErrorOptions & {entry?: string}} [options] `entry`: the entry that was called
   */
  constructor(workerIndex, start, end, trap, traps = [], hint = "", options = undefined) {
    const entry = options?.entry ?? "compute_partition";
    super(
      `worker ${workerIndex} trapped in ${entry}(${start}, ${end}): ${trapCause(trap)}` +
        (hint ? ` (${hint})` : ""),
      options,
    );
    this.entry = entry;
    this.workerIndex = workerIndex;
    this.start = start;
    this.end = end;
    this.trap = trap;
    this.traps = [this, ...traps];
  }
}

/** A run did not finish within its timeout. */
export class RunTimeout extends SharedWasmError {}

/** A run was cancelled before every share finished. */
export class RunCancelled extends SharedWasmError {}

/** The pool was closed by its owner and cannot run anything more. */
export class PoolClosedError extends SharedWasmError {}

/** The pool failed in a way that leaves it unusable. */
export class BrokenPoolError extends SharedWasmError {}

/**
 * A pool's heap cannot hold an array: the memory is at its maximum.
 *
 * `requested` is the bytes asked for, `available` the bytes the heap could
 * still give in one piece with the memory grown to its maximum.
 */
export class OutOfMemory extends SharedWasmError {
  /**
   * @param {string} message
   * @param {{requested: number, available: number}} sizes
   * @param {ErrorOptions} [options]
   */
  constructor(message, { requested, available }, options = undefined) {
    super(message, options);
    this.requested = requested;
    this.available = available;
  }
}

for (const cls of [
  SharedWasmError,
  KernelError,
  LayoutError,
  KernelTrap,
  RunTimeout,
  RunCancelled,
  PoolClosedError,
  BrokenPoolError,
  OutOfMemory,
]) {
  Object.defineProperty(cls.prototype, "name", {
    value: cls.name,
    writable: true,
    configurable: true,
    enumerable: false,
  });
}
