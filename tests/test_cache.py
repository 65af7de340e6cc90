"""The compiled-code cache: reuse across processes, and never loading what it must not."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wasmtime

import sharedwasm as sw
from conftest import TIMEOUT
from sharedwasm import _cache, _wasmtime
from sharedwasm._builtin import KERNEL_DIR, map_f32_reference
from sharedwasm._cli import main

ROOT = Path(__file__).resolve().parent.parent


def _module(value: int, functions: int = 1) -> bytes:
    """Return a small valid module whose code depends on `value`."""
    body = "\n".join(
        f'(func (export "f{i}") (result i32) (i32.add (i32.const {value}) (i32.const {i})))'
        for i in range(functions)
    )
    return bytes(wasmtime.wat2wasm(f"(module {body})"))


WASM_A = _module(1)
WASM_B = _module(2)


def _load(wasm: bytes | str, *, interruptible: bool = False) -> wasmtime.Module:
    return _cache.compile_module(wasm, interruptible=interruptible)


def _entry(directory: Path, wasm: bytes | str, *, interruptible: bool = False) -> Path:
    key = _cache.entry_key(
        _wasmtime.engine_key(interruptible), _wasmtime.engine(interruptible), wasm
    )
    return directory / _cache.entry_name(key)


def _delta(before: _cache.CacheStatistics) -> dict[str, Any]:
    after = _cache.statistics()
    rejected = {
        reason: count - before.rejected.get(reason, 0)
        for reason, count in after.rejected.items()
        if count != before.rejected.get(reason, 0)
    }
    return {
        "hits": after.hits - before.hits,
        "compiles": after.compiles - before.compiles,
        "stores": after.stores - before.stores,
        "rejected": rejected,
    }


def _files(directory: Path) -> dict[str, tuple[int, int]]:
    """Return every file's (inode, mtime_ns), by name."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in directory.iterdir()}


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the cache at a directory of this test's own, not yet created."""
    directory = tmp_path / "cache"
    monkeypatch.setenv(_cache.DIR_VARIABLE, str(directory))
    monkeypatch.delenv(_cache.SWITCH_VARIABLE, raising=False)
    return directory


