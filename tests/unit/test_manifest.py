"""Manifest sealing, signatures and tamper detection."""

from __future__ import annotations

import base64
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
    Verification,
    manifest_expect,
    new_backup_id,
    open_manifest,
    open_verification,
    seal_manifest,
    seal_verification,
)
from etcdguard.backup.signed import MANIFEST, Expect, Subject, canonical_json, open_record, seal_record
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


def expect(m: Manifest | None = None, cluster_id: str | None = None):
    m = m or make_manifest()
    return manifest_expect(m.cluster.name, m.backup_id, cluster_id)


def test_signed_manifest_round_trips(keys) -> None:
    key = load_signing_key(keys.signing_key)
    data = seal_manifest(make_manifest(), key)
    opened = open_manifest(data, [load_verify_key(keys.signing_pub)], expect(cluster_id="abc"))
    assert opened.hashkv.revision == 10 and opened.format_version == 2 and len(opened.digest) == 64


def test_edited_manifest_is_refused(keys) -> None:
    key = load_signing_key(keys.signing_key)
    envelope = json.loads(seal_manifest(make_manifest(), key))
    envelope["record"]["stored"]["sha256"] = "d" * 64
    with pytest.raises(IntegrityError, match="signature does not verify"):
        open_manifest(json.dumps(envelope).encode(), [load_verify_key(keys.signing_pub)], expect())


def test_manifest_signed_by_another_key_is_refused(keys, tmp_path: Path) -> None:
    other = generate_keys(tmp_path / "other")
    data = seal_manifest(make_manifest(), load_signing_key(other.signing_key))
    with pytest.raises(IntegrityError, match="unknown key"):
        open_manifest(data, [load_verify_key(keys.signing_pub)], expect())


def test_unsigned_manifest_is_refused_unless_checks_are_skipped(keys) -> None:
    data = seal_manifest(make_manifest(), None)
    with pytest.raises(IntegrityError, match="not signed"):
        open_manifest(data, [load_verify_key(keys.signing_pub)], expect())
    assert open_manifest(data, None, expect()).backup_id == make_manifest().backup_id


def test_garbage_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError):
        open_manifest(b"{not json", None, expect())


def _resubjected(data: bytes, **subject: str) -> bytes:
    """The same signed envelope with its subject (cluster, cluster_id, id) changed."""
    envelope = json.loads(data)
    envelope["subject"].update(subject)
    return json.dumps(envelope).encode()


@pytest.mark.parametrize("field,value", [("id", "20261126T160000Z-000000"), ("cluster", "staging"),
                                         ("cluster_id", "def")])
def test_a_signed_record_replayed_under_another_subject_fails(keys, field: str, value: str) -> None:
    """Moving a genuine record to another backup id, cluster name or cluster id breaks it."""
    trusted = [load_verify_key(keys.signing_pub)]
    data = seal_record(MANIFEST, Subject(cluster="prod", cluster_id="abc", id="20261126T150000Z-abcdef"),
                       {"x": 1}, load_signing_key(keys.signing_key))
    moved = {"cluster": "prod", "cluster_id": "abc", "id": "20261126T150000Z-abcdef", field: value}
    with pytest.raises(IntegrityError, match="signature does not verify"):
        open_record(_resubjected(data, **{field: value}),
                    Expect(MANIFEST, moved["cluster"], moved["id"], moved["cluster_id"]), trusted, "record")
    # Left where it was, but read as if it were the other backup: the subject does not match.
    with pytest.raises(IntegrityError, match="belongs to"):
        open_record(data, Expect(MANIFEST, moved["cluster"], moved["id"], moved["cluster_id"]), trusted, "record")


def test_a_manifest_copied_to_another_backup_id_is_refused(keys) -> None:
    data = seal_manifest(make_manifest(), load_signing_key(keys.signing_key))
    with pytest.raises(IntegrityError, match="moved or forged"):
        open_manifest(data, [load_verify_key(keys.signing_pub)],
                      manifest_expect("prod", "20261127T150000Z-000000"))
    with pytest.raises(IntegrityError, match="cluster id abc"):
        open_manifest(data, [load_verify_key(keys.signing_pub)], expect(cluster_id="fff"))


