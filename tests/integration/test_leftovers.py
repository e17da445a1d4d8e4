"""Leftovers of killed backups (SIGKILL: no handler runs) are listed, then removed by prune once idle.

A backup another process is writing right now is never touched: its parts or temp file keep a
recent last-write time.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from etcdguard.backup.keys import GeneratedKeys
from tests.integration.snapshot_fixtures import CLI, cli, fill_random, require_etcd, snapshot_args  # noqa: F401
from tests.integration.stopping_helpers import (  # noqa: F401 - module_keys is a fixture
    Running,
    module_keys,
    s3_env,
    tree,
)
from tests.support.etcd_cluster import EtcdCluster, etcd_cluster
from tests.support.seaweed import SeaweedS3

pytestmark = pytest.mark.integration
TWO_HOURS = 2 * 3600


@pytest.fixture(scope="module")
def etcd_40mb(tmp_path_factory: pytest.TempPathFactory):
    require_etcd("3.5.16")
    base = tmp_path_factory.mktemp("leftover-etcd")
    with etcd_cluster(base / "etcd", "3.5.16", extra_args=["--quota-backend-bytes", str(2**30)]) as cluster:
        with cluster.client(0) as client:
            fill_random(client, 40)
        yield cluster


def partials(root: Path) -> list[Path]:
    return [p for p in root.rglob(".partial-*") if p.is_file() and p.stat().st_size > 0] if root.exists() else []


def age(path: Path, seconds: float) -> None:
    """Make ``path`` look last written ``seconds`` ago."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_sigkill_mid_upload_leaves_an_upload_that_list_reports_and_prune_removes(
        cli: CLI, etcd_40mb: EtcdCluster, module_keys: GeneratedKeys, seaweed: SeaweedS3, tmp_path: Path) -> None:
    bucket = seaweed.create_bucket("leftover-s3")
    store = ["--store", f"s3://{bucket}/etcd", "--s3-endpoint-url", seaweed.endpoint_url]
    s3 = seaweed.client()
    run = Running(cli, snapshot_args(etcd_40mb, module_keys, store[1], *store[2:]), s3_env(seaweed),
                  tmp_path / "run")
    try:
        run.pause_when(lambda: bool(s3.list_multipart_uploads(Bucket=bucket).get("Uploads")), "an open upload")
        run.kill()
    finally:
        run.close()
    uploads = s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    assert len(uploads) == 1
    # a killed writer between the object and its manifest: objects without a manifest
    done = cli(*snapshot_args(etcd_40mb, module_keys, store[1], *store[2:], "-o", "json"), env=s3_env(seaweed))
    assert done.returncode == 0, done.stderr
    orphan = json.loads(done.stdout)["backup_id"]
    s3.delete_object(Bucket=bucket, Key=f"etcd/default/{orphan}/manifest.json")

    listed = cli("backups", "list", *store, env=s3_env(seaweed))
    assert listed.returncode == 0, listed.stderr
    assert "multipart upload" in listed.stdout and "no manifest" in listed.stdout, listed.stdout
    assert orphan in listed.stdout
    assert "may still be written" in listed.stdout  # both are seconds old: within the grace period

    kept = cli("backups", "prune", "--yes", "-o", "json", *store, env=s3_env(seaweed))
    assert kept.returncode == 0, kept.stderr
    report = json.loads(kept.stdout)
    assert {lo["kind"] for lo in report["leftovers"]} == {"multipart upload", "no manifest"}
    assert report["leftovers_removed"] == []  # within the default 60 minutes: perhaps still being written
    assert len(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])) == 1

    pruned = cli("backups", "prune", "--yes", "--incomplete-grace-minutes", "0", "-o", "json", *store,
                 env=s3_env(seaweed))
    assert pruned.returncode == 0, pruned.stderr
    assert len(json.loads(pruned.stdout)["leftovers_removed"]) == 2
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    relisted = cli("backups", "list", *store, env=s3_env(seaweed))
    assert "leftovers" not in relisted.stdout, relisted.stdout


def test_prune_removes_a_killed_local_write_but_not_one_in_progress(
        cli: CLI, etcd_40mb: EtcdCluster, module_keys: GeneratedKeys, tmp_path: Path) -> None:
    store = tmp_path / "store"
    killed = Running(cli, snapshot_args(etcd_40mb, module_keys, str(store)), {}, tmp_path / "killed")
    try:
        killed.pause_when(lambda: bool(partials(store)), "a partial file")
        killed.kill()
    finally:
        killed.close()
    [stale_partial] = partials(store)
    age(stale_partial, TWO_HOURS)
    age(stale_partial.parent, TWO_HOURS)

    writing = Running(cli, snapshot_args(etcd_40mb, module_keys, str(store)), {}, tmp_path / "writing")
    try:
        writing.pause_when(lambda: len(partials(store)) == 2, "a second backup being written")
        fresh = next(p for p in partials(store) if p != stale_partial)
        listed = cli("backups", "list", "--store", str(store))
        assert listed.stdout.count("partial file") == 2, listed.stdout
        pruned = cli("backups", "prune", "--yes", "--store", str(store), "-o", "json")
        assert pruned.returncode == 0, pruned.stderr
        removed = json.loads(pruned.stdout)["leftovers_removed"]
        assert [lo["kind"] for lo in removed] == ["partial file"]
        assert not stale_partial.exists() and not stale_partial.parent.exists()  # and its directory
        assert fresh.exists()
        os.kill(writing.proc.pid, signal.SIGCONT)
        assert writing.proc.wait(120) == 0, writing.stderr_text()
    finally:
        writing.close()
    assert [p for p in tree(store) if ".partial-" in p] == []
    assert len([p for p in tree(store) if p.endswith("manifest.json")]) == 1
