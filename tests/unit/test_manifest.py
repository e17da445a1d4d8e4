"""Manifest sealing, signatures and tamper detection."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from etcdguard.backup.keys import generate_keys, load_signing_key, load_verify_key
from etcdguard.backup.manifest import (
    BACKUP_ID_RE,
    ClusterRef,
    HashKVRecord,
    Manifest,
    SnapshotInfo,
    SourceMember,
    StoredObject,
    new_backup_id,
    open_manifest,
    seal,
)
from etcdguard.errors import ConfigError, IntegrityError


def make_manifest(backup_id: str = "20261126T150000Z-abcdef") -> Manifest:
    now = datetime(2026, 11, 26, 15, 0, tzinfo=timezone.utc)
    return Manifest(
        backup_id=backup_id, cluster=ClusterRef(name="prod", cluster_id="abc"),
        source=SourceMember(name="m0", member_id="1", endpoint="http://127.0.0.1:2379", etcd_version="3.5.16"),
        hashkv=HashKVRecord(revision=10, hash=123, compact_revision=-1),
        snapshot=SnapshotInfo(size=100, sha256="a" * 64, trailer_sha256="b" * 64),
        stored=StoredObject(key="snapshot.db.zst.age", size=50, sha256="c" * 64, compression_level=3,
                            encryption="age-x25519", recipients=["0123456789abcdef"]),
        signing_key_id="k", created_at=now, finished_at=now, tool_version="0.1.0")


@pytest.fixture
def keys(tmp_path: Path):
    return generate_keys(tmp_path / "keys")


def test_backup_ids_sort_by_time_and_match_the_format() -> None:
    a = new_backup_id(datetime(2026, 1, 1, tzinfo=timezone.utc))
    b = new_backup_id(datetime(2026, 1, 2, tzinfo=timezone.utc))
    assert BACKUP_ID_RE.match(a) and a < b


def test_signed_manifest_round_trips(keys) -> None:
    key = load_signing_key(keys.signing_key)
    data = seal("manifest", make_manifest(), key)
    opened = open_manifest(data, [load_verify_key(keys.signing_pub)])
    assert opened.hashkv.revision == 10


def test_edited_manifest_is_refused(keys) -> None:
    key = load_signing_key(keys.signing_key)
    envelope = json.loads(seal("manifest", make_manifest(), key))
    envelope["manifest"]["stored"]["sha256"] = "d" * 64
    with pytest.raises(IntegrityError, match="signature does not verify"):
        open_manifest(json.dumps(envelope).encode(), [load_verify_key(keys.signing_pub)])


def test_manifest_signed_by_another_key_is_refused(keys, tmp_path: Path) -> None:
    other = generate_keys(tmp_path / "other")
    data = seal("manifest", make_manifest(), load_signing_key(other.signing_key))
    with pytest.raises(IntegrityError, match="unknown key"):
        open_manifest(data, [load_verify_key(keys.signing_pub)])


def test_unsigned_manifest_is_refused_unless_checks_are_skipped(keys) -> None:
    data = seal("manifest", make_manifest(), None)
    with pytest.raises(IntegrityError, match="not signed"):
        open_manifest(data, [load_verify_key(keys.signing_pub)])
    assert open_manifest(data, None).backup_id == make_manifest().backup_id


def test_garbage_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError):
        open_manifest(b"{not json", None)


def test_generated_secret_files_are_private_and_not_overwritten(keys) -> None:
    assert keys.identity.stat().st_mode & 0o777 == 0o600
    assert keys.signing_key.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate_keys(keys.identity.parent)


def test_signing_key_repr_hides_the_secret(keys) -> None:
    assert "PRIVATE" not in repr(load_signing_key(keys.signing_key))
    assert "Ed25519PrivateKey" not in repr(load_signing_key(keys.signing_key))
