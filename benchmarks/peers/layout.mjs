// The memory layout and kernel imports the Node peers share with sharedwasm.
// The word indices and values come from sharedwasm's own generated layout
// module; the placement is the peers' own, smaller one (no worker records):
//
//   0 ........ 4N    status board, one int32 per worker
//   align64(4N)      control block, CONTROL_WORDS int32 (only the Atomics peer uses it)
//   data_offset      data region = align64(align64(4N) + 4 * CONTROL_WORDS)

import { CONTROL_WORDS, Command, Control, Status } from '../../src/sharedwasm/web/runtime/layout.mjs';

export { CONTROL_WORDS };
export const STATUS_BYTE_OFFSET = 0;
export const { GENERATION, COMMAND, ELEMENTS, PENDING } = Control;
// A status slot's value when the worker's entry threw.
export const { TRAPPED } = Status;
export const { RUN, EXIT } = Command;

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
