"""Leftovers of killed backups in a real local store: what counts, what is idle, what is removed."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from etcdguard.backup.catalog import Catalog
from etcdguard.backup.leftovers import NO_MANIFEST, backup_started, find_leftovers, remove_leftovers, stale
from etcdguard.storage import LocalStore

OLD_ID = "20250101T000000Z-aaaaaa"
NEW_ID = "20250101T010000Z-bbbbbb"
HOUR = timedelta(hours=1)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _killed_writer(store: LocalStore, key: str) -> Path:
    """A writer that was SIGKILLed: its temp file stays (neither committed nor aborted)."""
    writer = store.open_writer(key)
    writer.write(b"x" * 100)
    partial = next(store.path_of(key).parent.glob(".partial-*"))
    return partial


def test_backup_started_reads_the_id() -> None:
    assert backup_started(OLD_ID) == datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert backup_started("not-an-id") is None


def test_kinds_and_idle_times(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    catalog = Catalog(store, "prod")
    partial = _killed_writer(store, f"prod/{OLD_ID}/snapshot.db.zst.age")
    _age(partial, 3 * 3600)
    store.put_bytes(f"prod/{NEW_ID}/snapshot.db.zst.age", b"object without manifest")
    (tmp_path / "prod" / "20250101T020000Z-cccccc").mkdir()  # killed between mkdir and the temp file
    store.put_bytes("prod/20250101T030000Z-dddddd/manifest.json", b"{}")  # complete: not a leftover
    found = find_leftovers(catalog)
    assert sorted(lo.kind for lo in found) == ["empty directory", NO_MANIFEST, "partial file"]
    by_kind = {lo.kind: lo for lo in found}
    assert by_kind["partial file"].backup_id == OLD_ID
    assert by_kind[NO_MANIFEST].key == f"prod/{NEW_ID}/"
    now = datetime.now(timezone.utc)
    assert [lo.kind for lo in stale(found, HOUR, now)] == ["partial file"]  # the others were just written


def test_a_directory_with_a_fresh_write_is_not_removed(tmp_path: Path) -> None:
    """An old object without manifest beside a temp file still growing: a backup in progress."""
    store = LocalStore(tmp_path)
    catalog = Catalog(store, "prod")
    store.put_bytes(f"prod/{OLD_ID}/verification.json", b"{}")
    _age(store.path_of(f"prod/{OLD_ID}/verification.json"), 3 * 3600)
    fresh = _killed_writer(store, f"prod/{OLD_ID}/snapshot.db.zst.age")
    assert remove_leftovers(catalog, HOUR) == []
    assert fresh.exists()
    assert store.stat(f"prod/{OLD_ID}/verification.json") is not None


def test_remove_leftovers_removes_idle_ones_and_their_directories(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    catalog = Catalog(store, "prod")
    partial = _killed_writer(store, f"prod/{OLD_ID}/snapshot.db.zst.age")
    store.put_bytes(f"prod/{NEW_ID}/snapshot.db.zst.age", b"object without manifest")
    for path in (partial, store.path_of(f"prod/{NEW_ID}/snapshot.db.zst.age")):
        _age(path, 3 * 3600)
        _age(path.parent, 3 * 3600)
    removed = remove_leftovers(catalog, HOUR)
    assert sorted(lo.kind for lo in removed) == [NO_MANIFEST, "partial file"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == []
    assert find_leftovers(catalog) == []
