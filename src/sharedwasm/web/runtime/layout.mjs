// GENERATED FILE, DO NOT EDIT: written by `.venv/bin/python scripts/gen_layout_js.py`
// from src/sharedwasm/_layout.py, the single source of truth of the memory layout.
// `.venv/bin/python scripts/gen_layout_js.py --check` fails when this file is outdated.

import { LayoutError } from "./errors.mjs";

export const STATUS_SLOT_BYTES = 4;
export const CACHE_LINE = 64;
export const DATA_ALIGN = 64;
export const ARGUMENT_SLOTS = 32;
export const ARGUMENT_SLOT_BYTES = 8;
export const ARGUMENTS_WORD = 32;
export const CONTROL_WORDS = 96;
export const CONTROL_BYTES = 384;
export const RECORD_BYTES = 64;
export const STACK_ALIGN = 16;
export const DEFAULT_STACK_SIZE = 65536;

/** Values of a worker's status slot. */
export const Status = Object.freeze({
  /** The worker has not finished the current run (the reference's 'idle' reset value). */
  RUNNING: 0,
  /** The worker finished its partition of the current run. */
  DONE: 1,
  /** The worker's partition trapped; the run reports a `KernelTrap`. */
  TRAPPED: -1,
  /**
   * The run was cancelled before this worker finished its share: it was interrupted, or it stopped
   * claiming work, or it never started.
   */
  CANCELLED: -2,
});

/** Indices of the int32 words of the control block. */
export const Control = Object.freeze({
  /** Bumped once per command; workers wait on it. */
  GENERATION: 0,
  /** A `Command` value, valid once GENERATION has changed. */
  COMMAND: 1,
  /** Element count of the current run (unsigned). */
  ELEMENTS: 2,
  /** Bytes per element of the current run. */
  ELEMENT_SIZE: 3,
  /** Workers that have not finished the current run; the last one notifies it. */
  PENDING: 4,
  /** Worker count, for observers that read the board without the pool. */
  WORKERS: 5,
  /** First byte of the data region, for the same observers. */
  DATA_OFFSET: 6,
  /** A `Schedule` value for the current run. */
  SCHEDULE: 7,
  /** Elements per chunk of a dynamic run. */
  CHUNK: 8,
  /** First element not yet claimed in a dynamic run; never passes ELEMENTS. */
  NEXT: 9,
  /** Workers parked on GENERATION; the host notifies only when it is non-zero. */
  SLEEPERS: 10,
  /** 1 while the host is parked on PENDING; the last worker notifies only then. */
  HOST_PARKED: 11,
  /** Wall-clock ns when the current command was published (int64: words 12-13). */
  PUBLISH_TIME: 12,
  /**
   * Bumped, after GENERATION, when worker 0's share goes to the standby thread instead of the
   * caller (a run with a timeout); the standby thread waits on it.
   */
  STANDBY_GENERATION: 14,
  /**
   * The generation of the run to cancel: a worker starts no more work for that run once this
   * equals GENERATION. Reset to the previous generation before each run is published.
   */
  CANCEL: 15,
  /**
   * Where the clock writes the host's readings (int64: words 16-17), apart from worker 0's record,
   * which the standby thread may be using at the same time.
   */
  HOST_SCRATCH: 16,
  /**
   * 1 while the caller's thread is inside the kernel (worker 0's share of an untimed run): only
   * then may an interrupt stop the caller's call.
   */
  HOST_BUSY: 18,
  /** Index of the entry the current run calls, in the kernel's export order. */
  ENTRY: 19,
  /**
   * First word of the run's arguments: ARGUMENT_SLOTS slots of 8 bytes, one per parameter after
   * (start, end), each holding an i32 or f32 in its low 4 bytes or an i64 or f64 (little-endian).
   * The host writes them with plain stores before it publishes the run; the publish (a seq-cst
   * bump of GENERATION) orders them before any worker that sees the new generation reads them.
   */
  ARGUMENTS: 32,
});

