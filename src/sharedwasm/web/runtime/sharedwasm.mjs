// The JavaScript runtime's public API: run WebAssembly kernels on a pool of
// workers (Web Workers in a browser, worker_threads under Node) over one
// shared WebAssembly memory, with the Python package's memory layout, run
// protocol, entries and errors, so the same kernels give the same bytes on
// both sides.
//
//   const pool = await createPool({ url: "/saxpy.wasm" });   // memory grows as needed
//   const x = pool.asarray(input, Float32Array);              // in the shared memory
//   const y = pool.zeros(Float32Array, x.length);
//   await pool.run("step", { args: [2.0, x, y], entry: "saxpy" });
//   await pool.close();
//
// This module only re-exports; the runtime is split as the Python package is:
//
//   pool.mjs       createPool, WorkerPool: the pool and its run protocol
//   lifecycle.mjs  pagesNeeded, the layout and memory of a pool, its workers' start
//   kernel.mjs     loading, compiling and checking a kernel module
//   entries.mjs    which exports are entries, and their parameters
//   arguments.mjs  a run's arguments into the control block's slots
//   heap.mjs       typed arrays placed in the pool's memory
//   results.mjs    run results and statistics
//   errors.mjs     the error classes, with the Python package's names
//   layout.mjs     the memory layout (generated from _layout.py)
//   binary.mjs     a reader of what a module's bytes say
//   worker.mjs     the worker's side of the protocol

export * from "./errors.mjs";
export {
  ARGUMENT_SLOTS,
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
export { Entry, Param } from "./entries.mjs";
export { AUTO_MEMORY_DATA, pagesNeeded } from "./lifecycle.mjs";
export { WorkerPool, createPool } from "./pool.mjs";
