// The memory layout and kernel imports the Node peers share with sharedwasm,
// so that one kernel sees the same addresses in Node and in Python:
//
//   0 ........ 4N    status board, one int32 per worker
//   align64(4N)      control block, 16 int32 (only the Atomics peer uses it)
//   data_offset      data region = align64(align64(4N) + 64)

export const STATUS_BYTE_OFFSET = 0;
export const CONTROL_WORDS = 16;

// Control words, the same indices as sharedwasm's control block.
export const GENERATION = 0;
export const COMMAND = 1;
export const ELEMENTS = 2;
export const PENDING = 4;

// A status slot's value when the worker's compute_partition threw.
export const TRAPPED = -1;

export const RUN = 1;
export const EXIT = 2;

export const align64 = (n) => (n + 63) & ~63;

export function layoutFor(totalWorkers) {
  const controlOffset = align64(STATUS_BYTE_OFFSET + 4 * totalWorkers);
  return { controlOffset, dataOffset: align64(controlOffset + 4 * CONTROL_WORDS) };
}

// The reference partitioning: chunk = ceil(total / N), with start clamped to
// total so that a worker past the end gets an empty range, never a negative one.
export function partition(total, totalWorkers, workerIndex) {
  const chunk = Math.ceil(total / totalWorkers);
  const start = Math.min(workerIndex * chunk, total);
  return [start, Math.min(start + chunk, total)];
}

// The imports a kernel asks for: env.memory, plus whichever of the immutable
// i32 globals env.data_offset / env.worker_index / env.total_workers it imports.
export function importsFor(module, memory, globals) {
  const env = { memory };
  for (const { module: from, name, kind } of WebAssembly.Module.imports(module)) {
    if (from === 'env' && kind === 'global' && name in globals) {
      env[name] = new WebAssembly.Global({ value: 'i32', mutable: false }, globals[name]);
    }
  }
  return { env };
}
