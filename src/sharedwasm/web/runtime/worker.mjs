// The worker side of the JavaScript runtime: one instance of the kernel, and
// the loop that runs its share of every run published in the control block.
// The same protocol as the Python pool's runner (sharedwasm/_runner.py), with
// every offset taken from the generated layout.mjs.
//
// Works as a browser module worker (`self.onmessage`) and under Node's
// worker_threads (`parentPort`). Messages: the main thread sends one INIT;
// the worker answers "ready" (or "error" when the kernel cannot be
// instantiated), then "trap" for each share that threw, and "exit" when it
// leaves its loop. Everything else goes through the shared memory.
//
// Guarantees:
//   Every control word and status slot is accessed with Atomics, which are
//   sequentially consistent; the record's fields are plain stores, published
//   to the main thread by the Atomics.sub on PENDING that follows them.
//
//   No wake-up is lost: a worker waits on GENERATION with the value it last
//   saw, so a bump made before it waits makes Atomics.wait return
//   "not-equal" at once, and a bump made after it waits comes with a notify.
//
//   The run's entry (Control.ENTRY) and its arguments (the slots from
//   Control.ARGUMENTS) are read on every call of the entry, after the worker
//   has seen the new GENERATION: the main thread stored them before its
//   Atomics.add on GENERATION, so they are this run's, and they do not change
//   until the next run, which cannot be published before this one ends.
//
//   A dynamic run claims chunks with Atomics.compareExchange on NEXT, so
//   NEXT never passes ELEMENTS however many workers race for the end, and
//   every element is claimed by exactly one call. A worker starts no call
//   once CANCEL equals GENERATION (a cancelled run); calls under way finish.
//
//   A trapped share still counts out of PENDING, after its TRAPPED status and
//   its "trap" message, so a run always ends and the main thread finds the
//   message on its way when it sees PENDING reach 0.
//
//   A kernel that uses a stack (compiled from C) runs on this worker's own
//   stack and thread-local block, set before the worker reports READY; after
//   a trap the stack pointer is back at its top before the worker counts out.
//   Worker 0 runs the kernel's C++ constructors (__wasm_call_ctors), once per
//   pool, on its own stack, before it reports READY; the pool publishes no run
//   before every worker is READY.

import {
  ARGUMENT_SLOT_BYTES,
  ARGUMENT_SLOTS,
  Command,
  Control,
  Record,
  RECORD_BYTES,
  Schedule,
  Status,
  stackBottom,
  stackTop,
  tlsAddress,
} from "./layout.mjs";

const isNode = typeof process !== "undefined" && Boolean(process.versions?.node);

const PROVIDED_GLOBALS = ["data_offset", "worker_index", "total_workers"];

/** Wall-clock nanoseconds, comparable across workers (each has its own timeOrigin). */
function nowNs() {
  // timeOrigin * 1e6 would pass 2**53 and lose the nanoseconds: split it.
  return (
    BigInt(Math.round(performance.timeOrigin * 1000)) * 1000n +
    BigInt(Math.round(performance.now() * 1e6))
  );
}

function instantiate({ module, memory, index, workers, layout }) {
  const values = { data_offset: layout.dataOffset, worker_index: index, total_workers: workers };
  const env = { memory };
  for (const { module: from, name, kind } of WebAssembly.Module.imports(module)) {
    if (from === "env" && kind === "global" && PROVIDED_GLOBALS.includes(name)) {
      env[name] = new WebAssembly.Global({ value: "i32", mutable: false }, values[name]);
    }
  }
  // Synchronous instantiation is allowed off the main thread at any size.
  // It runs the kernel's start function: the main thread zeroed the static
  // data, so the first instance to get there initialises it, once.
  return new WebAssembly.Instance(module, { env }).exports;
}

/**
 * Point this worker's instance at its thread area: its stack, with the stack
 * check's limits, and its thread-local block. Return a function that puts
 * the stack pointer back at the top.
 */
