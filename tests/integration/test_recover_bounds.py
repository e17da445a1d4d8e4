"""Decryption and decompression stop at the sizes the signed manifest states.

A decompression bomb (a small object that inflates to gigabytes) is refused with exit 6 after
writing at most the manifest's plain size plus one block; an object larger than its manifest
says is refused before it is downloaded.
"""

from __future__ import annotations

import io
import json
import resource
import subprocess
from pathlib import Path

import pyrage
import pytest
import zstandard

from etcdguard.backup.catalog import Catalog, Trust
from etcdguard.backup.keys import load_signing_key, load_verify_key
from etcdguard.backup.manifest import ENCRYPTED_OBJECT, MANIFEST_NAME, seal_manifest
from etcdguard.backup.recover import READ_SIZE, recover_snapshot
from etcdguard.errors import IntegrityError
from etcdguard.storage import LocalStore
from tests.integration.snapshot_fixtures import CLI, assert_one_line_error
from tests.integration.trust_fixtures import CLUSTER, Bucket, bucket  # noqa: F401 - fixture

pytestmark = pytest.mark.integration
BOMB_PLAIN = 2 << 30   # what the object inflates to: 2 GiB of zeros
CLAIMED_PLAIN = 1 << 20  # what the manifest says the snapshot is


def _bomb(recipient: str) -> bytes:
    """age(zstd(2 GiB of zeros)): about 64 KB."""
    out = io.BytesIO()
    with zstandard.ZstdCompressor(level=3).stream_writer(out, closefd=False) as writer:
        zeros = bytes(16 << 20)
        for _ in range(BOMB_PLAIN // len(zeros)):
            writer.write(zeros)
    encrypted = io.BytesIO()
    pyrage.encrypt_io(io.BytesIO(out.getvalue()), encrypted, [pyrage.x25519.Recipient.from_str(recipient)])
    return encrypted.getvalue()


@pytest.fixture
def bomb_store(bucket: Bucket, tmp_path: Path) -> tuple[LocalStore, str, Bucket]:
    """A real backup copied to a local store, its object swapped for a bomb, its manifest re-signed
    with the real key (what a compromised service host can do) to state the bomb's digest."""
    import hashlib

    backup_id = bucket.real[-1]
    manifest = bucket.manifest(backup_id)
    bomb = _bomb(bucket.keys.recipient_text)
    store = LocalStore(tmp_path / "store")
    store.put_bytes(f"{CLUSTER}/{backup_id}/{ENCRYPTED_OBJECT}", bomb)
    forged = manifest.model_copy(update={
        "stored": manifest.stored.model_copy(update={"size": len(bomb), "sha256": hashlib.sha256(bomb).hexdigest()}),
        "snapshot": manifest.snapshot.model_copy(update={"size": CLAIMED_PLAIN})})
    store.put_bytes(f"{CLUSTER}/{backup_id}/{MANIFEST_NAME}",
                    seal_manifest(forged, load_signing_key(bucket.keys.signing_key)))
    return store, backup_id, bucket


@pytest.mark.parametrize("for_etcdutl", [False, True], ids=["checked", "staged-for-etcdutl"])
def test_a_decompression_bomb_is_refused_within_the_stated_size(bomb_store, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                  for_etcdutl: bool) -> None:
    store, backup_id, bucket = bomb_store
    catalog = Catalog(store, CLUSTER, Trust.of([load_verify_key(bucket.keys.signing_pub)]))
    manifest = catalog.open(backup_id, catalog.trust.keys)
    out = tmp_path / "out" / "snapshot.db"
    written, peak_on_disk = 0, 0

    def measure(n: int) -> None:
        nonlocal written, peak_on_disk
        written += n
        partial = [p.stat().st_size for p in out.parent.glob(".snapshot.db.partial-*")]
        peak_on_disk = max([peak_on_disk, *partial])

    from etcdguard.backup.keys import load_identities

    with pytest.raises(IntegrityError, match="decompresses to more than"):
        recover_snapshot(store, manifest, catalog.prefix(backup_id), load_identities(bucket.keys.identity), out,
                         on_bytes=measure, for_etcdutl=for_etcdutl)
    print(f"bomb: {manifest.stored.size} bytes stored, inflates to {BOMB_PLAIN}; refused after writing "
          f"{written} bytes (peak on disk {peak_on_disk}), manifest states {CLAIMED_PLAIN}")
    assert manifest.stored.size < 1 << 20
    assert written <= CLAIMED_PLAIN + READ_SIZE and peak_on_disk <= CLAIMED_PLAIN + READ_SIZE
    assert list(out.parent.iterdir()) == []


def test_the_cli_refuses_the_bomb_with_exit_6_under_a_file_size_limit(bomb_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With RLIMIT_FSIZE at the stated size plus two blocks, writing more would kill the process."""
    store, backup_id, bucket = bomb_store
    limit = CLAIMED_PLAIN + 2 * READ_SIZE

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {"ETCDGUARD_SIGNING_PUBLIC_KEYS": str(bucket.keys.signing_pub)}
    cli = CLI(bucket.cli.home, env)
    argv = ["backups", "download", backup_id, "--store", str(store.root), "-o", str(tmp_path / "o.db"),
            "--identity", str(bucket.keys.identity)]
    import os
    import shutil
    import sys

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDGUARD_")}
    full_env.update({"HOME": str(cli.home), **env})
    exe = shutil.which("etcdguard") or sys.executable
    cmd = [exe, *argv] if exe.endswith("etcdguard") else [exe, "-m", "etcdguard.cli.main", *argv]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=full_env, preexec_fn=cap,
                            check=False)
    assert_one_line_error(result, 6, "decompresses to more than")
    assert not (tmp_path / "o.db").exists()


def test_an_object_larger_than_its_manifest_is_refused_before_download(bucket: Bucket, tmp_path: Path) -> None:
    backup_id = bucket.real[-1]
    store = bucket.store()
    key = f"{CLUSTER}/{backup_id}/{ENCRYPTED_OBJECT}"
    store.put_bytes(key, store.get_bytes(key) + bytes(1 << 20))
    result = bucket.cli("backups", "download", backup_id, "-o", str(tmp_path / "o.db"),
                        "--identity", str(bucket.keys.identity), env=bucket.env)
    assert_one_line_error(result, 6, "refusing it before download")
    assert json.loads(bucket.cli("backups", "list", "-o", "json", env=bucket.env).stdout)[0]["trust"] == "trusted"


def test_a_file_staged_for_etcdutl_is_the_checked_file_and_its_trailer_is_held_to_the_manifest(
        bucket: Bucket, tmp_path: Path) -> None:
    """The restore's staging mode (no plain hash, no fsync) writes the same bytes as the fully
    checked mode, and still refuses a trailer the signed manifest does not state."""
    from etcdguard.backup.keys import load_identities

    catalog = bucket.catalog()
    backup_id = bucket.real[-1]
    manifest = catalog.open(backup_id, catalog.trust.keys)
    identities = load_identities(bucket.keys.identity)
    checked, staged = tmp_path / "checked.db", tmp_path / "staged.db"
    recover_snapshot(catalog.store, manifest, catalog.prefix(backup_id), identities, checked)
    recover_snapshot(catalog.store, manifest, catalog.prefix(backup_id), identities, staged, for_etcdutl=True)
    assert staged.read_bytes() == checked.read_bytes()

    store = LocalStore(tmp_path / "store")
    store.put_bytes(f"{CLUSTER}/{backup_id}/{ENCRYPTED_OBJECT}",
                    catalog.store.get_bytes(f"{catalog.prefix(backup_id)}/{ENCRYPTED_OBJECT}"))
    wrong_trailer = manifest.snapshot.model_copy(update={"trailer_sha256": "00" * 32})
    forged = manifest.model_copy(update={"snapshot": wrong_trailer})
    store.put_bytes(f"{CLUSTER}/{backup_id}/{MANIFEST_NAME}",
                    seal_manifest(forged, load_signing_key(bucket.keys.signing_key)))
    local = Catalog(store, CLUSTER, catalog.trust)
    out = tmp_path / "out" / "snapshot.db"
    with pytest.raises(IntegrityError, match="does not match the manifest"):
        recover_snapshot(store, local.open(backup_id, local.trust.keys), local.prefix(backup_id), identities, out,
                         for_etcdutl=True)
    assert list(out.parent.iterdir()) == []