/** Byte offsets of the fields of a worker's record. */
export const Record = Object.freeze({
  /** i32: first element this worker processed (its range in a static run). */
  START: 0,
  /** i32: one past the last element it processed. */
  END: 4,
  /** i32: how many elements it processed. */
  ELEMENTS: 8,
  /** i32: how many calls to compute_partition it made. */
  CHUNKS: 12,
  /** i32: start of the call in progress, to name the range of a trap. */
  CUR_START: 16,
  /** i32: end of the call in progress. */
  CUR_END: 20,
  /**
   * i32: 1 while the worker's thread is inside the kernel; only then may an interrupt stop it
   * (never while it waits for work or counts itself out).
   */
  BUSY: 24,
  /** i64: wall-clock ns when the worker saw the command. */
  WAKE_TIME: 32,
  /** i64: monotonic ns when it started its share. */
  T_START: 40,
  /** i64: monotonic ns when it finished its share. */
  T_END: 48,
  /** i64: where the clock writes its reading. */
  SCRATCH: 56,
});

/** Values of `Control.COMMAND`. */
export const Command = Object.freeze({
  RUN: 1,
  EXIT: 2,
});

/** Values of `Control.SCHEDULE`. */
export const Schedule = Object.freeze({
  /** The reference partitioning: one contiguous range per worker. */
  STATIC: 0,
  /** Workers claim CHUNK elements at a time from NEXT until none are left. */
  DYNAMIC: 1,
});

const SLOT = BigInt(STATUS_SLOT_BYTES);
const LINE = BigInt(CACHE_LINE);
const ALIGN = BigInt(DATA_ALIGN);
const CONTROL = BigInt(CONTROL_BYTES);
const RECORD = BigInt(RECORD_BYTES);
const STACK = BigInt(STACK_ALIGN);

const describe = (value) => {
  if (typeof value === "string") return JSON.stringify(value);
  return typeof value === "bigint" ? `${value}n` : String(value);
};

const toIndex = (name, value) => {
  if (typeof value === "bigint") return value;
  if (typeof value === "number" && Number.isInteger(value)) return BigInt(value);
  throw new TypeError(`${name} must be an integer (got ${describe(value)})`);
};

/** Round `value` up to a multiple of `alignment` (a power of two); BigInts, like Python's ints. */
const alignUpBig = (value, alignment) =>
  ((value + alignment - 1n) / alignment) * alignment;

/**
 * Round `value` up to a multiple of `alignment` (a power of two).
 * @param {number} value
 * @param {number} alignment
 * @returns {number}
 */
export function alignUp(value, alignment) {
  return Number(alignUpBig(BigInt(value), BigInt(alignment)));
}

/**
 * Place the regions for `workers` workers in a memory of `byteLength` bytes,
 * exactly as `Layout.build` does. Integers may be numbers or BigInts; the
 * arithmetic is exact either way.
 *
 * `staticEnd` is where the kernel's static data ends (the board may not start
 * before it); `stackSize` and `tlsSize` are the bytes of stack and of
 * thread-local data each worker gets (0 for a kernel without), `tlsAlign` the
 * alignment of its thread-local block.
 *
 * @param {{workers: number, statusOffset: number, byteLength: number, staticEnd?: number,
 *   stackSize?: number, tlsSize?: number, tlsAlign?: number}} options
 * @returns {Readonly<{workers: number, statusOffset: number, controlOffset: number,
 *   recordsOffset: number, dataOffset: number, statusEnd: number, controlEnd: number,
 *   recordsEnd: number, staticEnd: number, threadsOffset: number, threadArea: number,
 *   tlsBlock: number, threadsEnd: number}>}
 * @throws {TypeError} an argument is not an integer.
 * @throws {RangeError} `workers` is not positive, `stackSize` is not a multiple of
 *   STACK_ALIGN, or `tlsAlign` is not a power of two.
 * @throws {LayoutError} the status offset is negative, misaligned or inside the
 *   kernel's static data, or the regions do not leave room for any data.
 */
