"""The runner: the worker loop and the host's dispatch, written in WebAssembly.

A run must not go through Python in the workers: waking a Python thread, taking
the GIL and calling back into wasm costs tens of microseconds per worker. So
each worker thread makes one call, `worker_loop`, and stays inside wasm for the
life of the pool. The runner waits on the GENERATION control word, calls
the kernel's entries for its share of each run, and returns only on EXIT or
when the kernel traps. The host side is two calls, `host_run` (publish, then
do partition 0 on the calling thread) and `host_wait` (until PENDING is 0).

The runner is not a module of its own: its text is generated per kernel and
spliced into the kernel's module (`_merge`), so that each store has one
instance that imports the shared memory, and it calls the entries directly,
by the kernel's function indices. Its exports are named `sharedwasm:...`.

Timestamps come from WASI's `clock_time_get`, which wasmtime implements
natively (about 70 ns a call), so workers time themselves without Python; the
host puts it in the runner's one-element table after instantiation, because
a function import would shift the kernel's function indices. Field offsets
are baked in from `_layout` when the text is generated; the regions' base
addresses are set, per pool, in mutable globals after instantiation.

Guarantees:
    Every control word and status slot is accessed with a sequentially
    consistent wasm atomic; records and clock scratch words are plain stores,
    published by the seq-cst decrement of PENDING that follows them.

    Waiting is spin-then-park: a worker polls GENERATION for `spin_ns`, then
    registers in SLEEPERS and parks in `memory.atomic.wait32`. The host bumps
    GENERATION *before* it reads SLEEPERS, and a worker increments SLEEPERS
    *before* it waits on the old GENERATION value, so (all seq-cst) either
    the host sees the sleeper and notifies, or the worker's wait sees the new
    value and returns at once: no wake-up is lost and an idle pool costs no
    CPU once the spin window has passed. HOST_PARKED pairs the same way with
    the last worker's decrement of PENDING.

    A dynamic run claims chunks with compare-exchange on NEXT, so NEXT never
    passes ELEMENTS and cannot wrap however many workers race for the end.
"""

from __future__ import annotations

import ctypes
import functools
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence

import wasmtime

from . import _merge, _wasmtime
from ._entries import Entry
from ._errors import KernelError, error_cause
from ._kernel import CALL_CTORS, INIT_TLS, SET_STACK_LIMITS, STACK_POINTER, Kernel
from ._layout import (
    ARGUMENT_SLOT_BYTES,
    RECORD_BYTES,
    Command,
    Control,
    Layout,
    Record,
    Schedule,
    Status,
)
from ._memory import Memory
from ._merge import Shape

CLOCK_REALTIME = 0
CLOCK_MONOTONIC = 1
# The runner's exports, under names of their own: a kernel that exports one is refused.
WORKER_LOOP = "sharedwasm:worker_loop"
HOST_RUN = "sharedwasm:host_run"
HOST_WAIT = "sharedwasm:host_wait"
CLOCK_TABLE = "sharedwasm:clock"
OFFSET_GLOBALS = {
    "status_offset": "sharedwasm:status_offset",
    "control_offset": "sharedwasm:control_offset",
    "records_offset": "sharedwasm:records_offset",
}
MEMORY = "memory"
_CHECK_CLOCK_EVERY = 255  # spin iterations between clock reads, minus one (a mask)


def _ctl(word: Control) -> str:
    return f"(i32.add (global.get $control) (i32.const {int(word) * 4}))"


def _rec(field: Record) -> str:
    return f"(i32.add (local.get $rec) (i32.const {int(field)}))"


def _dispatch(entries: Sequence[tuple[int, tuple[str, ...]]]) -> str:
    """Return `$compute`, which calls the run's entry.

    `entries` holds each entry's function index in the kernel and its
    parameter types after (start, end), in the kernel's entry order. The
    entry index (ENTRY) and the arguments are read on every call: they were
    stored before the publish this worker saw, and do not change until the
    next one.
    """

    def call(function: int, params: tuple[str, ...]) -> str:
        loads = "".join(
            f" ({t}.load (i32.add (global.get $control) (i32.const "
            f"{int(Control.ARGUMENTS) * 4 + j * ARGUMENT_SLOT_BYTES})))"
            for j, t in enumerate(params)
        )
        return f"(call {function} (local.get $s) (local.get $e){loads})"

    if len(entries) == 1:
        body = call(*entries[0])
    else:
        # Nested blocks, innermost first: br_table jumps to the end of block
        # $bI, where entry I's call follows; an index no entry has traps.
        n = len(entries)
        labels = " ".join(f"$b{i}" for i in range(n))
        body = "(block $bad " + "".join(f"(block $b{i} " for i in reversed(range(n)))
        body += f"(br_table {labels} $bad (i32.load {_ctl(Control.ENTRY)})))"
        for entry in entries:
            body += f" {call(*entry)} (return))"
        body += " unreachable"
    return f"""
  (func $compute (param $s i32) (param $e i32)
    {body})"""