def test_a_record_replayed_as_another_type_fails(keys) -> None:
    """A verdict and a manifest are domain-separated: relabelling the type breaks the signature,
    and a genuine verdict read where a manifest is expected is refused."""
    m = make_manifest()
    verdict = Verification(backup_id=m.backup_id, result="passed", started_at=m.created_at,
                           finished_at=m.created_at, manifest_sha256="0" * 64)
    data = seal_verification(verdict, m.cluster, load_signing_key(keys.signing_key))
    trusted = [load_verify_key(keys.signing_pub)]
    relabelled = json.loads(data)
    relabelled["type"] = MANIFEST
    with pytest.raises(IntegrityError, match="signature does not verify"):
        open_record(json.dumps(relabelled).encode(), expect(m), trusted, "record")
    with pytest.raises(IntegrityError, match="not a 'manifest'"):
        open_record(data, expect(m), trusted, "record")


def test_a_verdict_counts_only_for_the_manifest_it_judged(keys) -> None:
    key, trusted = load_signing_key(keys.signing_key), [load_verify_key(keys.signing_pub)]
    m = make_manifest()
    judged = open_manifest(seal_manifest(m, key), trusted, expect(m))
    verdict = Verification(backup_id=m.backup_id, result="passed", started_at=m.created_at,
                           finished_at=m.created_at, manifest_sha256=judged.digest)
    data = seal_verification(verdict, m.cluster, key)
    assert open_verification(data, trusted, judged).result == "passed"
    # the same backup id, re-signed manifest with other content (e.g. a newer revision): not judged
    other = open_manifest(seal_manifest(m.model_copy(update={"hashkv": HashKVRecord(
        revision=11, hash=1, compact_revision=-1)}), key), trusted, expect(m))
    with pytest.raises(IntegrityError, match="judged another manifest"):
        open_verification(data, trusted, other)


def test_v1_manifests_are_still_read_and_v1_verdicts_count_for_nothing(keys) -> None:
    """Format v1 envelope: {"manifest": {...}, "signature": {...}} signed over the manifest alone."""
    key, trusted = load_signing_key(keys.signing_key), [load_verify_key(keys.signing_pub)]
    m = make_manifest()
    payload = m.model_copy(update={"format_version": 1}).model_dump(mode="json")
    sig = base64.b64encode(key.sign(canonical_json(payload))).decode()
    v1 = json.dumps({"manifest": payload, "signature": {"algorithm": "ed25519", "key_id": key.key_id,
                                                        "value": sig}}).encode()
    assert open_manifest(v1, trusted, expect(m, "abc")).format_version == 1
    with pytest.raises(IntegrityError, match="moved or forged"):
        open_manifest(v1, trusted, manifest_expect("prod", "20261127T150000Z-000000"))
    vpayload = {"backup_id": m.backup_id, "result": "passed", "started_at": "2026-11-26T15:00:00Z",
                "finished_at": "2026-11-26T15:00:00Z"}
    vsig = base64.b64encode(key.sign(canonical_json(vpayload))).decode()
    v1_verdict = json.dumps({"verification": vpayload, "signature": {
        "algorithm": "ed25519", "key_id": key.key_id, "value": vsig}}).encode()
    with pytest.raises(IntegrityError, match="counts for nothing"):
        open_verification(v1_verdict, trusted, open_manifest(v1, trusted, expect(m)))


def test_generated_secret_files_are_private_and_not_overwritten(keys) -> None:
    assert keys.identity.stat().st_mode & 0o777 == 0o600
    assert keys.signing_key.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        generate_keys(keys.identity.parent)


def test_signing_key_repr_hides_the_secret(keys) -> None:
    assert "PRIVATE" not in repr(load_signing_key(keys.signing_key))
    assert "Ed25519PrivateKey" not in repr(load_signing_key(keys.signing_key))
