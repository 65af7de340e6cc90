"""The compiled-code cache: wasmtime's output for a module, kept on disk for other processes.

A kernel compiles in milliseconds, the runner and the atomics helper in a few
more, and `wasmtime.Module.deserialize` takes a tenth of one; without a cache
every process that uses a module (each CLI call, each Dask worker, each test
run) compiles it again. `load_or_compile` looks for the module's code in a
per-user directory first, and compiles, then stores, only when it is not
there. Every compile of sharedwasm goes through it (`compile_module`).

Where it lives: `$SHAREDWASM_CACHE_DIR` if that is set; else
`$XDG_CACHE_HOME/sharedwasm`, or `~/.cache/sharedwasm` when XDG_CACHE_HOME
is unset or not absolute (on macOS `~/Library/Caches/sharedwasm` then).
`SHAREDWASM_CACHE=0` (or `off`, `false`, `no`) turns it off. There is none
on Windows, where `os.stat` cannot tell who may write a directory.

The key of an entry is canonical JSON that holds:

* the SHA-256 of the module's bytes (of its text, for WebAssembly text);
* the engine's settings (`_wasmtime.engine_key`);
* the wasmtime-py version, and the native library it loaded: its SHA-256 as
  the installer recorded it (the C API has no call that returns its
  version), else its size and mtime;
* the engine's fingerprint, the SHA-256 of an empty module compiled and
  serialised by that engine: the part of every serialised module that
  wasmtime checks when it deserialises one (its version, the target, the
  compiler's flags and the CPU features the code may use). Computed once per
  engine and process, in 0.1-0.4 ms;
* `platform.machine()` and `sys.platform`.

An entry's file name is the SHA-256 of its key, and the whole key is in its
header. A cache shared by machines with different CPUs (a home directory on
NFS) thus keeps one entry per CPU instead of overwriting each other's.

Why loading an entry is safe. `Module.deserialize` maps the payload as native
code and runs it as it is: whoever can write an entry runs code in every
process that loads it. Hence:

* the directory must belong to the effective user and be writable by nobody
  else (it is created 0700); one that is not is never used, and the process
  warns once (`CacheWarning`). The check is made on the open directory, and
  every file is then opened and renamed relative to that descriptor
  (`dir_fd`), so swapping a component of the path after the check has no
  effect;
* an entry is a regular file, not followed through a symlink, owned by the
  user and writable by no one else;
* an entry is written to a temporary file made with O_EXCL and mode 0600 in
  the same directory, fsynced and renamed over its name (`os.replace`): a
  reader sees a whole entry or none, whichever of several writers wins;
* its header is checked before wasmtime sees the payload: a magic, the
  format version, the whole key, the lengths and an HMAC-SHA256 of header and
  payload under a random per-user key (`hmac-key` in the directory, 32 bytes,
  mode 0600, made once). An entry that does not match (truncated, corrupt,
  written for other bytes, another engine or another wasmtime) is not
  loaded: the module is compiled and the entry overwritten. wasmtime's own
  check at deserialisation, which refuses code for another version or CPU,
  stays behind that as the last line.

What the HMAC adds to a plain SHA-256: both catch corruption (a torn write, a
flipped bit), but a SHA-256 is recomputed by whoever rewrites the payload,
the HMAC only by whoever can read the key. It does not stop the user, or
root: they can read the key and write entries, and can run code as the user
anyway. The directory check is the boundary; the HMAC makes an entry that did
not come from this cache's own writes (copied or restored from another
machine's cache, unpacked from an archive, written by a program that can
create files there without reading the key) fail the check instead of
running.

The size is bounded: a process that stores entries removes the oldest
written beyond `MAX_BYTES` (256 MiB; an entry is 15-40 KiB for the kernels
in this repository), at its first store and after each eighth of that it has
stored since; temporary files an hour old (a writer that died) go too. The
directory itself is not fsynced: an entry lost in a crash is compiled again.

wasmtime's own cache (`Config.cache`) is not used: it runs a background
thread, which a child of `os.fork()` would lack (see `_wasmtime`), and it does
not check who can write its directory.

Guarantees:
    Any thread of any number of processes may load and store at once; each
    entry is replaced whole, so no reader ever sees a partial one, and of two
    writers of one entry, both of which write equivalent code, the last wins.

    The cache never makes a compile fail: when it cannot be read or written
    (an unusable directory, a full disk, an I/O error) the module is compiled
    as if there were no cache, with at most one `CacheWarning` per process and
    directory. Only a module that compiled is stored.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import importlib.metadata
import json
import os
import platform
import secrets
import stat
import struct
import sys
import threading
import time
import types
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import wasmtime

from . import _wasmtime
from ._errors import CacheWarning

MAGIC = b"swcache\0"
"""The first bytes of every entry."""

FORMAT = 1
"""The entry layout's version; an entry of another one is not loaded."""

