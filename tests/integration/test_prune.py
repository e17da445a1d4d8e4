"""``etcdguard backups prune`` against a real LocalStore holding backups in the real catalog format."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import pytest
from typer.testing import CliRunner, Result

from etcdguard.backup.catalog import Catalog, Trust, safe_entries
from etcdguard.backup.keys import generate_keys, load_signing_key, load_verify_key
from etcdguard.backup.manifest import (
    ENCRYPTED_OBJECT,
    MANIFEST_NAME,
    ClusterRef,
    HashKVRecord,
    Manifest,
    SnapshotInfo,
    SourceMember,
    StoredObject,
    Verification,
    seal_manifest,
)
from etcdguard.backup.retention import (
    NEWEST_VERIFIED,
    PINNED,
    PINNED_MEANWHILE,
    UNREADABLE,
    apply_retention,
    execute_retention,
    plan_entries,
)
from etcdguard.cli.main import app
from etcdguard.config import RetentionConfig
from etcdguard.storage.local import LocalStore

CLUSTER = "prod"
UTC = timezone.utc
POLICY_FLAGS = ["--keep-last", "2", "--hourly", "0", "--daily", "3", "--weekly", "0", "--monthly", "0",
                "--min-count", "2"]
POLICY = RetentionConfig(keep_last=2, hourly=0, daily=3, weekly=0, monthly=0, min_count=2)

runner = CliRunner()


def bid(day: int, hour: int) -> str:
    return f"202503{day:02d}T{hour:02d}0000Z-{day:02x}{hour:02x}00"


# Two backups a day, 2025-03-01 .. 2025-03-06.
ALL = [bid(d, h) for d in range(1, 7) for h in (6, 18)]
PINNED_ID = bid(1, 6)
NEWEST_VERIFIED_ID = bid(2, 18)
UNREADABLE_ID = "20250227T000000Z-bad000"
INCOMPLETE_ID = "20250228T000000Z-0ff000"
EXPECTED_KEEP = {
    bid(6, 18): ["last 2", "daily 2025-03-06"],
    bid(6, 6): ["last 2"],
    bid(5, 18): ["daily 2025-03-05"],
    bid(4, 18): ["daily 2025-03-04"],
    NEWEST_VERIFIED_ID: [NEWEST_VERIFIED],
    PINNED_ID: [PINNED],
    UNREADABLE_ID: [UNREADABLE],
}
EXPECTED_DELETE = [bid(1, 18), bid(2, 6), bid(3, 6), bid(3, 18), bid(4, 6), bid(5, 6)]


def manifest(backup_id: str, created: datetime) -> Manifest:
    return Manifest(
        backup_id=backup_id, cluster=ClusterRef(name=CLUSTER, cluster_id="c0ffee"),
        source=SourceMember(name="m0", member_id="1", endpoint="http://127.0.0.1:2379", etcd_version="3.5.16"),
        hashkv=HashKVRecord(revision=10, hash=123, compact_revision=-1),
        snapshot=SnapshotInfo(size=100, sha256="a" * 64, trailer_sha256="b" * 64),
        stored=StoredObject(key=ENCRYPTED_OBJECT, size=5, sha256="c" * 64, compression_level=3,
                            encryption="age-x25519", recipients=["0123456789abcdef"]),
        signing_key_id=None, created_at=created, finished_at=created + timedelta(seconds=3), tool_version="0.1.0")


def trusted_catalog(root: Path) -> Catalog:
    """The catalog as a reader with the fixture's public key sees it."""
    return Catalog(LocalStore(root), CLUSTER, Trust.of([load_verify_key(root.parent / "keys" / "signing.pub")]))


def verdict(backup_id: str, result: Literal["passed", "failed"]) -> Verification:
    at = datetime(2025, 3, 10, tzinfo=UTC)
    return Verification(backup_id=backup_id, result=result, started_at=at, finished_at=at)


