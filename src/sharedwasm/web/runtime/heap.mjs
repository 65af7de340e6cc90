// The heap: typed arrays placed in a pool's data region, so that kernels use
// them in place; the mirror of sharedwasm/_heap.py.
//
// `pool.empty`, `zeros`, `full`, `emptyLike`, `asarray` and `partials`
// allocate a block here and return an ordinary typed array over the memory's
// SharedArrayBuffer. A block is ALIGN-byte aligned (any element type, and a
// cache line, so that two arrays never share one) and is freed at `free`, or
// once the typed array returned is garbage (a FinalizationRegistry, the
// JavaScript counterpart of the Python package's weak references). Views
// made of it (`subarray`, `new Float32Array(a.buffer, ...)`) do not keep
// it alive: a typed array knows its buffer, never the array it was cut from.
//
// The heap covers [dataOffset, byteLength) and grows with the memory. After
// a grow the memory's buffer is a new SharedArrayBuffer object and the old
// ones keep their old length, so every array is made over `memory.buffer`
// as it is at that moment.

import {
  checkConstructor,
  checkInteger,
  describe,
  isBigIntArray,
  isTypedArray,
} from "./checks.mjs";
import { DATA_ALIGN, alignUp } from "./layout.mjs";

export const ALIGN = DATA_ALIGN;

/** When the heap grows the memory it adds at least 1/GROWTH of its pages. */
export const GROWTH = 8;

export const PAGE_SIZE = 65536;

/** A value for a typed array's fill: a BigInt for a BigInt array given an integer. */
function fillValue(Ctor, value) {
  if (isBigIntArray(Ctor) && typeof value === "number" && Number.isInteger(value)) {
    return BigInt(value);
  }
  return value;
}

/** The first index of `sorted` whose value is >= `value`. */
function bisectLeft(sorted, value) {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid] < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The first index of `sorted` whose value is > `value`. */
function bisectRight(sorted, value) {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid] <= value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** One allocation: bytes [start, start + size) of the memory. */
export class Block {
  constructor(start, size) {
    this.start = start;
    this.size = size;
    this.live = true;
    /**
     * For `pool.partials`: `{Ctor, length, value}` written over the block
     * before each run it is passed to; null for an ordinary array.
     */
    this.fill = null;
    /** Runs in flight that use the block: it is not reused before they land. */
    this.pins = 0;
    /** Its array was collected while pinned: free it when the last pin goes. */
    this.orphaned = false;
  }

  toString() {
    return `<Block [${this.start}, ${this.start + this.size}) ${this.live ? "live" : "freed"}>`;
  }
}

/** A first-fit allocator with coalescing over [start, end) of one memory. */
export class Heap {
  constructor(start, end) {
    this.start = start;
    this.end = start;
    this.freeStarts = [];
    this.freeEnds = [];
    this.liveStarts = [];
    this.liveBlocks = new Map();
    this.extend(end);
  }

  #addFree(lo, hi) {
    const starts = this.freeStarts;
    const ends = this.freeEnds;
    let i = bisectLeft(starts, lo);
    // Coalesce with the free range just before and just after.
    if (i && ends[i - 1] === lo) {
      i -= 1;
      lo = starts[i];
      starts.splice(i, 1);
      ends.splice(i, 1);
    }
    if (i < starts.length && starts[i] === hi) {
      hi = ends[i];
      starts.splice(i, 1);
      ends.splice(i, 1);
    }
    starts.splice(i, 0, lo);
    ends.splice(i, 0, hi);
  }

  /** Take [this.end, end) into the heap (the memory grew to `end`). */
  extend(end) {
    if (end > this.end) {
      this.#addFree(this.end, end);
      this.end = end;
    }
  }

  /** Reserve `nbytes` (at least 1, rounded up to ALIGN); null if nothing fits now. */
  allocate(nbytes) {
    const size = alignUp(Math.max(nbytes, 1), ALIGN);
    const starts = this.freeStarts;
    const ends = this.freeEnds;
    for (let i = 0; i < starts.length; i++) {
      const lo = starts[i];
      const hi = ends[i];
      if (hi - lo >= size) {
        if (hi - lo === size) {
          starts.splice(i, 1);
          ends.splice(i, 1);
        } else {
          starts[i] = lo + size;
        }
        const block = new Block(lo, size);
        this.liveBlocks.set(lo, block);
        this.liveStarts.splice(bisectLeft(this.liveStarts, lo), 0, lo);
        return block;
      }
    }
    return null;
  }

  /** Bytes the heap must grow by at its end for `nbytes` to fit. */
  shortfall(nbytes) {
    return Math.max(0, alignUp(Math.max(nbytes, 1), ALIGN) - this.tailFree);
  }

  /** Bytes of the free range that ends where the heap ends (0 if the last block is live). */
  get tailFree() {
    const n = this.freeEnds.length;
    return n && this.freeEnds[n - 1] === this.end ? this.end - this.freeStarts[n - 1] : 0;
  }

  /** Return a live block to the heap at once; freeing a block twice does nothing. */
  free(block) {
    if (!block.live || this.liveBlocks.get(block.start) !== block) return;
    block.live = false;
    this.liveBlocks.delete(block.start);
    this.liveStarts.splice(bisectLeft(this.liveStarts, block.start), 1);
    this.#addFree(block.start, block.start + block.size);
  }

  /** Return the live block that holds bytes [start, start + nbytes), or null. */
  find(start, nbytes) {
    const i = bisectRight(this.liveStarts, start) - 1;
    if (i < 0) return null;
    const block = this.liveBlocks.get(this.liveStarts[i]);
    return start + nbytes <= block.start + block.size ? block : null;
  }

  /** Live and free ranges as [start, end] pairs in address order, for checks. */
  snapshot() {
    return {
      live: this.liveStarts.map((s) => [s, s + this.liveBlocks.get(s).size]),
      free: this.freeStarts.map((s, i) => [s, this.freeEnds[i]]),
    };
  }

  /** Bytes not allocated, in however many pieces. */
  get freeBytes() {
    return this.freeStarts.reduce((sum, s, i) => sum + this.freeEnds[i] - s, 0);
  }

  /** Bytes of the largest free range. */
  get largestFree() {
    return this.freeStarts.reduce((most, s, i) => Math.max(most, this.freeEnds[i] - s), 0);
  }
}

