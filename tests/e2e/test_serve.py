"""``etcdguard serve`` as a real process against real etcd and SeaweedFS."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from etcdguard.backup.catalog import Catalog, Trust
from etcdguard.backup.keys import GeneratedKeys, generate_keys, load_verify_key
from etcdguard.config import S3StoreConfig
from etcdguard.storage import LocalStore, S3Store
from tests.e2e.serve_helpers import Serve, wait_for
from tests.integration.snapshot_fixtures import fill_random, load_sample, require_etcd
from tests.support.etcd_cluster import etcd_cluster
from tests.support.seaweed import SeaweedS3

pytestmark = [pytest.mark.integration, pytest.mark.slow]
VERSION = "3.5.16"


@pytest.fixture
def keys(tmp_path: Path) -> GeneratedKeys:
    return generate_keys(tmp_path / "keys")


def s3_config(seaweed: SeaweedS3, bucket: str) -> dict[str, Any]:
    return {"type": "s3", "bucket": bucket, "prefix": "etcd", "endpoint_url": seaweed.endpoint_url,
            "access_key_id": seaweed.access_key, "secret_access_key": seaweed.secret_key,
            "part_size_mb": 5}


def base_config(endpoints: list[str], store: Any, keys: GeneratedKeys, **service: Any) -> dict[str, Any]:
    return {
        "etcd": {"endpoints": endpoints},
        "store": store,
        "encryption": {"recipients_file": str(keys.recipient), "identity_file": str(keys.identity)},
        "signing": {"key_file": str(keys.signing_key)},
        "verify": {"sandbox": "process"},
        "retention": {"keep_last": 2, "hourly": 0, "daily": 0, "weekly": 0, "monthly": 0, "min_count": 2},
        "service": {"snapshot_cron": "*/3 * * * * *", "health_interval_seconds": 1, "lease_ttl_seconds": 3,
                    "verify_after_snapshot": False, "prune_after_snapshot": False, **service},
    }


def s3_catalog(seaweed: SeaweedS3, bucket: str, keys: GeneratedKeys) -> Catalog:
    cfg = S3StoreConfig.model_validate(s3_config(seaweed, bucket))
    return Catalog(S3Store(cfg), "default", Trust.of([load_verify_key(keys.signing_pub)]))


def test_serve_backs_up_verifies_prunes_and_reports(tmp_path: Path, keys: GeneratedKeys,
                                                    s3_bucket: tuple[SeaweedS3, str]) -> None:
    require_etcd(VERSION)
    seaweed, bucket = s3_bucket
    with etcd_cluster(tmp_path / "etcd", VERSION) as cluster:
        with cluster.client(0) as client:
            load_sample(client, 200)
        config = base_config(cluster.endpoints, s3_config(seaweed, bucket), keys,
                             verify_after_snapshot=True, prune_after_snapshot=True)
        serve = Serve(tmp_path, config).start()
        try:
            catalog = s3_catalog(seaweed, bucket, keys)
            wait_for(lambda: serve.metric('etcdguard_backups_total{result="success"}') >= 4, 60, "4 backups")
            wait_for(lambda: serve.metric('etcdguard_verifications_total{result="passed"}') >= 3, 60,
                     "3 verifications")
            entries = catalog.entries()
            assert 2 <= len(entries) <= 3, [e.backup_id for e in entries]  # pruned to keep_last=2 (+1 in flight)
            assert any(e.verified for e in entries)
            status, backups = serve.get("/api/v1/backups")
            assert status == 200 and {b["backup_id"] for b in backups} >= {entries[-1].backup_id}
            assert serve.get("/healthz")[0] == 200
            status, body = serve.get("/api/v1/status")
            assert status == 200 and body["leader"] is True and body["jobs"]["snapshot"]["runs"] >= 4
            assert body["health"]["status"] in {"OK", "WARNING"}
            assert serve.metric("etcdguard_backup_last_success_timestamp_seconds") > time.time() - 30
            assert serve.metric('etcdguard_cluster_has_quorum') == 1
        finally:
            assert serve.stop() == 0, serve.log()
        assert seaweed.secret_key not in serve.log()
        assert keys.signing_key.read_text().splitlines()[1] not in serve.log()


def test_two_replicas_take_one_backup_per_tick_and_hand_over(tmp_path: Path, keys: GeneratedKeys) -> None:
    require_etcd(VERSION)
    store = tmp_path / "store"
    with etcd_cluster(tmp_path / "etcd", VERSION, size=3) as cluster:
        config = base_config(cluster.endpoints, str(store), keys, snapshot_cron="*/2 * * * * *")
        first = Serve(tmp_path, config, name="a").start()
        second = Serve(tmp_path, config, name="b").start()
        replicas = [first, second]
        try:
            wait_for(lambda: sum(r.get("/api/v1/status")[1]["leader"] for r in replicas) == 1, 20, "one leader")
            catalog = Catalog(LocalStore(store), "default")
            wait_for(lambda: len(catalog.backup_ids()) >= 5, 40, "5 backups")
            ids = catalog.backup_ids()
            ticks = [i.split("-")[0] for i in ids]
            assert len(ticks) == len(set(ticks)), f"two backups in one tick: {ids}"
            leader = next(r for r in replicas if r.get("/api/v1/status")[1]["leader"])
            follower = second if leader is first else first
            assert follower.get("/api/v1/status")[1]["jobs"].get("snapshot", {}).get("runs", 0) == 0
            leader.kill()
            killed_at = time.monotonic()
            wait_for(lambda: follower.get("/api/v1/status")[1]["leader"], 15, "hand-over")
            handover = time.monotonic() - killed_at
            assert handover < 3 + 2 + 2  # lease TTL + election tick + slack
            before = len(catalog.backup_ids())
            wait_for(lambda: len(catalog.backup_ids()) >= before + 2, 20, "backups by the new leader")
        finally:
            for r in replicas:
                if r.proc is not None and r.proc.poll() is None:
                    assert r.stop() == 0, r.log()


def test_sigterm_during_upload_leaves_no_partial_backup(tmp_path: Path, keys: GeneratedKeys) -> None:
    require_etcd(VERSION)
    with SeaweedS3(tmp_path / "weed") as seaweed, etcd_cluster(
            tmp_path / "etcd", VERSION, extra_args=["--quota-backend-bytes", str(2**30)]) as cluster:
        bucket = seaweed.create_bucket("sigterm")
        with cluster.client(0) as client:
            fill_random(client, 120)
        store = {**s3_config(seaweed, bucket), "max_concurrency": 1}
        config = base_config(cluster.endpoints, store, keys, snapshot_cron="*/2 * * * * *")
        serve = Serve(tmp_path, config).start()
        s3 = seaweed.client()
        try:
            wait_for(lambda: s3.list_multipart_uploads(Bucket=bucket).get("Uploads"), 30, "an upload in flight",
                     interval=0.05)
            serve.signal(signal.SIGTERM)
            assert serve.proc is not None
            assert serve.proc.wait(120) == 0, serve.log()
        finally:
            serve.stop()
        assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
        keys_left = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
        assert not any(k.endswith("snapshot.db.zst.age") and k.replace("snapshot.db.zst.age", "manifest.json")
                       not in keys_left for k in keys_left), keys_left
        assert "cancel" in serve.log().lower() or "interrupted" in serve.log().lower()


def test_sighup_reload_rejects_an_invalid_config(tmp_path: Path, keys: GeneratedKeys) -> None:
    require_etcd(VERSION)
    with etcd_cluster(tmp_path / "etcd", VERSION) as cluster:
        config = base_config(cluster.endpoints, str(tmp_path / "store"), keys, snapshot_cron="0 0 1 1 *")
        serve = Serve(tmp_path, config).start()
        try:
            good = serve.config_path.read_text()
            serve.config_path.write_text(good.replace("0 0 1 1 *", "not a cron"))
            serve.signal(signal.SIGHUP)
            wait_for(lambda: "config reload failed" in serve.log(), 10, "the reload error")
            assert serve.get("/healthz")[0] == 200
            serve.config_path.write_text(good.replace("0 0 1 1 *", "'*/2 * * * * *'"))
            serve.signal(signal.SIGHUP)
            wait_for(lambda: "configuration reloaded" in serve.log(), 10, "the reload")
            catalog = Catalog(LocalStore(tmp_path / "store"), "default")
            wait_for(lambda: catalog.backup_ids(), 15, "a backup on the new schedule")
        finally:
            assert serve.stop() == 0, serve.log()


def test_emergency_snapshot_of_the_local_member_when_quorum_is_lost(tmp_path: Path, keys: GeneratedKeys) -> None:
    require_etcd(VERSION)
    with etcd_cluster(tmp_path / "etcd", VERSION, size=3) as cluster:
        with cluster.client(0) as client:
            load_sample(client, 100)
        config = base_config([cluster.endpoints[0]], str(tmp_path / "store"), keys,
                             snapshot_cron="*/2 * * * * *", emergency_local_store=str(tmp_path / "emergency"))
        config["monitor"] = {"probe_timeout": 1}
        config["etcd"]["dial_timeout"] = 2
        serve = Serve(tmp_path, config).start()
        try:
            cluster.pause(1)
            cluster.pause(2)
            emergency = Catalog(LocalStore(tmp_path / "emergency"), "default")
            wait_for(lambda: emergency.backup_ids(), 40, "an emergency backup")
            manifest = emergency.open(emergency.backup_ids()[0], None)
            assert manifest.key_counts is not None
            assert sum(manifest.key_counts.by_prefix.values()) == 100
        finally:
            cluster.resume(1)
            cluster.resume(2)
            assert serve.stop() == 0, serve.log()