_PREFIX = struct.Struct(">8sHIQ")  # magic, format, key length, payload length
_MAC_BYTES = 32
HEADER_BYTES = _PREFIX.size + _MAC_BYTES
"""An entry's fixed header: the prefix, then the HMAC; the key and the payload follow."""

KEY_FILE = "hmac-key"
KEY_BYTES = 32
ENTRY_SUFFIX = ".entry"
TEMP_PREFIX = ".tmp-"
MAX_BYTES = 256 * 2**20
"""Entries beyond this many bytes are removed, oldest written first."""
STALE_TEMP_SECONDS = 3600.0

PROBE = b"\0asm\x01\0\0\0"
"""The empty module whose serialisation fingerprints an engine."""

DIR_VARIABLE = "SHAREDWASM_CACHE_DIR"
SWITCH_VARIABLE = "SHAREDWASM_CACHE"
_OFF = frozenset({"0", "off", "false", "no"})
_ON = frozenset({"", "1", "on", "true", "yes"})

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # a FIFO named like an entry must not block the open
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)


@dataclasses.dataclass(frozen=True)
class CacheStatistics:
    """What this process's cache did since it started: a snapshot."""

    hits: int
    """Modules loaded from an entry."""
    compiles: int
    """Modules compiled: no entry, an entry refused, or no usable cache."""
    stores: int
    """Entries written."""
    rejected: Mapping[str, int]
    """Entries found but not loaded, by reason: `truncated`, `length`, `magic`,
    `format`, `key`, `mac`, `owner`, `mode`, `type`, `unreadable`, `incompatible`."""


@dataclasses.dataclass(frozen=True)
class CacheInfo:
    """Where the cache is and whether it is used."""

    directory: Path | None
    """The directory, None where there is no cache at all."""
    state: Literal["on", "off", "unusable"]
    """`off`: turned off, or no cache on this platform."""
    reason: str
    """Why it is off or unusable, or a note on an empty cache; else empty."""
    entries: int
    size: int
    """Total bytes of the entries."""


class _Unusable(Exception):
    """The directory or its key file must not be used; the message says why."""


class _Rejected(Exception):
    """An entry must not be loaded; `reason` is its statistics label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_lock = threading.Lock()
_hits = 0
_compiles = 0
_stores = 0
_rejected: dict[str, int] = {}
_warned: set[str] = set()
_identities: dict[str, dict[str, object]] = {}
_unpruned: int | None = None  # bytes this process stored since it last pruned; None: never


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def statistics() -> CacheStatistics:
    """Return what this process's cache did so far (any thread; does not block)."""
    with _lock:
        return CacheStatistics(_hits, _compiles, _stores, types.MappingProxyType(dict(_rejected)))


