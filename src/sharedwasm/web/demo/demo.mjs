// The demo page: the reference scenario in the browser. Everything it shows is
// measured here, in this page; window.sharedwasmDemo keeps it for inspection.
import { createPool } from "/_sharedwasm/sharedwasm.mjs";
import { Status } from "/_sharedwasm/layout.mjs";

const PAGES = 128; // 8 MiB now
const MAXIMUM = 512; // 32 MiB ceiling
const ELEMENTS = 1_000_000; // 4 MB of float32 input
const COPY_BYTES = 10 * 1024 * 1024;
const KERNEL_URL = "/_sharedwasm/kernels/map_f32.wasm";

const demo = { state: "loading", error: null, done: null, compare: [], board: [] };
window.sharedwasmDemo = demo;

const $ = (selector) => document.querySelector(selector);
const statusName = new Map(Object.entries(Status).map(([name, value]) => [value, name.toLowerCase()]));

function setState(state) {
  demo.state = state;
  document.body.dataset.state = state;
}

function drawBoard(status) {
  const board = $("#board");
  if (board.children.length !== status.length) {
    board.replaceChildren(...Array.from(status, () => document.createElement("span")));
  }
  const values = Array.from(status, (_, i) => Atomics.load(status, i));
  values.forEach((value, i) => {
    const cell = board.children[i];
    const name = statusName.get(value) ?? "unknown";
    cell.className = `slot ${name}`;
    cell.textContent = `w${i}: ${value}`;
  });
  return values;
}

function row(table, cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    td.textContent = cell;
    tr.append(td);
  }
  $(`${table} tbody`).append(tr);
}

// A copy round trip of `bytes` through a worker, as copy-based pools do it.
async function copyRoundTrip(bytes) {
  const worker = new Worker(new URL("./echo-worker.mjs", import.meta.url), { type: "module" });
  const payload = new Uint8Array(bytes).fill(7);
  const echo = () => new Promise((resolve) => {
    worker.onmessage = (event) => resolve(event.data);
    worker.postMessage(payload);
  });
  await echo(); // warm-up: the worker has started and compiled its handler
  const t0 = performance.now();
  const back = await echo();
  const ms = performance.now() - t0;
  worker.terminate();
  if (back.byteLength !== bytes) throw new Error("the echo worker lost bytes");
  return ms;
}

async function main() {
  const workers = navigator.hardwareConcurrency || 2;
  $("#workers").textContent = String(workers);
  const isolation = $("#isolation");
  isolation.textContent = `crossOriginIsolated: ${globalThis.crossOriginIsolated}`;
  isolation.className = globalThis.crossOriginIsolated ? "ok" : "";

  const pool = await createPool({ url: KERNEL_URL, memory: { initial: PAGES, maximum: MAXIMUM }, workers });
  demo.pool = pool;
  const data = pool.data(Float32Array).subarray(0, ELEMENTS);
  data.fill(Math.PI);
  drawBoard(pool.status);

  // Redraw the board every frame while the run is in flight.
  let drawing = true;
  const frame = () => {
    demo.board.push(drawBoard(pool.status));
    if (drawing) requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
  const result = await pool.run("batch-1", { elements: ELEMENTS });
  drawing = false;
  const final = drawBoard(pool.status);
  demo.board.push(final);
  demo.done = result.done;

  for (const d of result.done) {
    row("#done", [`w${d.workerIndex}`, `DONE ${result.runId}`, d.start, d.end, d.end - d.start, (d.elapsed * 1e3).toFixed(3)]);
  }
  const x = Math.fround(Math.PI);
  const expected = Math.fround(Math.fround(Math.fround(x * x) * 0.25) + Math.fround(Math.sqrt(x)));
  const out = pool.data(Float32Array).subarray(0, ELEMENTS);
  const wrong = out.findIndex((v) => v !== expected);
  demo.correct = wrong === -1;
  $("#summary").textContent =
    `${out.length.toLocaleString()} floats in ${(result.elapsed * 1e3).toFixed(2)} ms; ` +
    (demo.correct ? `every one equals ${expected}` : `element ${wrong} is ${out[wrong]}, not ${expected}`);

  const copyMs = await copyRoundTrip(COPY_BYTES);
  const share = await pool.run("batch-2", { elements: 1 });
  // The shared way hands the workers the whole memory by reference: the cost
  // of a run that computes nothing is the cost of handing it over.
  const shareMs = share.elapsed * 1e3;
  demo.compare = [
    { how: "postMessage copy, there and back", bytes: COPY_BYTES, ms: copyMs },
    { how: "shared memory: a run's dispatch (no bytes move)", bytes: pool.memory.buffer.byteLength, ms: shareMs },
  ];
  for (const c of demo.compare) row("#compare", [c.how, c.bytes.toLocaleString(), c.ms.toFixed(3)]);
  setState("done");
}

main().catch((error) => {
  demo.error = `${error.name}: ${error.message}`;
  const box = $("#error");
  box.hidden = false;
  box.textContent = demo.error;
  setState("error");
});
