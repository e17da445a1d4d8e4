"""Snapshot fails cleanly: one line, a documented exit code, nothing partial left behind."""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest

from etcdguard.backup.keys import GeneratedKeys
from etcdguard.backup.pipeline import Progress, request_from_settings, take_backup
from etcdguard.config import load_settings
from etcdguard.errors import StorageUnavailableError
from etcdguard.etcd.connect import SourceCandidate
from etcdguard.steps import Journal, StepState
from etcdguard.storage import open_store
from tests.integration.snapshot_fixtures import (
    CLI,
    assert_one_line_error,
    cli,  # noqa: F401 - fixture
    fill_random,
    keys,  # noqa: F401 - fixture
    load_sample,
    require_etcd,
    snapshot_args,
)
from tests.support.etcd_cluster import EtcdCluster, etcd_cluster, free_port
from tests.support.seaweed import SeaweedS3
from tests.support.tls import make_tls_bundle
from tests.support.waits import finishes

pytestmark = pytest.mark.integration


def files_in(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.exists() else []


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory):
    require_etcd("3.5.16")
    base = tmp_path_factory.mktemp("tls-etcd")
    with etcd_cluster(base / "etcd", "3.5.16", tls=make_tls_bundle(base / "tls")) as cluster:
        with cluster.client(0) as client:
            load_sample(client, 100)
        yield cluster


def s3_env(seaweed: SeaweedS3) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": seaweed.access_key, "AWS_SECRET_ACCESS_KEY": seaweed.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1"}


