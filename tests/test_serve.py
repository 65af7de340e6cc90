"""The development web server: headers, MIME types, WAT compilation, mounts, path safety, CLI."""

from __future__ import annotations

import http.client
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import pytest
import wasmtime

from conftest import TIMEOUT
from sharedwasm import _serve
from sharedwasm._cli import main
from sharedwasm._serve import KERNELS_DIR, make_server, serving

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


def request(
    url: str, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> Response:
    """Send one request with the target exactly as given (http.client does not normalise it)."""
    conn = connect(url)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
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
            conn.request("GET", path)
            resp = conn.getresponse()
            assert resp.status == 200
            resp.read()
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


# -- construction -----------------------------------------------------------------------


def test_make_server_validates_its_arguments(site, tmp_path):
    """An out-of-range port or a missing root is refused with the value in the message."""
    with pytest.raises(ValueError, match=r"port must be in \[0, 65535\] \(got 70000\)"):
        make_server(site, port=70000)
    with pytest.raises(NotADirectoryError, match="root must be an existing directory"):
        make_server(tmp_path / "nope")
    with pytest.raises(NotADirectoryError, match="root must be an existing directory"):
        make_server(site / "app.mjs")


def test_server_reports_its_url_and_port(site):
    """Port 0 binds a free port, which `url` and `port` report."""
    server = make_server(site)
    with server:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}/"
        assert server.root == site.resolve()


def test_requests_are_logged_only_when_verbose(site, capsys):
    """Quiet by default; verbose logs one line per request to stderr."""
    with serving(site) as base:
        request(base, "/")
    assert capsys.readouterr().err == ""
    with serving(site, verbose=True) as base:
        request(base, "/app.mjs")
    assert '"GET /app.mjs HTTP/1.1" 200' in capsys.readouterr().err


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
        proc.send_signal(signal.SIGINT)
        try:
            status = proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            proc.wait(timeout=TIMEOUT)
            pytest.fail(f"serve did not stop on SIGINT; its threads:\n{proc.stderr.read()}")
        assert status == 0
        assert "Traceback" not in proc.stderr.read()
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