def _kernel_index_spaces(shape: Shape) -> str:
    """Return the text that gives the runner the kernel's types, functions, globals and tables.

    Each kernel function becomes an import of its own type, so a `call` by
    the kernel's index reaches it once the runner is merged into the
    kernel's module. The global and table imports only hold index space:
    the runner never names them, so their types do not matter.
    """
    lines = [f"  (type {t})" for t in shape.types]
    lines += [
        f'  (import "kernel" "f{i}" (func (type {t})))' for i, t in enumerate(shape.functions)
    ]
    lines += [f'  (import "kernel" "g{i}" (global i32))' for i in range(shape.globals)]
    lines += [f'  (import "kernel" "t{i}" (table 0 funcref))' for i in range(shape.tables)]
    return "\n".join(lines)


def runner_wat(
    shape: Shape, entries: Sequence[tuple[int, tuple[str, ...]]], *, export_memory: bool = True
) -> str:
    """Return the runner's text for a kernel of this shape, with the layout baked in.

    `entries` holds each entry's function index and its parameter types
    after (start, end). The text compiles to a module whose own types,
    functions, tables and globals follow the kernel's; `_merge.splice` adds
    them to the kernel's module. `export_memory` is False when the kernel
    already exports its memory as "memory".
    """
    compute = _dispatch(entries)
    gen, pending = _ctl(Control.GENERATION), _ctl(Control.PENDING)
    # Clock readings: a worker through its record's scratch word, the host
    # through its own (the standby thread may be using worker 0's record).
    mono = f"(call $now (i32.const {CLOCK_MONOTONIC}) {_rec(Record.SCRATCH)})"
    wall = f"(call $now (i32.const {CLOCK_REALTIME}) {_rec(Record.SCRATCH)})"
    host_mono = f"(call $now (i32.const {CLOCK_MONOTONIC}) {_ctl(Control.HOST_SCRATCH)})"
    host_wall = f"(call $now (i32.const {CLOCK_REALTIME}) {_ctl(Control.HOST_SCRATCH)})"
    sleepers, host_parked = _ctl(Control.SLEEPERS), _ctl(Control.HOST_PARKED)
    # WASI writes the clock's reading through the caller's export "memory".
    memory_export = f'(export "{MEMORY}" (memory 0))' if export_memory else ""
    status, control, records = (
        OFFSET_GLOBALS[f"{name}_offset"] for name in ("status", "control", "records")
    )
    return f"""
(module
{_kernel_index_spaces(shape)}
  (type $clock_time_get (func (param i32 i64 i32) (result i32)))
  (import "env" "memory" (memory 0 65536 shared))
  ;; The host puts WASI's clock_time_get here: imported, it would take
  ;; function index 0 from the kernel.
  (table $wasi (export "{CLOCK_TABLE}") 1 1 funcref)
  ;; The regions' addresses, set by the host for its pool before any call.
  (global $status (export "{status}") (mut i32) (i32.const 0))
  (global $control (export "{control}") (mut i32) (i32.const 0))
  (global $records (export "{records}") (mut i32) (i32.const 0))
  {memory_export}

  (func $record (param $index i32) (result i32)
    (i32.add (global.get $records) (i32.mul (local.get $index) (i32.const {RECORD_BYTES}))))

  ;; Read a clock through a scratch word of the caller's own.
  (func $now (param $clock i32) (param $scratch i32) (result i64)
    (drop (call_indirect $wasi (type $clock_time_get)
      (local.get $clock) (i64.const 1) (local.get $scratch) (i32.const 0)))
    (i64.load (local.get $scratch)))

{compute}

  (func $min_u (param $a i32) (param $b i32) (result i32)
    (select (local.get $a) (local.get $b) (i32.lt_u (local.get $a) (local.get $b))))

  ;; 1 once the current run is cancelled: no new work may start.
  (func $cancelled (result i32)
    (i32.eq (i32.atomic.load {_ctl(Control.CANCEL)}) (i32.atomic.load {gen})))

  ;; The run's entry with $busy set around it: the word an interrupt
  ;; checks, so only code inside the kernel is ever stopped. Plain stores:
  ;; the interrupt check runs on this same thread.
  (func $compute_busy (param $busy i32) (param $s i32) (param $e i32)
    (i32.store (local.get $busy) (i32.const 1))
    (call $compute (local.get $s) (local.get $e))
    (i32.store (local.get $busy) (i32.const 0)))

  ;; One worker's share of the current run; ends with its status DONE (or
  ;; CANCELLED if it stopped early) and its count out of PENDING. A trap
  ;; leaves both to the Python side.
  (func $share (param $index i32) (param $workers i32) (param $busy i32)
    (local $rec i32) (local $total i32) (local $chunk i32) (local $s i32) (local $e i32)
    (local $count i32) (local $chunks i32) (local $first i32) (local $last i32) (local $slot i32)
    (local $status i32)
    (local.set $status (i32.const {Status.DONE}))
    (local.set $rec (call $record (local.get $index)))
    (local.set $slot (i32.add (global.get $status) (i32.shl (local.get $index) (i32.const 2))))
    (local.set $total (i32.atomic.load {_ctl(Control.ELEMENTS)}))
    ;; The reference protocol: a worker resets its slot when it starts.
    (i32.atomic.store (local.get $slot) (i32.const 0))
    (i64.store {_rec(Record.T_START)} {mono})
    (if (i32.eq (i32.atomic.load {_ctl(Control.SCHEDULE)}) (i32.const {Schedule.STATIC}))
      (then
        ;; chunk = ceil(total / workers); the start is clamped to total so
        ;; trailing workers get an empty range, never a negative one.
        (local.set $chunk
          (i32.div_u
            (i32.add (local.get $total) (i32.sub (local.get $workers) (i32.const 1)))
            (local.get $workers)))
        (local.set $s
          (call $min_u (i32.mul (local.get $index) (local.get $chunk)) (local.get $total)))
        (local.set $e
          (call $min_u (i32.add (local.get $s) (local.get $chunk)) (local.get $total)))
        (i32.store {_rec(Record.START)} (local.get $s))
        (i32.store {_rec(Record.END)} (local.get $e))
        (i32.store {_rec(Record.CUR_START)} (local.get $s))
        (i32.store {_rec(Record.CUR_END)} (local.get $e))
        (if (call $cancelled)
          (then (local.set $status (i32.const {Status.CANCELLED})))
          (else
            (call $compute_busy (local.get $busy) (local.get $s) (local.get $e))
            (local.set $count (i32.sub (local.get $e) (local.get $s)))
            (local.set $chunks (i32.const 1)))))
      (else
        (local.set $chunk (i32.atomic.load {_ctl(Control.CHUNK)}))
        (local.set $first (local.get $total))
        (local.set $last (local.get $total))
        (block $drained
          (loop $claim
            (if (call $cancelled)
              (then
                (local.set $status (i32.const {Status.CANCELLED}))
                (br $drained)))
            (local.set $s (i32.atomic.load {_ctl(Control.NEXT)}))
            (br_if $drained (i32.ge_u (local.get $s) (local.get $total)))
            ;; s + min(chunk, total - s): never wraps, even for a total near 2**32.
            (local.set $e
              (i32.add (local.get $s)
                (call $min_u (local.get $chunk) (i32.sub (local.get $total) (local.get $s)))))
            ;; Lost the race for [s, e): another worker moved NEXT; try again.
            (br_if $claim
              (i32.ne
                (i32.atomic.rmw.cmpxchg {_ctl(Control.NEXT)} (local.get $s) (local.get $e))
                (local.get $s)))
            (if (i32.lt_u (local.get $s) (local.get $first))
              (then (local.set $first (local.get $s))))
            ;; Only a won claim counts: $e may also hold the end of a lost one.
            (local.set $last (local.get $e))
            (i32.store {_rec(Record.CUR_START)} (local.get $s))
            (i32.store {_rec(Record.CUR_END)} (local.get $e))
            (call $compute_busy (local.get $busy) (local.get $s) (local.get $e))
            (local.set $count (i32.add (local.get $count) (i32.sub (local.get $e) (local.get $s))))
            (local.set $chunks (i32.add (local.get $chunks) (i32.const 1)))
            (br $claim)))
        ;; Claims only move forward, so the last claim ends this worker's span.
        (i32.store {_rec(Record.START)} (local.get $first))
        (i32.store {_rec(Record.END)} (local.get $last))))
    (i32.store {_rec(Record.ELEMENTS)} (local.get $count))
    (i32.store {_rec(Record.CHUNKS)} (local.get $chunks))
    (i64.store {_rec(Record.T_END)} {mono})
    ;; DONE, then count out: an observer that sees PENDING reach 0 sees
    ;; every slot final and every record and output byte written.
    (i32.atomic.store (local.get $slot) (local.get $status))
    (drop (memory.atomic.notify (local.get $slot) (i32.const -1)))
    (if (i32.eq (i32.atomic.rmw.sub {pending} (i32.const 1)) (i32.const 1))
      (then
        (if (i32.atomic.load {host_parked})
          (then (drop (memory.atomic.notify {pending} (i32.const -1))))))))

  ;; Run shares until EXIT; returns the generation of the EXIT command.
  ;; Worker 0's thread is the standby for the caller: it waits on its own
  ;; word, bumped only for the runs the caller does not take part in.
  (func (export "{WORKER_LOOP}")
    (param $index i32) (param $workers i32) (param $seen i32) (param $spin_ns i64)
    (result i32)
    (local $rec i32) (local $g i32) (local $i i32) (local $deadline i64) (local $word i32)
    (local.set $rec (call $record (local.get $index)))
    (local.set $word
      (select {_ctl(Control.STANDBY_GENERATION)} {gen} (i32.eqz (local.get $index))))
    (loop $next_command
      (local.set $deadline
        (i64.add {mono} (local.get $spin_ns)))
      (local.set $i (i32.const 0))
      (block $published
        (loop $poll
          (local.set $g (i32.atomic.load (local.get $word)))
          (br_if $published (i32.ne (local.get $g) (local.get $seen)))
          ;; EXIT is also obeyed without a new generation: a kernel may have
          ;; written over GENERATION, and close() must still reach this loop
          ;; (it stores COMMAND again and notifies until every worker is gone).
          (br_if $published
            (i32.eq (i32.atomic.load {_ctl(Control.COMMAND)}) (i32.const {Command.EXIT})))
          (if (i32.eqz (i32.and (local.get $i) (i32.const {_CHECK_CLOCK_EVERY})))
            (then
              (if (i64.ge_s {mono}
                            (local.get $deadline))
                (then
                  ;; Register before parking: see the module docstring.
                  (drop (i32.atomic.rmw.add {sleepers} (i32.const 1)))
                  (drop (memory.atomic.wait32 (local.get $word) (local.get $seen) (i64.const -1)))
                  (drop (i32.atomic.rmw.sub {sleepers} (i32.const 1)))))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $poll)))
      (local.set $seen (local.get $g))
      (i64.store {_rec(Record.WAKE_TIME)} {wall})
      (if (i32.eq (i32.atomic.load {_ctl(Control.COMMAND)}) (i32.const {Command.EXIT}))
        (then (return (local.get $seen))))
      (call $share (local.get $index) (local.get $workers) {_rec(Record.BUSY)})
      (br $next_command))
    unreachable)

  ;; Publish a run and wake parked workers; then do partition 0 on this
  ;; thread, or hand it to the standby thread when $standby is set.
  ;; Returns 1 if it had to wake parked workers, 0 if they were all spinning.
  (func (export "{HOST_RUN}")
    (param $workers i32) (param $elements i32) (param $schedule i32) (param $chunk i32)
    (param $standby i32) (param $element_size i32) (param $entry i32) (result i32)
    (local $i i32) (local $woke i32) (local $old i32) (local $c i32)
    ;; Reset every slot first, so DONE always means "done with this run".
    (block $reset
      (loop $slots
        (br_if $reset (i32.ge_u (local.get $i) (local.get $workers)))
        (i32.atomic.store
          (i32.add (global.get $status) (i32.shl (local.get $i) (i32.const 2))) (i32.const 0))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $slots)))
    (i32.atomic.store {_ctl(Control.ELEMENTS)} (local.get $elements))
    (i32.atomic.store {_ctl(Control.ELEMENT_SIZE)} (local.get $element_size))
    (i32.atomic.store {_ctl(Control.SCHEDULE)} (local.get $schedule))
    (i32.atomic.store {_ctl(Control.CHUNK)} (local.get $chunk))
    (i32.atomic.store {_ctl(Control.NEXT)} (i32.const 0))
    (i32.atomic.store {_ctl(Control.ENTRY)} (local.get $entry))
    (i32.atomic.store {pending} (local.get $workers))
    (i32.atomic.store {_ctl(Control.COMMAND)} (i32.const {Command.RUN}))
    (i64.atomic.store {_ctl(Control.PUBLISH_TIME)}
      {host_wall})
    ;; Clear a cancel left from an earlier run, unless it already names the
    ;; run being published (a cancel from another thread may come before
    ;; the bump): CANCEL = the old generation, which is never current again
    ;; until the counter wraps. Only a cancel stores anything else, and only
    ;; old + 1, so a failed compare-exchange means this run is cancelled.
    (local.set $old (i32.atomic.load {gen}))
    (local.set $c (i32.atomic.load {_ctl(Control.CANCEL)}))
    (if (i32.ne (local.get $c) (i32.add (local.get $old) (i32.const 1)))
      (then
        (drop (i32.atomic.rmw.cmpxchg {_ctl(Control.CANCEL)} (local.get $c) (local.get $old)))))
    ;; The bump is the release of everything above; then wake the parked.
    (drop (i32.atomic.rmw.add {gen} (i32.const 1)))
    (if (i32.atomic.load {sleepers})
      (then
        (local.set $woke (i32.const 1))
        (drop (memory.atomic.notify {gen} (i32.const -1)))))
    (if (local.get $standby)
      (then
        (drop (i32.atomic.rmw.add {_ctl(Control.STANDBY_GENERATION)} (i32.const 1)))
        (drop (memory.atomic.notify {_ctl(Control.STANDBY_GENERATION)} (i32.const -1))))
      (else (call $share (i32.const 0) (local.get $workers) {_ctl(Control.HOST_BUSY)})))
    (local.get $woke))

  ;; Wait for PENDING to reach 0: spin for spin_ns, then park for at most
  ;; timeout_ns (negative: no limit). Returns 1 when it did, 0 otherwise.
  (func (export "{HOST_WAIT}") (param $spin_ns i64) (param $timeout_ns i64) (result i32)
    (local $p i32) (local $i i32) (local $deadline i64)
    (local.set $deadline
      (i64.add {host_mono}
               (local.get $spin_ns)))
    (block $spun
      (loop $poll
        (if (i32.eqz (i32.atomic.load {pending})) (then (return (i32.const 1))))
        (if (i32.eqz (i32.and (local.get $i) (i32.const {_CHECK_CLOCK_EVERY})))
          (then
            (br_if $spun
              (i64.ge_s
                {host_mono} (local.get $deadline)))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $poll)))
    (i32.atomic.store {host_parked} (i32.const 1))
    (loop $park
      (local.set $p (i32.atomic.load {pending}))
      (if (i32.eqz (local.get $p))
        (then
          (i32.atomic.store {host_parked} (i32.const 0))
          (return (i32.const 1))))
      ;; Closing: back to Python, which raises PoolClosedError.
      (if (i32.eq (i32.atomic.load {_ctl(Control.COMMAND)}) (i32.const {Command.EXIT}))
        (then
          (i32.atomic.store {host_parked} (i32.const 0))
          (return (i32.const 0))))
      ;; 2 = timed out; 0 (woken) and 1 (PENDING moved) re-check.
      (if (i32.eq
            (memory.atomic.wait32 {pending} (local.get $p) (local.get $timeout_ns)) (i32.const 2))
        (then
          (i32.atomic.store {host_parked} (i32.const 0))
          (return (i32.eqz (i32.atomic.load {pending})))))
      (br $park))
    unreachable))
"""