def _settings() -> tuple[Path | None, bool, str]:
    """Return the cache directory, whether the cache is on, and why not."""
    raw = os.environ.get(SWITCH_VARIABLE, "")
    switch = raw.strip().lower()
    enabled, reason = True, ""
    if switch in _OFF:
        enabled, reason = False, f"{SWITCH_VARIABLE}={raw}"
    elif switch not in _ON:
        _warn_once(
            f"{SWITCH_VARIABLE}={raw}",
            f"{SWITCH_VARIABLE} must be one of 0, off, false, no, 1, on, true, yes "
            f"(got {raw!r}); the compiled-code cache stays on",
        )
    if not hasattr(os, "geteuid"):
        return None, False, "no compiled-code cache on this platform"
    explicit = os.environ.get(DIR_VARIABLE, "")
    if explicit:
        return Path(os.path.abspath(os.path.expanduser(explicit))), enabled, reason
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return Path(xdg) / "sharedwasm", enabled, reason
    home = os.path.expanduser("~")
    if not os.path.isabs(home):
        return None, False, "no home directory to keep it in"
    parent = "Library/Caches" if sys.platform == "darwin" else ".cache"
    return Path(home) / parent / "sharedwasm", enabled, reason


def _warn_once(topic: str, message: str) -> None:
    with _lock:
        if topic in _warned:
            return
        _warned.add(topic)
    warnings.warn(message, CacheWarning, stacklevel=4)


def _count(*, hit: bool = False, compile: bool = False, store: bool = False) -> None:
    global _hits, _compiles, _stores
    with _lock:
        _hits += hit
        _compiles += compile
        _stores += store


def _reject(reason: str) -> None:
    with _lock:
        _rejected[reason] = _rejected.get(reason, 0) + 1


def _private(st: os.stat_result, what: str, *, secret: bool = False) -> None:
    """Raise `_Unusable` unless `st` is this user's and no one else may write it (or,
    for a `secret`, read it)."""
    uid = os.geteuid()
    if st.st_uid != uid:
        raise _Unusable(f"{what} is owned by uid {st.st_uid}, not by this user (uid {uid})")
    if st.st_mode & (0o077 if secret else 0o022):
        raise _Unusable(
            f"{what} is {'accessible' if secret else 'writable'} by group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o})"
        )


def _make_directories(path: Path) -> None:
    """Create `path` and its missing parents, each 0700 (as XDG asks for a new one)."""
    missing: list[Path] = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(directory, 0o700)


def _open_directory(path: Path, *, create: bool) -> int:
    """Open the cache directory and check that it is private; return its descriptor.

    Raises:
        FileNotFoundError: it does not exist and `create` is false.
        _Unusable: it belongs to someone else or others may write it.
        OSError: it cannot be created or opened.
    """
    flags = os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        if not create:
            raise
        _make_directories(path)
        fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISDIR(st.st_mode):
            raise _Unusable("it is not a directory")
        _private(st, "it")
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _temp_name() -> str:
    return f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"


def _write_temp(dir_fd: int, data: bytes) -> str:
    """Write `data` to a new 0600 file in the directory, fsynced; return its name."""
    name = _temp_name()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
    fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)
        raise
    os.close(fd)
    return name


