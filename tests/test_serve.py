"""The development web server: headers, MIME types, WAT compilation, mounts, path safety, CLI."""

from __future__ import annotations

import contextlib
import errno
import http.client
import io
import os
import queue
import re
import selectors
import signal
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import pytest
import wasmtime

from conftest import TIMEOUT
from sharedwasm import _serve
from sharedwasm._cli import main
from sharedwasm._serve import KERNELS_DIR, DevServer, make_server, serving
from sharedwasm.testing import join_or_dump, wait_until

SECRET = b"TOP-SECRET-CONTENT"
ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
ALWAYS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}
GOOD_WAT = '(module (func (export "answer") (result i32) i32.const 42))'


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


def connect(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    assert parts.hostname is not None
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=TIMEOUT)


def exchange(
    conn: http.client.HTTPConnection,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> Response:
    """Send one request on an open connection and read the whole response."""
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    return Response(resp.status, resp.headers, resp.read())


def request(
    url: str, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> Response:
    """Send one request with the target exactly as given (http.client does not normalise it)."""
    conn = connect(url)
    try:
        return exchange(conn, path, method, headers)
    finally:
        conn.close()


def raw_request(url: str, data: bytes) -> bytes:
    """Send raw bytes and return everything the server answers before closing."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def assert_raw_error(answer: bytes, status: int) -> None:
    """Check that a raw answer is an HTTP/1.1 error with `status` and every header."""
    head = answer.decode("latin-1").partition("\r\n\r\n")[0]
    assert head.startswith(f"HTTP/1.1 {status} "), answer[:200]
    for name, value in {**ALWAYS, **ISOLATION, "Content-Type": "text/plain; charset=utf-8"}.items():
        assert f"\r\n{name}: {value}" in head, name


def tls_client_hello() -> bytes:
    """Return the first bytes a TLS client sends, as a browser does for https://."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def started_since(before: set[threading.Thread]) -> list[threading.Thread]:
    """Return the live threads that are not in `before`."""
    return [t for t in threading.enumerate() if t not in before]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make servers keep the address they are given without binding, listening or serving.

    For the host checks, so that even a server that accepted a wrong host would
    never listen beyond loopback nor block the test.
    """
    monkeypatch.setattr(socketserver.TCPServer, "server_bind", lambda self: None)
    monkeypatch.setattr(socketserver.TCPServer, "server_activate", lambda self: None)
    monkeypatch.setattr(DevServer, "serve_forever", lambda self, poll_interval=0.5: None)


@contextlib.contextmanager
def running(server: DevServer) -> Iterator[None]:
    """Run an already bound server on a thread, then stop it with bounded joins."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        join_or_dump(stopper, TIMEOUT)
        join_or_dump(thread, TIMEOUT)
        server.server_close()


def read_until_closed(sock: socket.socket) -> bytes:
    """Return everything received on `sock` until the server closes it."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def assert_headers(resp: Response, *, isolate: bool = True) -> None:
    expected = {**ALWAYS, **(ISOLATION if isolate else {})}
    for name, value in expected.items():
        assert resp.headers[name] == value, (name, resp.status)
    if not isolate:
        for name in ISOLATION:
            assert name not in resp.headers


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A served root with one of each kind of file, and a secret file just outside it."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    root = tmp_path / "root"
    root.mkdir()
    (root / "index.html").write_text("<!doctype html><p>home</p>")
    (root / "app.mjs").write_text("export const x = 1;")
    (root / "legacy.js").write_text("var x = 1;")
    (root / "style.css").write_text("p {}")
    (root / "data.json").write_text("{}")
    (root / "kernel.wat").write_text(GOOD_WAT)
    (root / "broken.wat").write_text("(module (func (bogus)))")
    (root / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "icon.svg").write_text("<svg/>")
    (root / "blob.xyz").write_bytes(b"\x00\x01")
    (root / "README").write_text("no suffix")
    (root / "sub").mkdir()
    (root / "sub" / "note.txt").write_text("note")
    (root / "docs").mkdir()
    (root / "docs" / "index.html").write_text("<p>docs</p>")
    return root


@pytest.fixture
def url(site: Path) -> Iterator[str]:
    with serving(site) as base:
        yield base


# -- headers and methods --------------------------------------------------------------------


def test_index_is_served_cross_origin_isolated(url):
    """`/` serves index.html as UTF-8 HTML with the isolation, nosniff and no-cache headers."""
    resp = request(url, "/")
    assert resp.status == 200
    assert resp.body == b"<!doctype html><p>home</p>"
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert resp.headers["Content-Length"] == str(len(resp.body))
    assert_headers(resp)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/missing.txt", 404),
        ("GET", "/../secret.txt", 403),
        ("POST", "/index.html", 405),
        ("GET", "/broken.wasm", 500),
        ("HEAD", "/missing.txt", 404),
    ],
)
def test_errors_carry_the_headers(url, method, path, status):
    """Every error response is plain text and still carries every header."""
    resp = request(url, path, method)
    assert resp.status == status
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert_headers(resp)
    assert (resp.body == b"") == (method == "HEAD")


def test_malformed_request_is_a_400_with_the_headers(url):
    """A request line the server cannot parse is a 400 that carries every header."""
    answer = raw_request(url, b"GET /a b HTTP/1.1\r\n\r\n").decode("latin-1")
    head = answer.partition("\r\n\r\n")[0]
    assert head.startswith("HTTP/1.1 400 ")
    for name, value in {**ALWAYS, **ISOLATION}.items():
        assert f"\r\n{name}: {value}" in head


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /\r\n", 400),
        (b"GET /../secret.txt\r\n", 400),
        (b"GET / HTTP/9.9\r\n\r\n", 505),
        (b"GET / HTTP/0.9\r\n\r\n", 505),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
        (b"GET / HTTP/x\r\n\r\n", 400),
        (b"GARBAGE\r\n\r\n", 400),
        (None, 400),
    ],
    ids=[
        "0.9",
        "0.9-traversal",
        "9.9",
        "explicit-0.9",
        "h2-preface",
        "bad-version",
        "garbage",
        "tls",
    ],
)
def test_requests_other_than_http_1_get_an_http_1_error_with_the_headers(url, data, status):
    """HTTP/0.9, other versions, HTTP/2 and TLS get an HTTP/1.1 error with the headers, then EOF."""
    answer = raw_request(url, tls_client_hello() if data is None else data)
    assert_raw_error(answer, status)
    assert b"home" not in answer
    assert SECRET not in answer


def test_an_http_version_error_is_not_logged_as_a_server_failure(url, capsys):
    """A 505 is the client's protocol, so a quiet server prints nothing for it."""
    assert_raw_error(raw_request(url, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"])
def test_other_methods_are_405_with_allow(url, method):
    """Only GET and HEAD are allowed; anything else is a 405 naming the method."""
    resp = request(url, "/index.html", method)
    assert resp.status == 405
    assert resp.headers["Allow"] == "GET, HEAD"
    assert f"got {method!r}" in resp.body.decode()
    assert_headers(resp)


def test_head_has_headers_but_no_body(url):
    """HEAD answers with GET's headers, Content-Length included, and no body."""
    get = request(url, "/app.mjs")
    head = request(url, "/app.mjs", "HEAD")
    assert head.status == 200
    assert head.body == b""
    assert head.headers["Content-Length"] == str(len(get.body))
    assert head.headers["ETag"] == get.headers["ETag"]
    assert_headers(head)


def test_keep_alive_serves_several_requests_on_one_connection(url):
    """HTTP/1.1 responses are delimited by Content-Length, so a connection can be reused."""
    conn = connect(url)
    try:
        for path in ["/app.mjs", "/style.css", "/kernel.wasm"]:
            assert exchange(conn, path).status == 200
    finally:
        conn.close()


def test_isolate_false_omits_only_the_isolation_headers(site):
    """A plain static server sends no COOP/COEP/CORP but keeps everything else."""
    with serving(site, isolate=False) as base:
        for path, status in [("/", 200), ("/missing", 404), ("/kernel.wasm", 200)]:
            resp = request(base, path)
            assert resp.status == status
            assert_headers(resp, isolate=False)


# -- conditional requests ---------------------------------------------------------------


def test_if_none_match_gives_304_with_the_headers(url):
    """A matching ETag (strong, weak or in a list) is a 304 without body, with the headers."""
    first = request(url, "/style.css")
    etag = first.headers["ETag"]
    assert first.headers["Last-Modified"]
    for value in [etag, f"W/{etag}", f'"nope", {etag}', "*"]:
        resp = request(url, "/style.css", headers={"If-None-Match": value})
        assert resp.status == 304, value
        assert resp.body == b""
        assert resp.headers["ETag"] == etag
        assert_headers(resp)
    assert request(url, "/style.css", headers={"If-None-Match": '"nope"'}).status == 200


def test_if_modified_since_gives_304_until_the_file_changes(url, site):
    """If-Modified-Since at the Last-Modified date is a 304; a newer file is a 200."""
    last_modified = request(url, "/data.json").headers["Last-Modified"]
    resp = request(url, "/data.json", headers={"If-Modified-Since": last_modified})
    assert resp.status == 304
    assert_headers(resp)
    st = (site / "data.json").stat()
    os.utime(site / "data.json", (st.st_atime, st.st_mtime + 10))
    assert request(url, "/data.json", headers={"If-Modified-Since": last_modified}).status == 200
    bad = request(url, "/data.json", headers={"If-Modified-Since": "yesterday"})
    assert bad.status == 200


def test_if_none_match_wins_over_if_modified_since(url):
    """A stale ETag means a full response even when the date would say not modified."""
    last_modified = request(url, "/data.json").headers["Last-Modified"]
    resp = request(
        url, "/data.json", headers={"If-None-Match": '"old"', "If-Modified-Since": last_modified}
    )
    assert resp.status == 200


# -- MIME types -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/index.html", "text/html; charset=utf-8"),
        ("/app.mjs", "text/javascript"),
        ("/legacy.js", "text/javascript"),
        ("/style.css", "text/css"),
        ("/data.json", "application/json"),
        ("/kernel.wat", "text/plain; charset=utf-8"),
        ("/kernel.wasm", "application/wasm"),
        ("/image.png", "image/png"),
        ("/icon.svg", "image/svg+xml"),
        ("/blob.xyz", "application/octet-stream"),
        ("/README", "application/octet-stream"),
    ],
)
def test_mime_types(url, path, content_type):
    """Content types come from the server's own table, not the machine's database."""
    resp = request(url, path)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == content_type


# -- WAT compilation --------------------------------------------------------------------


def test_wasm_is_compiled_from_wat(url):
    """X.wasm is compiled from X.wat when only the text exists, byte for byte like wat2wasm."""
    resp = request(url, "/kernel.wasm")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/wasm"
    assert resp.body == bytes(wasmtime.wat2wasm(GOOD_WAT))
    wasmtime.Module.validate(wasmtime.Engine(), resp.body)
    assert resp.headers["ETag"].startswith('"wat-')


def test_compiled_wasm_follows_edits_of_the_wat(url, site):
    """The compiled bytes are cached per modification time, so an edit shows on the next GET."""
    first = request(url, "/kernel.wasm")
    assert request(url, "/kernel.wasm").body == first.body
    edited = GOOD_WAT.replace("42", "43")
    (site / "kernel.wat").write_text(edited)
    st = (site / "kernel.wat").stat()
    os.utime(site / "kernel.wat", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    second = request(url, "/kernel.wasm")
    assert second.body == bytes(wasmtime.wat2wasm(edited))
    assert second.headers["ETag"] != first.headers["ETag"]


def test_existing_wasm_is_served_as_is(url, site):
    """A .wasm file on disk wins over a .wat of the same name."""
    (site / "kernel.wasm").write_bytes(b"\x00asm-on-disk")
    assert request(url, "/kernel.wasm").body == b"\x00asm-on-disk"


def test_wat_syntax_error_is_a_500_with_wasmtimes_message(url, site):
    """A WAT file that does not compile is a 500 whose plain-text body has wasmtime's message."""
    with pytest.raises(wasmtime.WasmtimeError) as exc:
        wasmtime.wat2wasm((site / "broken.wat").read_text())
    resp = request(url, "/broken.wasm")
    assert resp.status == 500
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    body = resp.body.decode()
    assert "cannot compile broken.wat for '/broken.wasm'" in body
    assert str(exc.value) in body
    assert_headers(resp)


def test_missing_wasm_without_wat_is_404(url):
    """No .wasm and no .wat is an ordinary 404."""
    assert request(url, "/nothing.wasm").status == 404


# -- mounts -----------------------------------------------------------------------------


def test_kernels_mount_compiles_the_builtin_kernel(url):
    """/_sharedwasm/kernels/ serves the package's kernels, compiling .wasm from .wat."""
    wat = KERNELS_DIR / "map_f32.wat"
    resp = request(url, f"{_serve.KERNELS_PATH}map_f32.wasm")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/wasm"
    assert resp.body == bytes(wasmtime.wat2wasm(wat.read_text()))
    text = request(url, f"{_serve.KERNELS_PATH}map_f32.wat")
    assert text.body == wat.read_bytes()
    assert_headers(resp)


def test_runtime_mount_serves_the_runtime_directory(site, tmp_path, monkeypatch):
    """/_sharedwasm/ serves the runtime directory, which shadows the root's own files."""
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    (runtime / "sharedwasm.mjs").write_text("export default 1;")
    (site / "_sharedwasm").mkdir()
    (site / "_sharedwasm" / "shadowed.mjs").write_text("never served")
    monkeypatch.setattr(_serve, "RUNTIME_DIR", runtime)
    with serving(site) as base:
        resp = request(base, f"{_serve.RUNTIME_PATH}sharedwasm.mjs")
        assert resp.status == 200
        assert resp.body == b"export default 1;"
        assert resp.headers["Content-Type"] == "text/javascript"
        assert_headers(resp)
        assert request(base, "/_sharedwasm/shadowed.mjs").status == 404
        assert request(base, "/_sharedwasm/").status == 404
        assert request(base, "/_sharedwasm/../secret.txt").status == 403


def test_mounts_do_not_escape_their_directory(url):
    """A traversal inside a mount is refused like one at the root."""
    for path in [
        "/_sharedwasm/kernels/../../_serve.py",
        "/_sharedwasm/kernels/%2e%2e/%2e%2e/_serve.py",
        "/_sharedwasm/kernels/..%2f..%2f_serve.py",
    ]:
        resp = request(url, path)
        assert resp.status == 403, path
        assert b"import" not in resp.body


def test_default_root_is_the_demo_directory(tmp_path, monkeypatch):
    """Without a root the server serves the built-in demo directory."""
    (tmp_path / "index.html").write_text("demo page")
    monkeypatch.setattr(_serve, "DEMO_DIR", tmp_path)
    with serving(None) as base:
        assert request(base, "/").body == b"demo page"


# -- directories ------------------------------------------------------------------------


def test_directories_are_never_listed(url):
    """A directory without index.html is a 404 whose body lists nothing."""
    resp = request(url, "/sub/")
    assert resp.status == 404
    assert b"note.txt" not in resp.body
    assert request(url, "/sub").status == 404
    assert request(url, "/sub/note.txt").status == 200


def test_directory_index_is_served(url):
    """A directory with index.html serves it as HTML at the slash form."""
    resp = request(url, "/docs/")
    assert resp.status == 200
    assert resp.body == b"<p>docs</p>"
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"


def test_directory_without_slash_redirects_to_the_slash_form(url):
    """/docs redirects to /docs/, keeping the query, so relative links in the page resolve."""
    resp = request(url, "/docs?x=1")
    assert resp.status == 301
    assert resp.headers["Location"] == "/docs/?x=1"
    assert_headers(resp)


def test_file_with_trailing_slash_is_404(url):
    """A file is not a directory: /app.mjs/ is a 404."""
    assert request(url, "/app.mjs/").status == 404


def test_query_and_fragment_are_ignored(url):
    """Query strings and fragments do not change which file is served."""
    assert request(url, "/app.mjs?v=2").body == b"export const x = 1;"
    assert request(url, "/app.mjs#top").body == b"export const x = 1;"
    resp = request(url, "/index.html?../../secret.txt")
    assert resp.status == 200
    assert SECRET not in resp.body


# -- path safety ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/../secret.txt", 403),
        ("/%2e%2e/secret.txt", 403),
        ("/%2E%2E%2Fsecret.txt", 403),
        ("/..%2fsecret.txt", 403),
        ("/.%2e/secret.txt", 403),
        ("/a/../../secret.txt", 403),
        ("/sub/../../secret.txt", 403),
        ("/..\\secret.txt", 403),
        ("/..%5csecret.txt", 403),
        ("/%5c..%5csecret.txt", 403),
        ("/secret.txt%00.html", 403),
        ("/%00", 403),
        ("/../secret.txt#x", 403),
        ("http://x/../secret.txt", 403),
        ("secret.txt", 403),
        ("*", 403),
        ("/%252e%252e/secret.txt", 404),
        ("//etc/passwd", 404),
        ("http://x/etc/passwd", 404),
        ("/etc/passwd", 404),
    ],
)
def test_traversal_is_refused(url, path, status):
    """No spelling of a path outside the root reaches the secret file next to it."""
    resp = request(url, path)
    assert resp.status == status
    assert SECRET not in resp.body
    assert_headers(resp)


def test_double_encoding_is_decoded_once(url, site):
    """%252e%252e names the literal directory `%2e%2e`, never the parent."""
    (site / "%2e%2e").mkdir()
    (site / "%2e%2e" / "secret.txt").write_bytes(b"literal")
    assert request(url, "/%252e%252e/secret.txt").body == b"literal"


def test_symlink_pointing_outside_is_refused(url, site):
    """A symlink inside the root that resolves outside it is refused, file or directory."""
    (site / "leak.txt").symlink_to(site.parent / "secret.txt")
    (site / "leakdir").symlink_to(site.parent)
    for path in ["/leak.txt", "/leakdir/secret.txt"]:
        resp = request(url, path)
        assert resp.status == 403, path
        assert SECRET not in resp.body


def test_symlink_pointing_inside_is_served(url, site):
    """A symlink that stays inside the root works, with the type of the requested name."""
    (site / "alias.mjs").symlink_to(site / "app.mjs")
    (site / "docs-link").symlink_to(site / "docs")
    resp = request(url, "/alias.mjs")
    assert resp.status == 200
    assert resp.body == b"export const x = 1;"
    assert request(url, "/docs-link/").body == b"<p>docs</p>"


def test_symlink_loop_is_404(url, site):
    """A symlink loop is an ordinary 404, not a crash."""
    (site / "loop").symlink_to(site / "loop")
    assert request(url, "/loop").status == 404


# -- file system errors -----------------------------------------------------------------


def test_a_path_longer_than_the_name_limit_is_a_414(url, capsys):
    """ENAMETOOLONG, for one name or the whole path, is a 414 on a connection that stays open."""
    conn = connect(url)
    try:
        for path in [
            "/" + "a" * 300,
            "/sub/" + "b" * 300 + ".wasm",
            "/a" * 3000,
            "/a" * 3000 + "/",
        ]:
            resp = exchange(conn, path)
            assert resp.status == 414, path[:20]
            assert b"name length limits" in resp.body
            assert_headers(resp)
        assert exchange(conn, "/app.mjs").body == b"export const x = 1;"
    finally:
        conn.close()
    assert "Traceback" not in capsys.readouterr().err


def _deny(monkeypatch: pytest.MonkeyPatch, locked_file: Path, locked_dir: Path) -> None:
    """Make stat and open fail with EACCES where they would for a user other than root."""

    def denied(path: object) -> bool:
        if not isinstance(path, (str, os.PathLike)):
            return False
        name = Path(os.fsdecode(path))
        return name != locked_dir and name.is_relative_to(locked_dir)

    def error(path: object) -> PermissionError:
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

    real_stat, real_open = os.stat, io.open

    def fake_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if denied(path):
            raise error(path)
        return real_stat(path, *args, **kwargs)

    def fake_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        if denied(path) or (isinstance(path, (str, os.PathLike)) and Path(path) == locked_file):
            raise error(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", fake_stat)
    monkeypatch.setattr(io, "open", fake_open)


def test_an_unreadable_path_is_a_403(url, site, monkeypatch, capsys):
    """A file or directory without read or search permission is a 403, not a dropped connection."""
    (site / "locked.txt").write_bytes(SECRET)
    locked = site / "locked"
    locked.mkdir()
    (locked / "inner.txt").write_bytes(SECRET)
    (locked / "index.html").write_bytes(SECRET)
    (locked / "inner.wat").write_text(GOOD_WAT)
    (site / "locked.txt").chmod(0)
    locked.chmod(0)
    try:
        if os.access(site / "locked.txt", os.R_OK):
            # Root (CAP_DAC_OVERRIDE) reads through mode 000, so the kernel's answer
            # to anyone else is reproduced where the server asks for it.
            _deny(monkeypatch, site / "locked.txt", locked)
        for path in ["/locked.txt", "/locked/inner.txt", "/locked/", "/locked/inner.wasm"]:
            resp = request(url, path)
            assert resp.status == 403, path
            assert f"path is not readable (got {path!r})" in resp.body.decode()
            assert SECRET not in resp.body
            assert_headers(resp)
    finally:
        locked.chmod(0o755)
        (site / "locked.txt").chmod(0o644)
    assert "Traceback" not in capsys.readouterr().err


def test_any_other_os_error_on_a_path_is_a_500(url, site, monkeypatch, capsys):
    """An I/O error looking up a file is a 500 naming the error; the connection stays open."""
    broken = (site / "app.mjs").resolve()
    real_stat = os.stat

    def fake_stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if isinstance(path, (str, os.PathLike)) and Path(path) == broken:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", fake_stat)
    conn = connect(url)
    try:
        resp = exchange(conn, "/app.mjs")
        assert resp.status == 500
        assert f"cannot read path '/app.mjs': {os.strerror(errno.EIO)}" in resp.body.decode()
        assert str(site) not in resp.body.decode()
        assert_headers(resp)
        assert exchange(conn, "/style.css").body == b"p {}"
    finally:
        conn.close()
    assert "Traceback" not in capsys.readouterr().err


# -- construction -----------------------------------------------------------------------


def test_make_server_validates_its_arguments(site, tmp_path):
    """An out-of-range port or a missing root is refused with the value in the message."""
    with pytest.raises(ValueError, match=r"port must be in \[0, 65535\] \(got 70000\)"):
        make_server(site, port=70000)
    with pytest.raises(NotADirectoryError, match="root must be an existing directory"):
        make_server(tmp_path / "nope")
    with pytest.raises(NotADirectoryError, match="root must be an existing directory"):
        make_server(site / "app.mjs")


@pytest.mark.parametrize("host", ["", "  "])
@pytest.mark.usefixtures("no_network")
def test_make_server_refuses_an_empty_host(site, host):
    """An empty host, which the socket layer reads as every interface, is refused by name."""
    with pytest.raises(ValueError, match=rf"host must be a non-empty address .*\(got {host!r}\)"):
        make_server(site, host=host)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.1", False),
        ("2001:db8::1", False),
        ("::ffff:192.0.2.1", False),
        ("localhost", False),
    ],
)
def test_is_loopback_tells_this_machine_from_the_network(address, loopback):
    """Only 127.0.0.0/8 and ::1 (also IPv4-mapped) count as loopback; every-interface does not."""
    assert _serve.is_loopback(address) is loopback