def merged_wasm(wasm: bytes, entries: Iterable[Entry]) -> bytes:
    """Return a validated kernel's module with the runner merged into it (see `_merge`).

    Raises:
        KernelError: the kernel has a construct the runner cannot be merged with.
    """
    shape = _merge.read_shape(wasm)
    exported = shape.exports.get(MEMORY)
    if exported is not None and exported != ("memory", 0):
        kind, index = exported
        got = f"memory {index}" if kind == "memory" else f"a {kind}"
        raise KernelError(
            f"kernel's export {MEMORY!r} must be its memory env.memory (got {got}): "
            "the worker loop merged into the kernel's module reads WASI's clock, which writes "
            f"through the export named {MEMORY!r}"
        )
    calls = [(shape.exports[e.export][1], e.wasm_params) for e in entries]
    text = runner_wat(shape, calls, export_memory=exported is None)
    try:
        runner = bytes(wasmtime.wat2wasm(text))
    except wasmtime.WasmtimeError as exc:
        raise KernelError(
            "sharedwasm cannot merge its worker loop into the kernel's module: "
            f"{error_cause(str(exc), repr(exc))}"
        ) from exc
    return _merge.splice(wasm, runner, shape)


@functools.cache
def _linker(interruptible: bool) -> wasmtime.Linker:
    linker = wasmtime.Linker(_wasmtime.engine(interruptible))
    linker.define_wasi()
    return linker


