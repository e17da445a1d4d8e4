"""SIGTERM and SIGINT at observed moments of `snapshot` (S3, local) and `download`: nothing stays behind.

Each test starts the real CLI, waits until the state it wants is visible from outside (an open
multipart upload, a growing ``.partial-*`` file, a snapshot being written), pauses the process
there (SIGSTOP), sends the signal, lets it continue, and then checks the bucket (objects and
ListMultipartUploads), the store directory and TMPDIR.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from etcdguard.backup.keys import GeneratedKeys
from tests.integration.snapshot_fixtures import (
    CLI,
    cli,  # noqa: F401 - fixture
    fill_random,
    require_etcd,
    require_tool,
    snapshot_args,
)
from tests.integration.stopping_helpers import (  # noqa: F401 - module_keys is a fixture
    Running,
    assert_interrupted,
    module_keys,
    s3_env,
    tree,
)
from tests.support.etcd_cluster import EtcdCluster, etcd_cluster
from tests.support.seaweed import SeaweedS3

pytestmark = pytest.mark.integration
SIGNALS = [signal.SIGTERM, signal.SIGINT]
DB_MEGABYTES = 80


@pytest.fixture(scope="module")
def big_etcd(tmp_path_factory: pytest.TempPathFactory):
    """One etcd member holding about 80 MB of incompressible values (a few seconds to stream)."""
    require_etcd("3.5.16")
    base = tmp_path_factory.mktemp("stop-etcd")
    with etcd_cluster(base / "etcd", "3.5.16", extra_args=["--quota-backend-bytes", str(2**30)]) as cluster:
        with cluster.client(0) as client:
            fill_random(client, DB_MEGABYTES)
        yield cluster


def private_tmp(tmp_path: Path) -> Path:
    path = tmp_path / "tmpdir"
    path.mkdir(mode=0o700)
    return path


def open_uploads(seaweed: SeaweedS3, bucket: str) -> list[dict[str, object]]:
    return list(seaweed.client().list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def objects(seaweed: SeaweedS3, bucket: str) -> list[str]:
    return [o["Key"] for o in seaweed.client().list_objects_v2(Bucket=bucket).get("Contents", [])]


def partial_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*partial-*") if p.is_file() and p.stat().st_size > 0] if root.exists() else []


@pytest.mark.parametrize("moment", ["parts uploading", "stream starting"])
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_snapshot_to_s3_stopped(cli: CLI, big_etcd: EtcdCluster, module_keys: GeneratedKeys, seaweed: SeaweedS3,
                                tmp_path: Path, sig: int, moment: str) -> None:
    """Stopped while parts upload (ListMultipartUploads shows one) or as the stream starts
    (hashkv done; the upload may or may not exist yet)."""
    bucket = seaweed.create_bucket(f"stop-{moment.split()[0]}-{signal.Signals(sig).name.lower()}")
    tmpdir = private_tmp(tmp_path)
    args = snapshot_args(big_etcd, module_keys, f"s3://{bucket}/etcd", "--s3-endpoint-url", seaweed.endpoint_url)
    run = Running(cli, args, {**s3_env(seaweed), "TMPDIR": str(tmpdir)}, tmp_path / "run")
    try:
        if moment == "parts uploading":
            run.pause_when(lambda: bool(open_uploads(seaweed, bucket)), "an open multipart upload")
        else:
            run.pause_when(lambda: " hashkv " in run.stderr_text(), "the hashkv step finished")
        result = run.stop_with(sig)
    finally:
        run.close()
    assert_interrupted(result, sig)
    assert open_uploads(seaweed, bucket) == []
    assert objects(seaweed, bucket) == []
    assert tree(tmpdir) == []


@pytest.mark.parametrize("moment", ["writing", "stream starting"])
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_snapshot_to_local_store_stopped(cli: CLI, big_etcd: EtcdCluster, module_keys: GeneratedKeys,
                                         tmp_path: Path, sig: int, moment: str) -> None:
    """Stopped while a growing .partial file is written, or as the stream starts (hashkv done)."""
    store = tmp_path / "store"
    tmpdir = private_tmp(tmp_path)
    run = Running(cli, snapshot_args(big_etcd, module_keys, str(store)), {"TMPDIR": str(tmpdir)}, tmp_path / "run")
    try:
        if moment == "writing":
            run.pause_when(lambda: bool(partial_files(store)), "a growing .partial file in the store")
        else:
            run.pause_when(lambda: " hashkv " in run.stderr_text(), "the hashkv step finished")
        result = run.stop_with(sig)
    finally:
        run.close()
    assert_interrupted(result, sig)
    assert tree(store) == []  # no temp file, no object, no empty backup directory
    assert tree(tmpdir) == []


@pytest.fixture(scope="module")
def s3_backup(big_etcd: EtcdCluster, module_keys: GeneratedKeys, seaweed: SeaweedS3,
              tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One complete backup of ``big_etcd`` in a bucket: (store URL, backup id)."""
    home = tmp_path_factory.mktemp("stop-home")
    bucket = seaweed.create_bucket("stop-download-src")
    store = f"s3://{bucket}/etcd"
    result = CLI(home, {})(*snapshot_args(big_etcd, module_keys, store, "--s3-endpoint-url", seaweed.endpoint_url,
                                          "-o", "json"), env=s3_env(seaweed))
    assert result.returncode == 0, result.stderr
    return store, json.loads(result.stdout)["backup_id"]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_download_stopped_mid_write(cli: CLI, s3_backup: tuple[str, str], module_keys: GeneratedKeys,
                                    seaweed: SeaweedS3, tmp_path: Path, sig: int) -> None:
    store, backup_id = s3_backup
    out_dir = tmp_path / "out"
    tmpdir = private_tmp(tmp_path)
    args = ["backups", "download", backup_id, "--store", store, "--s3-endpoint-url", seaweed.endpoint_url,
            "--identity", str(module_keys.identity), "-o", str(out_dir / "snapshot.db")]
    run = Running(cli, args, {**s3_env(seaweed), "TMPDIR": str(tmpdir)}, tmp_path / "run")
    try:
        run.pause_when(lambda: bool(partial_files(out_dir)), "a partial snapshot being written")
        result = run.stop_with(sig)
    finally:
        run.close()
    assert_interrupted(result, sig)
    assert tree(out_dir) == []
    assert tree(tmpdir) == []


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_download_to_stdout_stopped_mid_write(cli: CLI, s3_backup: tuple[str, str], module_keys: GeneratedKeys,
                                              seaweed: SeaweedS3, tmp_path: Path, sig: int) -> None:
    store, backup_id = s3_backup
    tmpdir = private_tmp(tmp_path)
    args = ["backups", "download", backup_id, "--store", store, "--s3-endpoint-url", seaweed.endpoint_url,
            "--identity", str(module_keys.identity), "-o", "-"]
    run = Running(cli, args, {**s3_env(seaweed), "TMPDIR": str(tmpdir)}, tmp_path / "run")
    try:
        run.pause_when(lambda: bool(partial_files(tmpdir)), "the snapshot being staged in TMPDIR")
        result = run.stop_with(sig)
    finally:
        run.close()
    assert_interrupted(result, sig)
    assert result.stdout == ""  # nothing unchecked ever reaches stdout
    assert tree(tmpdir) == []


def test_local_store_full_leaves_no_partial_file_and_no_directory(cli: CLI, big_etcd: EtcdCluster,
                                                                 module_keys: GeneratedKeys,
                                                                 tmp_path: Path) -> None:
    """ENOSPC on a real (tiny tmpfs) filesystem: exit 5, and the store is as empty as before."""
    unshare = require_tool("unshare")
    store = tmp_path / "small-store"
    store.mkdir()
    args = " ".join(f"'{a}'" for a in snapshot_args(big_etcd, module_keys, str(store)))
    script = (f"mount -t tmpfs -o size=4m tmpfs '{store}' && "
              f"{{ etcdguard {args}; echo \"rc=$?\"; find '{store}' -mindepth 1; }}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDGUARD_", "AWS_"))}
    env.update({"HOME": str(cli.home), "XDG_DATA_HOME": str(cli.home / "data"), "COLUMNS": "200"})
    proc = subprocess.run([unshare, "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                          env=env, check=False)
    assert "rc=5" in proc.stdout, (proc.stdout, proc.stderr)
    listed = [ln for ln in proc.stdout.splitlines() if ln.startswith(str(store))]
    assert listed == []  # no .partial file, no empty backup directory
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "No space left" in errors[0], proc.stderr
