"""The development web server behind `sharedwasm serve`.

A browser only hands out `SharedArrayBuffer` (and so shared WebAssembly memory)
to a cross-origin isolated page, which takes the COOP and COEP headers on the
page and CORP on everything it loads. Ordinary static servers send none of them,
so a page that works here would fail elsewhere for reasons that have nothing to do
with its code; this server sends them on every response, errors included.

It serves one directory plus two fixed mounts: the JS runtime under
`RUNTIME_PATH` and the built-in kernels under `KERNELS_PATH`. A request for
`X.wasm` that only exists as `X.wat` is compiled on the fly, so kernels can be
edited as text and reloaded. It never lists a directory and never serves a file
whose resolved path lies outside the directory it was asked from; every refused
path is a 403.

Standard library only (plus wasmtime for WAT), and meant for a developer's own
machine: it binds to 127.0.0.1 unless told otherwise, and refuses an empty host
rather than reading it as "every interface". It answers only HTTP/1.0 and 1.1;
anything else (HTTP/0.9, HTTP/2, TLS) gets an HTTP/1.1 error with the headers. At
most `DevServer.max_workers` connections are handled at once; the rest wait in a
listen backlog of `DevServer.request_queue_size`, and a connection that stays
silent for `_Handler.timeout` seconds is closed.
"""

from __future__ import annotations

import contextlib
import email.utils
import errno
import ipaddress
import os
import re
import shutil
import socket
import socketserver
import stat as statmod
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, unquote, urlsplit

import wasmtime

from ._version import __version__

DEFAULT_HOST = "127.0.0.1"
"""Loopback, so the development server is not reachable from other machines by default."""

DEFAULT_PORT = 8000

RUNTIME_PATH = "/_sharedwasm/"
"""URL path under which the package's JS runtime is served."""

KERNELS_PATH = "/_sharedwasm/kernels/"
"""URL path under which the built-in kernels are served (`map_f32.wasm` compiled from WAT)."""

PACKAGE_DIR = Path(__file__).parent
RUNTIME_DIR = PACKAGE_DIR / "web" / "runtime"
"""Directory served at `RUNTIME_PATH`."""

KERNELS_DIR = PACKAGE_DIR / "_kernels"
"""Directory served at `KERNELS_PATH`."""

DEMO_DIR = PACKAGE_DIR / "web" / "demo"
"""Directory served when no root is given."""

ISOLATION_HEADERS: tuple[tuple[str, str], ...] = (
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Embedder-Policy", "require-corp"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
)
"""The headers that make a page cross-origin isolated, so it may share wasm memory."""

COMMON_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Content-Type-Options", "nosniff"),
    # Revalidate every time: an edited kernel or script must show up on reload.
    ("Cache-Control", "no-cache"),
)
"""Headers sent on every response, with or without isolation."""

# Fixed here rather than taken from `mimetypes`, whose answers depend on the
# machine's database (some map .js to application/x-javascript, most lack .wasm),
# and a module script or `WebAssembly.instantiateStreaming` refuses a wrong type.
MIME_TYPES: dict[str, str] = {
    ".wasm": "application/wasm",
    ".mjs": "text/javascript",
    ".js": "text/javascript",
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".css": "text/css",
    ".json": "application/json",
    ".map": "application/json",
    ".wat": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}
DEFAULT_MIME_TYPE = "application/octet-stream"

_ALLOWED_METHODS = ("GET", "HEAD")
_TEXT = "text/plain; charset=utf-8"
_ABSOLUTE_FORM = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_HTTP_VERSION = re.compile(r"HTTP/(\d+)\.(\d+)")
# The first byte of a TLS record carrying a handshake, such as a ClientHello.
_TLS_HANDSHAKE = b"\x16"
# Errors that mean "no such file" rather than "cannot look".
_MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})


def mime_type(name: str) -> str:
    """Return the Content-Type for a file name, by its (case-insensitive) suffix."""
    return MIME_TYPES.get(Path(name).suffix.lower(), DEFAULT_MIME_TYPE)


def _segments(url_path: str) -> tuple[str, ...]:
    return tuple(part for part in url_path.split("/") if part)