def _secret(dir_fd: int) -> bytes:
    """Return the directory's HMAC key, making it if there is none yet.

    Raises:
        _Unusable: the key file is not a private regular file of the right size.
        OSError: it cannot be read or made.
    """
    for _ in range(2):
        try:
            fd = os.open(
                KEY_FILE, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC, dir_fd=dir_fd
            )
        except FileNotFoundError:
            # Linked into place whole, so a reader never sees a short key;
            # of two processes making one at once, the first link wins.
            temp = _write_temp(dir_fd, secrets.token_bytes(KEY_BYTES))
            try:
                os.link(temp, KEY_FILE, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except FileExistsError:
                pass
            finally:
                os.unlink(temp, dir_fd=dir_fd)
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _Unusable(f"{KEY_FILE} is not a regular file")
            _private(st, KEY_FILE, secret=True)
            key = os.read(fd, KEY_BYTES + 1)
        finally:
            os.close(fd)
        if len(key) != KEY_BYTES:
            raise _Unusable(f"{KEY_FILE} must hold {KEY_BYTES} bytes (got {len(key)})")
        return key
    raise _Unusable(f"{KEY_FILE} vanished while it was made")  # a clear() in between


def _distribution() -> tuple[str, str]:
    """Return wasmtime-py's version and its installer's record (RECORD, CSV lines)."""
    # importlib.metadata searches all of sys.path (0.4-2 ms, in every process
    # that loads a module); an installed package's metadata directory sits
    # beside it, named after its version.
    site = Path(wasmtime.__file__).parent.parent
    prefix, suffix = "wasmtime-", ".dist-info"
    try:
        names = [n for n in os.listdir(site) if n.startswith(prefix) and n.endswith(suffix)]
    except OSError:
        names = []
    if len(names) == 1:
        version = names[0][len(prefix) : -len(suffix)]
        try:
            record = (site / names[0] / "RECORD").read_text()
        except OSError:
            record = ""
    else:
        try:
            found = importlib.metadata.distribution("wasmtime")
        except importlib.metadata.PackageNotFoundError:  # run from a source tree
            return "unknown", ""
        version, record = found.version, found.read_text("RECORD") or ""
    return version, record


def _wasmtime_identity() -> dict[str, object]:
    """Return wasmtime-py's version and what identifies the native library it loaded.

    The library's digest comes from the installer's record (the same for
    every environment with the same build, so they share entries); without
    one, its size and mtime stand in.
    """
    version, record = _distribution()
    identity: dict[str, object] = {"wasmtime": version}
    path = _wasmtime.native_library()
    try:
        st = os.stat(path) if path is not None else None
    except OSError:
        st = None
    if path is None or st is None:
        identity["library"] = str(path)
        return identity
    relative = Path(os.path.relpath(path, Path(wasmtime.__file__).parent.parent)).as_posix()
    digest = next(
        (line.split(",")[1] for line in record.splitlines() if line.startswith(f"{relative},")),
        None,
    )
    identity["library"] = (
        {"digest": digest, "size": st.st_size}
        if digest is not None
        else {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    )
    return identity


def _identity(engine_key: str, engine: wasmtime.Engine) -> dict[str, object]:
    """Return everything but the module that an entry's key holds, once per engine key."""
    identity = _identities.get(engine_key)
    if identity is None:
        identity = {
            "format": FORMAT,
            "engine": engine_key,
            "fingerprint": hashlib.sha256(wasmtime.Module(engine, PROBE).serialize()).hexdigest(),
            **_wasmtime_identity(),
            "machine": platform.machine(),
            "platform": sys.platform,
        }
        with _lock:
            identity = _identities.setdefault(engine_key, identity)
    return identity


def entry_key(engine_key: str, engine: wasmtime.Engine, wasm: bytes | str) -> bytes:
    """Return the key of `wasm`'s entry for `engine`: canonical JSON, as bytes."""
    if isinstance(wasm, str):
        source, kind = wasm.encode("utf-8", "surrogatepass"), "wat"
    else:
        source, kind = wasm, "wasm"
    fields = {
        **_identity(engine_key, engine),
        "module": hashlib.sha256(source).hexdigest(),
        "source": kind,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def entry_name(key: bytes) -> str:
    """Return the file name of the entry with this key."""
    return hashlib.sha256(key).hexdigest() + ENTRY_SUFFIX


def _mac(
    secret: bytes, prefix: bytes | memoryview, key: bytes | memoryview, payload: bytes | memoryview
) -> bytes:
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    mac.update(prefix)
    mac.update(key)
    mac.update(payload)
    return mac.digest()


def pack_entry(secret: bytes, key: bytes, payload: bytes) -> bytes:
    """Return the bytes of an entry: header, key and payload."""
    prefix = _PREFIX.pack(MAGIC, FORMAT, len(key), len(payload))
    return b"".join((prefix, _mac(secret, prefix, key, payload), key, payload))


def unpack_entry(data: bytes, secret: bytes, key: bytes) -> bytes:
    """Return the payload of an entry if it is whole, for `key` and made under `secret`.

    Raises:
        _Rejected: it is not; `reason` says what is wrong.
    """
    if len(data) < HEADER_BYTES:
        raise _Rejected("truncated")
    magic, version, key_length, payload_length = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise _Rejected("magic")
    if version != FORMAT:
        raise _Rejected("format")
    size = HEADER_BYTES + key_length + payload_length
    if len(data) != size:
        raise _Rejected("truncated" if len(data) < size else "length")
    view = memoryview(data)
    stored_key = view[HEADER_BYTES : HEADER_BYTES + key_length]
    if stored_key != key:
        raise _Rejected("key")
    payload = view[HEADER_BYTES + key_length :]
    mac = _mac(secret, view[: _PREFIX.size], stored_key, payload)
    if not hmac.compare_digest(mac, view[_PREFIX.size : HEADER_BYTES]):
        raise _Rejected("mac")
    return bytes(payload)


def _read_entry(dir_fd: int, name: str) -> bytes | None:
    """Return an entry's bytes, or None if there is none.

    Raises:
        _Rejected: the file is not a private regular file of this user's.
    """
    try:
        fd = os.open(name, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:  # ELOOP: a symlink
        raise _Rejected("type") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Rejected("type")
        try:
            _private(st, name)
        except _Unusable as exc:
            raise _Rejected("owner" if st.st_uid != os.geteuid() else "mode") from exc
        chunks = []
        while chunk := os.read(fd, max(st.st_size, 1 << 16)):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise _Rejected("unreadable") from exc
    finally:
        os.close(fd)


def _store(dir_fd: int, name: str, data: bytes) -> None:
    temp = _write_temp(dir_fd, data)
    try:
        os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise


def _prune_if_due(dir_fd: int, name: str, stored: int) -> None:
    global _unpruned
    with _lock:
        due = _unpruned is None or _unpruned + stored > MAX_BYTES // 8
        _unpruned = 0 if due else (_unpruned or 0) + stored
    if due:
        prune(dir_fd, MAX_BYTES, keep=name)


def prune(dir_fd: int, limit: int, *, keep: str | None = None) -> int:
    """Remove the oldest-written entries until the rest hold at most `limit` bytes, and
    temporary files left by writers that died; return how many files were removed.

    The entry named `keep` (the one just written) stays whatever its age.
    """
    entries: list[tuple[int, int, str]] = []
    removed = 0
    now = time.time()
    with os.scandir(dir_fd) as scan:
        for item in scan:
            try:
                st = item.stat(follow_symlinks=False)
            except OSError:
                continue
            if item.name.endswith(ENTRY_SUFFIX):
                entries.append((st.st_mtime_ns, st.st_size, item.name))
            elif item.name.startswith(TEMP_PREFIX) and now - st.st_mtime > STALE_TEMP_SECONDS:
                with contextlib.suppress(OSError):
                    os.unlink(item.name, dir_fd=dir_fd)
                    removed += 1
    total = sum(size for _, size, _ in entries)
    for _, size, name in sorted(entries):
        if total <= limit:
            break
        if name == keep:
            continue
        with contextlib.suppress(OSError):
            os.unlink(name, dir_fd=dir_fd)
            removed += 1
        total -= size
    return removed


def _compile(engine: wasmtime.Engine, wasm: bytes | str) -> wasmtime.Module:
    module = _wasmtime.new_module(engine, wasm)
    _count(compile=True)
    return module


def load_or_compile(
    engine_key: str, engine: wasmtime.Engine, wasm: bytes | bytearray | str
) -> wasmtime.Module:
    """Return `wasm` compiled by `engine`: loaded from the cache, or compiled and stored.

    Args:
        engine_key: every setting `engine` was configured with, as a string
            (`_wasmtime.engine_key`); two engines may share a key only if they
            were configured alike.
        engine: the engine to compile for, or to load the code into.
        wasm: the module's bytes, or its WebAssembly text.

    Blocks on the files and, when the code is not cached, on the compile.
    Any thread may call it.

    Raises:
        wasmtime.WasmtimeError: the module does not compile (nothing is stored).
    """
    source: bytes | str = wasm if isinstance(wasm, str) else bytes(wasm)
    directory, enabled, _ = _settings()
    if directory is None or not enabled:
        return _compile(engine, source)
    try:
        dir_fd = _open_directory(directory, create=True)
    except (_Unusable, OSError) as exc:
        _warn_once(
            str(directory),
            f"compiled-code cache {directory} is not used ({exc}); modules are compiled "
            f"in every process (set {SWITCH_VARIABLE}=0 to turn the cache off, or "
            f"{DIR_VARIABLE} to move it)",
        )
        return _compile(engine, source)
    try:
        try:
            secret = _secret(dir_fd)
        except (_Unusable, OSError) as exc:
            _warn_once(
                str(directory),
                f"compiled-code cache {directory} is not used ({exc}); "
                "`sharedwasm cache clear` starts it afresh",
            )
            return _compile(engine, source)
        key = entry_key(engine_key, engine, source)
        name = entry_name(key)
        try:
            data = _read_entry(dir_fd, name)
            payload = None if data is None else unpack_entry(data, secret, key)
        except _Rejected as exc:
            _reject(exc.reason)
            payload = None
        if payload is not None:
            try:
                module = wasmtime.Module.deserialize(engine, payload)
            except wasmtime.WasmtimeError:
                _reject("incompatible")
            else:
                _count(hit=True)
                return module
        module = _compile(engine, source)
        try:
            entry = pack_entry(secret, key, bytes(module.serialize()))
            _store(dir_fd, name, entry)
            _count(store=True)
            _prune_if_due(dir_fd, name, len(entry))
        except (OSError, wasmtime.WasmtimeError) as exc:
            _warn_once(
                str(directory),
                f"compiled-code cache {directory} cannot be written ({exc}); modules are "
                "compiled in every process",
            )
        return module
    finally:
        os.close(dir_fd)


def compile_module(
    wasm: bytes | bytearray | str, *, interruptible: bool = False
) -> wasmtime.Module:
    """Return `wasm` compiled for sharedwasm's plain or interruptible engine, cached.

    Raises:
        wasmtime.WasmtimeError: the module does not compile.
    """
    return load_or_compile(
        _wasmtime.engine_key(interruptible), _wasmtime.engine(interruptible), wasm
    )


def info() -> CacheInfo:
    """Return where the cache is, whether it is used, and what it holds (creates nothing)."""
    directory, enabled, reason = _settings()
    if directory is None:
        return CacheInfo(None, "off", reason, 0, 0)
    state: Literal["on", "off"] = "on" if enabled else "off"
    try:
        dir_fd = _open_directory(directory, create=False)
    except FileNotFoundError:
        return CacheInfo(directory, state, reason or "empty: not created yet", 0, 0)
    except (_Unusable, OSError) as exc:
        return CacheInfo(directory, "unusable" if enabled else state, reason or str(exc), 0, 0)
    sizes: list[int] = []
    try:
        with os.scandir(dir_fd) as scan:
            for item in scan:
                if item.name.endswith(ENTRY_SUFFIX):
                    with contextlib.suppress(OSError):  # removed meanwhile
                        sizes.append(item.stat(follow_symlinks=False).st_size)
    finally:
        os.close(dir_fd)
    return CacheInfo(directory, state, reason, len(sizes), sum(sizes))


def clear() -> tuple[Path | None, int]:
    """Remove every entry, temporary file and the HMAC key; return the directory and the count.

    Only files with the cache's own names are removed, and the directory
    stays, so a `SHAREDWASM_CACHE_DIR` pointed at a directory with other
    files in it loses none of them. Works when the cache is off too.

    Raises:
        PermissionError: the directory belongs to another user.
        OSError: the directory cannot be read.
    """
    directory, _, _ = _settings()
    if directory is None:
        return None, 0
    try:
        dir_fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
    except FileNotFoundError:
        return directory, 0
    removed = 0
    try:
        uid = os.fstat(dir_fd).st_uid
        if uid != os.geteuid():
            raise PermissionError(
                f"compiled-code cache {directory} is owned by uid {uid}, not by this user "
                f"(uid {os.geteuid()}); it was left as it is"
            )
        with os.scandir(dir_fd) as scan:
            names = [
                item.name
                for item in scan
                if item.name == KEY_FILE
                or item.name.endswith(ENTRY_SUFFIX)
                or item.name.startswith(TEMP_PREFIX)
            ]
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)
                removed += 1
    finally:
        os.close(dir_fd)
    return directory, removed