function giveThreadArea(exports, kernel, layout, index) {
  if (!kernel.usesStack) return () => {};
  const stackPointer = exports.__stack_pointer;
  const top = stackTop(layout, index);
  // An i32 global and i32 parameters take addresses past 2**31 modulo 2**32.
  stackPointer.value = top;
  // Until they are set the limits are 0, and the first frame would trap.
  if (kernel.stackChecked) exports.__set_stack_limits(top, stackBottom(layout, index));
  // Copies the kernel's initial thread-local data into this worker's block
  // and points the instance's __tls_base at it.
  if (kernel.tlsSize) exports.__wasm_init_tls(tlsAddress(layout, index));
  return () => {
    stackPointer.value = top;
  };
}

/** A function that reads argument slot `j` as a value of wasm type `type`. */
function slotReader(slots, j, type) {
  const offset = j * ARGUMENT_SLOT_BYTES;
  // i32: the low 4 bytes; wasm takes the number modulo 2**32, so signed or
  // unsigned is the same. i64 goes as a BigInt (the JS-BigInt integration).
  if (type === "i32") return () => slots.getInt32(offset, true);
  if (type === "i64") return () => slots.getBigInt64(offset, true);
  if (type === "f32") return () => slots.getFloat32(offset, true);
  return () => slots.getFloat64(offset, true);
}

/**
 * Return `compute(start, end)`, which calls the run's entry with the run's
 * arguments. `entries` lists each entry's export name and parameter types
 * after (start, end), in entry order.
 */
function dispatcher(exports, entries, control, slots) {
  const calls = entries.map(({ exportName, params }) => {
    const fn = exports[exportName];
    if (typeof fn !== "function") throw new TypeError(`${exportName} is not a function`);
    if (!params.length) return fn;
    const readers = params.map((type, j) => slotReader(slots, j, type));
    return (start, end) => fn(start, end, ...readers.map((read) => read()));
  });
  if (calls.length === 1) return calls[0];
  return (start, end) => {
    const call = calls[Atomics.load(control, Control.ENTRY)];
    // An index no entry has: the Python runner's dispatch traps on it too.
    if (call === undefined) throw new WebAssembly.RuntimeError("unreachable: no such entry");
    call(start, end);
  };
}

/** True once the current run is cancelled: no new call may start. */
const cancelled = (control) =>
  Atomics.load(control, Control.CANCEL) === Atomics.load(control, Control.GENERATION);

/** Do this worker's share of the run published as generation `generation`. */
function share(compute, resetStack, views, index, workers, generation, post) {
  const { status, control, rec32, rec64 } = views;
  // Element counts are unsigned: up to 2**32 - 1 one-byte elements.
  const total = Atomics.load(control, Control.ELEMENTS) >>> 0;
  // The reference protocol: a worker resets its slot when it starts.
  Atomics.store(status, index, Status.RUNNING);
  rec64[Record.T_START / 8] = nowNs();
  let outcome = Status.DONE;
  let trap = null;
  let count = 0;
  let chunks = 0;
  const call = (start, end) => {
    rec32[Record.CUR_START / 4] = start;
    rec32[Record.CUR_END / 4] = end;
    try {
      compute(start, end);
      return true;
    } catch (err) {
      // A wasm trap (WebAssembly.RuntimeError) or stack exhaustion (RangeError):
      // it fails this share only; the instance stays usable for the next run.
      outcome = Status.TRAPPED;
      trap = err;
      // The trap unwound past the kernel's epilogues, which would have popped
      // its frames: without this every trap would leak that much stack.
      resetStack();
      return false;
    }
  };
  if (Atomics.load(control, Control.SCHEDULE) === Schedule.STATIC) {
    // The reference partitioning: the start is clamped to total so trailing
    // workers get an empty range, never a negative one.
    const chunk = Math.ceil(total / workers);
    const start = Math.min(index * chunk, total);
    const end = Math.min(start + chunk, total);
    rec32[Record.START / 4] = start;
    rec32[Record.END / 4] = end;
    if (cancelled(control)) {
      outcome = Status.CANCELLED;
    } else {
      chunks = 1;
      if (call(start, end)) count = end - start;
    }
  } else {
    const chunk = Atomics.load(control, Control.CHUNK) >>> 0;
    let first = total;
    let last = total;
    for (;;) {
      if (cancelled(control)) {
        outcome = Status.CANCELLED;
        break;
      }
      const start = Atomics.load(control, Control.NEXT) >>> 0;
      if (start >= total) break;
      // start + min(chunk, total - start): never past total.
      const end = start + Math.min(chunk, total - start);
      // Lost the race for [start, end): another worker moved NEXT; try again.
      // The words are i32: compare the values as the array holds them.
      if (Atomics.compareExchange(control, Control.NEXT, start | 0, end | 0) !== (start | 0)) {
        continue;
      }
      if (start < first) first = start;
      // Only a won claim counts, and claims only move forward: the last one
      // ends this worker's span.
      last = end;
      chunks += 1;
      if (!call(start, end)) break;
      count += end - start;
    }
    rec32[Record.START / 4] = first;
    rec32[Record.END / 4] = last;
  }
  rec64[Record.T_END / 8] = nowNs();
  rec32[Record.ELEMENTS / 4] = count;
  rec32[Record.CHUNKS / 4] = chunks;
  Atomics.store(status, index, outcome);
  Atomics.notify(status, index);
  if (trap !== null) {
    // Before counting out: the main thread awaits this message once it sees
    // the TRAPPED slot, and messages are delivered asynchronously.
    const start = rec32[Record.CUR_START / 4] >>> 0;
    const end = rec32[Record.CUR_END / 4] >>> 0;
    post({ type: "trap", index, generation, message: String(trap), start, end });
  }
  // Counting out last publishes the record and the output with it; only the
  // last worker out needs to wake the main thread.
  if (Atomics.sub(control, Control.PENDING, 1) === 1) {
    Atomics.notify(control, Control.PENDING);
  }
}