def is_loopback(address: str) -> bool:
    """Return whether a numeric address only reaches this machine (127.0.0.0/8, ::1).

    `0.0.0.0` and `::` mean every interface, so they are not loopback; neither is
    anything that is not a numeric address.
    """
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def check_host(host: str) -> str:
    """Return `host` if it names an address to bind.

    Raises:
        ValueError: `host` is empty or blank, which the socket layer would read
            as every interface (what `--host "$HOST"` passes with the variable
            unset): that must not quietly expose the server to the network.
    """
    if not host.strip():
        raise ValueError(
            f"host must be a non-empty address such as {DEFAULT_HOST!r}, or '0.0.0.0' "
            f"for every interface (got {host!r})"
        )
    return host


def _stat(path: Path) -> os.stat_result | None:
    """Return the stat of `path`, or `None` when it does not exist.

    Every other failure (a name too long, a permission denied, an I/O error)
    propagates, so the caller can answer it with its own status instead of 404.
    """
    try:
        return os.stat(path)
    except OSError as exc:
        if exc.errno in _MISSING_ERRNOS:
            return None
        raise


class _Reply(Exception):
    """Ends a request early with an error status; internal to the handler."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Redirect(Exception):
    """Ends a request with a redirect to the slash form of a directory."""

    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


class DevServer(ThreadingHTTPServer):
    """A threaded HTTP server for one directory plus the package's mounts.

    Build it with `make_server`. `serve_forever` blocks; call `shutdown` from
    another thread to stop it. Connections are handled on at most `max_workers`
    daemon threads, so a stuck browser connection never keeps the process alive;
    while all of them are busy, new connections wait in the listen backlog.
    `server_close` closes the connections still open, so it returns promptly and
    leaves no handler thread behind.

    Attributes:
        root: the resolved directory served at `/`.
        isolate: whether responses carry the cross-origin isolation headers.
        verbose: whether every request is logged to stderr.
        mounts: `(url segments, directory)` pairs checked before `root`, longest first.
        response_headers: the headers added to every response.
        loopback_only: whether the bound address only reaches this machine.
    """

    daemon_threads = True
    # socketserver's default of 5 makes the 6th of a page's simultaneous
    # connections wait for a SYN retry, a second or more.
    request_queue_size = 128
    max_workers = 32
    """Connections handled at once; each holds one thread until it closes or times out."""
    close_timeout = 5.0
    """Seconds `server_close` waits for handler threads; one still busy then (compiling
    a large WAT file) finishes on its own, as a daemon thread."""

    def __init__(
        self,
        server_address: tuple[str, int],
        root: Path,
        *,
        isolate: bool,
        verbose: bool,
        mounts: Sequence[tuple[str, Path]],
    ) -> None:
        self.root = root
        self.isolate = isolate
        self.verbose = verbose
        self.mounts: tuple[tuple[tuple[str, ...], Path], ...] = tuple(
            sorted(
                ((_segments(prefix), directory) for prefix, directory in mounts),
                key=lambda mount: -len(mount[0]),
            )
        )
        self.response_headers: tuple[tuple[str, str], ...] = (
            ISOLATION_HEADERS if isolate else ()
        ) + COMMON_HEADERS
        self._wasm_cache: dict[Path, tuple[tuple[int, int], bytes]] = {}
        self._wasm_lock = threading.Lock()
        self._workers = threading.BoundedSemaphore(self.max_workers)
        self._closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._handlers: set[threading.Thread] = set()
        self._connections_lock = threading.Lock()
        super().__init__(server_address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can stall for
        # seconds on a machine without working reverse DNS; nothing here uses it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Wait for a free worker here, on the accept loop, so that connections
        # beyond the bound stay in the backlog instead of each getting a thread.
        # The wait polls, so that `shutdown` is not held up by a busy server.
        try:
            while not self._workers.acquire(timeout=0.05):
                if self._closing.is_set():
                    self.shutdown_request(request)
                    return
        except BaseException:  # Ctrl-C while waiting: the connection is ours to close
            self.shutdown_request(request)
            raise
        # Started here rather than by ThreadingMixIn, which does not keep daemon
        # threads, so that `server_close` can join them.
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"sharedwasm-serve-{self.port}-conn",
            daemon=self.daemon_threads,
        )
        with self._connections_lock:
            self._handlers = {t for t in self._handlers if t.is_alive()}
            self._handlers.add(thread)
            self._connections.add(request)
        try:
            thread.start()
        except BaseException:
            with self._connections_lock:
                self._handlers.discard(thread)
            self.shutdown_request(request)
            self._workers.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._workers.release()

    def shutdown_request(self, request: Any) -> None:
        # Forgotten under the lock before it is closed, so `server_close` never
        # shuts down a closed socket whose descriptor may already be reused.
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that leaves or stalls, or a connection closed by `server_close`,
        # is routine; anything else is a bug worth a traceback.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)

    def shutdown(self) -> None:
        """Stop `serve_forever` and wait until it has returned; call it from another thread."""
        self._closing.set()
        super().shutdown()

    def server_close(self) -> None:
        """Close the listening socket and every open connection, then join the handler threads."""
        self._closing.set()
        with self._connections_lock:
            # An idle keep-alive or a slow client would otherwise hold its thread,
            # and so this join, for up to the handler's timeout.
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            handlers = list(self._handlers)
        super().server_close()
        deadline = time.monotonic() + self.close_timeout
        for thread in handlers:
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def loopback_only(self) -> bool:
        """Whether the bound address only reaches this machine (false for 0.0.0.0 or ::)."""
        return is_loopback(str(self.server_address[0]))

    @property
    def port(self) -> int:
        """The bound port, which is the real one when the server was asked for port 0."""
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        """The base URL, ending in `/`."""
        host = str(self.server_address[0])
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def compiled_wasm(self, wat: Path, stat: os.stat_result) -> bytes:
        """Return the wasm bytes of a WAT file, compiling it only when it changed.

        Safe to call from several handler threads; two racing misses both
        compile and the later one wins, which costs time but never correctness.

        Raises:
            wasmtime.WasmtimeError: the text does not compile.
        """
        key = (stat.st_mtime_ns, stat.st_size)
        with self._wasm_lock:
            hit = self._wasm_cache.get(wat)
        if hit is not None and hit[0] == key:
            return hit[1]
        data = bytes(wasmtime.wat2wasm(wat.read_bytes()))
        with self._wasm_lock:
            self._wasm_cache[wat] = (key, data)
        return data


class _IPv6DevServer(DevServer):
    address_family = socket.AF_INET6


def default_mounts() -> tuple[tuple[str, Path], ...]:
    """Return the fixed mounts: the JS runtime and the built-in kernels."""
    return ((KERNELS_PATH, KERNELS_DIR), (RUNTIME_PATH, RUNTIME_DIR))


def make_server(
    root: Path | str | None,
    host: str = DEFAULT_HOST,
    port: int = 0,
    *,
    isolate: bool = True,
    verbose: bool = False,
) -> DevServer:
    """Bind a development server for `root` without starting it.

    Args:
        root: the directory served at `/`; `None` serves the built-in demo.
        host: the address to bind; an IPv6 address binds an IPv6 socket.
        port: the port to bind; 0 picks a free one (read it from `.port` or `.url`).
        isolate: send the cross-origin isolation headers; `False` makes a plain
            static server, on which a page cannot get shared memory.
        verbose: log every request to stderr.

    Returns:
        The bound server. Call `serve_forever` (blocking) or use `serving`.

    Raises:
        ValueError: `host` is empty, or `port` is out of range.
        NotADirectoryError: `root` is not an existing directory.
        OSError: the address cannot be bound, for instance because the port is in use.
    """
    check_host(host)
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in [0, 65535] (got {port!r})")
    directory = DEMO_DIR if root is None else Path(root)
    if not directory.is_dir():
        raise NotADirectoryError(f"root must be an existing directory (got {str(directory)!r})")
    cls = _IPv6DevServer if ":" in host else DevServer
    return cls(
        (host, port),
        directory.resolve(),
        isolate=isolate,
        verbose=verbose,
        mounts=default_mounts(),
    )


@contextlib.contextmanager
def serving(
    root: Path | str | None,
    host: str = DEFAULT_HOST,
    port: int = 0,
    *,
    isolate: bool = True,
    verbose: bool = False,
    timeout: float = 10.0,
) -> Iterator[str]:
    """Serve `root` on a daemon thread for the duration of a `with` block.

    The arguments are those of `make_server`; `timeout` bounds the wait for the
    server thread to stop on exit. Call it from any thread.

    Yields:
        The base URL, ending in `/`.

    Raises:
        TimeoutError: the server thread did not stop within `timeout` seconds.
    """
    server = make_server(root, host, port, isolate=isolate, verbose=verbose)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        name=f"sharedwasm-serve-{server.port}",
        daemon=True,
    )
    thread.start()
    try:
        yield server.url
    finally:
        # shutdown() waits without a bound, so it runs on a helper thread
        # that is joined with one.
        stopper = threading.Thread(
            target=server.shutdown, name="sharedwasm-serve-stop", daemon=True
        )
        stopper.start()
        stopper.join(timeout)
        thread.join(timeout)
        server.server_close()
    if thread.is_alive():
        raise TimeoutError(f"dev server thread did not stop within timeout={timeout!r} s")


class _Handler(BaseHTTPRequestHandler):
    """Answers GET and HEAD from the server's root and mounts; everything else is a 405."""

    server: DevServer
    raw_requestline: bytes
    protocol_version = "HTTP/1.1"
    server_version = f"sharedwasm/{__version__}"
    sys_version = ""
    # A connection holds one of the server's few workers, so an idle keep-alive
    # or a client that sends nothing must give it back soon.
    timeout = 10
    # The stdlib answers a request whose version it has not read yet (or that
    # it read as 0.9) HTTP/0.9 style: a bare body without status line or headers.
    # Every answer here is HTTP/1.x, so the headers always go out.
    default_request_version = "HTTP/1.0"

    # -- protocol ----------------------------------------------------------

    def handle(self) -> None:
        try:
            first = self.connection.recv(1, socket.MSG_PEEK)
        except OSError:  # silent until the timeout, or reset: nothing to answer
            return
        if first == _TLS_HANDSHAKE:
            # Read what the client sent so far; closing a socket with unread data
            # resets the connection, which can discard the answer in flight.
            with contextlib.suppress(OSError):
                self.connection.recv(65536)
            self._refuse(
                "<TLS handshake>",
                HTTPStatus.BAD_REQUEST,
                "request must be plain HTTP (got a TLS handshake); use http://, not https://",
            )
            return
        super().handle()

    def parse_request(self) -> bool:
        line = self.raw_requestline.decode("iso-8859-1").rstrip("\r\n")
        words = line.split()
        if len(words) == 2:
            # HTTP/0.9 has no headers: the stdlib would read none, then answer
            # with a bare body.
            self._refuse(
                line,
                HTTPStatus.BAD_REQUEST,
                f"request line must end in an HTTP version such as HTTP/1.1 (got {line!r})",
            )
            return False
        version = _HTTP_VERSION.fullmatch(words[-1]) if len(words) == 3 else None
        if version is not None and int(version.group(1)) != 1:
            self._refuse(
                line,
                HTTPStatus.HTTP_VERSION_NOT_SUPPORTED,
                f"HTTP version must be 1.0 or 1.1 (got {words[-1]!r})",
            )
            return False
        if not super().parse_request():
            return False
        if self.command not in _ALLOWED_METHODS:
            # The body, if any, is never read, so the connection cannot be reused.
            self.close_connection = True
            self._send_text(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"method must be GET or HEAD (got {self.command!r})",
                extra=(("Allow", ", ".join(_ALLOWED_METHODS)), ("Connection", "close")),
            )
            return False
        return True

    def do_GET(self) -> None:
        self._respond(head=False)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def end_headers(self) -> None:
        for name, value in self.server.response_headers:
            self.send_header(name, value)
        super().end_headers()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The stdlib sends an HTML page without our headers' guarantees spelled
        # out; plain text reads the same in a browser, curl and a test.
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.INTERNAL_SERVER_ERROR
        text = message or status.phrase
        if explain:
            text = f"{text}: {explain}"
        self._send_text(status, text, extra=(("Connection", "close"),))

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def log_error(self, format: str, *args: Any) -> None:
        # Failures on the server's side (a WAT file that does not compile) are
        # worth seeing in the terminal even when requests are not logged; a 505
        # is the client's choice of protocol, not one of them.
        status = args[0] if args and isinstance(args[0], int) else 0
        if self.server.verbose or (
            status >= 500 and status != HTTPStatus.HTTP_VERSION_NOT_SUPPORTED
        ):
            sys.stderr.write(f"{self.address_string()} - {format % args}\n")

    def _refuse(self, requestline: str, status: HTTPStatus, text: str) -> None:
        """Answer a request that was never parsed, and close the connection."""
        self.command = ""
        self.requestline = requestline
        self.request_version = self.default_request_version
        self.close_connection = True
        self.send_error(status, text)

    # -- responses ---------------------------------------------------------

    def _send_text(
        self,
        status: HTTPStatus,
        text: str,
        *,
        extra: Sequence[tuple[str, str]] = (),
    ) -> None:
        if status >= 400:
            self.log_error("code %d, message %s", int(status), text)
        body = (text + "\n").encode("utf-8", "replace")
        self.send_response(status)
        self.send_header("Content-Type", _TEXT)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and status >= 200 and status not in (204, 304):
            self.wfile.write(body)

    def _respond(self, *, head: bool) -> None:
        try:
            path, stat, content_type, data = self._resource()
        except _Redirect as redirect:
            self.send_response(HTTPStatus.MOVED_PERMANENTLY)
            self.send_header("Location", redirect.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        except _Reply as reply:
            self._send_text(reply.status, reply.message)
            return
        except OSError as exc:
            error = self._path_error(exc)
            self._send_text(error.status, error.message)
            return
        etag = f'"{"wat-" if data is not None else ""}{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        validators = (
            ("ETag", etag),
            ("Last-Modified", email.utils.formatdate(stat.st_mtime, usegmt=True)),
        )
        if self._not_modified(etag, stat.st_mtime):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            for name, value in validators:
                self.send_header(name, value)
            self.end_headers()
            return
        if data is not None:
            self._send_body(content_type, len(data), validators, head, data=data)
            return
        try:
            file = path.open("rb")
        except OSError as exc:
            error = self._path_error(exc)
            self._send_text(error.status, error.message)
            return
        with file:
            # Length and validators come from the open file, so a file replaced
            # between the lookup and here still gets a consistent response.
            fstat = os.fstat(file.fileno())
            self._send_body(content_type, fstat.st_size, validators, head, file=file)

    def _send_body(
        self,
        content_type: str,
        length: int,
        validators: Sequence[tuple[str, str]],
        head: bool,
        *,
        data: bytes | None = None,
        file: BinaryIO | None = None,
    ) -> None:
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for name, value in validators:
            self.send_header(name, value)
        self.end_headers()
        if head:
            return
        try:
            if data is not None:
                self.wfile.write(data)
            elif file is not None:
                shutil.copyfileobj(file, self.wfile)
        except OSError:
            # The browser navigated away or stalled, or the file failed mid-read.
            # The length is already promised, so closing is the only honest end.
            self.close_connection = True

    def _not_modified(self, etag: str, mtime: float) -> bool:
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            # RFC 9110: If-None-Match wins over If-Modified-Since, and uses the
            # weak comparison, so a W/ prefix does not matter.
            tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
            return "*" in tags or etag in tags
        if_modified_since = self.headers.get("If-Modified-Since")
        if if_modified_since is None:
            return False
        try:
            since = email.utils.parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError, IndexError):
            return False
        if since.tzinfo is None:
            return False
        return int(mtime) <= since.timestamp()

    def _path_error(self, exc: OSError) -> _Reply:
        """Turn a failure to look up or open the requested file into an error response."""
        if exc.errno == errno.ENAMETOOLONG:
            # The target itself is not echoed: it is the thing that is too long.
            return _Reply(
                HTTPStatus.REQUEST_URI_TOO_LONG,
                "path must fit the file system's name length limits "
                f"(got a target of {len(self.path)} characters)",
            )
        if isinstance(exc, PermissionError):
            return _Reply(HTTPStatus.FORBIDDEN, f"path is not readable (got {self.path!r})")
        if exc.errno in _MISSING_ERRNOS:
            return _Reply(HTTPStatus.NOT_FOUND, f"path does not exist (got {self.path!r})")
        # strerror only: the message would otherwise give away the server's own paths.
        return _Reply(
            HTTPStatus.INTERNAL_SERVER_ERROR,
            f"cannot read path {self.path!r}: {exc.strerror or type(exc).__name__}",
        )

    # -- routing -----------------------------------------------------------

    def _resource(self) -> tuple[Path, os.stat_result, str, bytes | None]:
        """Map the request target to a file: `(path, stat, content type, compiled bytes)`.

        Raises:
            _Reply: the path is refused (403), missing (404) or does not compile (500).
            _Redirect: the path names a directory with an index but lacks the slash.
            OSError: the file system refused a lookup other than "does not exist".
        """
        segments, trailing_slash, query = self._request_segments()
        base, rest = self._mount(segments)
        candidate = base.joinpath(*rest)
        resolved = self._inside(candidate, base)
        stat = _stat(resolved)
        if stat is not None and statmod.S_ISDIR(stat.st_mode):
            index = self._inside(candidate / "index.html", base)
            index_stat = _stat(index)
            if index_stat is None or not statmod.S_ISREG(index_stat.st_mode):
                raise _Reply(
                    HTTPStatus.NOT_FOUND,
                    f"directory has no index.html (got {self.path!r}); directories are not listed",
                )
            if not trailing_slash:
                # Relative links in the index resolve against the slash form. The
                # location is rebuilt from the cleaned segments, so it can never
                # become a protocol-relative `//host` redirect.
                location = "/" + "".join(quote(part) + "/" for part in segments)
                raise _Redirect(location + (f"?{query}" if query else ""))
            return index, index_stat, mime_type(index.name), None
        # Anything but a regular file (a FIFO, a device) is missing: opening one could block.
        if stat is not None and statmod.S_ISREG(stat.st_mode):
            if trailing_slash:
                raise _Reply(HTTPStatus.NOT_FOUND, f"path is not a directory (got {self.path!r})")
            return resolved, stat, mime_type(candidate.name), None
        if candidate.suffix == ".wasm" and not trailing_slash:
            wat = self._inside(candidate.with_suffix(".wat"), base)
            wat_stat = _stat(wat)
            if wat_stat is not None and statmod.S_ISREG(wat_stat.st_mode):
                try:
                    data = self.server.compiled_wasm(wat, wat_stat)
                except wasmtime.WasmtimeError as exc:
                    raise _Reply(
                        HTTPStatus.INTERNAL_SERVER_ERROR,
                        f"cannot compile {candidate.with_suffix('.wat').name} "
                        f"for {self.path!r}:\n{exc}",
                    ) from exc
                return wat, wat_stat, MIME_TYPES[".wasm"], data
        raise _Reply(HTTPStatus.NOT_FOUND, f"path does not exist (got {self.path!r})")

    def _request_segments(self) -> tuple[tuple[str, ...], bool, str]:
        """Split the request target into decoded path segments, refusing unsafe ones.

        Returns `(segments, whether the path ends in a slash, raw query)`.
        """
        target, _, _fragment = self.path.partition("#")
        target, _, query = target.partition("?")
        if _ABSOLUTE_FORM.match(target):
            # Absolute-form (`GET http://host/p`): only the path counts; the
            # host is ignored rather than trusted.
            target = urlsplit(target).path or "/"
        # Decoded exactly once: `%252e` becomes the literal name `%2e`, never `.`.
        decoded = unquote(target)
        refused = None
        if not decoded.startswith("/"):
            refused = "must be absolute"
        elif "\\" in decoded:
            refused = "must not contain a backslash"
        elif "\0" in decoded:
            refused = "must not contain a NUL byte"
        elif ".." in decoded.split("/"):
            refused = "must not contain a '..' segment"
        if refused is not None:
            raise _Reply(HTTPStatus.FORBIDDEN, f"path {refused} (got {self.path!r})")
        segments = tuple(part for part in decoded.split("/") if part not in ("", "."))
        return segments, decoded.endswith("/"), query

    def _mount(self, segments: tuple[str, ...]) -> tuple[Path, tuple[str, ...]]:
        for prefix, directory in self.server.mounts:
            if segments[: len(prefix)] == prefix:
                return directory.resolve(), segments[len(prefix) :]
        return self.server.root, segments

    def _inside(self, path: Path, base: Path) -> Path:
        """Resolve `path`, following symlinks, and refuse it unless it stays inside `base`."""
        try:
            resolved = path.resolve()
        except RuntimeError as exc:  # a symlink loop before 3.13
            raise _Reply(
                HTTPStatus.NOT_FOUND, f"path cannot be resolved (got {self.path!r})"
            ) from exc
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _Reply(
                    HTTPStatus.NOT_FOUND, f"path cannot be resolved (got {self.path!r})"
                ) from exc
            raise self._path_error(exc) from exc
        if resolved != base and not resolved.is_relative_to(base):
            raise _Reply(
                HTTPStatus.FORBIDDEN,
                f"path must stay inside the served directory (got {self.path!r})",
            )
        return resolved
