"""Real signed backups in SeaweedFS, plus what a bucket writer without the signing key can plant."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from etcdguard.backup.catalog import Catalog, Trust
from etcdguard.backup.keys import GeneratedKeys, generate_keys, load_signing_key, load_verify_key
from etcdguard.backup.manifest import MANIFEST_NAME, VERIFICATION_NAME, Manifest, Verification, seal_manifest
from etcdguard.config import S3StoreConfig
from etcdguard.storage import S3Store
from tests.integration.snapshot_fixtures import CLI, load_sample, require_etcd, snapshot_args
from tests.support.etcd_cluster import EtcdCluster, etcd_cluster
from tests.support.seaweed import SeaweedS3

VERSION = "3.5.16"
CLUSTER = "default"
FAR_FUTURE_ID = "20990101T000000Z-d00d00"


@dataclass
class Bucket:
    """Two real signed backups of a live etcd in a SeaweedFS bucket."""

    seaweed: SeaweedS3
    bucket: str
    keys: GeneratedKeys
    cluster: EtcdCluster
    cli: CLI
    real: list[str]  # oldest first

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/etcd"

    @property
    def env(self) -> dict[str, str]:
        """What the CLI needs to reach the bucket (a config file), trusting the real public key."""
        config = self.cli.home / "bucket.yaml"
        if not config.exists():
            config.write_text(json.dumps({"store": {"type": "s3", "bucket": self.bucket, "prefix": "etcd",
                                                    "endpoint_url": self.seaweed.endpoint_url}}))
        return {"AWS_ACCESS_KEY_ID": self.seaweed.access_key, "AWS_SECRET_ACCESS_KEY": self.seaweed.secret_key,
                "ETCDGUARD_CONFIG": str(config), "ETCDGUARD_SIGNING_PUBLIC_KEYS": str(self.keys.signing_pub)}

    def snapshot_args(self, *extra: str) -> list[str]:
        """``etcdguard snapshot`` of the live cluster into the bucket."""
        return snapshot_args(self.cluster, self.keys, self.url, "--s3-endpoint-url", self.seaweed.endpoint_url,
                             *extra)

    def store(self) -> S3Store:
        return S3Store(S3StoreConfig(bucket=self.bucket, prefix="etcd", endpoint_url=self.seaweed.endpoint_url,
                                     access_key_id=self.seaweed.access_key,
                                     secret_access_key=self.seaweed.secret_key))  # type: ignore[arg-type]

    def catalog(self) -> Catalog:
        return Catalog(self.store(), CLUSTER, Trust.of([load_verify_key(self.keys.signing_pub)]))

    def manifest(self, backup_id: str) -> Manifest:
        catalog = self.catalog()
        return catalog.open(backup_id, catalog.trust.keys)

    def ids(self) -> list[str]:
        return self.catalog().backup_ids()

    # -- what a bucket writer without the signing key can do -------------------------------
    def plant_decoys(self, count: int = 8) -> list[str]:
        """``count`` unsigned manifests (no object) dated after the real backups, and one dated 2099."""
        template = self.manifest(self.real[-1])
        store, planted = self.store(), []
        start = datetime.now(timezone.utc) - timedelta(seconds=count + 1)
        for i in range(count):
            created = max(start, template.finished_at) + timedelta(milliseconds=10 * (i + 1))
            planted.append(self._plant(store, template, f"{created:%Y%m%dT%H%M%SZ}-dec{i:03x}", created))
        planted.append(self._plant(store, template, FAR_FUTURE_ID, datetime(2099, 1, 1, tzinfo=timezone.utc)))
        return planted

    @staticmethod
    def _plant(store: S3Store, template: Manifest, backup_id: str, created: datetime) -> str:
        decoy = template.model_copy(update={"backup_id": backup_id, "created_at": created, "finished_at": created})
        store.put_bytes(f"{CLUSTER}/{backup_id}/{MANIFEST_NAME}", seal_manifest(decoy, None))
        return backup_id

    def sign_verdict(self, backup_id: str, result: str = "passed") -> bytes:
        """A genuine verdict for ``backup_id`` (as `etcdguard verify` signs it); returns its bytes."""
        at = datetime.now(timezone.utc)
        verdict = Verification.model_validate({"backup_id": backup_id, "result": result, "started_at": at,
                                               "finished_at": at})
        self.catalog().write_verification(verdict, load_signing_key(self.keys.signing_key), self.manifest(backup_id))
        return self.store().get_bytes(f"{CLUSTER}/{backup_id}/{VERIFICATION_NAME}")

    def copy_verdict(self, source_id: str, target_id: str, *, edit_id: bool) -> None:
        """Move ``source_id``'s verdict onto ``target_id`` (optionally rewriting the id inside)."""
        store = self.store()
        raw = store.get_bytes(f"{CLUSTER}/{source_id}/{VERIFICATION_NAME}")
        if edit_id:
            envelope = json.loads(raw)
            envelope["record"]["backup_id"] = target_id
            envelope["subject"]["id"] = target_id
            raw = json.dumps(envelope).encode()
        store.put_bytes(f"{CLUSTER}/{target_id}/{VERIFICATION_NAME}", raw)
        store.delete(f"{CLUSTER}/{source_id}/{VERIFICATION_NAME}")


@pytest.fixture
def bucket(tmp_path: Path, s3_bucket: tuple[SeaweedS3, str]) -> Iterator[Bucket]:
    """A live single-member etcd and two real signed backups of it in a fresh SeaweedFS bucket."""
    require_etcd(VERSION)
    seaweed, name = s3_bucket
    keys = generate_keys(tmp_path / "keys")
    home = tmp_path / "home"
    home.mkdir()
    cli = CLI(home, {})
    with etcd_cluster(tmp_path / "etcd", VERSION) as cluster:
        with cluster.client(0) as client:
            load_sample(client, 100)
        b = Bucket(seaweed, name, keys, cluster, cli, [])
        for _ in range(2):
            result = cli(*b.snapshot_args("-o", "json"), env=b.env)
            assert result.returncode == 0, result.stderr
            b.real.append(json.loads(result.stdout)["backup_id"])
        yield b
