"""Fixtures and helpers for the verification tests (import them explicitly; conftest is not ours).

``make_backup`` writes a REAL backup exactly as format v1 says, without the snapshot pipeline:
MemberClient.snapshot() of a real etcd -> zstd -> age (pyrage) -> LocalStore, a manifest from a
real HashKV(0) + key counts, sealed with a real Ed25519 key. ``manifest_from`` takes the HashKV
and key counts from ANOTHER cluster, which makes a backup whose content does not match its
(validly signed) manifest.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyrage
import pytest
import zstandard

from etcdguard.backup.catalog import Catalog
from etcdguard.backup.keycount import count_keys
from etcdguard.backup.keys import (
    GeneratedKeys,
    fingerprint,
    generate_keys,
    load_identities,
    load_signing_key,
    load_verify_key,
    parse_recipients,
)
from etcdguard.backup.manifest import (
    ENCRYPTED_OBJECT,
    MANIFEST_NAME,
    ClusterRef,
    HashKVRecord,
    Manifest,
    SnapshotInfo,
    SourceMember,
    StoredObject,
    backup_prefix,
    new_backup_id,
    seal,
)
from etcdguard.backup.streams import HashingWriter, SnapshotReader
from etcdguard.config import VerifyConfig
from etcdguard.etcd.client import MemberClient
from etcdguard.sample_data import items
from etcdguard.storage import LocalStore
from etcdguard.verify import Verifier, VerifyOptions, sandbox_factory
from etcdguard.verify.dockerres import OWNER_LABEL, SANDBOX_LABEL, owner_token
from tests.support.etcd_cluster import TEST_ETCD_DIRS, EtcdCluster, etcd_cluster, installation

REQUIRE_ALL = os.environ.get("ETCDGUARD_REQUIRE_ALL") == "1"
CLUSTER = "verify-test"


def require_etcd(version: str) -> None:
    """Skip (or fail with ETCDGUARD_REQUIRE_ALL=1) when an etcd version is not installed."""
    if installation(version) is None:
        message = f"etcd {version} not installed (scripts/install-test-deps.sh)"
        if REQUIRE_ALL:
            pytest.fail(message)
        pytest.skip(message)


def docker_or_skip() -> Any:
    """A connected Docker client; skip when unavailable (fail with ETCDGUARD_REQUIRE_ALL=1)."""
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
        return client
    except Exception as exc:
        message = f"Docker unavailable: {exc}"
        if REQUIRE_ALL:
            pytest.fail(message)
        pytest.skip(message)


def load_sample(client: MemberClient, count: int, seed: int = 7, value_size: int = 400) -> None:
    """Put ``count`` Kubernetes-like objects."""
    batch = list(items(count, value_size=value_size, seed=seed))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda kv: client.put(kv[0], kv[1]), batch))


@dataclass
class Backups:
    """A LocalStore plus the keys that read and sign it."""

    store: LocalStore
    keys: GeneratedKeys
    cluster: str = CLUSTER

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.store, self.cluster)

    def options(self, **overrides: Any) -> VerifyOptions:
        base: dict[str, Any] = {
            "identities": load_identities(self.keys.identity),
            "trusted_keys": [load_verify_key(self.keys.signing_pub)],
            "signing_key": load_signing_key(self.keys.signing_key),
        }
        base.update(overrides)
        return VerifyOptions(**base)

    def verifier(self, sandbox: str, workdir: Path, on_step: Any = None,
                 config: dict[str, Any] | None = None, **overrides: Any) -> Verifier:
        verify_config = VerifyConfig.model_validate({
            "sandbox": sandbox, "etcd_path": TEST_ETCD_DIRS, "workdir": workdir, "start_timeout": 60.0,
            **(config or {})})
        options = self.options(workdir=workdir, **overrides)
        return Verifier(self.catalog, sandbox_factory(verify_config), options,
                        on_step=on_step)


def make_backup(backups: Backups, source: MemberClient, *, manifest_from: MemberClient | None = None,
                hashkv_overrides: dict[str, int] | None = None, etcd_version: str | None = None) -> Manifest:
    """Write a real, signed backup of ``source`` (see the module docstring); returns its manifest."""
    measured = manifest_from or source
    hashkv = measured.hash_kv(0)
    counts = count_keys(measured, hashkv.revision)
    status = source.status()
    created = datetime.now(timezone.utc)
    backup_id = new_backup_id(created)
    prefix = backup_prefix(backups.cluster, backup_id)
    recipient_text = backups.keys.recipient_text
    chunks = source.snapshot()
    reader = SnapshotReader(chunks)
    with backups.store.open_writer(f"{prefix}/{ENCRYPTED_OBJECT}") as writer:
        sink = HashingWriter(writer.write)
        compressed = zstandard.ZstdCompressor(level=3).stream_reader(reader, closefd=False)  # type: ignore[arg-type]
        pyrage.encrypt_io(compressed, sink, parse_recipients([recipient_text]))
        info = writer.commit()
    assert reader.eof and info.size == sink.size
    record = HashKVRecord(revision=hashkv.revision, hash=hashkv.hash,
                          compact_revision=hashkv.compact_revision)
    if hashkv_overrides:
        record = record.model_copy(update=hashkv_overrides)
    key = load_signing_key(backups.keys.signing_key)
    manifest = Manifest(
        backup_id=backup_id,
        cluster=ClusterRef(name=backups.cluster, cluster_id=f"{status.cluster_id:x}"),
        source=SourceMember(name="m0", member_id=f"{status.member_id:x}", endpoint=source.endpoint,
                            etcd_version=etcd_version or status.version),
        hashkv=record, key_counts=counts,
        snapshot=SnapshotInfo(size=reader.size, sha256=reader.sha256, trailer_sha256=reader.trailer_hex),
        stored=StoredObject(key=ENCRYPTED_OBJECT, size=sink.size, sha256=sink.sha256, compression_level=3,
                            encryption="age-x25519", recipients=[fingerprint(recipient_text)]),
        signing_key_id=key.key_id, created_at=created, finished_at=datetime.now(timezone.utc),
        tool_version="test")
    backups.store.put_bytes(f"{prefix}/{MANIFEST_NAME}", seal("manifest", manifest, key))
    return manifest


@pytest.fixture
def backups(tmp_path: Path) -> Backups:
    """An empty LocalStore and fresh keys."""
    return Backups(LocalStore(tmp_path / "store"), generate_keys(tmp_path / "keys"))


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Where the verifier and process sandbox put their private temp dirs."""
    path = tmp_path / "work"
    path.mkdir()
    return path


