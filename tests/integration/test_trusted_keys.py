"""Which keys are trusted: only the configured ones; signing.pub beside the identity only when
nothing is configured and it is private to this user; `keys generate` refuses shared directories."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from etcdguard.backup.keys import generate_keys, load_signing_key, trusted_verify_keys
from etcdguard.backup.manifest import Manifest, seal_manifest
from etcdguard.errors import ConfigError
from tests.integration.snapshot_fixtures import CLI, assert_one_line_error, require_etcd, snapshot_args
from tests.support.etcd_cluster import etcd_cluster

pytestmark = pytest.mark.integration
OTHER_UID = 4242


@pytest.fixture
def real_backup(tmp_path: Path) -> tuple[Path, str, CLI]:
    """A real signed backup in a local store (the store dir, its id) and the CLI."""
    require_etcd("3.5.16")
    keys = generate_keys(tmp_path / "keys")
    home = tmp_path / "home"
    home.mkdir()
    cli = CLI(home, {})
    with etcd_cluster(tmp_path / "etcd", "3.5.16") as cluster:
        result = cli(*snapshot_args(cluster, keys, str(tmp_path / "store"), "-o", "json"))
        assert result.returncode == 0, result.stderr
    return tmp_path / "store", json.loads(result.stdout)["backup_id"], cli


def _shared_identity_dir(tmp_path: Path) -> Path:
    """The identity file in a world-writable directory, with an attacker's signing.pub planted beside it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shutil.copy(tmp_path / "keys" / "identity.age", shared / "identity.age")
    shared.chmod(0o777)
    attacker = generate_keys(tmp_path / "attacker")
    shutil.copy(attacker.signing_pub, shared / "signing.pub")
    return shared


def _attacker_resigns(store: Path, backup_id: str, tmp_path: Path) -> None:
    """The attacker edits the real manifest and signs it with the planted key."""
    path = store / "default" / backup_id / "manifest.json"
    manifest = Manifest.model_validate(json.loads(path.read_text())["record"])
    forged = manifest.model_copy(update={"key_counts": None})
    path.write_bytes(seal_manifest(forged, load_signing_key(tmp_path / "attacker" / "signing.key")))


def test_a_planted_signing_pub_in_a_shared_directory_is_not_trusted(real_backup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store, backup_id, cli = real_backup
    shared = _shared_identity_dir(tmp_path)
    _attacker_resigns(store, backup_id, tmp_path)
    download = ["backups", "download", backup_id, "--store", str(store), "--identity", str(shared / "identity.age")]
    # nothing configured: the planted key is refused because of the directory's mode
    assert_one_line_error(cli(*download, "-o", str(tmp_path / "a.db")), 3, "not trusting", "writable by others")
    # --signing-pub given: the file beside the identity is not consulted at all
    result = cli(*download, "-o", str(tmp_path / "b.db"), "--signing-pub", str(tmp_path / "keys" / "signing.pub"))
    assert_one_line_error(result, 6, "unknown key")
    assert not (tmp_path / "a.db").exists() and not (tmp_path / "b.db").exists()


def test_signing_pub_beside_the_identity_is_used_only_when_private(tmp_path: Path) -> None:
    keys = generate_keys(tmp_path / "keys")
    other = generate_keys(tmp_path / "other")
    # private (0700 dir, owned by us): used when nothing is configured
    assert [k.key_id for k in trusted_verify_keys([], None, keys.identity)] == [keys.key_id]
    # configured keys win: the one beside the identity is ignored
    assert [k.key_id for k in trusted_verify_keys([other.signing_pub], None, keys.identity)] == [other.key_id]
    keys.signing_pub.chmod(0o664)
    with pytest.raises(ConfigError, match="writable by group"):
        trusted_verify_keys([], None, keys.identity)
    keys.signing_pub.chmod(0o644)
    if os.geteuid() == 0:  # root can hand the file to another user
        os.chown(keys.signing_pub, OTHER_UID, OTHER_UID)
        with pytest.raises(ConfigError, match=f"owned by uid {OTHER_UID}"):
            trusted_verify_keys([], None, keys.identity)


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o1777])
def test_keys_generate_refuses_a_shared_directory(tmp_path: Path, mode: int) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(mode)
    home = tmp_path / "home"
    home.mkdir()
    result = CLI(home, {})("keys", "generate", "--dir", str(shared))
    assert_one_line_error(result, 3, "refusing to write keys", "writable by")
    assert list(shared.iterdir()) == []