@pytest.fixture
def deserialized(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every payload handed to `Module.deserialize`."""
    calls: list[int] = []
    original = wasmtime.Module.deserialize

    def spy(cls: type[wasmtime.Module], engine: wasmtime.Engine, data: bytes) -> Any:
        calls.append(len(data))
        return original(engine, data)

    monkeypatch.setattr(wasmtime.Module, "deserialize", classmethod(spy))
    return calls


# -- across processes ----------------------------------------------------------

SECOND_PROCESS = """
import json, sys
import numpy as np
import wasmtime
import sharedwasm as sw
from sharedwasm import _cache
from sharedwasm._builtin import map_f32_reference

compiled = []
original = wasmtime.Module.__init__

def counting(self, engine, wasm):
    if wasm != _cache.PROBE:  # the engine's fingerprint, made once per process
        compiled.append(len(wasm))
    original(self, engine, wasm)

wasmtime.Module.__init__ = counting
kernel = sw.Kernel.from_file(sys.argv[1])
with sw.WorkerPool(kernel, sw.Memory(4, 4), 2) as pool:
    data = pool.data(np.float32)
    data[:] = np.linspace(0, 100, len(data), dtype=np.float32)
    expected = map_f32_reference(data.copy())
    pool.run("cached")
    ok = bool(np.array_equal(pool.data(np.float32), expected))
stats = _cache.statistics()
print(json.dumps({"compiled": compiled, "hits": stats.hits, "stores": stats.stores,
                  "rejected": dict(stats.rejected), "ok": ok}))
"""


def _run_pool_process(directory: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-c", SECOND_PROCESS, str(KERNEL_DIR / "map_f32.wat")],
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 3,
        env=dict(os.environ, SHAREDWASM_CACHE_DIR=str(directory)),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_second_process_compiles_nothing(cache_dir):
    """A second process loads the kernel (its runner merged in) and the atomics helper from the
    cache, compiling none."""
    first = _run_pool_process(cache_dir)
    assert first["ok"]
    assert len(first["compiled"]) >= 2  # the merged kernel, the atomics helper
    assert first["stores"] >= 2
    before = _files(cache_dir)
    second = _run_pool_process(cache_dir)
    assert second["ok"]
    assert second["compiled"] == []
    assert second["stores"] == 0
    assert second["hits"] >= 2
    assert second["rejected"] == {}
    assert _files(cache_dir) == before, "the second process rewrote or added files"


def test_cache_directory_is_private(cache_dir):
    """The directory is made 0700, its key and entries 0600."""
    _load(WASM_A)
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((cache_dir / _cache.KEY_FILE).stat().st_mode) == 0o600
    entry = _entry(cache_dir, WASM_A)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    assert (cache_dir / _cache.KEY_FILE).stat().st_size == _cache.KEY_BYTES
    assert {p.name for p in cache_dir.iterdir()} == {_cache.KEY_FILE, entry.name}


def test_hit_returns_working_code(cache_dir, deserialized):
    """A module loaded from an entry has the exports and behaviour of the compiled one."""
    compiled = _load(WASM_A)
    before = _cache.statistics()
    loaded = _load(WASM_A)
    assert _delta(before) == {"hits": 1, "compiles": 0, "stores": 0, "rejected": {}}
    assert len(deserialized) == 1
    assert [e.name for e in loaded.exports] == [e.name for e in compiled.exports]
    store = wasmtime.Store(_wasmtime.engine())
    f0 = wasmtime.Instance(store, loaded, []).exports(store)["f0"]
    assert isinstance(f0, wasmtime.Func)
    assert f0(store) == 1


def test_kernel_from_cache_is_the_same_kernel(cache_dir):
    """A Kernel whose code comes from a cached entry reads the same ABI facts as a compiled one."""
    text = (KERNEL_DIR / "map_f32.wat").read_text()
    first = sw.Kernel.from_wat(text)
    first._module_for(False)  # what a pool compiles: the kernel with its runner merged in
    before = _cache.statistics()
    second = sw.Kernel.from_wat(text)
    second._module_for(False)
    assert _delta(before)["hits"] == 1
    assert repr(first) == repr(second)


def test_invalid_module_is_not_stored(cache_dir):
    """Bytes that do not compile raise KernelError and leave no entry."""
    with pytest.raises(sw.KernelError, match="not valid WebAssembly"):
        sw.Kernel.from_bytes(b"\0asm\x01\0\0\0\x01\x05")
    assert not list(cache_dir.glob(f"*{_cache.ENTRY_SUFFIX}"))


def test_interruptible_engine_has_its_own_entries(cache_dir):
    """The plain and the interruptible engine's code of one module are two entries."""
    _load(WASM_A)
    _load(WASM_A, interruptible=True)
    plain, interruptible = _entry(cache_dir, WASM_A), _entry(cache_dir, WASM_A, interruptible=True)
    assert plain != interruptible
    assert plain.exists()
    assert interruptible.exists()


def test_key_names_module_engine_and_wasmtime():
    """A key holds the module digest, engine settings and fingerprint, wasmtime and machine."""
    plain = json.loads(
        _cache.entry_key(_wasmtime.engine_key(False), _wasmtime.engine(False), WASM_A)
    )
    other = json.loads(_cache.entry_key(_wasmtime.engine_key(True), _wasmtime.engine(True), WASM_A))
    assert json.loads(plain["engine"]) == _wasmtime.engine_settings(False)
    assert json.loads(other["engine"])["epoch_interruption"] is True
    assert plain["fingerprint"] != other["fingerprint"]
    assert plain["module"] == other["module"]
    assert plain["wasmtime"].startswith("50.")
    assert plain["library"]["size"] > 0
    assert plain["library"]["digest"].startswith("sha256=")  # from the installer's record
    assert plain["machine"]
    assert plain["source"] == "wasm"
    text = json.loads(
        _cache.entry_key(_wasmtime.engine_key(False), _wasmtime.engine(False), "(module)")
    )
    assert text["source"] == "wat"


def test_suite_cache_is_temporary():
    """The test session's cache lives in a temporary directory, not in the user's cache."""
    info = _cache.info()
    assert info.directory is not None
    assert info.directory.is_relative_to(tempfile.gettempdir())
    assert not info.directory.is_relative_to(Path.home() / ".cache")


# -- entries that must not be loaded --------------------------------------------


def _flip(offset: int) -> Callable[[bytes], bytes]:
    def mutate(data: bytes) -> bytes:
        i = offset % len(data)
        return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]

    return mutate