def _docker_resources() -> set[str]:
    """Docker resources labelled etcdguard.sandbox owned by THIS process (other test runs may
    share the daemon); empty when Docker is absent."""
    try:
        import docker

        client = docker.from_env(timeout=10)
        client.ping()
    except Exception:
        return set()
    mine = f"{OWNER_LABEL}={owner_token()}"
    flt = {"label": [SANDBOX_LABEL, mine]}
    found = {f"container:{c.id}" for c in client.containers.list(all=True, filters=flt)}
    found |= {f"network:{n.id}" for n in client.networks.list(filters=flt)}
    found |= {f"volume:{v.name}" for v in client.volumes.list(filters=flt)}
    return found


@pytest.fixture
def no_leftovers(workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Assert that a test leaves no sandbox container/volume/network and no temp dir behind.

    The system temp dir is pointed at a fresh directory for the test, which must end up empty.
    """
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    docker_before = _docker_resources()
    yield
    assert _docker_resources() - docker_before == set(), "sandbox Docker resources left behind"
    assert list(systmp.iterdir()) == [], "temp dirs left behind"
    assert list(workdir.iterdir()) == [], "verifier work dir not cleaned"


def assert_port_closed(endpoint: str) -> None:
    """Nothing listens at ``http://127.0.0.1:PORT`` any more."""
    port = int(endpoint.rsplit(":", 1)[1])
    with socket.socket() as s:
        s.settimeout(1.0)
        assert s.connect_ex(("127.0.0.1", port)) != 0, f"{endpoint} still accepts connections"


@contextmanager
def source_cluster(base: Path, version: str, objects: int = 120, seed: int = 7) -> Iterator[EtcdCluster]:
    """A running single-member etcd of ``version`` loaded with Kubernetes-like objects."""
    require_etcd(version)
    with etcd_cluster(base, version) as cluster:
        with cluster.client() as client:
            load_sample(client, objects, seed=seed)
            client.put(b"/not-kubernetes/flag", b"1")
        yield cluster
