// Arguments: a run's values checked against its entry's parameters and
// stored for the workers; the mirror of sharedwasm/_arguments.py.
//
// Each parameter after (start, end) has one 8-byte slot in the control block
// (Control.ARGUMENTS): an i32 or f32 in its low 4 bytes, an i64 or f64 in all
// 8, little-endian. A Binder is made once per pool and entry: it turns every
// parameter into a setter that checks one value and stores it through a
// DataView fixed at the slot, so a run does no lookups of types or names
// beyond what the value itself needs.
//
// An array argument becomes its byte address in the memory:
//
//   * a typed array of this pool's heap (pool.empty, asarray, ...) or a view
//     inside one is passed as it is, with no copy;
//   * a typed array over an ordinary buffer is copied into a temporary block
//     for the run and, unless the parameter is a pointer to const, copied
//     back after it (with one console.warn per pool saying so);
//   * an array of another pool's memory, or of this memory outside a live
//     block (freed, or a view of the board or of pool.data()), is refused.
//
// The slots are written with plain stores by the thread that publishes the
// run; the publish's Atomics.add on GENERATION (sequentially consistent)
// orders them before every read by a worker that has seen the new
// generation.

import { describe, isTypedArray } from "./checks.mjs";
import { ARGUMENT_SLOT_BYTES, ARGUMENT_SLOTS, Control } from "./layout.mjs";

const F32_MAX = 3.4028234663852886e38;
const WASM_RANGES = {
  i32: [-(2 ** 31), 2 ** 32 - 1],
  i64: [-(2n ** 63n), 2n ** 64n - 1n],
};
const INTEGER_RANGES = {
  bool: [0, 1],
  int8: [-128, 127],
  uint8: [0, 255],
  int16: [-32768, 32767],
  uint16: [0, 65535],
  int32: [-(2 ** 31), 2 ** 31 - 1],
  uint32: [0, 2 ** 32 - 1],
  int64: [-(2n ** 63n), 2n ** 63n - 1n],
  uint64: [0n, 2n ** 64n - 1n],
};

/** A DataView over a pool's argument slots. */
export function argumentSlots(buffer, layout) {
  return new DataView(
    buffer,
    layout.controlOffset + Control.ARGUMENTS * 4,
    ARGUMENT_SLOTS * ARGUMENT_SLOT_BYTES,
  );
}

/**
 * What one run bound: the copies to finish and the heap blocks to keep from
 * reuse until it lands.
 */
export class Bound {
  constructor(arrays) {
    this.arrays = arrays;
    this.copies = [];
    this.blocks = [];
    /** The values, kept referenced (so never collected) while the run may use them. */
    this.values = null;
    this.first = null;
  }

  pin(block) {
    this.arrays.pin(block);
    this.blocks.push(block);
  }

  /** Copy the temporaries back into the arrays they stand for (not for const parameters). */
  finish() {
    for (const copy of this.copies) {
      if (copy.back) copy.original.set(copy.temporary);
    }
  }

  /** Give the temporaries and pins back to the heap: no worker uses them any more. */
  release() {
    const { heap } = this.arrays;
    for (const copy of this.copies) heap.free(copy.block);
    for (const block of this.blocks) this.arrays.unpin(block);
    this.copies = [];
    this.blocks = [];
    this.values = null;
  }
}

/** Checks and stores the arguments of one entry on one pool. */
export class Binder {
  #setters;
  #names;
  #arrays;
  #warnCopy;

  /**
   * @param {import("./entries.mjs").Entry} entry
   * @param {DataView} slots see argumentSlots
   * @param {import("./heap.mjs").HeapArrays} arrays
   * @param {(nbytes: number) => void} warnCopy called for each copy made
   */
  constructor(entry, slots, arrays, warnCopy) {
    this.entry = entry;
    this.#arrays = arrays;
    this.#warnCopy = warnCopy;
    this.#setters = entry.params.map((p, j) => this.#setter(j * ARGUMENT_SLOT_BYTES, p, slots));
    this.#names = entry.typed ? new Map(entry.params.map((p, j) => [p.name, j])) : null;
  }

