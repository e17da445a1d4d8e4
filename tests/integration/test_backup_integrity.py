"""`backups download` refuses damaged, edited, forged backups and the wrong identity."""

from __future__ import annotations

import io
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyrage
import pytest
import zstandard

from etcdguard.backup.keys import GeneratedKeys, generate_keys, load_signing_key
from tests.integration.snapshot_fixtures import (
    CLI,
    assert_one_line_error,
    cli,  # noqa: F401 - fixture
    keys,  # noqa: F401 - fixture
    load_sample,
    require_etcd,
    snapshot_args,
)
from tests.support.etcd_cluster import etcd_cluster

pytestmark = pytest.mark.integration


@pytest.fixture
def backup(tmp_path: Path, cli: CLI, keys: GeneratedKeys) -> Iterator[tuple[Path, str]]:
    """One real backup in a local store: (backup dir, backup id)."""
    require_etcd("3.5.16")
    store = tmp_path / "store"
    with etcd_cluster(tmp_path / "etcd", "3.5.16") as cluster:
        with cluster.client(0) as client:
            load_sample(client, 200)
        result = cli(*snapshot_args(cluster, keys, str(store), "-o", "json"))
        assert result.returncode == 0, result.stderr
    backup_id = json.loads(result.stdout)["backup_id"]
    yield store / "default" / backup_id, backup_id


def download(cli: CLI, backup_dir: Path, backup_id: str, identity: Path, out: Path,
             *extra: str) -> subprocess.CompletedProcess[str]:
    return cli("backups", "download", backup_id, "--store", str(backup_dir.parent.parent),
               "--identity", str(identity), "-o", str(out), *extra)


def test_a_flipped_byte_in_the_stored_object_is_refused(backup, cli: CLI, keys: GeneratedKeys,
                                                        tmp_path: Path) -> None:
    backup_dir, backup_id = backup
    obj = backup_dir / "snapshot.db.zst.age"
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0x01
    obj.write_bytes(bytes(data))
    out = tmp_path / "out.db"
    assert_one_line_error(download(cli, backup_dir, backup_id, keys.identity, out), 6, "damaged")
    assert not out.exists() and not list(tmp_path.glob(".out.db.partial-*"))


def test_an_edited_manifest_is_refused(backup, cli: CLI, keys: GeneratedKeys, tmp_path: Path) -> None:
    backup_dir, backup_id = backup
    path = backup_dir / "manifest.json"
    envelope = json.loads(path.read_text())
    envelope["record"]["hashkv"]["revision"] += 1
    path.write_text(json.dumps(envelope))
    result = download(cli, backup_dir, backup_id, keys.identity, tmp_path / "out.db")
    assert_one_line_error(result, 6, "signature does not verify")


def test_a_backup_forged_with_only_the_recipient_is_refused(backup, cli: CLI, keys: GeneratedKeys,
                                                           tmp_path: Path) -> None:
    """An attacker who knows the public recipient re-encrypts other data and fixes the digests."""
    backup_dir, backup_id = backup
    forged_plain = b"not the cluster you backed up" * 1000
    compressed = zstandard.ZstdCompressor().compress(forged_plain)
    recipient = pyrage.x25519.Recipient.from_str(keys.recipient_text)
    out = io.BytesIO()
    pyrage.encrypt_io(io.BytesIO(compressed), out, [recipient])
    forged = out.getvalue()
    (backup_dir / "snapshot.db.zst.age").write_bytes(forged)
    # Without the signing key, the attacker can only leave the signature or re-sign with their own key.
    path = backup_dir / "manifest.json"
    envelope = json.loads(path.read_text())
    import hashlib
    envelope["record"]["stored"]["sha256"] = hashlib.sha256(forged).hexdigest()
    envelope["record"]["stored"]["size"] = len(forged)
    path.write_text(json.dumps(envelope))
    assert_one_line_error(download(cli, backup_dir, backup_id, keys.identity, tmp_path / "a.db"), 6,
                          "signature")
    # re-signed with the attacker's own key: unknown key
    attacker = generate_keys(tmp_path / "attacker")
    from etcdguard.backup.manifest import Manifest, seal_manifest
    manifest = Manifest.model_validate(envelope["record"])
    path.write_bytes(seal_manifest(manifest, load_signing_key(attacker.signing_key)))
    assert_one_line_error(download(cli, backup_dir, backup_id, keys.identity, tmp_path / "b.db"), 6,
                          "unknown key")
    # Same manifest left untouched (object swapped only): the stored digest does not match.
    envelope["record"]["stored"]["sha256"] = "0" * 64


def test_a_swapped_object_under_the_original_manifest_is_refused(backup, cli: CLI, keys: GeneratedKeys,
                                                                tmp_path: Path) -> None:
    backup_dir, backup_id = backup
    recipient = pyrage.x25519.Recipient.from_str(keys.recipient_text)
    out = io.BytesIO()
    pyrage.encrypt_io(io.BytesIO(zstandard.ZstdCompressor().compress(b"forged" * 999)), out, [recipient])
    (backup_dir / "snapshot.db.zst.age").write_bytes(out.getvalue())
    result = download(cli, backup_dir, backup_id, keys.identity, tmp_path / "out.db")
    assert_one_line_error(result, 6, "its manifest says")
    assert not (tmp_path / "out.db").exists()


def test_the_wrong_identity_is_refused(backup, cli: CLI, keys: GeneratedKeys, tmp_path: Path) -> None:
    backup_dir, backup_id = backup
    other = generate_keys(tmp_path / "other")
    result = download(cli, backup_dir, backup_id, other.identity, tmp_path / "out.db",
                      "--signing-pub", str(keys.signing_pub))
    assert_one_line_error(result, 6, "cannot decrypt")


def test_no_trusted_signing_key_fails_closed_and_skip_is_loud(backup, cli: CLI, keys: GeneratedKeys,
                                                             tmp_path: Path) -> None:
    backup_dir, backup_id = backup
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    identity = lonely / "identity.age"
    identity.write_bytes(keys.identity.read_bytes())
    result = download(cli, backup_dir, backup_id, identity, tmp_path / "a.db")
    assert_one_line_error(result, 3, "no trusted signing public key")
    result = download(cli, backup_dir, backup_id, identity, tmp_path / "b.db", "--insecure-skip-signature")
    assert result.returncode == 0, result.stderr
    assert "WARNING" in result.stderr and "NOT" in result.stderr


def test_download_result_is_an_etcd_snapshot(backup, cli: CLI, keys: GeneratedKeys, tmp_path: Path) -> None:
    backup_dir, backup_id = backup
    out = tmp_path / "snap.db"
    result = download(cli, backup_dir, backup_id, keys.identity, out)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((backup_dir / "manifest.json").read_text())["record"]
    assert out.stat().st_size == manifest["snapshot"]["size"]
    again = download(cli, backup_dir, backup_id, keys.identity, out)
    assert_one_line_error(again, 10, "exists")
