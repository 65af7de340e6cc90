"""The JavaScript runtime in real Chromium, under `sharedwasm serve`.

Chromium is Debian's (`make test` installs it when missing) and is driven by
the `playwright` package through `executable_path`; no browser is downloaded.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import wasmtime
from playwright.sync_api import Browser, Page, sync_playwright

import sharedwasm as sw
from sharedwasm import testing
from sharedwasm._builtin import KERNEL_DIR
from sharedwasm._serve import serving

CHROMIUM = Path(testing.CHROMIUM)
PAGE_TIMEOUT_MS = 20_000
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
"""Where the demo's screenshot lands (ignored by git; docs/demo.png is a copy)."""

HEADERS = ("Cross-Origin-Opener-Policy: same-origin", "Cross-Origin-Embedder-Policy: require-corp")

BLANK = "<!doctype html><meta charset='utf-8'><title>blank</title><body>blank</body>"

# Runs in the page: build a pool from the served kernel, copy the served input
# into its data region, run, and return the output bytes as base64.
RUN_IN_PAGE = """
async ({workers, pages, elements, kernel}) => {
  const { createPool } = await import("/_sharedwasm/sharedwasm.mjs");
  const input = new Uint8Array(await (await fetch("/input.bin")).arrayBuffer());
  const pool = await createPool({
    url: `/${kernel}`, memory: { initial: pages, maximum: pages }, workers });
  try {
    const bytes = new Uint8Array(pool.memory.buffer, pool.dataOffset, input.length);
    bytes.set(input);
    const result = await pool.run("equal", { elements });
    const out = new Uint8Array(pool.memory.buffer, pool.dataOffset, input.length);
    let text = "";
    for (let i = 0; i < out.length; i += 0x8000) {
      text += String.fromCharCode(...out.subarray(i, i + 0x8000));
    }
    return { output: btoa(text), done: result.done, dataOffset: pool.dataOffset };
  } finally {
    await pool.close();
  }
}
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=list(testing.CHROMIUM_ARGS), timeout=PAGE_TIMEOUT_MS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A served directory with a blank page and the map_f32 kernel as a .wasm."""
    (tmp_path / "index.html").write_text(BLANK)
    (tmp_path / "map_f32.wasm").write_bytes(
        wasmtime.wat2wasm((KERNEL_DIR / "map_f32.wat").read_text())
    )
    return tmp_path


def wait_for_demo(page: Page) -> dict[str, Any]:
    page.wait_for_function("document.body.dataset.state !== 'loading'")
    demo: dict[str, Any] = page.evaluate(
        "() => ({state: sharedwasmDemo.state, error: sharedwasmDemo.error,"
        " correct: sharedwasmDemo.correct, done: sharedwasmDemo.done,"
        " compare: sharedwasmDemo.compare, board: sharedwasmDemo.board.at(-1),"
        " workers: navigator.hardwareConcurrency, isolated: crossOriginIsolated})"
    )
    return demo


def test_demo_runs_cross_origin_isolated(page: Page) -> None:
    with serving(None) as url:
        page.goto(url)
        demo = wait_for_demo(page)
        assert demo["state"] == "done", demo["error"]
        assert demo["isolated"] is True
        assert demo["correct"] is True
        workers = demo["workers"]
        assert [d["workerIndex"] for d in demo["done"]] == list(range(workers))
        chunk = -(-1_000_000 // workers)
        assert [(d["start"], d["end"]) for d in demo["done"]] == [
            (min(i * chunk, 1_000_000), min((i + 1) * chunk, 1_000_000)) for i in range(workers)
        ]
        assert demo["board"] == [int(sw.Status.DONE)] * workers
        assert [c["bytes"] for c in demo["compare"]] == [10 << 20, 128 * sw.PAGE_SIZE]
        assert page.locator("#done tbody tr").count() == workers
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "demo.png"), full_page=True)


def test_without_the_headers_the_page_names_them(page: Page) -> None:
    with serving(None, isolate=False) as url:
        page.goto(url)
        demo = wait_for_demo(page)
        assert demo["state"] == "error"
        assert demo["isolated"] is False
        shown = page.locator("#error").inner_text()
        for header in HEADERS:
            assert header in shown