export function buildLayout({
  workers,
  statusOffset,
  byteLength,
  staticEnd = 0,
  stackSize = 0,
  tlsSize = 0,
  tlsAlign = 1,
} = {}) {
  const n = toIndex("workers", workers);
  const status = toIndex("statusOffset", statusOffset);
  const length = toIndex("byteLength", byteLength);
  const statics = toIndex("staticEnd", staticEnd);
  const stack = toIndex("stackSize", stackSize);
  const tls = toIndex("tlsSize", tlsSize);
  const tlsAlignment = toIndex("tlsAlign", tlsAlign);
  if (n < 1n) throw new RangeError(`workers must be at least 1 (got ${n})`);
  if (stack < 0n || stack % STACK !== 0n) {
    throw new RangeError(
      `stackSize must be a non-negative multiple of ${STACK} bytes (got ${stack})`,
    );
  }
  if (tls < 0n || tlsAlignment < 1n || (tlsAlignment & (tlsAlignment - 1n)) !== 0n) {
    throw new RangeError(
      `tlsSize must be >= 0 and tlsAlign a power of two (got ${tls}, ${tlsAlignment})`,
    );
  }
  if (status < 0n) throw new LayoutError(`statusOffset must be >= 0 (got ${status})`);
  if (status % SLOT !== 0n) {
    throw new LayoutError(`statusOffset must be a multiple of ${SLOT} (got ${status})`);
  }
  if (status < statics) {
    throw new LayoutError(
      `statusOffset must be >= ${statics}: the kernel's static data (its data ` +
        `segments, up to __heap_base) ends there, and a status board inside it ` +
        `would be overwritten (got statusOffset=${status})`,
    );
  }
  const statusEnd = status + n * SLOT;
  const controlOffset = alignUpBig(statusEnd, LINE);
  const recordsOffset = alignUpBig(controlOffset + CONTROL, LINE);
  const recordsEnd = recordsOffset + n * RECORD;
  // Each area starts aligned for its TLS block and for the stack, whose top
  // (the area's end) must keep the 16-byte alignment clang assumes.
  const areaAlign = tlsAlignment > STACK ? tlsAlignment : STACK;
  const tlsBlock = tls ? alignUpBig(tls, STACK) : 0n;
  const threadArea = stack ? alignUpBig(tlsBlock + stack, areaAlign) : 0n;
  const threadsOffset = threadArea ? alignUpBig(recordsEnd, areaAlign) : recordsEnd;
  const threadsEnd = threadsOffset + n * threadArea;
  const dataOffset = alignUpBig(threadsEnd, ALIGN);
  if (dataOffset >= length) {
    const areas = threadArea ? ` and ${n} thread areas of ${threadArea} bytes` : "";
    throw new LayoutError(
      `statusOffset must leave room for data: a board for ${n} workers at ` +
        `${status}${areas} puts the data region at ${dataOffset}, but the memory ` +
        `is ${length} bytes (got statusOffset=${status})`,
    );
  }
  return Object.freeze({
    workers: Number(n),
    statusOffset: Number(status),
    controlOffset: Number(controlOffset),
    recordsOffset: Number(recordsOffset),
    dataOffset: Number(dataOffset),
    statusEnd: Number(statusEnd),
    controlEnd: Number(controlOffset + CONTROL),
    recordsEnd: Number(recordsEnd),
    staticEnd: Number(statics),
    threadsOffset: Number(threadsOffset),
    threadArea: Number(threadArea),
    tlsBlock: Number(threadArea ? tlsBlock : 0n),
    threadsEnd: Number(threadsEnd),
  });
}

/**
 * Byte address of a worker's thread-local block (`Layout.tls_address`).
 * @param {{threadsOffset: number, threadArea: number}} layout what buildLayout returned
 * @param {number} workerIndex
 * @returns {number}
 */
export function tlsAddress(layout, workerIndex) {
  return layout.threadsOffset + workerIndex * layout.threadArea;
}

/**
 * Lowest byte address a worker's stack may use (`Layout.stack_bottom`).
 * @param {{threadsOffset: number, threadArea: number, tlsBlock: number}} layout
 * @param {number} workerIndex
 * @returns {number}
 */
export function stackBottom(layout, workerIndex) {
  return tlsAddress(layout, workerIndex) + layout.tlsBlock;
}

/**
 * A worker's initial stack pointer; the stack grows down from here (`Layout.stack_top`).
 * @param {{threadsOffset: number, threadArea: number}} layout
 * @param {number} workerIndex
 * @returns {number}
 */
export function stackTop(layout, workerIndex) {
  return tlsAddress(layout, workerIndex) + layout.threadArea;
}