@pytest.fixture
def store_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local store with 12 complete backups, one unreadable and one incomplete leftover."""
    for name in list(os.environ):
        if name.startswith("ETCDGUARD_"):
            monkeypatch.delenv(name)
    root = tmp_path / "store"
    keys = generate_keys(root.parent / "keys")
    monkeypatch.setenv("ETCDGUARD_SIGNING_PUBLIC_KEYS", str(keys.signing_pub))
    key = load_signing_key(keys.signing_key)
    store = LocalStore(root)
    catalog = trusted_catalog(root)
    for backup_id in ALL:
        created = datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        store.put_bytes(f"{catalog.prefix(backup_id)}/{ENCRYPTED_OBJECT}", b"dummy")
        store.put_bytes(f"{catalog.prefix(backup_id)}/{MANIFEST_NAME}",
                        seal_manifest(manifest(backup_id, created), key))
    results: list[tuple[str, Literal["passed", "failed"]]] = [
        (bid(2, 6), "passed"), (NEWEST_VERIFIED_ID, "passed"), (bid(5, 6), "failed")]  # failed: not protected
    for backup_id, result in results:
        catalog.write_verification(verdict(backup_id, result), key, catalog.open(backup_id, catalog.trust.keys))
    catalog.set_pinned(PINNED_ID, True, "audit")
    store.put_bytes(f"{catalog.prefix(UNREADABLE_ID)}/{ENCRYPTED_OBJECT}", b"dummy")
    store.put_bytes(f"{catalog.prefix(UNREADABLE_ID)}/{MANIFEST_NAME}", b"{not json")
    store.put_bytes(f"{catalog.prefix(INCOMPLETE_ID)}/{ENCRYPTED_OBJECT}", b"partial")
    return root


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def backup_dirs(root: Path) -> set[str]:
    return {p.name for p in (root / CLUSTER).iterdir() if p.is_dir()}


def prune(root: Path, *args: str) -> Result:
    return runner.invoke(app, ["backups", "prune", "--store", str(root), "--cluster-name", CLUSTER, *args])


def test_dry_run_shows_the_plan_and_deletes_nothing(store_root: Path) -> None:
    before = files(store_root)
    r = prune(store_root, "--dry-run", *POLICY_FLAGS)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "dry run: would delete 6 and keep 7 backup(s)" in out
    for backup_id in EXPECTED_DELETE + list(EXPECTED_KEEP):
        assert backup_id in out
    assert "newest verified" in out and "pinned" in out and "unreadable manifest" in out
    assert INCOMPLETE_ID in out and "no manifest" in out  # a leftover, written just now: kept
    assert files(store_root) == before


def test_dry_run_json_is_the_plan(store_root: Path) -> None:
    before = files(store_root)
    r = prune(store_root, "--dry-run", "-o", "json", *POLICY_FLAGS)
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["dry_run"] is True and data["deleted"] == []
    assert data["delete"] == EXPECTED_DELETE
    assert {b["backup_id"]: b["reasons"] for b in data["backups"] if b["action"] == "keep"} == EXPECTED_KEEP
    assert data["policy"] == POLICY.model_dump()
    by_id = {b["backup_id"]: b for b in data["backups"]}
    assert by_id[UNREADABLE_ID]["problem"] and by_id[UNREADABLE_ID]["created_at"] is None
    assert by_id[bid(5, 6)]["verification"] == "failed" and by_id[bid(5, 6)]["action"] == "delete"
    assert files(store_root) == before


def test_prune_without_yes_refuses_when_not_interactive(store_root: Path) -> None:
    before = files(store_root)
    r = prune(store_root, *POLICY_FLAGS)
    assert r.exit_code == 10, r.output
    assert "pass --yes" in r.stderr
    assert files(store_root) == before


def test_prune_deletes_exactly_the_plan_and_is_then_a_no_op(store_root: Path) -> None:
    planned = json.loads(prune(store_root, "--dry-run", "-o", "json", *POLICY_FLAGS).stdout)
    r = prune(store_root, "--yes", "-o", "json", *POLICY_FLAGS)
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["deleted"] == planned["delete"] == EXPECTED_DELETE
    assert "deleted backup " + EXPECTED_DELETE[0] in r.stderr
    assert backup_dirs(store_root) == set(EXPECTED_KEEP) | {INCOMPLETE_ID}
    catalog = trusted_catalog(store_root)
    assert catalog.entry(PINNED_ID).pinned and catalog.entry(NEWEST_VERIFIED_ID).verified
    assert catalog.incomplete_ids() == [INCOMPLETE_ID]

    again = prune(store_root, "--yes", *POLICY_FLAGS)
    assert again.exit_code == 0, again.output
    assert "nothing to delete; keeping 7 backup(s)" in again.stdout
    assert backup_dirs(store_root) == set(EXPECTED_KEEP) | {INCOMPLETE_ID}


def test_table_output_of_a_real_prune(store_root: Path) -> None:
    r = prune(store_root, "-y", *POLICY_FLAGS)
    assert r.exit_code == 0, r.output
    assert "deleted 6 and kept 7 backup(s)" in r.stdout
    assert f"deleted backup {EXPECTED_DELETE[0]} (2 objects)" in r.stdout
    assert f"deleted backup {bid(5, 6)} (3 objects)" in r.stdout  # with its verification.json


def test_policy_comes_from_config_and_flags_override_it(store_root: Path, tmp_path: Path) -> None:
    config = tmp_path / "etcdguard.yaml"
    config.write_text(f"store: {store_root}\nbackup:\n  cluster_name: {CLUSTER}\n"
                      "retention:\n  keep_last: 2\n  hourly: 0\n  daily: 3\n  weekly: 0\n  monthly: 0\n"
                      "  min_count: 2\n")
    r = runner.invoke(app, ["--config", str(config), "backups", "prune", "--dry-run", "-o", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["delete"] == EXPECTED_DELETE
    r = runner.invoke(app, ["--config", str(config), "backups", "prune", "--dry-run", "-o", "json",
                            "--keep-last", "20"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["delete"] == [] and data["policy"]["keep_last"] == 20


def test_invalid_policy_flag_is_a_usage_error(store_root: Path) -> None:
    r = prune(store_root, "--dry-run", "--min-count", "0")
    assert r.exit_code == 2, r.output
    assert "error: --min-count: " in r.stderr


def test_empty_store(tmp_path: Path) -> None:
    r = prune(tmp_path / "empty", "--yes")
    assert r.exit_code == 0, r.output
    assert "no backups of prod" in r.stdout


def test_apply_retention_dry_run_then_real(store_root: Path) -> None:
    catalog = trusted_catalog(store_root)
    now = datetime.now(UTC)
    before = files(store_root)
    plan = apply_retention(catalog, POLICY, now, dry_run=True)
    assert plan.delete == EXPECTED_DELETE and plan.deleted == [] and files(store_root) == before
    seen: list[tuple[str, int]] = []
    done = apply_retention(catalog, POLICY, now, dry_run=False, on_delete=lambda i, n: seen.append((i, n)))
    assert done.deleted == EXPECTED_DELETE == [i for i, _ in seen]
    assert catalog.backup_ids() == sorted(EXPECTED_KEEP)


def test_a_backup_pinned_after_planning_is_not_deleted(store_root: Path) -> None:
    catalog = trusted_catalog(store_root)
    plan = plan_entries(safe_entries(catalog), POLICY, datetime.now(UTC))
    late_pin, gone = EXPECTED_DELETE[2], EXPECTED_DELETE[3]
    catalog.set_pinned(late_pin, True)
    catalog.delete(gone)  # someone else deleted it meanwhile
    done = execute_retention(catalog, plan)
    assert done.keep[late_pin] == [PINNED_MEANWHILE] and late_pin not in done.delete
    assert done.deleted == [i for i in EXPECTED_DELETE if i not in (late_pin, gone)]
    assert gone in done.problems
    assert late_pin in catalog.backup_ids()
