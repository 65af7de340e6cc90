// The Atomics-only pool: after INIT/READY no message is posted per run.
// Workers park in Atomics.wait on the GENERATION word of the control block;
// the main thread writes the run's parameters, bumps GENERATION and notifies.
// Each worker stores its status slot, then decrements PENDING, and the one
// that takes it to 0 notifies the main thread, which parks in Atomics.wait
// on PENDING. This is the protocol sharedwasm's own pool uses.
//
// This file is both the main-thread API and the worker script.

import { Worker, isMainThread, parentPort } from 'node:worker_threads';
import {
  COMMAND,
  CONTROL_WORDS,
  ELEMENTS,
  EXIT,
  GENERATION,
  PENDING,
  RUN,
  STATUS_BYTE_OFFSET,
  TRAPPED,
  importsFor,
  layoutFor,
  partition,
} from './layout.mjs';

export class AtomicsPool {
  // call: { entry, args }, the export each worker calls and the arguments
  // after (start, end); default compute_partition, with none.
  static async create(module, memory, totalWorkers, call = {}) {
    const pool = new AtomicsPool(memory, totalWorkers);
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
    const { controlOffset, dataOffset } = layoutFor(totalWorkers);
    this.memory = memory;
    this.totalWorkers = totalWorkers;
    this.dataOffset = dataOffset;
    // The board and control block sit below the data region, so these views
    // stay valid after a grow (a grown shared buffer keeps its old bytes).
    this.status = new Int32Array(memory.buffer, STATUS_BYTE_OFFSET, totalWorkers);
    this.control = new Int32Array(memory.buffer, controlOffset, CONTROL_WORDS);
    this.control.fill(0);
    this.status.fill(0);
    this.controlOffset = controlOffset;
    this.workers = [];
  }

  #start(module) {
    return new Promise((resolve, reject) => {
      let ready = 0;
      for (let workerIndex = 0; workerIndex < this.totalWorkers; workerIndex++) {
        const w = new Worker(new URL(import.meta.url));
        w.once('message', () => ++ready === this.totalWorkers && resolve());
        w.on('error', reject);
        w.postMessage({
          type: 'INIT',
          module,
          memory: this.memory,
          workerIndex,
          totalWorkers: this.totalWorkers,
          dataOffset: this.dataOffset,
          call: this.call,
          controlOffset: this.controlOffset,
        });
        this.workers.push(w);
      }
    });
  }

  #publish(command) {
    Atomics.store(this.control, COMMAND, command);
    // The GENERATION bump publishes everything stored before it.
    Atomics.add(this.control, GENERATION, 1);
    Atomics.notify(this.control, GENERATION);
  }

  // Blocks the main thread until every worker has finished the run.
  run(elements) {
    const c = this.control;
    for (let i = 0; i < this.totalWorkers; i++) Atomics.store(this.status, i, 0);
    Atomics.store(c, ELEMENTS, elements);
    Atomics.store(c, PENDING, this.totalWorkers);
    this.#publish(RUN);
    let pending;
    while ((pending = Atomics.load(c, PENDING)) !== 0) Atomics.wait(c, PENDING, pending);
    for (let i = 0; i < this.totalWorkers; i++) {
      if (Atomics.load(this.status, i) === TRAPPED) throw new Error(`worker ${i} trapped`);
    }
  }

  grow(pages) {
    return this.memory.grow(pages);
  }

  async close() {
    this.#publish(EXIT);
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

if (!isMainThread) {
  parentPort.once('message', (data) => {
    const { memory, workerIndex, totalWorkers } = data;
    const instance = new WebAssembly.Instance(
      data.module,
      importsFor(data.module, memory, {
        data_offset: data.dataOffset,
        worker_index: workerIndex,
        total_workers: totalWorkers,
      }),
    );
    const entry = instance.exports[data.call.entry];
    const args = data.call.args;
    const status = new Int32Array(memory.buffer, STATUS_BYTE_OFFSET, totalWorkers);
    const c = new Int32Array(memory.buffer, data.controlOffset, CONTROL_WORDS);
    parentPort.postMessage({ type: 'READY', workerIndex });

    // The main thread zeroed GENERATION before starting any worker, so 0 is
    // the baseline; a bump that lands before the first wait makes that wait
    // return "not-equal" at once, so no run can be missed.
    let seen = 0;
    for (;;) {
      Atomics.wait(c, GENERATION, seen);
      const generation = Atomics.load(c, GENERATION);
      if (generation === seen) continue;
      seen = generation;
      if (Atomics.load(c, COMMAND) === EXIT) break;
      Atomics.store(status, workerIndex, 0);
      const [start, end] = partition(Atomics.load(c, ELEMENTS) >>> 0, totalWorkers, workerIndex);
      let outcome = 1;
      try {
        entry(start, end, ...args);
      } catch (err) {
        // Count the worker out anyway, or the main thread would wait forever.
        outcome = TRAPPED;
        process.stderr.write(`worker ${workerIndex}: ${err?.stack ?? err}\n`);
      }
      Atomics.store(status, workerIndex, outcome);
      Atomics.notify(status, workerIndex, 1);
      // Status first, then PENDING: when the main thread sees 0, every slot
      // reads 1 and every byte the kernel wrote is visible.
      if (Atomics.sub(c, PENDING, 1) === 1) Atomics.notify(c, PENDING);
    }
    parentPort.close();
  });
}