def run_in_python_and_page(
    page: Page, site: Path, wasm: str, data: npt.NDArray[Any], workers: int, pages: int
) -> tuple[dict[str, Any], tuple[sw.WorkerDone, ...]]:
    """Run the served kernel `wasm` over `data` in the Python pool, then in the page.

    Asserts that both put the data at the same offset and leave the same
    bytes; returns the page's result and the Python run's `done`.
    """
    (site / "input.bin").write_bytes(data.tobytes())
    kernel = sw.Kernel.from_file(site / wasm)
    with sw.WorkerPool(kernel, sw.Memory(pages, pages), workers) as pool:
        pool.data(data.dtype)[: data.size] = data
        done = pool.run(elements=data.size).done
        expected = pool.data(data.dtype)[: data.size].tobytes()
        data_offset = pool.data_offset

    with serving(site) as url:
        page.goto(url)
        got: dict[str, Any] = page.evaluate(
            RUN_IN_PAGE,
            {"workers": workers, "pages": pages, "elements": data.size, "kernel": wasm},
        )
    assert got["dataOffset"] == data_offset
    assert base64.b64decode(got["output"]) == expected
    return got, tuple(done)


@pytest.mark.parametrize("workers", [1, 2, 3, 4])
def test_output_bytes_equal_the_python_pool(page: Page, site: Path, workers: int) -> None:
    rng = np.random.default_rng(workers)
    data = rng.uniform(0.0, 1000.0, 60_001).astype(np.float32)
    data[:4] = np.array([0.0, np.inf, 1e-40, 3.4e38], dtype=np.float32)  # edge values too
    got, expected_done = run_in_python_and_page(page, site, "map_f32.wasm", data, workers, 4)
    assert [(d["start"], d["end"]) for d in got["done"]] == [
        (d.start, d.end) for d in expected_done
    ]


# A C kernel with what WAT kernels lack: a stack per worker (recursion, 512
# bytes a frame) and a thread-local variable.
DIVE_C = r"""
#include <sharedwasm.h>
static _Thread_local uint32_t salt = 7;
__attribute__((noinline)) static uint32_t dive(uint32_t seed, uint32_t depth) {
    volatile uint32_t frame[128];
    for (uint32_t k = 0; k < 128; k++) frame[k] = seed * 2654435761u + k + salt;
    uint32_t below = depth ? dive(seed + 1, depth - 1) : 0;
    uint32_t sum = 0;
    for (uint32_t k = 0; k < 128; k++) sum += frame[k] ^ k;
    return sum + below;
}
SW_KERNEL(start, end) {
    uint32_t *x = SW_DATA(uint32_t);
    salt += 1;
    for (uint32_t i = start; i < end; i++) x[i] = dive(x[i], x[i] % 24);
}
"""


@pytest.mark.parametrize("workers", [2, 4])
def test_c_kernel_output_equals_the_python_pool(page: Page, site: Path, workers: int) -> None:
    (site / "dive.c").write_text(DIVE_C)
    kernel = sw.Kernel.from_file(sw.build(site / "dive.c"))
    assert kernel.uses_stack
    assert kernel.tls_size
    data = np.random.default_rng(workers).integers(0, 2**32, 4_001, dtype=np.uint32)
    run_in_python_and_page(page, site, "dive.wasm", data, workers, 8)


def test_grow_then_run_covers_the_new_size(page: Page, site: Path) -> None:
    with serving(site) as url:
        page.goto(url)
        got = page.evaluate(
            """async () => {
              const { createPool } = await import("/_sharedwasm/sharedwasm.mjs");
              const pool = await createPool({
                url: "/map_f32.wasm", memory: { initial: 2, maximum: 8 }, workers: 2 });
              const before = pool.data(Float32Array).length;
              const previous = await pool.grow(3);
              const data = pool.data(Float32Array);
              data.fill(4);
              const result = await pool.run("grown");
              const out = pool.data(Float32Array);
              const ok = out.every((v) => v === 6);  // 4 * 4 * 0.25 + 2
              await pool.close();
              return { before, after: out.length, previous, ok,
                       end: result.done.at(-1).end, bytes: pool.memory.buffer.byteLength };
            }"""
        )
    assert got["previous"] == 2
    assert got["bytes"] == 5 * sw.PAGE_SIZE
    assert got["after"] == got["before"] + 3 * sw.PAGE_SIZE // 4
    assert got["end"] == got["after"]
    assert got["ok"] is True