CORRUPTIONS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "empty": (lambda data: b"", "truncated"),
    "truncated header": (lambda data: data[:10], "truncated"),
    "truncated payload": (lambda data: data[: len(data) // 2], "truncated"),
    "one byte short": (lambda data: data[:-1], "truncated"),
    "trailing bytes": (lambda data: data + b"\0", "length"),
    "bad magic": (_flip(0), "magic"),
    "other format": (_flip(9), "format"),
    "flipped key byte": (_flip(_cache.HEADER_BYTES + 5), "key"),
    "flipped mac byte": (_flip(_cache.HEADER_BYTES - 1), "mac"),
    "flipped payload byte": (_flip(-1), "mac"),
    "flipped code byte": (_flip(-4000), "mac"),
}


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_damaged_entry_is_recompiled_never_loaded(cache_dir, deserialized, corruption):
    """A truncated or altered entry is refused before deserialisation, recompiled and rewritten."""
    mutate, reason = CORRUPTIONS[corruption]
    _load(WASM_A)
    entry = _entry(cache_dir, WASM_A)
    entry.write_bytes(mutate(entry.read_bytes()))
    before = _cache.statistics()
    module = _load(WASM_A)
    assert _delta(before) == {"hits": 0, "compiles": 1, "stores": 1, "rejected": {reason: 1}}
    assert deserialized == []
    assert [e.name for e in module.exports] == ["f0"]
    before = _cache.statistics()
    _load(WASM_A)
    assert _delta(before)["hits"] == 1, "the entry was not rewritten"


def test_entry_of_other_bytes_is_recompiled(cache_dir, deserialized):
    """An entry copied under the name of another module's is refused by its key."""
    _load(WASM_A)
    _load(WASM_B)
    _entry(cache_dir, WASM_B).write_bytes(_entry(cache_dir, WASM_A).read_bytes())
    before = _cache.statistics()
    module = _load(WASM_B)
    assert _delta(before)["rejected"] == {"key": 1}
    assert deserialized == []
    store = wasmtime.Store(_wasmtime.engine())
    f0 = wasmtime.Instance(store, module, []).exports(store)["f0"]
    assert isinstance(f0, wasmtime.Func)
    assert f0(store) == 2  # B's code, not A's


def test_entry_of_another_wasmtime_is_recompiled(cache_dir, deserialized, monkeypatch):
    """An entry made under another wasmtime version has another name, and under ours is refused."""
    real = _entry(cache_dir, WASM_A)
    with monkeypatch.context() as patch:
        patch.setattr(_cache, "_identities", {})
        patch.setattr(_cache, "_distribution", lambda: ("49.0.0", ""))
        _load(WASM_A)
        fake = _entry(cache_dir, WASM_A)
    assert fake != real
    assert b'"wasmtime":"49.0.0"' in fake.read_bytes()
    before = _cache.statistics()
    _load(WASM_A)
    assert _delta(before) == {"hits": 0, "compiles": 1, "stores": 1, "rejected": {}}
    fake.rename(real)
    before = _cache.statistics()
    _load(WASM_A)
    assert _delta(before)["rejected"] == {"key": 1}
    assert deserialized == []


def test_code_wasmtime_refuses_is_recompiled(cache_dir, deserialized):
    """An entry that passes every check but holds another engine's code is refused by wasmtime."""
    _load(WASM_A)
    secret = (cache_dir / _cache.KEY_FILE).read_bytes()
    key = _cache.entry_key(_wasmtime.engine_key(False), _wasmtime.engine(False), WASM_A)
    foreign = bytes(wasmtime.Module(_wasmtime.engine(True), WASM_A).serialize())
    _entry(cache_dir, WASM_A).write_bytes(_cache.pack_entry(secret, key, foreign))
    before = _cache.statistics()
    _load(WASM_A)
    assert _delta(before) == {
        "hits": 0,
        "compiles": 1,
        "stores": 1,
        "rejected": {"incompatible": 1},
    }
    assert deserialized == [len(foreign)]


def test_entry_under_another_secret_is_refused(cache_dir, deserialized):
    """An entry written by another cache (another HMAC key) is never loaded."""
    _load(WASM_A)
    key = _cache.entry_key(_wasmtime.engine_key(False), _wasmtime.engine(False), WASM_A)
    payload = bytes(wasmtime.Module(_wasmtime.engine(), WASM_A).serialize())
    _entry(cache_dir, WASM_A).write_bytes(_cache.pack_entry(b"x" * 32, key, payload))
    before = _cache.statistics()
    _load(WASM_A)
    assert _delta(before)["rejected"] == {"mac": 1}
    assert deserialized == []


def test_group_writable_entry_is_refused(cache_dir, deserialized):
    """An entry others may write is not loaded, and is replaced by a private one."""
    _load(WASM_A)
    entry = _entry(cache_dir, WASM_A)
    entry.chmod(0o666)
    before = _cache.statistics()
    _load(WASM_A)
    assert _delta(before)["rejected"] == {"mode": 1}
    assert deserialized == []
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600


def test_symlinked_entry_is_refused(cache_dir, deserialized, tmp_path):
    """An entry that is a symlink, even to a valid entry, is not followed."""
    _load(WASM_A)
    entry = _entry(cache_dir, WASM_A)
    elsewhere = tmp_path / "elsewhere.entry"
    elsewhere.write_bytes(entry.read_bytes())
    entry.unlink()
    entry.symlink_to(elsewhere)
    before = _cache.statistics()
    _load(WASM_A)
    assert _delta(before)["rejected"] == {"type": 1}
    assert deserialized == []
    assert not entry.is_symlink()


needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="chown to another uid needs root"
)