def test_wrong_endpoint_fails_with_etcd_exit_code(cli: CLI, keys: GeneratedKeys, tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = cli("snapshot", "--endpoints", f"http://127.0.0.1:{free_port()}", "--store", str(store),
                 "--recipient", keys.recipient_text, "--signing-key", str(keys.signing_key))
    assert_one_line_error(result, 4, "no etcd endpoint answered")
    assert files_in(store) == []


def test_missing_tls_file_is_a_config_error(cli: CLI, keys: GeneratedKeys, tmp_path: Path,
                                            tls_cluster: EtcdCluster) -> None:
    args = snapshot_args(tls_cluster, keys, str(tmp_path / "store"))
    args[args.index("--cert") + 1] = str(tmp_path / "missing.crt")
    assert_one_line_error(cli(*args), 3, "missing.crt")


def test_wrong_ca_fails_the_handshake(cli: CLI, keys: GeneratedKeys, tmp_path: Path,
                                      tls_cluster: EtcdCluster) -> None:
    assert tls_cluster.tls is not None
    args = snapshot_args(tls_cluster, keys, str(tmp_path / "store"))
    args[args.index("--cacert") + 1] = str(tls_cluster.tls.other_ca)
    result = cli(*args)
    assert_one_line_error(result, 4)
    assert files_in(tmp_path / "store") == []


def test_no_client_certificate_is_refused(cli: CLI, keys: GeneratedKeys, tmp_path: Path,
                                          tls_cluster: EtcdCluster) -> None:
    assert tls_cluster.tls is not None
    result = cli("snapshot", "--endpoints", tls_cluster.endpoints[0], "--cacert", str(tls_cluster.tls.ca),
                 "--store", str(tmp_path / "store"), "--recipient", keys.recipient_text,
                 "--signing-key", str(keys.signing_key))
    assert_one_line_error(result, 4)


def test_tls_with_client_certificate_works(cli: CLI, keys: GeneratedKeys, tmp_path: Path,
                                           tls_cluster: EtcdCluster) -> None:
    result = cli(*snapshot_args(tls_cluster, keys, str(tmp_path / "store"), "-o", "json"))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["keys"] == 100


def test_no_recipient_fails_closed(cli: CLI, keys: GeneratedKeys, tmp_path: Path,
                                   tls_cluster: EtcdCluster) -> None:
    args = snapshot_args(tls_cluster, keys, str(tmp_path / "store"))
    i = args.index("--recipient")
    del args[i:i + 2]
    assert_one_line_error(cli(*args), 3, "no age recipient")
    assert files_in(tmp_path / "store") == []
    loud = cli(*args, "--allow-unencrypted", "-o", "json")
    assert loud.returncode == 0, loud.stderr
    assert "NOT encrypted" in loud.stderr
    assert json.loads(loud.stdout)["encrypted"] is False


def test_no_signing_key_fails_closed(cli: CLI, keys: GeneratedKeys, tmp_path: Path,
                                     tls_cluster: EtcdCluster) -> None:
    args = snapshot_args(tls_cluster, keys, str(tmp_path / "store"))
    i = args.index("--signing-key")
    del args[i:i + 2]
    assert_one_line_error(cli(*args), 3, "no signing key")


def test_missing_bucket_and_bad_credentials(cli: CLI, keys: GeneratedKeys, tls_cluster: EtcdCluster,
                                            seaweed: SeaweedS3) -> None:
    base = ["--s3-endpoint-url", seaweed.endpoint_url]
    result = cli(*snapshot_args(tls_cluster, keys, "s3://no-such-bucket-here/prod", *base), env=s3_env(seaweed))
    assert_one_line_error(result, 5, "no-such-bucket-here")
    bucket = seaweed.create_bucket("creds-test")
    bad = {**s3_env(seaweed), "AWS_SECRET_ACCESS_KEY": "wrong-secret"}
    result = cli(*snapshot_args(tls_cluster, keys, f"s3://{bucket}/prod", *base), env=bad)
    assert_one_line_error(result, 5)
    assert "wrong-secret" not in result.stderr
    assert seaweed.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


def test_snapshot_to_s3_and_back(cli: CLI, keys: GeneratedKeys, tls_cluster: EtcdCluster, seaweed: SeaweedS3,
                                 tmp_path: Path) -> None:
    bucket = seaweed.create_bucket("roundtrip")
    store = f"s3://{bucket}/etcd/prod"
    base = ["--s3-endpoint-url", seaweed.endpoint_url]
    result = cli(*snapshot_args(tls_cluster, keys, store, *base, "--cluster-name", "prod", "-o", "json"),
                 env=s3_env(seaweed))
    assert result.returncode == 0, result.stderr
    backup_id = json.loads(result.stdout)["backup_id"]
    keys_in_bucket = [o["Key"] for o in seaweed.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert f"etcd/prod/prod/{backup_id}/manifest.json" in keys_in_bucket
    listed = cli("backups", "list", "--store", store, "--cluster-name", "prod", *base, "-o", "json",
                 env=s3_env(seaweed))
    assert listed.returncode == 0, listed.stderr
    assert [e["backup_id"] for e in json.loads(listed.stdout)] == [backup_id]
    out = tmp_path / "snap.db"
    dl = cli("backups", "download", backup_id, "--store", store, "--cluster-name", "prod", *base,
             "--identity", str(keys.identity), "-o", str(out), env=s3_env(seaweed))
    assert dl.returncode == 0, dl.stderr
    deleted = cli("backups", "delete", backup_id, "--store", store, "--cluster-name", "prod", *base, "--yes",
                  env=s3_env(seaweed))
    assert deleted.returncode == 0, deleted.stderr
    assert seaweed.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0


class _KillAfter(Progress):
    def __init__(self, after_bytes: int, action) -> None:
        self.after = after_bytes
        self.seen = 0
        self.action = action
        self.fired = threading.Event()
        self.sources: list[str] = []

    def source(self, candidate: SourceCandidate) -> None:
        self.sources.append(candidate.name)

    def advance(self, plain_bytes: int) -> None:
        self.seen += plain_bytes
        if self.seen >= self.after and not self.fired.is_set():
            self.fired.set()
            self.action()


def test_s3_server_dying_mid_upload_leaves_nothing(tmp_path: Path, keys: GeneratedKeys) -> None:
    require_etcd("3.5.16")
    with SeaweedS3(tmp_path / "weed") as weed, etcd_cluster(tmp_path / "etcd", "3.5.16",
                                                           extra_args=["--quota-backend-bytes", str(2**30)]) as c:
        bucket = weed.create_bucket("dying")
        with c.client(0) as client:
            fill_random(client, 80)
        settings = load_settings(None, {
            "etcd.endpoints": c.endpoints[0], "store": f"s3://{bucket}/p", "store.endpoint_url": weed.endpoint_url,
            "store.access_key_id": weed.access_key, "store.secret_access_key": weed.secret_key,
            "store.part_size_mb": 5, "store.max_attempts": 2, "store.connect_timeout": 2, "store.read_timeout": 5,
            "encryption.recipients": keys.recipient_text, "signing.key_file": keys.signing_key,
        }, environ={})
        store = open_store(settings.store_or_default()[0])
        progress = _KillAfter(30 * 2**20, weed.kill)
        with pytest.raises(StorageUnavailableError):
            finishes(lambda: take_backup(request_from_settings(settings), store, progress=progress))
        assert progress.fired.is_set()
        weed.start()  # same data dir: what did the dead server keep?
        s3 = weed.client()
        assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
        uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        # the abort could not reach the dead server; the next run cleans stale uploads up
        if uploads:
            assert store.cleanup_incomplete("", older_than_seconds=0) >= len(uploads)
            assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_leader_dying_mid_stream_falls_back_to_a_follower(tmp_path: Path, keys: GeneratedKeys) -> None:
    require_etcd("3.5.16")
    with etcd_cluster(tmp_path / "etcd", "3.5.16", size=3,
                      extra_args=["--quota-backend-bytes", str(2**30)]) as cluster:
        with cluster.client(0) as client:
            fill_random(client, 64)
            leader = client.status().leader
            names = [m.name for m in cluster.members]
            by_id = {m.id: m.name for m in client.member_list()}
        leader_index = names.index(by_id[leader])
        settings = load_settings(None, {
            "etcd.endpoints": ",".join(cluster.endpoints), "store": str(tmp_path / "store"),
            "encryption.recipients": keys.recipient_text, "signing.key_file": keys.signing_key,
        }, environ={})
        progress = _KillAfter(8 * 2**20, lambda: cluster.kill(leader_index))
        result = take_backup(request_from_settings(settings), open_store(settings.store_or_default()[0]),
                             progress=progress)
        assert progress.fired.is_set()
        assert progress.sources[0] == by_id[leader]
        assert result.manifest.source.name != by_id[leader]
        assert result.sources_tried[0] == by_id[leader] and len(result.sources_tried) >= 2
        objects = files_in(tmp_path / "store")
        assert {p.name for p in objects} == {"snapshot.db.zst.age", "manifest.json"}


def test_a_stalled_member_hits_the_idle_timeout_and_nothing_is_left(tmp_path: Path, keys: GeneratedKeys) -> None:
    require_etcd("3.5.16")
    from etcdguard.errors import EtcdUnavailableError

    with etcd_cluster(tmp_path / "etcd", "3.5.16", extra_args=["--quota-backend-bytes", str(2**30)]) as cluster:
        with cluster.client(0) as client:
            fill_random(client, 48)
        settings = load_settings(None, {
            "etcd.endpoints": cluster.endpoints[0], "etcd.snapshot_idle_timeout": 2,
            "store": str(tmp_path / "store"),
            "encryption.recipients": keys.recipient_text, "signing.key_file": keys.signing_key,
        }, environ={})
        progress = _KillAfter(4 * 2**20, lambda: cluster.pause(0))
        request = dataclasses.replace(request_from_settings(settings), journal_dir=tmp_path / "journal")
        try:
            # the stream is cut by the idle timeout; the retry round then finds no member answering
            with pytest.raises(EtcdUnavailableError, match="no etcd endpoint answered"):
                finishes(lambda: take_backup(request, open_store(settings.store_or_default()[0]),
                                             progress=progress))
        finally:
            cluster.resume(0)
        [journal_path] = Journal.find(tmp_path / "journal", "backup")
        stream = Journal.load(journal_path).record("stream")
        assert stream is not None and stream.state is StepState.failed
        assert "snapshot stream idle for more than 2s" in stream.error
        assert files_in(tmp_path / "store") == []