/**
 * Every SharedArrayBuffer object seen of a pool's memory, and that memory:
 * how an array of another pool's memory is told from an ordinary one.
 */
const memoryOfBuffer = new WeakMap();

/**
 * What a pool knows about the typed arrays of its heap: the block of each
 * array it handed out, and how to find the block of any other view of its
 * memory (a subarray) by address.
 */
export class HeapArrays {
  #memory;
  #known = new WeakMap();
  #registry;

  /**
   * @param {WebAssembly.Memory} memory
   * @param {Heap} heap
   * @param {(nbytes: number) => void} whenFull called when nothing fits: makes
   *   room (grows the memory) or throws
   */
  constructor(memory, heap, whenFull) {
    this.#memory = memory;
    this.heap = heap;
    this.whenFull = whenFull;
    // Runs between tasks on the pool's thread, never inside an allocation.
    this.#registry = new FinalizationRegistry((block) => this.release(block));
    this.buffer();
  }

  /** The memory's buffer now, remembered as one of this memory's. */
  buffer() {
    const buffer = this.#memory.buffer;
    memoryOfBuffer.set(buffer, this.#memory);
    return buffer;
  }

  /** Let go of a block whose array was collected; a pinned one goes when its run lands. */
  release(block) {
    if (block.pins) block.orphaned = true;
    else this.heap.free(block);
  }

  pin(block) {
    block.pins += 1;
  }

  unpin(block) {
    block.pins -= 1;
    if (!block.pins && block.orphaned) this.heap.free(block);
  }

  /** Reserve `nbytes`, making room when the heap is full (see the constructor). */
  allocate(nbytes) {
    const heap = this.heap;
    // A kernel or pool.grow may have grown the memory since.
    heap.extend(this.#memory.buffer.byteLength);
    let block = heap.allocate(nbytes);
    if (block === null) {
      this.whenFull(nbytes);
      heap.extend(this.#memory.buffer.byteLength);
      block = heap.allocate(nbytes);
    }
    return block;
  }

  /** A new array of `length` elements over a new block; its block is freed with it. */
  make(Ctor, length) {
    const block = this.allocate(length * Ctor.BYTES_PER_ELEMENT);
    const array = new Ctor(this.buffer(), block.start, length);
    this.#known.set(array, block);
    this.#registry.register(array, block);
    return array;
  }

  /** A run's copy of an ordinary array: freed by the run, never by the collector. */
  temporary(Ctor, length) {
    const block = this.allocate(length * Ctor.BYTES_PER_ELEMENT);
    return { block, array: new Ctor(this.buffer(), block.start, length) };
  }

  /** The block of an array this heap handed out, or undefined. */
  known(array) {
    return this.#known.get(array);
  }

  /**
   * Return the block holding `array`: null for an ordinary array (not in
   * any pool's memory), which a run copies in.
   *
   * @throws {RangeError} the array is in another pool's memory, or in this
   *   one but not inside a live block of the heap; the message says which
   */
  locate(array) {
    const hit = this.#known.get(array);
    if (hit !== undefined) return hit;
    const buffer = array.buffer;
    if (!(buffer instanceof SharedArrayBuffer)) return null;
    this.buffer();
    const memory = memoryOfBuffer.get(buffer);
    if (memory === undefined) return null;
    if (memory !== this.#memory) throw new RangeError("is an array of another sharedwasm memory");
    const block = this.heap.find(array.byteOffset, array.byteLength);
    if (block === null) {
      throw new RangeError(
        `lies at byte ${array.byteOffset} of the pool's memory but not inside a live array of ` +
          "its heap (freed with pool.free, or a view of pool.data() or of the board): " +
          "allocate it with pool.empty, zeros, full or asarray",
      );
    }
    return block;
  }

  // -- the pool's array constructors (see WorkerPool.empty and the others) --

  empty(Ctor, length) {
    checkConstructor("Ctor", Ctor);
    checkInteger("length", length, 0, Infinity);
    return this.make(Ctor, length);
  }

  full(Ctor, length, value) {
    return this.empty(Ctor, length).fill(fillValue(Ctor, value));
  }

  /** The type and length of an array like `prototype` (of type `Ctor` when given). */
  like(prototype, Ctor) {
    if (!isTypedArray(prototype) && !Array.isArray(prototype)) {
      throw new TypeError(
        `prototype must be a typed array or an Array (got ${describe(prototype)})`,
      );
    }
    const type = Ctor ?? (isTypedArray(prototype) ? prototype.constructor : Float64Array);
    return { type, length: prototype.length };
  }

  asarray(a, Ctor) {
    if (Ctor !== undefined) checkConstructor("Ctor", Ctor);
    if (isTypedArray(a) && (Ctor === undefined || a.constructor === Ctor)) {
      const block = this.#known.get(a);
      if (block !== undefined && block.live) return a;
    }
    let source;
    if (isTypedArray(a) || Array.isArray(a)) source = a;
    else if (a !== null && typeof a === "object" && Symbol.iterator in a) source = Array.from(a);
    else throw new TypeError(`a must be a typed array or an array (got ${describe(a)})`);
    const type =
      Ctor ??
      (isTypedArray(source)
        ? source.constructor
        : typeof source[0] === "bigint"
          ? BigInt64Array
          : Float64Array);
    const array = this.empty(type, source.length);
    const big = isBigIntArray(type);
    if (isTypedArray(source) && big === isBigIntArray(source.constructor)) {
      array.set(source);
    } else {
      // Between BigInts and numbers a typed array's set() converts nothing.
      for (let i = 0; i < source.length; i++) {
        array[i] = big ? BigInt(source[i]) : Number(source[i]);
      }
    }
    return array;
  }

  partials(Ctor, workers, fill) {
    checkConstructor("Ctor", Ctor);
    const value = fillValue(Ctor, fill);
    const array = this.empty(Ctor, workers).fill(value);
    this.#known.get(array).fill = { Ctor, length: workers, value };
    return array;
  }

  free(a, poolName) {
    if (!isTypedArray(a)) {
      throw new TypeError(`a must be a typed array of the pool's heap (got ${describe(a)})`);
    }
    let block;
    try {
      block = this.locate(a);
    } catch (err) {
      throw new RangeError(`a must be an array of ${poolName}'s heap: it ${err.message}`);
    }
    if (block === null) {
      throw new RangeError(`a must be an array of ${poolName}'s heap (got ${describe(a)})`);
    }
    this.heap.free(block);
  }

  /** Write a partials block's fill value over all of it (see `pool.partials`). */
  refill(block) {
    const { Ctor, length, value } = block.fill;
    new Ctor(this.buffer(), block.start, length).fill(value);
  }
}

/**
 * Grow `memory` so that `nbytes` fit at the heap's end, by at least 1/GROWTH
 * of its pages, within `maximum` (null when the memory does not show it: then
 * as far as the engine allows). Returns null when it cannot; otherwise the
 * pages it added.
 */
export function growFor(memory, heap, nbytes, maximum) {
  const pages = memory.buffer.byteLength / PAGE_SIZE;
  const needed = Math.ceil(heap.shortfall(nbytes) / PAGE_SIZE);
  const room = maximum === null ? Infinity : maximum - pages;
  if (needed > room) return null;
  const wanted = Math.min(room, Math.max(needed, Math.floor(pages / GROWTH)));
  for (const delta of wanted > needed ? [wanted, needed] : [needed]) {
    try {
      memory.grow(delta);
      return delta;
    } catch (err) {
      // Past the memory's hidden maximum (or out of address space): the
      // engine's RangeError; try the smallest grow that would do.
      if (!(err instanceof RangeError)) throw err;
    }
  }
  return null;
}