def test_close_terminates_the_workers(page: Page, site: Path) -> None:
    with serving(site) as url:
        page.goto(url)
        page.evaluate(
            """async () => {
              const { createPool } = await import("/_sharedwasm/sharedwasm.mjs");
              window.pool = await createPool({
                url: "/map_f32.wasm", memory: { initial: 2, maximum: 2 }, workers: 3 });
              await window.pool.run("one");
            }"""
        )
        assert len(page.workers) == 3
        error = page.evaluate(
            """async () => {
              await window.pool.close();
              try { await window.pool.run("after"); return null; }
              catch (e) { return e.name; }
            }"""
        )
        assert error == "PoolClosedError"
        page.wait_for_function("true")  # let the page report worker exits
        deadline_ms = 5_000
        waited = 0
        while page.workers and waited < deadline_ms:
            page.wait_for_timeout(50)
            waited += 50
        assert page.workers == []


ENTRIES_C = Path(__file__).resolve().parent / "js" / "fixtures" / "entries.c"

# Runs in the page: a pool that makes its own memory, two arrays of its heap
# made from the served input, then three entries of one module on them.
RUN_ENTRIES_IN_PAGE = """
async ({workers, schedule, chunk, clamp}) => {
  const { createPool } = await import("/_sharedwasm/sharedwasm.mjs");
  const input = await (await fetch("/input.bin")).arrayBuffer();
  const n = input.byteLength / 8;
  const b64 = (view) => {
    const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    }
    return btoa(text);
  };
  const pool = await createPool({ url: "/entries.wasm", workers });
  try {
    const pages = pool.memory.buffer.byteLength / 65536;
    const x = pool.asarray(new Float32Array(input, 0, n));
    const y = pool.asarray(new Float32Array(input, 4 * n, n));
    const how = schedule === "dynamic" ? { schedule, chunk } : {};
    const saxpy = await pool.run("saxpy", { args: [2.5, x, y], entry: "saxpy", ...how });
    const afterSaxpy = b64(y);
    await pool.run("clamp", { args: { y, ...clamp }, entry: "clamp_scale", ...how });
    const partial = pool.partials();
    await pool.run("sum", { args: [x, partial], entry: "sum", ...how });
    return {
      pages, saxpy: afterSaxpy, clamp: b64(y), partial: b64(partial),
      total: partial.reduce((a, b) => a + b, 0),
      elements: saxpy.done.map((d) => d.elements),
    };
  } finally {
    await pool.close();
  }
}
"""


@pytest.mark.parametrize(("workers", "schedule"), [(2, "static"), (3, "static"), (3, "dynamic")])
def test_entries_with_arguments_equal_the_python_pool(
    page: Page, site: Path, workers: int, schedule: str
) -> None:
    """Several entries of one module, on the same arrays, leave the Python pool's bytes."""
    kernel = sw.Kernel.from_file(sw.build(ENTRIES_C, site / "entries.wasm"))
    rng = np.random.default_rng(workers)
    n = 50_003
    # Integer-valued floats: their sum is exact in any order, as a dynamic run's is.
    x = rng.integers(-1000, 1000, n).astype(np.float32)
    y = rng.uniform(-900.0, 900.0, n).astype(np.float32)
    (site / "input.bin").write_bytes(x.tobytes() + y.tobytes())
    clamp: dict[str, Any] = {"limit": 500.0, "scale": 0.75, "bias": -(2**40), "shift": 33}
    how: dict[str, Any] = {"schedule": schedule, "chunk": 97} if schedule == "dynamic" else {}

    with sw.WorkerPool(kernel, workers=workers) as pool:
        pages = pool.memory.pages
        px, py = pool.asarray(x), pool.asarray(y)
        pool.run("saxpy", 2.5, px, py, entry="saxpy", **how)
        after_saxpy = py.tobytes()
        pool.run("clamp", py, entry="clamp_scale", **clamp, **how)
        after_clamp = py.tobytes()
        partial = pool.partials()
        pool.run("sum", px, partial, entry="sum", **how)
        partial_bytes, total = partial.tobytes(), float(partial.sum())

    with serving(site) as url:
        page.goto(url)
        got: dict[str, Any] = page.evaluate(
            RUN_ENTRIES_IN_PAGE,
            {"workers": workers, "schedule": schedule, "chunk": 97, "clamp": clamp},
        )
    assert got["pages"] == pages
    assert base64.b64decode(got["saxpy"]) == after_saxpy
    assert base64.b64decode(got["clamp"]) == after_clamp
    assert got["total"] == total == float(x.astype(np.float64).sum())
    assert sum(got["elements"]) == n
    if schedule == "static":
        # The same ranges per worker, so the same partial sums, bit for bit.
        assert base64.b64decode(got["partial"]) == partial_bytes
