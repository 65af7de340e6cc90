"""The same kernel, the same .wasm and N, in Chromium and in Python.

`sharedwasm serve` serves a blank page, the `map_f32` kernel and the
JavaScript runtime; headless Chromium (Debian's, driven by playwright) builds
a pool of N Web Workers over one shared memory and runs the kernel over
1,000,000 float32 (10,000 with --quick) again and again. The Python pool does
the same with N threads. Reported: each one's per-run time as its run result
measures it (publish to last DONE), and the browser's over Python's.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import numpy as np
import wasmtime
from _harness import emit, main_guard, parser, summarize
from playwright.sync_api import sync_playwright

import sharedwasm as sw
from sharedwasm._builtin import KERNEL_DIR
from sharedwasm._serve import serving
from sharedwasm.testing import CHROMIUM, CHROMIUM_ARGS

BENCH = "browser"
PAGES = 128

IN_PAGE = """
async ({workers, elements, repeat}) => {
  const { createPool } = await import("/_sharedwasm/sharedwasm.mjs");
  const pool = await createPool({
    url: "/map_f32.wasm", memory: { initial: 128, maximum: 128 }, workers });
  try {
    const data = pool.data(Float32Array).subarray(0, elements);
    const samples = [];
    for (let i = 0; i < repeat + 3; i++) {
      data.fill(Math.PI);
      const result = await pool.run("bench", { elements });
      if (i >= 3) samples.push(result.elapsed);
    }
    return samples;
  } finally {
    await pool.close();
  }
}
"""


def main() -> int:
    args = parser(str(__doc__).partition("\n")[0]).parse_args()
    elements = 10_000 if args.quick else 1_000_000
    repeat = 5 if args.quick else 50
    wasm = wasmtime.wat2wasm((KERNEL_DIR / "map_f32.wat").read_text())
    kernel = sw.Kernel.from_bytes(wasm, name="map_f32")
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp)
        (site / "index.html").write_text("<!doctype html><title>bench</title>")
        (site / "map_f32.wasm").write_bytes(wasm)
        with sync_playwright() as playwright, serving(site) as url:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
            try:
                page = browser.new_page()
                page.goto(url)
                results: dict[tuple[str, int], list[float]] = {}
                for workers in (1, 2):
                    results["chromium", workers] = page.evaluate(
                        IN_PAGE, {"workers": workers, "elements": elements, "repeat": repeat}
                    )
                    with sw.WorkerPool(kernel, sw.Memory(PAGES, PAGES), workers) as pool:
                        view = pool.data(np.float32)[:elements]
                        samples: list[float] = []
                        for i in range(repeat + 3):
                            view[:] = np.pi
                            elapsed = pool.run("bench", elements=elements).elapsed
                            if i >= 3:
                                samples.append(elapsed)
                        results["python", workers] = samples
            finally:
                browser.close()
    for workers in (1, 2):
        python = statistics.median(results["python", workers])
        for who in ("chromium", "python"):
            samples = results[who, workers]
            emit(
                BENCH,
                f"{who}/w{workers}",
                contender=who,
                workers=workers,
                kernel="map_f32",
                elements=elements,
                ratio_vs_python=statistics.median(samples) / python,
                **summarize(samples),
            )
    return 0


if __name__ == "__main__":
    main_guard(main)
