// Times one of the Node peer pools running a kernel, for comparison with
// sharedwasm. Prints one JSON line on stdout:
//
//   node bench.mjs --peer reference|atomics --wasm kernel.wasm --workers N
//       --pages P --maximum M [--grow G] [--elements E] --runs R --warmup W
//       [--idle-ms MS] [--input FILE] [--check-offset BYTES --check-count K]
//       [--dump FILE] [--entry EXPORT --args JSON]
//
// --entry names the function the workers call (default compute_partition),
// with (start, end, ...args); --args is a JSON list whose numbers are passed
// as they are and whose {"offset": BYTES} items become the address of that
// byte of the data region (an array the input put there).
// --input copies a file to the data region, then one untimed run computes
// the output, which is summed for the checksum and written to --dump; the
// checked output is K float32 at data_offset + BYTES (default: the elements).
// Each timed run spans from posting the run to seeing it complete, with
// process.hrtime.bigint(); the idle pause between runs (--idle-ms) is not timed.

import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { AtomicsPool } from './atomics_pool.mjs';
import { layoutFor } from './layout.mjs';
import { ReferencePool } from './reference_pool.mjs';

const PEERS = { reference: ReferencePool, atomics: AtomicsPool };

const { values: opt } = parseArgs({
  options: {
    peer: { type: 'string' },
    wasm: { type: 'string' },
    workers: { type: 'string', default: '1' },
    pages: { type: 'string', default: '1' },
    maximum: { type: 'string', default: '16' },
    grow: { type: 'string', default: '0' },
    elements: { type: 'string' },
    runs: { type: 'string', default: '100' },
    warmup: { type: 'string', default: '10' },
    'idle-ms': { type: 'string', default: '0' },
    input: { type: 'string' },
    'check-offset': { type: 'string', default: '0' },
    'check-count': { type: 'string' },
    dump: { type: 'string' },
    entry: { type: 'string', default: 'compute_partition' },
    args: { type: 'string', default: '[]' },
  },
  strict: true,
});

const int = (name) => {
  const v = Number(opt[name]);
  if (!Number.isInteger(v) || v < 0) throw new TypeError(`--${name} must be an integer >= 0 (got ${opt[name]})`);
  return v;
};

// Sums float32 values into a double in index order, like the Python side.
function sum(view, from, to) {
  let s = 0;
  for (let i = from; i < to; i++) s += view[i];
  return s;
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

// Sleeps without spinning and without returning to the event loop.
const idleWord = new Int32Array(new SharedArrayBuffer(4));
const idle = (ms) => Atomics.wait(idleWord, 0, 0, ms);

async function main() {
  const Pool = PEERS[opt.peer];
  if (!Pool) throw new TypeError(`--peer must be one of ${Object.keys(PEERS)} (got ${opt.peer})`);
  const workers = int('workers');
  const runs = int('runs');
  const warmup = int('warmup');
  const idleMs = int('idle-ms');

  const module = await WebAssembly.compile(readFileSync(opt.wasm));
  const memory = new WebAssembly.Memory({
    initial: int('pages'),
    maximum: int('maximum'),
    shared: true,
  });
  const { dataOffset } = layoutFor(workers);
  const args = JSON.parse(opt.args).map((a) => (typeof a === 'number' ? a : dataOffset + a.offset));
  const t0 = process.hrtime.bigint();
  const pool = await Pool.create(module, memory, workers, { entry: opt.entry, args });
  const startupMs = Number(process.hrtime.bigint() - t0) / 1e6;
  try {
    if (int('grow')) pool.grow(int('grow'));
    const capacity = Math.floor((memory.buffer.byteLength - pool.dataOffset) / 4);
    const elements = opt.elements === undefined ? capacity : int('elements');

    const result = { peer: opt.peer, workers, elements, pages: memory.buffer.byteLength / 65536 };
    result.data_offset = pool.dataOffset;
    result.startup_ms = startupMs;

    if (opt.input !== undefined) {
      const input = readFileSync(opt.input);
      new Uint8Array(memory.buffer, pool.dataOffset, input.length).set(input);
      await pool.run(elements);
      const count = opt['check-count'] === undefined ? elements : int('check-count');
      const out = new Float32Array(memory.buffer, pool.dataOffset + int('check-offset'), count);
      result.checksum = {
        head: sum(out, 0, Math.min(1000, count)),
        tail: sum(out, Math.max(0, count - 1000), count),
      };
      if (opt.dump !== undefined) writeFileSync(opt.dump, new Uint8Array(out.slice().buffer));
    }

    for (let i = 0; i < warmup; i++) await pool.run(elements);
    const durations = [];
    for (let i = 0; i < runs; i++) {
      if (idleMs) idle(idleMs);
      const start = process.hrtime.bigint();
      await pool.run(elements);
      durations.push(Number(process.hrtime.bigint() - start) / 1e3);
    }
    const sorted = [...durations].sort((a, b) => a - b);
    if (runs) {
      const mid = sorted.length >> 1;
      result.median_us = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
      result.p99_us = quantile(sorted, 0.99);
    }
    result.durations_us = durations;
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } finally {
    await pool.close();
  }
}

main().catch((err) => {
  process.stderr.write(`${err?.stack ?? err}\n`);
  process.exitCode = 1;
});