def _interrupt_check(
    memory: Memory,
    layout: Layout,
    busy_address: int,
    abandon: threading.Event | None,
    starting: list[bool],
) -> Callable[[], bool]:
    """Return the test an epoch bump applies to one store: stop it, or let it run?

    Only a thread inside the kernel (its busy word set by the runner) of a
    run that was cancelled, or of a pool that is closing, is stopped; one
    waiting for work or counting itself out never is, so an interrupt cannot
    tear the protocol. A start that the pool gave up on (`abandon` set
    while `starting[0]`) is stopped too: start-up code that never returns.
    The words are read plainly: the busy word is this thread's own, and
    CANCEL and COMMAND are stored before the epoch bump that leads here
    (if a weakly ordered CPU shows an old value, the next bump tries again).
    """
    base = memory._base
    busy = ctypes.c_int32.from_address(base + busy_address)
    cancel = ctypes.c_int32.from_address(base + layout.control_address(Control.CANCEL))
    generation = ctypes.c_int32.from_address(base + layout.control_address(Control.GENERATION))
    command = ctypes.c_int32.from_address(base + layout.control_address(Control.COMMAND))
    exit_command = int(Command.EXIT)

    def should_stop() -> bool:
        if starting[0]:
            return abandon is not None and abandon.is_set()
        return bool(busy.value) and (
            cancel.value == generation.value or command.value == exit_command
        )

    return should_stop


