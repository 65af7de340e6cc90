"""The `sharedwasm` command line: `demo`, `build`, `serve`, `info` and `cache`."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import _build, _builtin, _cache, _serve
from ._errors import BuildWarning, KernelError, ToolchainNotFoundError
from ._kernel import Kernel
from ._lifecycle import default_workers
from ._memory import Memory
from ._pool import WorkerPool
from ._version import __version__
from ._wasmtime import PAGE_SIZE


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {value})")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in [0, 65535] (got {value})")
    return value


def _host(text: str) -> str:
    try:
        return _serve.check_host(text)
    except ValueError as exc:  # argparse names the option itself: "argument --host: ..."
        raise argparse.ArgumentTypeError(str(exc).removeprefix("host ")) from None


def _directory(text: str) -> Path:
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"must be an existing directory (got {text!r})")
    return path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sharedwasm",
        description="Run one WebAssembly kernel on a pool of threads over one shared memory.",
    )
    parser.add_argument("--version", action="version", version=f"sharedwasm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="fill a shared memory with pi, run a kernel on every CPU, check it against numpy",
    )
    demo.add_argument("--workers", type=_positive, default=None, help="default: one per CPU")
    demo.add_argument("--pages", type=_positive, default=128, help="initial pages (64 KiB each)")
    demo.add_argument("--maximum", type=_positive, default=512, help="maximum pages")
    demo.add_argument(
        "--elements", type=int, default=None, help="float32 elements to process (default: all)"
    )
    build = sub.add_parser(
        "build",
        help="compile a C kernel into a shared-memory WebAssembly module",
        description=(
            "Compile SOURCE with clang and wasm-ld for wasm32 with atomics, bulk memory and an "
            "imported shared memory, link the sharedwasm ABI, add stack checks (binaryen), and "
            "check the result against the kernel ABI. The header is sharedwasm.h, in "
            f"{_build.get_include()}."
        ),
    )
    build.add_argument(
        "source",
        metavar="SOURCE",
        type=Path,
        nargs="+",
        help="a .c (or .cc/.cpp) file; several are linked into one module",
    )
    build.add_argument(
        "-o", "--output", type=Path, default=None, help="output .wasm (default: SOURCE.wasm)"
    )
    build.add_argument(
        "-O",
        dest="optimize",
        choices=_build.OPTIMIZE_LEVELS,
        default="2",
        help="optimisation level, as clang's -O (default: 2)",
    )
    build.add_argument("--simd", action="store_true", help="allow 128-bit SIMD (-msimd128)")
    build.add_argument(
        "--no-stack-check",
        dest="stack_check",
        action="store_false",
        help="leave out the stack overflow checks (no binaryen needed)",
    )
    build.add_argument(
        "-D",
        dest="defines",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="define a macro",
    )
    serve = sub.add_parser(
        "serve",
        help="serve a directory to a browser with the headers that shared memory needs",
        description=(
            "Serve DIR over HTTP with the cross-origin isolation headers, the sharedwasm "
            f"JS runtime at {_serve.RUNTIME_PATH} and the built-in kernels at "
            f"{_serve.KERNELS_PATH}; X.wasm is compiled from X.wat when only the text exists."
        ),
    )
    serve.add_argument(
        "dir",
        metavar="DIR",
        nargs="?",
        type=_directory,
        default=None,
        help="directory to serve (default: the built-in demo)",
    )
    serve.add_argument(
        "--port", type=_port, default=_serve.DEFAULT_PORT, help="0 picks a free port"
    )
    serve.add_argument(
        "--host",
        type=_host,
        default=_serve.DEFAULT_HOST,
        help="address to bind (default: loopback only; 0.0.0.0 or :: for every interface)",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="log every request to stderr")
    sub.add_parser("info", help="print versions, the CPU count, the toolchain and the cache")
    cache = sub.add_parser(
        "cache",
        help="show where the compiled-code cache is, or clear it",
        description=(
            "Compiled kernels are kept in a per-user cache directory so that other processes "
            f"load them instead of compiling again. {_cache.DIR_VARIABLE} moves it, "
            f"{_cache.SWITCH_VARIABLE}=0 turns it off."
        ),
    )
    cache.add_argument(
        "action",
        nargs="?",
        choices=("show", "clear"),
        default="show",
        help="show (the default) prints where it is; clear removes its entries and key",
    )
    return parser


def _demo(args: argparse.Namespace) -> int:
    if args.pages > args.maximum:
        print(
            f"sharedwasm demo: --pages ({args.pages}) must be <= --maximum ({args.maximum})",
            file=sys.stderr,
        )
        return 2
    t_start = time.perf_counter()
    memory = Memory(args.pages, args.maximum, shared=True)
    print(
        f"memory  {memory.pages} pages ({memory.byte_length / 2**20:.0f} MiB), maximum "
        f"{memory.maximum} pages ({memory.maximum * PAGE_SIZE / 2**20:.0f} MiB), shared"
    )
    kernel = _builtin.map_f32_kernel()
    print(f"kernel  {kernel.name}: x = x*x*0.25 + sqrt(x), compiled once")
    workers = args.workers or default_workers()
    with WorkerPool(kernel, memory, workers) as pool:
        lay = pool.layout
        print(
            f"pool    {pool.workers} workers READY; status board [{lay.status_offset}, "
            f"{lay.status_end}), control [{lay.control_offset}, {lay.control_end}), "
            f"data from {pool.data_offset}"
        )
        data = pool.data(np.float32)
        elements = len(data) if args.elements is None else args.elements
        if not 0 <= elements <= len(data):
            print(
                f"sharedwasm demo: --elements must be in [0, {len(data)}] (got {elements})",
                file=sys.stderr,
            )
            return 2
        data.fill(0.0)
        data[:elements] = math.pi
        expected = _builtin.map_f32_reference(data[:elements])
        print(f"input   {elements} float32 elements filled with pi by the main thread")
        result = pool.run("batch-1", elements=elements)
        print(f"run     {result.run_id}")
        for d in result.done:
            print(
                f"  DONE  worker {d.worker_index}  [{d.start}, {d.end})  "
                f"{d.end - d.start} elements  {d.elapsed * 1e3:.3f} ms"
            )
        print(f"status  {pool.status.tolist()}")
        output = pool.data(np.float32)
        good = int(np.count_nonzero(output[:elements] == expected))
        untouched = bool(np.all(output[elements:] == 0.0))
        ok = good == elements and untouched
        print(
            f"check   {good}/{elements} elements equal numpy"
            + ("" if untouched else "; elements past the range were modified")
            + ("" if ok else "  FAILED")
        )
        total_ms = (time.perf_counter() - t_start) * 1e3
        print(f"elapsed {result.elapsed * 1e3:.3f} ms run, {total_ms:.1f} ms total")
    return 0 if ok else 1


def _build_command(args: argparse.Namespace) -> int:
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", BuildWarning)
            out = _build.build(
                args.source if len(args.source) > 1 else args.source[0],
                args.output,
                optimize=args.optimize,
                simd=args.simd,
                stack_check=args.stack_check,
                defines=args.defines,
            )
    except (KernelError, ToolchainNotFoundError, FileNotFoundError) as exc:
        print(f"sharedwasm build: {exc}", file=sys.stderr)
        return 1
    for warning in caught:
        print(warning.message, file=sys.stderr)
    kernel = Kernel.from_file(out)
    stack = "a stack per worker" if kernel.uses_stack else "no stack"
    if kernel.stack_checked:
        stack += ", checked"
    if kernel.tls_size:
        stack += f", {kernel.tls_size} bytes of thread-local data"
    print(
        f"built {out}: {out.stat().st_size} bytes, static data up to {kernel.static_end}, "
        f"{stack}, imports {', '.join(('memory', *kernel.globals))}"
    )
    for entry in kernel.entries.values():
        print(f"  entry {entry}")
    return 0


def _serve_command(args: argparse.Namespace) -> int:
    try:
        server = _serve.make_server(args.dir, args.host, args.port, verbose=args.verbose)
    except NotADirectoryError as exc:
        print(f"sharedwasm serve: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(
            f"sharedwasm serve: cannot listen on {args.host}:{args.port}: {reason}",
            file=sys.stderr,
        )
        return 1
    with server:
        if not server.loopback_only:
            print(
                f"sharedwasm serve: warning: {args.host} is not a loopback address; "
                "the server is reachable from other machines",
                file=sys.stderr,
            )
        # Flushed, so a script or test reading a pipe sees the URL before any request.
        print(f"serving {server.root} on {server.url}", flush=True)
        # Ctrl-C is how this command ends, so it is a clean exit rather than an error.
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    return 0


def _size(size: int) -> str:
    return f"{size / 2**10:.0f} KiB" if size < 2**20 else f"{size / 2**20:.1f} MiB"


def _cache_line() -> str:
    info = _cache.info()
    if info.state == "off":
        detail = f"off: {info.reason}"
    elif info.state == "unusable":
        detail = f"not used: {info.reason}"
    elif info.reason:
        detail = f"on, {info.reason}"
    else:
        count = f"{info.entries} entr{'y' if info.entries == 1 else 'ies'}"
        detail = f"on, {count}, {_size(info.size)}"
    return f"cache      {info.directory or 'none'} ({detail})"


def _cache_command(args: argparse.Namespace) -> int:
    if args.action == "show":
        print(_cache_line())
        return 0
    try:
        directory, removed = _cache.clear()
    except OSError as exc:
        print(f"sharedwasm cache clear: {exc}", file=sys.stderr)
        return 1
    if directory is None:
        print("sharedwasm cache clear: there is no compiled-code cache here", file=sys.stderr)
        return 0
    print(f"removed {removed} file{'' if removed == 1 else 's'} from {directory}")
    return 0


def _info() -> int:
    import importlib.metadata

    print(f"sharedwasm {__version__}")
    print(f"wasmtime   {importlib.metadata.version('wasmtime')}")
    print(f"numpy      {np.__version__}")
    print(f"python     {platform.python_version()} ({platform.python_implementation()})")
    print(f"platform   {platform.platform()}")
    print(f"cpus       {default_workers()} usable of {os.cpu_count()}")
    print(_cache_line())
    for label, tool in _build.toolchain().items():
        print(f"{label:<10} {tool}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "demo":
        try:
            return _demo(args)
        except BrokenPipeError:
            # The reader (`| head`) left; Python's exit would flush stdout into
            # the closed pipe again, so point it at /dev/null first.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 0
    if args.command == "serve":
        return _serve_command(args)
    if args.command == "build":
        return _build_command(args)
    if args.command == "cache":
        return _cache_command(args)
    return _info()