def test_server_reports_its_url_and_port(site):
    """Port 0 binds a free port, which `url` and `port` report."""
    server = make_server(site)
    with server:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/"
        assert server.root == site.resolve()
        assert server.loopback_only


def test_requests_are_logged_only_when_verbose(site, capsys):
    """Quiet by default; verbose logs one line per request to stderr."""
    with serving(site) as base:
        request(base, "/")
    assert capsys.readouterr().err == ""
    with serving(site, verbose=True) as base:
        request(base, "/app.mjs")
    assert '"GET /app.mjs HTTP/1.1" 200' in capsys.readouterr().err


# -- connections and limits -------------------------------------------------------------

BURST = 48
"""Simultaneous connections in the burst tests: about what a page with many modules opens."""


def _wait_connected(socks: list[socket.socket], timeout: float) -> list[socket.socket]:
    """Wait for non-blocking connects to complete; return the sockets still pending."""
    pending = set(socks)
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_WRITE)
        deadline = time.monotonic() + timeout
        while pending and (left := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(left):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                assert ready.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                selector.unregister(ready)
                pending.discard(ready)
    return [sock for sock in socks if sock in pending]


def test_a_burst_of_connections_waits_in_the_backlog_and_is_all_served(site):
    """48 connections made before the server accepts any are all queued, then all answered."""
    server = make_server(site)
    socks = [socket.socket() for _ in range(BURST)]
    try:
        for sock in socks:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", server.port))
        # Nothing accepts yet, so only the listen backlog can hold these.
        pending = _wait_connected(socks, TIMEOUT)
        assert not pending, f"{len(pending)} of {BURST} connections not queued"
        with running(server):
            for sock in socks:
                sock.settimeout(TIMEOUT)
                sock.sendall(b"GET /app.mjs HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            answers = [read_until_closed(sock) for sock in socks]
    finally:
        for sock in socks:
            sock.close()
        server.server_close()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert answer.endswith(b"\r\n\r\nexport const x = 1;")


def test_parallel_requests_are_all_served(url):
    """48 clients requesting at once, as a page's modules and kernels do, all get their file."""
    results: queue.Queue[int | BaseException] = queue.Queue()

    def fetch() -> None:
        try:
            results.put(request(url, "/kernel.wasm").status)
        except BaseException as exc:
            results.put(exc)

    threads = [threading.Thread(target=fetch, daemon=True) for _ in range(BURST)]
    for thread in threads:
        thread.start()
    for thread in threads:
        join_or_dump(thread, TIMEOUT)
    assert [results.get_nowait() for _ in range(BURST)] == [200] * BURST


def test_connections_beyond_max_workers_wait_for_a_free_worker(site, monkeypatch):
    """With every worker held by a slow client, a new connection waits for one, on no new thread."""
    monkeypatch.setattr(DevServer, "max_workers", 2, raising=False)
    server = make_server(site)
    slow = [socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) for _ in range(2)]
    late = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    handler = f"sharedwasm-serve-{server.port}-conn"
    before = set(threading.enumerate())
    try:
        with running(server):
            for sock in slow:
                sock.sendall(b"GET /app.mjs HT")
            # The server's own thread and one handler per slow client.
            wait_until(lambda: len(started_since(before)) >= 3, TIMEOUT, what="3 threads")
            late.sendall(b"GET /style.css HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            # Not answered while both workers wait on the slow clients; a short
            # wait cannot make this flaky, since slowness only delays an answer.
            late.settimeout(0.3)
            with pytest.raises(TimeoutError):
                late.recv(1)
            assert len(started_since(before)) == 3
            assert [t.name for t in started_since(before)].count(handler) == 2
            slow[0].sendall(b"TP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert read_until_closed(slow[0]).startswith(b"HTTP/1.1 200 ")
            late.settimeout(TIMEOUT)
            assert read_until_closed(late).endswith(b"\r\n\r\np {}")
    finally:
        for sock in [*slow, late]:
            sock.close()


def test_a_silent_client_is_dropped_after_the_read_timeout(site, monkeypatch):
    """A connection that sends nothing is closed after the handler's timeout, freeing its worker."""
    monkeypatch.setattr(DevServer, "max_workers", 1, raising=False)
    monkeypatch.setattr(_serve._Handler, "timeout", 0.2)
    with serving(site) as base:
        parts = urlsplit(base)
        start = time.monotonic()
        with socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT) as silent:
            # Served only once the silent client has given the one worker back:
            # a lower bound on the time, which a slow machine can only lengthen.
            assert request(base, "/app.mjs").status == 200
            assert time.monotonic() - start >= 0.2
            assert silent.recv(1) == b""


def test_closing_the_server_ends_open_connections_promptly(site):
    """Leaving `serving` with idle and silent connections open stops at once and leaks no thread."""
    before = set(threading.enumerate())
    with contextlib.ExitStack() as clients:
        with serving(site) as base:
            parts = urlsplit(base)
            for _ in range(3):
                conn = connect(base)
                clients.callback(conn.close)
                conn.request("GET", "/app.mjs")
                conn.getresponse().read()
            silent = socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT)
            clients.callback(silent.close)
            # The server's thread and one handler per connection.
            wait_until(lambda: len(started_since(before)) == 5, TIMEOUT, what="5 threads")
            start = time.monotonic()
        # Generous: the handler's own read timeout is what it must not wait for.
        assert time.monotonic() - start < _serve._Handler.timeout / 2
        assert silent.recv(1) == b""
    leaked = [t for t in threading.enumerate() if t not in before]
    assert leaked == []


# -- command line -----------------------------------------------------------------------


def _read_line(stream: IO[str], timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        pytest.fail(f"no line within {timeout} s")


def test_cli_serves_until_interrupted(site):
    """`sharedwasm serve DIR --port 0` prints its URL, serves, and exits 0 on Ctrl-C."""
    # The child stands for a command typed at a terminal, where Ctrl-C raises
    # KeyboardInterrupt. Started from a shell's background job, it would
    # inherit SIGINT ignored (and Python then leaves it so): hence the handler
    # set before the CLI runs. With faulthandler on, a server that still does
    # not stop can be made to print where its threads are (SIGABRT).
    launch = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'sharedwasm'; runpy.run_module('sharedwasm', run_name='__main__')"
    )
    command = [sys.executable, "-X", "faulthandler", "-c", launch, "serve", str(site)]
    proc = subprocess.Popen(
        [*command, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    try:
        line = _read_line(proc.stdout, TIMEOUT)
        match = re.fullmatch(r"serving (.+) on (http://127\.0\.0\.1:\d+/)\n", line)
        assert match, line
        assert match.group(1) == str(site.resolve())
        resp = request(match.group(2), "/app.mjs")
        assert resp.status == 200
        assert_headers(resp)
        # An idle keep-alive connection, as a browser leaves, must not delay the exit.
        idle = connect(match.group(2))
        idle.request("GET", "/style.css")
        idle.getresponse().read()
        proc.send_signal(signal.SIGINT)
        try:
            status = proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            proc.wait(timeout=TIMEOUT)
            pytest.fail(f"serve did not stop on SIGINT; its threads:\n{proc.stderr.read()}")
        assert status == 0
        err = proc.stderr.read()
        assert "Traceback" not in err
        assert "reachable from other machines" not in err
        idle.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=TIMEOUT)
        proc.stdout.close()
        proc.stderr.close()


def test_cli_port_in_use_is_a_one_line_error(site, capsys):
    """A port that is taken is exit status 1 with one line on stderr, not a traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(site), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"sharedwasm serve: cannot listen on 127.0.0.1:{port}: ")
    assert err.count("\n") == 1


def test_cli_refuses_a_bad_directory_or_port(tmp_path, capsys):
    """A DIR that is not a directory, or a port out of range, is exit status 2 naming it."""
    missing = str(tmp_path / "missing")
    with pytest.raises(SystemExit) as exc:
        main(["serve", missing])
    assert exc.value.code == 2
    assert f"must be an existing directory (got {missing!r})" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["serve", str(tmp_path), "--port", "65536"])
    assert exc.value.code == 2
    assert "must be in [0, 65535] (got 65536)" in capsys.readouterr().err


@pytest.mark.usefixtures("no_network")
def test_cli_refuses_an_empty_host(site, capsys):
    """`--host ""` (an unset `$HOST`) is exit status 2 naming --host, not every interface."""
    with pytest.raises(SystemExit) as exc:
        main(["serve", str(site), "--host", ""])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --host: must be a non-empty address" in err
    assert "(got '')" in err


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "127.0.0.1"])
@pytest.mark.usefixtures("no_network")
def test_cli_warns_when_reachable_from_other_machines(site, capsys, host):
    """A host beyond loopback prints one warning line on stderr; loopback prints none."""
    # Unbound, the server keeps the address it was given, which the warning reads.
    assert main(["serve", str(site), "--host", host, "--port", "0"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"serving {site.resolve()} on http://")
    if host == "127.0.0.1":
        assert err == ""
    else:
        assert err == (
            f"sharedwasm serve: warning: {host} is not a loopback address; "
            "the server is reachable from other machines\n"
        )