class Runner:
    """One worker's store, with the kernel's module, the runner merged in, instantiated in it.

    `host` selects the caller's runner, which marks itself busy in the
    control block rather than in worker 0's record (the standby thread owns
    that one while it stands in for the caller).

    Instantiating runs the kernel's start-up code (its start function, then
    `__set_stack_limits` and `__wasm_init_tls`, and in the caller's runner
    `__wasm_call_ctors`); on an interruptible memory
    an epoch bump stops it once `abandon` is set.

    Not thread-safe: used by one thread at a time (a worker's own thread, or
    whichever thread holds the pool's run lock for worker 0).
    """

    def __init__(
        self,
        kernel: Kernel,
        memory: Memory,
        layout: Layout,
        index: int,
        *,
        host: bool = False,
        abandon: threading.Event | None = None,
    ) -> None:
        try:
            self._instantiate(kernel, memory, layout, index, host, abandon)
        except (wasmtime.WasmtimeError, wasmtime.Trap) as exc:
            raise KernelError(
                f"{kernel.name} failed to instantiate in worker {index}: "
                f"{error_cause(str(exc), repr(exc))}"
            ) from exc

    def _instantiate(
        self,
        kernel: Kernel,
        memory: Memory,
        layout: Layout,
        index: int,
        host: bool,
        abandon: threading.Event | None,
    ) -> None:
        interruptible = memory.interruptible
        self.store = _wasmtime.new_store(interruptible)
        starting = [True]
        if interruptible:
            busy = (
                layout.control_address(Control.HOST_BUSY)
                if host
                else layout.record_address(index) + Record.BUSY
            )
            self._interrupt = _wasmtime.interrupt_when(
                self.store, _interrupt_check(memory, layout, busy, abandon, starting)
            )
        # No arguments, environment or preopened directories: the runner
        # only reads the clock, and kernels see no WASI at all.
        self.store.set_wasi(wasmtime.WasiConfig())
        values = {
            "data_offset": layout.data_offset,
            "worker_index": index,
            "total_workers": layout.workers,
        }
        externs = kernel._imports(self.store, memory._shared, values)
        module = kernel._module_for(interruptible)
        # The one instance in this store that imports the shared memory: a
        # second importer would make wasmtime abort the process on the
        # kernel's first out-of-bounds access (see _merge).
        instance = wasmtime.Instance(self.store, module, externs)  # type: ignore[arg-type]
        exports = instance.exports(self.store)
        # Before any call into the runner, which reads these on every run.
        # They live in the instance, not the shared memory: the thread that
        # made the store is the first to call in, or hands the caller's
        # runner over through the worker's `ready` future (a lock).
        for name, export in OFFSET_GLOBALS.items():
            offset = exports[export]
            assert isinstance(offset, wasmtime.Global)
            offset.set_value(self.store, wasmtime.Val.i32(_wasmtime.as_i32(getattr(layout, name))))
        clock = exports[CLOCK_TABLE]
        assert isinstance(clock, wasmtime.Table)
        wasi = _linker(interruptible).get(self.store, "wasi_snapshot_preview1", "clock_time_get")
        clock.set(self.store, 0, wasi)
        self._stack_pointer: wasmtime.Global | None = None
        self._stack_top = 0
        if kernel.uses_stack:
            self._give_thread_area(kernel, exports, layout, index)

        def raw(name: str, slots: int) -> _wasmtime.RawFunc:
            func = exports[name]
            assert isinstance(func, wasmtime.Func)
            return _wasmtime.RawFunc(self.store, func, slots)

        self.worker_loop = raw(WORKER_LOOP, 4)
        self.host_run = raw(HOST_RUN, 7)
        self.host_wait = raw(HOST_WAIT, 2)
        if host and kernel.constructors:
            # Once per pool, on worker 0's stack: C++ constructors of global
            # objects, which live in the shared statics. Every worker's start
            # function has finished copying the data segments in (it is guarded
            # by a flag in the memory, and the others wait for it).
            ctors = exports[CALL_CTORS]
            assert isinstance(ctors, wasmtime.Func)
            ctors(self.store)
        starting[0] = False

    def _give_thread_area(
        self, kernel: Kernel, exports: Mapping[str, object], layout: Layout, index: int
    ) -> None:
        """Point this instance's stack (and TLS) at worker `index`'s thread area.

        The caller's runner and the standby thread both do worker 0's share,
        never at the same time (runs are serialised and a run in flight
        blocks the next), so they share worker 0's area.
        """
        stack_pointer = exports[STACK_POINTER]
        assert isinstance(stack_pointer, wasmtime.Global)
        self._stack_pointer = stack_pointer
        self._stack_top = layout.stack_top(index)
        stack_pointer.set_value(self.store, wasmtime.Val.i32(_wasmtime.as_i32(self._stack_top)))
        if kernel.stack_checked:
            limits = exports[SET_STACK_LIMITS]
            assert isinstance(limits, wasmtime.Func)
            limits(
                self.store,
                _wasmtime.as_i32(self._stack_top),
                _wasmtime.as_i32(layout.stack_bottom(index)),
            )
        if kernel.tls_size:
            init_tls = exports[INIT_TLS]
            assert isinstance(init_tls, wasmtime.Func)
            # Copies the kernel's .tdata into this worker's block and points
            # its __tls_base there; two instances of worker 0 write the same
            # bytes to the same block, which is harmless.
            init_tls(self.store, _wasmtime.as_i32(layout.tls_address(index)))

    def reset_stack(self) -> None:
        """Put the stack pointer back at the top of this worker's stack.

        A trap unwinds past the kernel's own epilogues, so the stack pointer
        stays where the trapping call left it; without this every trap would
        leak that much of the stack.
        """
        if self._stack_pointer is not None:
            self._stack_pointer.set_value(
                self.store, wasmtime.Val.i32(_wasmtime.as_i32(self._stack_top))
            )