/** Run shares until EXIT is published. Blocks this worker's thread throughout. */
function loop(compute, resetStack, views, index, workers, seen) {
  const { control, rec64 } = views;
  const post = views.post;
  for (;;) {
    // "not-equal" at once if GENERATION moved since `seen`: see Guarantees.
    Atomics.wait(control, Control.GENERATION, seen);
    const generation = Atomics.load(control, Control.GENERATION);
    if (generation === seen) continue;
    // Read the command only after the new generation: the bump is the
    // release of everything the main thread stored before it.
    seen = generation;
    rec64[Record.WAKE_TIME / 8] = nowNs();
    if (Atomics.load(control, Control.COMMAND) === Command.EXIT) return;
    share(compute, resetStack, views, index, workers, generation, post);
  }
}

function onInit(message, post) {
  const { memory, index, workers, layout, kernel } = message;
  const buffer = memory.buffer;
  const control = new Int32Array(buffer, layout.controlOffset, layout.controlWords);
  const slots = new DataView(
    buffer,
    layout.controlOffset + Control.ARGUMENTS * 4,
    ARGUMENT_SLOTS * ARGUMENT_SLOT_BYTES,
  );
  let compute;
  let resetStack;
  try {
    const exports = instantiate(message);
    compute = dispatcher(exports, kernel.entries, control, slots);
    resetStack = giveThreadArea(exports, kernel, layout, index);
    // Once per pool, on worker 0's own stack: the constructors of C++ global
    // objects, which live in the shared statics. Every start function that
    // has run, or will, finds the data segments already copied in (wasm-ld
    // guards them with a flag in the memory, and later instances wait on it).
    if (index === 0 && kernel.constructors) exports.__wasm_call_ctors();
  } catch (err) {
    const name = err?.name ?? "Error";
    post({ type: "error", index, name, message: String(err?.message ?? err) });
    return;
  }
  const record = layout.recordsOffset + index * RECORD_BYTES;
  const views = {
    status: new Int32Array(buffer, layout.statusOffset, workers),
    control,
    rec32: new Int32Array(buffer, record, RECORD_BYTES / 4),
    rec64: new BigInt64Array(buffer, record, RECORD_BYTES / 8),
    post,
  };
  // The main thread publishes nothing before every worker is READY, so the
  // generation read here is the one to wait past.
  const seen = Atomics.load(control, Control.GENERATION);
  post({ type: "ready", index });
  loop(compute, resetStack, views, index, workers, seen);
  post({ type: "exit", index });
}

function onMessage(message, post) {
  if (message?.type === "init") onInit(message, post);
}

if (isNode) {
  const { parentPort } = await import("node:worker_threads");
  parentPort.on("message", (message) =>
    onMessage(message, (reply) => parentPort.postMessage(reply)),
  );
} else {
  self.onmessage = (event) => onMessage(event.data, (reply) => self.postMessage(reply));
}
