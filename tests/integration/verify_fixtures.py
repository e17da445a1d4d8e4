"""Fixtures and helpers for the verification tests (import them explicitly; conftest is not ours).

``make_backup`` takes a REAL backup of a real etcd with the snapshot pipeline into a LocalStore.
``manifest_from`` takes the HashKV and key counts from ANOTHER cluster, which makes a backup
whose content does not match its (validly signed) manifest.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from etcdguard.backup.catalog import Catalog, Trust
from etcdguard.backup.keycount import count_keys
from etcdguard.backup.keys import (
    GeneratedKeys,
    generate_keys,
    load_identities,
    load_signing_key,
    load_verify_key,
    parse_recipients,
)
from etcdguard.backup.manifest import (
    MANIFEST_NAME,
    HashKVRecord,
    Manifest,
    backup_prefix,
    seal_manifest,
)
from etcdguard.backup.pipeline import BackupRequest, take_backup
from etcdguard.config import EtcdConfig, VerifyConfig
from etcdguard.etcd.client import MemberClient
from etcdguard.storage import LocalStore
from etcdguard.verify import Verifier, VerifyOptions, sandbox_factory
from etcdguard.verify.dockerres import OWNER_LABEL, SANDBOX_LABEL
from etcdguard.verify.workdirs import owner_token
from tests.integration.snapshot_fixtures import load_sample, require_etcd
from tests.support.etcd_cluster import TEST_ETCD_DIRS, EtcdCluster, etcd_cluster
from tests.support.require import missing

CLUSTER = "verify-test"


def docker_or_skip() -> Any:
    """A connected Docker client; skip when unavailable (fail with ETCDGUARD_REQUIRE_ALL=1)."""
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
        return client
    except Exception as exc:
        missing(f"Docker unavailable: {exc}")


@dataclass
class Backups:
    """A LocalStore plus the keys that read and sign it."""

    store: LocalStore
    keys: GeneratedKeys
    cluster: str = CLUSTER

    @property
    def catalog(self) -> Catalog:
        return Catalog(self.store, self.cluster, Trust.of([load_verify_key(self.keys.signing_pub)]))

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
    """Take a real, signed backup of ``source`` with the snapshot pipeline; returns its manifest.

    ``manifest_from``, ``hashkv_overrides`` and ``etcd_version`` then rewrite the manifest and
    sign it again with the real key: a backup whose content does not match its (validly signed)
    manifest.
    """
    key = load_signing_key(backups.keys.signing_key)
    request = BackupRequest(
        etcd=EtcdConfig(endpoints=[source.endpoint]), cluster_name=backups.cluster,
        recipients=parse_recipients([backups.keys.recipient_text]),
        recipient_texts=[backups.keys.recipient_text], signing_key=key)
    manifest = take_backup(request, backups.store).manifest
    if manifest_from is None and not hashkv_overrides and etcd_version is None:
        return manifest
    update: dict[str, Any] = {}
    if manifest_from is not None:
        hashkv = manifest_from.hash_kv(0)
        update["hashkv"] = HashKVRecord(revision=hashkv.revision, hash=hashkv.hash,
                                        compact_revision=hashkv.compact_revision)
        update["key_counts"] = count_keys(manifest_from, hashkv.revision)
    if hashkv_overrides:
        update["hashkv"] = update.get("hashkv", manifest.hashkv).model_copy(update=hashkv_overrides)
    if etcd_version is not None:
        update["source"] = manifest.source.model_copy(update={"etcd_version": etcd_version})
    manifest = manifest.model_copy(update=update)
    prefix = backup_prefix(backups.cluster, manifest.backup_id)
    backups.store.put_bytes(f"{prefix}/{MANIFEST_NAME}", seal_manifest(manifest, key))
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
    """Nothing listens at ``http(s)://127.0.0.1:PORT`` any more."""
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
            load_sample(client, objects, value_size=400, seed=seed)
            client.put(b"/not-kubernetes/flag", b"1")
        yield cluster