@needs_root
def test_entry_of_another_user_is_refused(cache_dir, deserialized):
    """An entry owned by another uid is not loaded, and is replaced by one of ours."""
    _load(WASM_A)
    entry = _entry(cache_dir, WASM_A)
    os.chown(entry, 4242, 4242)
    before = _cache.statistics()
    _load(WASM_A)
    assert _delta(before)["rejected"] == {"owner": 1}
    assert deserialized == []
    assert entry.stat().st_uid == os.geteuid()


# -- directories that must not be used -----------------------------------------


def _unused(cache_dir: Path, deserialized: list[int], match: str) -> None:
    """Check that a load warns once with `match`, compiles, and touches nothing in the directory."""
    before_files = _files(cache_dir)
    before = _cache.statistics()
    with pytest.warns(sw.CacheWarning, match=match):
        module = _load(WASM_A)
    assert [e.name for e in module.exports] == ["f0"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _load(WASM_A)  # warned once already
        _load(WASM_B)
    assert _delta(before) == {"hits": 0, "compiles": 3, "stores": 0, "rejected": {}}
    assert deserialized == []
    assert _files(cache_dir) == before_files


def test_world_writable_directory_is_not_used(cache_dir, deserialized):
    """A cache directory with mode 0777 is neither read nor written, with one warning."""
    _load(WASM_A)
    cache_dir.chmod(0o777)
    _unused(cache_dir, deserialized, r"writable by group or others \(mode 0777\)")


def test_group_writable_directory_is_not_used(cache_dir, deserialized):
    """A cache directory with mode 0770 is not used either."""
    _load(WASM_A)
    cache_dir.chmod(0o770)
    _unused(cache_dir, deserialized, r"mode 0770")


@needs_root
def test_directory_of_another_user_is_not_used(cache_dir, deserialized):
    """A cache directory owned by another uid is neither read nor written, with one warning."""
    _load(WASM_A)
    os.chown(cache_dir, 4242, 4242)
    _unused(cache_dir, deserialized, r"owned by uid 4242, not by this user \(uid 0\)")


def test_key_file_others_can_read_is_not_used(cache_dir, deserialized):
    """A readable-by-others HMAC key makes the cache unusable rather than trusted."""
    _load(WASM_A)
    (cache_dir / _cache.KEY_FILE).chmod(0o644)
    _unused(cache_dir, deserialized, r"hmac-key is accessible by group or others \(mode 0644\)")


def test_short_key_file_is_not_used(cache_dir, deserialized):
    """A key file of the wrong size makes the cache unusable; the warning says how to reset it."""
    _load(WASM_A)
    (cache_dir / _cache.KEY_FILE).write_bytes(b"short")
    _unused(cache_dir, deserialized, r"hmac-key must hold 32 bytes \(got 5\).*cache clear")


def test_unwritable_location_falls_back_to_compiling(tmp_path, monkeypatch):
    """A location that cannot be created compiles as without a cache, with one warning."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(_cache.DIR_VARIABLE, str(blocker / "cache"))
    before = _cache.statistics()
    with pytest.warns(sw.CacheWarning, match="is not used"):
        _load(WASM_A)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _load(WASM_A)
    assert _delta(before) == {"hits": 0, "compiles": 2, "stores": 0, "rejected": {}}


def test_failed_write_leaves_no_entry(cache_dir, monkeypatch):
    """A failed write (a full disk) keeps the compiled module, warns, and leaves no file behind."""
    _load(WASM_A)

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.warns(sw.CacheWarning, match="cannot be written.*No space left"):
        module = _load(WASM_B)
    assert [e.name for e in module.exports] == ["f0"]
    assert {p.name for p in cache_dir.iterdir()} == {
        _cache.KEY_FILE,
        _entry(cache_dir, WASM_A).name,
    }


def test_failed_rename_leaves_no_temporary_file(cache_dir, monkeypatch):
    """A failure between writing and renaming removes the temporary file."""
    _load(WASM_A)

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.warns(sw.CacheWarning, match="cannot be written"):
        _load(WASM_B)
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(_cache.TEMP_PREFIX)]


# -- where it lives and turning it off -------------------------------------------


@pytest.mark.parametrize("value", ["0", "off", "OFF", "false", "no"])
def test_turned_off(cache_dir, value, monkeypatch):
    """SHAREDWASM_CACHE=0 (or off, false, no) compiles every time and creates nothing."""
    monkeypatch.setenv(_cache.SWITCH_VARIABLE, value)
    before = _cache.statistics()
    _load(WASM_A)
    _load(WASM_A)
    assert _delta(before) == {"hits": 0, "compiles": 2, "stores": 0, "rejected": {}}
    assert not cache_dir.exists()
    info = _cache.info()
    assert info.state == "off"
    assert info.reason == f"SHAREDWASM_CACHE={value}"


def test_unknown_switch_value_warns_and_stays_on(cache_dir, monkeypatch):
    """A SHAREDWASM_CACHE value neither on nor off is named in a warning; the cache stays on."""
    monkeypatch.setenv(_cache.SWITCH_VARIABLE, "maybe")
    monkeypatch.setattr(_cache, "_warned", set())
    with pytest.warns(sw.CacheWarning, match=r"SHAREDWASM_CACHE must be one of .* \(got 'maybe'\)"):
        _load(WASM_A)
    assert _entry(cache_dir, WASM_A).exists()


def test_relocated_by_environment(tmp_path, monkeypatch):
    """SHAREDWASM_CACHE_DIR moves the cache, and missing parents are made 0700."""
    directory = tmp_path / "a" / "b"
    monkeypatch.setenv(_cache.DIR_VARIABLE, str(directory))
    _load(WASM_A)
    assert _entry(directory, WASM_A).exists()
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    assert _cache.info().directory == directory


def test_xdg_cache_home_and_home(tmp_path, monkeypatch):
    """Without SHAREDWASM_CACHE_DIR it is $XDG_CACHE_HOME/sharedwasm, else ~/.cache/sharedwasm."""
    monkeypatch.delenv(_cache.DIR_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _cache.info().directory == tmp_path / "xdg" / "sharedwasm"
    _load(WASM_A)
    assert _entry(tmp_path / "xdg" / "sharedwasm", WASM_A).exists()
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # ignored, as XDG says
    expected = tmp_path / "home" / ("Library/Caches" if sys.platform == "darwin" else ".cache")
    assert _cache.info().directory == expected / "sharedwasm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert _cache.info().directory == expected / "sharedwasm"


# -- concurrency, size, clearing -------------------------------------------------

WRITER = """
import json, pathlib, sys, time
from sharedwasm import _cache
import wasmtime

texts, barrier, me = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
modules = [bytes(wasmtime.wat2wasm(line)) for line in texts.read_text().splitlines()]
(barrier / me).touch()
deadline = time.monotonic() + 30
while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
    time.sleep(0.001)
for wasm in modules:
    _cache.compile_module(wasm)
stats = _cache.statistics()
print(json.dumps({"hits": stats.hits, "stores": stats.stores, "rejected": dict(stats.rejected)}))
"""


def test_concurrent_writers_leave_only_whole_entries(cache_dir, tmp_path):
    """Two processes compiling the same modules at once never see or leave a partial entry."""
    texts = []
    for value in range(24):
        body = " ".join(
            f'(func (export "f{i}") (param i32) (result i32) '
            f"(i32.mul (i32.add (local.get 0) (i32.const {value})) (i32.const {i + 3})))"
            for i in range(60)
        )
        texts.append(f"(module {body})")
    modules = tmp_path / "modules.wat"
    modules.write_text("\n".join(texts))
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(modules), str(barrier), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, SHAREDWASM_CACHE_DIR=str(cache_dir)),
        )
        for i in range(2)
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=TIMEOUT * 6)
        assert proc.returncode == 0, err
        results.append(json.loads(out.splitlines()[-1]))
    assert all(r["rejected"] == {} for r in results), results
    assert sum(r["stores"] + r["hits"] for r in results) == 2 * len(texts)
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(_cache.TEMP_PREFIX)]
    before = _cache.statistics()
    for text in texts:
        _load(bytes(wasmtime.wat2wasm(text)))
    assert _delta(before) == {"hits": len(texts), "compiles": 0, "stores": 0, "rejected": {}}


def test_prune_removes_oldest_and_stale_temporaries(cache_dir):
    """Pruning keeps the newest entries within the bound and removes dead writers' files."""
    modules = [_module(v) for v in range(5)]
    for i, wasm in enumerate(modules):
        _load(wasm)
        os.utime(_entry(cache_dir, wasm), (1_000_000 + i, 1_000_000 + i))
    size = _entry(cache_dir, modules[0]).stat().st_size
    stale, fresh = (
        cache_dir / f"{_cache.TEMP_PREFIX}1-dead",
        cache_dir / f"{_cache.TEMP_PREFIX}2-live",
    )
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    os.utime(stale, (time.time() - 2 * _cache.STALE_TEMP_SECONDS,) * 2)
    fd = os.open(cache_dir, os.O_RDONLY)
    try:
        assert _cache.prune(fd, 2 * size + size // 2) == 4
    finally:
        os.close(fd)
    assert [_entry(cache_dir, w).exists() for w in modules] == [False, False, False, True, True]
    assert not stale.exists()
    assert fresh.exists()


def test_stores_stay_within_the_bound(cache_dir, monkeypatch):
    """A process that stores past MAX_BYTES prunes the cache back under it."""
    _load(WASM_A)
    size = _entry(cache_dir, WASM_A).stat().st_size
    monkeypatch.setattr(_cache, "MAX_BYTES", 3 * size + size // 2)
    monkeypatch.setattr(_cache, "_unpruned", None)
    for value in range(10, 20):
        _load(_module(value))
    total = sum(p.stat().st_size for p in cache_dir.glob(f"*{_cache.ENTRY_SUFFIX}"))
    assert total <= _cache.MAX_BYTES


def test_clear_removes_only_cache_files(cache_dir):
    """clear() removes the entries, temporaries and key, and nothing else."""
    _load(WASM_A)
    _load(WASM_B)
    (cache_dir / f"{_cache.TEMP_PREFIX}1-x").write_bytes(b"x")
    (cache_dir / "notes.txt").write_text("mine")
    assert _cache.clear() == (cache_dir, 4)
    assert [p.name for p in cache_dir.iterdir()] == ["notes.txt"]
    before = _cache.statistics()
    _load(WASM_A)  # a fresh key, a fresh entry
    assert _delta(before) == {"hits": 0, "compiles": 1, "stores": 1, "rejected": {}}


@needs_root
def test_clear_refuses_another_users_directory(cache_dir):
    """clear() leaves a directory of another uid alone and says whose it is."""
    _load(WASM_A)
    os.chown(cache_dir, 4242, 4242)
    with pytest.raises(PermissionError, match="owned by uid 4242"):
        _cache.clear()
    assert _entry(cache_dir, WASM_A).exists()


def test_info_and_cache_commands(cache_dir, capsys, monkeypatch):
    """`info` and `cache` say where the cache is and whether it is on; `cache clear` empties it."""
    assert main(["cache"]) == 0
    assert f"cache      {cache_dir} (on, empty: not created yet)" in capsys.readouterr().out
    _load(WASM_A)
    assert main(["info"]) == 0
    assert f"cache      {cache_dir} (on, 1 entry, " in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert capsys.readouterr().out == f"removed 2 files from {cache_dir}\n"
    monkeypatch.setenv(_cache.SWITCH_VARIABLE, "off")
    assert main(["cache"]) == 0
    assert f"cache      {cache_dir} (off: SHAREDWASM_CACHE=off)" in capsys.readouterr().out
    cache_dir.chmod(0o777)
    monkeypatch.delenv(_cache.SWITCH_VARIABLE)
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert f"cache      {cache_dir} (not used: it is writable by group or others" in out


def test_pool_on_cached_kernel_computes(cache_dir, make_pool):
    """A pool whose kernel, runner and helper all come from the cache computes correctly."""
    sw.Kernel.from_file(ROOT / "kernels" / "map_f32.wasm")
    pool = make_pool(sw.Kernel.from_file(KERNEL_DIR / "map_f32.wat"), sw.Memory(4, 4), 2)
    data = pool.data(np.float32)
    data[:] = np.arange(len(data), dtype=np.float32)
    expected = map_f32_reference(data.copy())
    pool.run("cached")
    np.testing.assert_array_equal(pool.data(np.float32), expected)
