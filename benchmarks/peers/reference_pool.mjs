// The reference design's pool, on worker_threads: one INIT message per
// worker (module + memory + index + count), a READY back from each, then per
// run one RUN message to every worker and one DONE message back from each.
// A worker also stores 0 in its status slot when it starts and 1 (with an
// Atomics.notify) when it is done, as in the reference.
//
// This file is both the main-thread API and the worker script.

import { Worker, isMainThread, parentPort } from 'node:worker_threads';
import { STATUS_BYTE_OFFSET, importsFor, layoutFor, partition } from './layout.mjs';

export class ReferencePool {
  // call: { entry, args }, the export each worker calls and the arguments
  // after (start, end); default compute_partition, with none.
  static async create(module, memory, totalWorkers, call = {}) {
    const pool = new ReferencePool(memory, totalWorkers);
    pool.call = { entry: call.entry ?? 'compute_partition', args: call.args ?? [] };
    try {
      await pool.#start(module);
    } catch (err) {
      await Promise.all(pool.workers.map((w) => w.terminate()));
      throw err;
    }
    return pool;
  }

  constructor(memory, totalWorkers) {
    this.memory = memory;
    this.totalWorkers = totalWorkers;
    this.dataOffset = layoutFor(totalWorkers).dataOffset;
    this.workers = [];
    this.runs = 0;
    this.pending = 0;
    this.settle = null;
    this.error = null;
  }

  #start(module) {
    return new Promise((resolve, reject) => {
      let ready = 0;
      this.settle = { resolve: () => ++ready === this.totalWorkers && resolve(), reject };
      for (let workerIndex = 0; workerIndex < this.totalWorkers; workerIndex++) {
        const w = new Worker(new URL(import.meta.url));
        w.on('message', (data) => this.#onMessage(data));
        w.on('error', (err) => {
          this.error = err;
          this.settle?.reject(err);
        });
        w.postMessage({
          type: 'INIT',
          module,
          memory: this.memory,
          workerIndex,
          totalWorkers: this.totalWorkers,
          dataOffset: this.dataOffset,
          call: this.call,
        });
        this.workers.push(w);
      }
    });
  }

  #onMessage(data) {
    if (data.type === 'READY') {
      this.settle.resolve();
    } else if (data.type === 'DONE' && --this.pending === 0) {
      const { resolve } = this.settle;
      this.settle = null;
      resolve();
    }
  }

  // Resolves once every worker has posted DONE for this run.
  run(elements) {
    return new Promise((resolve, reject) => {
      if (this.error) return reject(this.error);
      this.pending = this.totalWorkers;
      this.settle = { resolve, reject };
      const runId = `batch-${++this.runs}`;
      for (const w of this.workers) w.postMessage({ type: 'RUN', runId, elements });
    });
  }

  grow(pages) {
    return this.memory.grow(pages);
  }

  async close() {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

if (!isMainThread) {
  let wasmMemory;
  let entry;
  let args;
  let workerIndex;
  let totalWorkers;
  let dataByteOffset;

  parentPort.on('message', async (data) => {
    if (data.type === 'INIT') {
      wasmMemory = data.memory;
      workerIndex = data.workerIndex;
      totalWorkers = data.totalWorkers;
      dataByteOffset = data.dataOffset;
      const imports = importsFor(data.module, wasmMemory, {
        data_offset: dataByteOffset,
        worker_index: workerIndex,
        total_workers: totalWorkers,
      });
      const instance = await WebAssembly.instantiate(data.module, imports);
      entry = instance.exports[data.call.entry];
      args = data.call.args;
      parentPort.postMessage({ type: 'READY', workerIndex });
    }

    if (data.type === 'RUN') {
      // A fresh view every run: the buffer object changes when the memory grows.
      const status = new Int32Array(wasmMemory.buffer, STATUS_BYTE_OFFSET, totalWorkers);
      Atomics.store(status, workerIndex, 0);
      const totalElements =
        data.elements ?? Math.floor((wasmMemory.buffer.byteLength - dataByteOffset) / 4);
      const [start, end] = partition(totalElements, totalWorkers, workerIndex);
      entry(start, end, ...args);
      Atomics.store(status, workerIndex, 1);
      Atomics.notify(status, workerIndex, 1);
      parentPort.postMessage({ type: 'DONE', runId: data.runId, workerIndex });
    }
  });
}
