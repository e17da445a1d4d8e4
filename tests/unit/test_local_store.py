"""LocalStore: atomic writes, key validation, listing, cleanup."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from etcdguard.config import LocalStoreConfig
from etcdguard.errors import StorageError
from etcdguard.storage import LocalStore, open_store
from tests.support.require import missing


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _partials(root: Path) -> list[Path]:
    return [p for p in root.rglob(".partial-*") if p.is_file()]


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def test_open_store_and_url(tmp_path: Path) -> None:
    s = open_store(LocalStoreConfig(path=tmp_path / "x"))
    assert isinstance(s, LocalStore)
    assert s.url == (tmp_path / "x").as_uri()
    assert s.url.startswith("file:///")
    assert repr(s) == f"LocalStore({str(tmp_path / 'x')!r})"


def test_round_trip_streaming(store: LocalStore) -> None:
    chunks = [os.urandom(1000 + i) for i in range(50)]
    with store.open_writer("c1/b1/snapshot.db") as w:
        for c in chunks:
            w.write(c)
        info = w.commit()
    data = b"".join(chunks)
    assert info.key == "c1/b1/snapshot.db" and info.size == len(data)
    with store.open_reader("c1/b1/snapshot.db") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(data).digest()
    st = store.stat("c1/b1/snapshot.db")
    assert st is not None and st.size == len(data) and st.modified is not None
    assert store.get_bytes("c1/b1/snapshot.db") == data


def test_root_and_dirs_created_0700(tmp_path: Path) -> None:
    s = LocalStore(tmp_path / "a" / "store")
    s.put_bytes("c/b/k", b"x")
    for d in (tmp_path / "a" / "store", tmp_path / "a" / "store" / "c", tmp_path / "a" / "store" / "c" / "b"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_object_invisible_before_commit(store: LocalStore) -> None:
    w = store.open_writer("c/b/obj")
    w.write(b"hello")
    assert store.stat("c/b/obj") is None
    assert list(store.list()) == []
    with pytest.raises(KeyError):
        store.get_bytes("c/b/obj")
    w.commit()
    assert store.get_bytes("c/b/obj") == b"hello"


def test_commit_replaces_existing_atomically(store: LocalStore) -> None:
    store.put_bytes("k", b"old")
    w = store.open_writer("k")
    w.write(b"new contents")
    assert store.get_bytes("k") == b"old"
    w.commit()
    assert store.get_bytes("k") == b"new contents"


def test_temp_file_private(store: LocalStore) -> None:
    w = store.open_writer("c/b/obj")
    w.write(b"secret")
    (tmp,) = _partials(store.root)
    assert tmp.parent == store.root / "c" / "b"
    assert stat.S_IMODE(tmp.stat().st_mode) == 0o600
    w.abort()


def test_abort_leaves_nothing(store: LocalStore) -> None:
    w = store.open_writer("c/b/obj")
    w.write(b"x" * 10000)
    w.abort()
    w.abort()  # idempotent
    assert _partials(store.root) == []
    assert store.stat("c/b/obj") is None
    with pytest.raises(StorageError):
        w.write(b"more")


def test_exception_inside_with_aborts(store: LocalStore) -> None:
    with pytest.raises(RuntimeError), store.open_writer("c/b/obj") as w:
        w.write(b"partial")
        raise RuntimeError("boom")
    assert _files(store.root) == []


def test_abort_after_commit_is_noop(store: LocalStore) -> None:
    w = store.open_writer("k")
    w.write(b"v")
    w.commit()
    w.abort()
    assert store.get_bytes("k") == b"v"


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", "a/./b", "a//b", "a/", "a\\b",
                                 "a/.partial-x", "nul\x00"])
def test_key_validation(store: LocalStore, key: str) -> None:
    with pytest.raises((ValueError, StorageError)):
        store.put_bytes(key, b"x")
    with pytest.raises((ValueError, StorageError)):
        store.open_writer(key)
    assert not (store.root.parent / "b").exists()


def test_missing_keys(store: LocalStore) -> None:
    assert store.stat("nope") is None
    with pytest.raises(KeyError):
        store.open_reader("nope")
    with pytest.raises(KeyError):
        store.get_bytes("a/b/c")
    store.delete("nope")  # not an error
    assert list(store.list()) == []


def test_list_order_and_prefix(store: LocalStore) -> None:
    keys = ["b/2", "a-c", "a/b", "a/a/z", "a0", "b/10", "ab", "a/b0"]
    for k in keys:
        store.put_bytes(k, k.encode())
    partial = store.open_writer("a/x")
    partial.write(b"hidden")
    listed = [i.key for i in store.list()]
    assert listed == sorted(keys)
    assert [i.key for i in store.list("a/")] == ["a/a/z", "a/b", "a/b0"]
    assert [i.key for i in store.list("a/b")] == ["a/b", "a/b0"]
    assert [i.key for i in store.list("a")] == ["a-c", "a/a/z", "a/b", "a/b0", "a0", "ab"]
    assert [i.key for i in store.list("zzz")] == []
    assert {i.key: i.size for i in store.list("b/")} == {"b/10": 4, "b/2": 3}
    partial.abort()


def test_list_children(store: LocalStore) -> None:
    for k in ["c1/20261126T150000Z-aaaaaa/manifest.json", "c1/20261126T150000Z-aaaaaa/snapshot.db.zst.age",
              "c1/20261125T150000Z-bbbbbb/manifest.json", "c1/loose-file", "c2/x/y"]:
        store.put_bytes(k, b"{}")
    assert store.list_children("c1") == ["20261125T150000Z-bbbbbb", "20261126T150000Z-aaaaaa"]
    assert store.list_children("c1/") == ["20261125T150000Z-bbbbbb", "20261126T150000Z-aaaaaa"]
    assert store.list_children("") == ["c1", "c2"]


def test_delete_prunes_empty_dirs(store: LocalStore) -> None:
    store.put_bytes("c/b/one", b"1")
    store.put_bytes("c/other", b"2")
    store.delete("c/b/one")
    assert not (store.root / "c" / "b").exists()
    assert (store.root / "c").is_dir()
    assert store.root.is_dir()
    assert [i.key for i in store.list()] == ["c/other"]


def test_cleanup_incomplete(store: LocalStore) -> None:
    old = store.open_writer("c/b1/obj")
    old.write(b"x")
    fresh = store.open_writer("c/b2/obj")
    fresh.write(b"y")
    other = store.open_writer("d/obj")
    other.write(b"z")
    store.put_bytes("c/b1/done", b"done")
    (old_tmp,) = _partials(store.root / "c" / "b1")
    past = time.time() - 3600
    os.utime(old_tmp, (past, past))
    assert store.cleanup_incomplete("c/", older_than_seconds=600) == 1
    assert not old_tmp.exists()
    assert len(_partials(store.root)) == 2
    assert store.cleanup_incomplete("c/", older_than_seconds=0) == 1
    assert store.cleanup_incomplete() == 1
    assert _partials(store.root) == []
    assert store.get_bytes("c/b1/done") == b"done"
    fresh.abort()
    other.abort()
    old.abort()


def test_check_creates_and_verifies(tmp_path: Path) -> None:
    s = LocalStore(tmp_path / "new" / "dir")
    s.check()
    assert (tmp_path / "new" / "dir").is_dir()
    assert _partials(tmp_path) == []


def test_check_not_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="not a directory"):
        LocalStore(tmp_path / "file").check()


def test_check_not_writable(tmp_path: Path) -> None:
    d = tmp_path / "ro"
    d.mkdir(mode=0o500)
    # root writes anywhere, except into an immutable directory
    immutable = os.geteuid() != 0 or subprocess.run(["chattr", "+i", str(d)], capture_output=True,
                                                    check=False).returncode == 0
    if not immutable:
        missing("chattr +i is not supported on this file system")
    try:
        with pytest.raises(StorageError, match="not writable"):
            LocalStore(d).check()
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(d)], capture_output=True, check=False)
        d.chmod(0o700)


def test_check_error_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError) as info:
        LocalStore(tmp_path / "file" / "sub").check()
    assert "\n" not in str(info.value)