  #fail(param, ErrorClass, what) {
    return new ErrorClass(`${this.entry.name}: argument '${param.name}' (${param}) ${what}`);
  }

  #setter(offset, p, slots) {
    if (p.pointer) return this.#pointerSetter(p, offset, slots);
    if (p.ctype === null && p.wasmType === "i32") {
      // Untyped: an address or a number, the wasm types cannot say which.
      const asPointer = this.#pointerSetter(p, offset, slots);
      const asInt = this.#intSetter(p, offset, slots);
      return (value, bound) => (isTypedArray(value) ? asPointer(value, bound) : asInt(value));
    }
    if (p.wasmType === "f32" || p.wasmType === "f64") return this.#floatSetter(p, offset, slots);
    return this.#intSetter(p, offset, slots);
  }

  #intSetter(p, offset, slots) {
    const wide = p.wasmType === "i64";
    const [low, high] = p.dtype !== null ? INTEGER_RANGES[p.dtype] : WASM_RANGES[p.wasmType];
    const acceptsBool = p.dtype === "bool";
    const what =
      p.ctype === null && p.wasmType === "i32" ? "an integer or a typed array" : "an integer";
    return (value) => {
      if (typeof value === "boolean" && acceptsBool) value = Number(value);
      const isNumber = typeof value === "number" && Number.isInteger(value);
      if (!isNumber && typeof value !== "bigint") {
        throw this.#fail(p, TypeError, `must be ${what} (got ${describe(value)})`);
      }
      if (wide) {
        const big = BigInt(value);
        if (big < low || big > high) {
          throw this.#fail(p, RangeError, `must be in [${low}, ${high}] (got ${describe(value)})`);
        }
        slots.setBigUint64(offset, BigInt.asUintN(64, big), true);
      } else {
        const number = Number(value);
        if (!(number >= low && number <= high)) {
          throw this.#fail(p, RangeError, `must be in [${low}, ${high}] (got ${describe(value)})`);
        }
        slots.setUint32(offset, number >>> 0, true);
      }
      return null;
    };
  }

  #floatSetter(p, offset, slots) {
    const single = p.wasmType === "f32";
    return (value) => {
      if (typeof value === "bigint") {
        const number = Number(value);
        if (!Number.isFinite(number)) {
          throw this.#fail(p, RangeError, `must fit a float64 (got ${describe(value)})`);
        }
        value = number;
      } else if (typeof value !== "number") {
        throw this.#fail(p, TypeError, `must be a number (got ${describe(value)})`);
      }
      if (single) {
        if (Math.abs(value) > F32_MAX && Number.isFinite(value)) {
          throw this.#fail(
            p,
            RangeError,
            `must fit a float32, at most ${F32_MAX.toPrecision(6)} (got ${value})`,
          );
        }
        slots.setFloat32(offset, value, true);
      } else {
        slots.setFloat64(offset, value, true);
      }
      return null;
    };
  }

  #pointerSetter(p, offset, slots) {
    const arrays = this.#arrays;
    const Wanted = p.array;
    // A uint8_t * also takes the bytes of a canvas (ImageData's array).
    const accepts =
      Wanted === null
        ? isTypedArray
        : Wanted === Uint8Array
          ? (v) => v instanceof Uint8Array || v instanceof Uint8ClampedArray
          : (v) => v instanceof Wanted;
    const expected = Wanted === null ? "a typed array" : `a ${Wanted.name}`;
    return (value, bound) => {
      if (!isTypedArray(value) || !accepts(value)) {
        throw this.#fail(p, TypeError, `must be ${expected} (got ${describe(value)})`);
      }
      let block;
      try {
        block = arrays.locate(value);
      } catch (err) {
        throw this.#fail(p, RangeError, err.message);
      }
      if (block === null) {
        slots.setUint32(offset, this.#copyIn(p, value, bound), true);
        return value.length;
      }
      if (!block.live) throw this.#fail(p, RangeError, "was freed with pool.free");
      if (block.fill !== null) arrays.refill(block);
      bound.pin(block);
      slots.setUint32(offset, value.byteOffset, true);
      return value.length;
    };
  }

  #copyIn(p, value, bound) {
    // May grow the memory (no run is in flight while a run binds), or throw OutOfMemory.
    const temporary = this.#arrays.temporary(value.constructor, value.length);
    temporary.array.set(value);
    bound.copies.push({
      original: value,
      temporary: temporary.array,
      block: temporary.block,
      back: !p.const,
    });
    this.#warnCopy(value.byteLength);
    return temporary.block.start;
  }

  /**
   * Check and store the arguments, by position (an array) or by name (an
   * object); return what the run must finish and release.
   *
   * @param {unknown[] | Record<string, unknown>} args
   * @returns {Bound} with `first`, the first array argument's length (or null)
   * @throws {TypeError} a wrong count, an unknown name, a value of the wrong type
   * @throws {RangeError} a value out of range, or an array that cannot be passed
   */
  bind(args) {
    const ordered = Array.isArray(args) ? args : this.#order(args);
    const count = this.#setters.length;
    if (ordered.length !== count) {
      throw new TypeError(
        `${this.entry.name} takes ${count} argument(s) after runId (${this.entry}) ` +
          `(got ${ordered.length})`,
      );
    }
    const bound = new Bound(this.#arrays);
    try {
      for (let j = 0; j < count; j++) {
        const length = this.#setters[j](ordered[j], bound);
        if (bound.first === null && length !== null) bound.first = length;
      }
    } catch (err) {
      bound.release();
      throw err;
    }
    bound.values = ordered;
    return bound;
  }

  #order(named) {
    const entry = this.entry;
    const keys = Object.keys(named);
    if (this.#names === null) {
      throw new TypeError(
        `${entry.name} takes its arguments by position only: the module does not record ` +
          `its parameter names (got names ${keys.sort().join(", ")})`,
      );
    }
    const ordered = new Array(this.#setters.length);
    const given = new Array(this.#setters.length).fill(false);
    for (const name of keys) {
      const j = this.#names.get(name);
      if (j === undefined) {
        throw new TypeError(
          `${entry.name} has no parameter '${name}' (${entry}); argument names must name one`,
        );
      }
      ordered[j] = named[name];
      given[j] = true;
    }
    const absent = entry.params.filter((_, j) => !given[j]).map((p) => `'${p.name}'`);
    if (absent.length) {
      throw new TypeError(`${entry.name} is missing argument(s) [${absent.join(", ")}] (${entry})`);
    }
    return ordered;
  }
}
