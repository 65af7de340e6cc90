// What a run and a pool report, the mirror of sharedwasm/_results.py: a run's
// result `{runId, elapsed, done}` with one `{workerIndex, start, end,
// elapsed, elements, chunks}` per worker, and `statistics()`'s snapshot.
// Each is a frozen plain object; times are in seconds.

import { RECORD_BYTES, Record } from "./layout.mjs";

/** Dispatch-latency samples kept for statistics(). */
export const LATENCY_WINDOW = 1024;

const WORDS32 = RECORD_BYTES / 4;
const WORDS64 = RECORD_BYTES / 8;

/**
 * Read what every worker reported in its record for the last run.
 *
 * @param {Uint32Array} rec32 the records as u32 words (element indices are unsigned)
 * @param {BigInt64Array} rec64 the records as i64 words
 * @param {number} workers
 * @returns {Readonly<{workerIndex: number, start: number, end: number, elapsed: number,
 *   elements: number, chunks: number}>[]}
 */
export function readDone(rec32, rec64, workers) {
  return Array.from({ length: workers }, (_, i) => {
    const b32 = i * WORDS32;
    const b64 = i * WORDS64;
    const ns = rec64[b64 + Record.T_END / 8] - rec64[b64 + Record.T_START / 8];
    return Object.freeze({
      workerIndex: i,
      start: rec32[b32 + Record.START / 4],
      end: rec32[b32 + Record.END / 4],
      elapsed: Number(ns) * 1e-9,
      elements: rec32[b32 + Record.ELEMENTS / 4],
      chunks: rec32[b32 + Record.CHUNKS / 4],
    });
  });
}

/** The result of pool.run. */
export function runResult(runId, elapsed, done) {
  return Object.freeze({ runId, elapsed, done: Object.freeze(done) });
}

/** The figures of a pool's successful runs, kept for statistics(). */
export class Statistics {
  constructor(workers) {
    this.workers = workers;
    this.runs = 0;
    this.busy = new Array(workers).fill(0);
    this.elements = new Array(workers).fill(0);
    this.latencies = [];
  }

  /**
   * Count one run: its `done` and each worker's dispatch latency, from the
   * publish time to the wall-clock time the worker saw the run (in ns).
   */
  add(done, publishedNs, wakeNs) {
    this.runs += 1;
    for (const d of done) {
      this.busy[d.workerIndex] += d.elapsed;
      this.elements[d.workerIndex] += d.elements;
    }
    for (const wake of wakeNs) {
      // Each worker's clock is its own timeOrigin plus its own now(): they
      // agree to a few microseconds, so a latency below that reads as 0.
      const ns = wake - publishedNs;
      this.latencies.push(ns > 0n ? Number(ns) * 1e-9 : 0);
    }
    const extra = this.latencies.length - LATENCY_WINDOW;
    if (extra > 0) this.latencies.splice(0, extra);
  }

  /**
   * A frozen snapshot: `{workers, runs, busy, elements,
   * dispatchLatencyMedian, dispatchLatencyP99}`; the latencies are null
   * before any sample.
   */
  snapshot() {
    const samples = [...this.latencies].sort((a, b) => a - b);
    const n = samples.length;
    let median = null;
    let p99 = null;
    if (n) {
      const mid = n >> 1;
      median = n % 2 ? samples[mid] : (samples[mid - 1] + samples[mid]) / 2;
      p99 = samples[Math.min(n - 1, Math.floor(0.99 * n))];
    }
    return Object.freeze({
      workers: this.workers,
      runs: this.runs,
      busy: Object.freeze([...this.busy]),
      elements: Object.freeze([...this.elements]),
      dispatchLatencyMedian: median,
      dispatchLatencyP99: p99,
    });
  }
}
