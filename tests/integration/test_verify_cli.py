"""`etcdguard verify` as a real subprocess: output, verdict files and exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from etcdguard.backup.manifest import ENCRYPTED_OBJECT
from etcdguard.errors import ExitCode
from tests.integration.verify_fixtures import (  # noqa: F401 - fixtures
    Backups,
    backups,
    make_backup,
    no_leftovers,
    source_cluster,
    workdir,
)
from tests.support.etcd_cluster import TEST_ETCD_DIRS

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftovers")]


def run_cli(b: Backups, workdir: Path, *args: str, keys: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``etcdguard verify ...`` against the test store, with the test keys unless ``keys=False``."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDGUARD_")}
    full_env.update({"HOME": str(workdir.parent / "home"), "COLUMNS": "200",
                     "ETCDGUARD_VERIFY__ETCD_PATH": os.pathsep.join(map(str, TEST_ETCD_DIRS)),
                     "ETCDGUARD_VERIFY__WORKDIR": str(workdir), "TMPDIR": str(workdir.parent / "systmp")})
    full_env.update(env or {})
    exe = shutil.which("etcdguard")
    base = [exe] if exe else [sys.executable, "-m", "etcdguard.cli.main"]
    cmd = [*base, "verify", *args, "--store", str(b.store.root),
           "--cluster-name", b.cluster, "--identity", str(b.keys.identity)]
    if keys:
        cmd += ["--signing-key", str(b.keys.signing_key), "--signing-pub", str(b.keys.signing_pub)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=full_env, check=False)


def test_verify_latest_passes_and_backups_list_shows_it(tmp_path: Path, backups: Backups,
                                                        workdir: Path) -> None:
    with source_cluster(tmp_path / "src", "3.5.16") as cluster, cluster.client() as client:
        manifest = make_backup(backups, client)
    result = run_cli(backups, workdir, "--latest", "--sandbox", "process")
    assert result.returncode == 0, result.stderr
    assert "PASSED" in result.stdout and manifest.backup_id in result.stdout
    for step in ("manifest", "download", "snapshot status", "restore", "hashkv", "key counts", "smoke test"):
        assert step in result.stderr
    entry = backups.catalog.entry(manifest.backup_id)
    assert entry.verification_state == "verified"
    assert entry.verification is not None and entry.verification.sandbox.startswith("process:")
    listed = subprocess.run([shutil.which("etcdguard") or "etcdguard", "backups", "list", "--store",
                             str(backups.store.root), "--cluster-name", backups.cluster, "-o", "json",
                             "--signing-pub", str(backups.keys.signing_pub)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert listed.returncode == 0, listed.stderr
    assert [b["verification"] for b in json.loads(listed.stdout)] == ["verified"]


def test_verify_json_and_unverified(tmp_path: Path, backups: Backups, workdir: Path) -> None:
    with source_cluster(tmp_path / "src", "3.4.23") as cluster, cluster.client() as client:
        first = make_backup(backups, client)
        client.put(b"/registry/pods/default/late", b"x")
        second = make_backup(backups, client)
    result = run_cli(backups, workdir, first.backup_id, "--sandbox", "process", "-o", "json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["verification"]["result"] == "passed" and data["recorded"] is True
    assert data["snapshot_status"]["revision"] >= first.hashkv.revision
    result = run_cli(backups, workdir, "--unverified", "--sandbox", "process", "-o", "json")
    assert result.returncode == 0, result.stderr
    assert [r["verification"]["backup_id"] for r in json.loads(result.stdout)] == [second.backup_id]


def test_mismatch_exits_7_naming_what_differed(tmp_path: Path, backups: Backups, workdir: Path) -> None:
    with source_cluster(tmp_path / "a", "3.5.16", objects=60, seed=5) as a, \
            source_cluster(tmp_path / "b", "3.5.16", objects=90, seed=6) as b, \
            a.client() as ca, b.client() as cb:
        forged = make_backup(backups, cb, manifest_from=ca)
    result = run_cli(backups, workdir, forged.backup_id, "--sandbox", "process")
    assert result.returncode == ExitCode.VERIFICATION_FAILED, result.stderr
    assert "FAILED" in result.stdout and "HashKV at revision" in result.stdout
    assert "differs" in result.stdout


def test_truncated_object_exits_6(tmp_path: Path, backups: Backups, workdir: Path) -> None:
    with source_cluster(tmp_path / "src", "3.5.1") as cluster, cluster.client() as client:
        manifest = make_backup(backups, client)
    path = backups.store.path_of(f"{backups.catalog.prefix(manifest.backup_id)}/{ENCRYPTED_OBJECT}")
    path.write_bytes(path.read_bytes()[:-4096])
    result = run_cli(backups, workdir, "--latest", "--sandbox", "process")
    assert result.returncode == ExitCode.INTEGRITY, result.stderr
    assert "error:" in result.stderr and "Traceback" not in result.stderr
    assert backups.catalog.entry(manifest.backup_id).verification_state == "failed"


def test_docker_down_exits_9_suggesting_process(tmp_path: Path, backups: Backups, workdir: Path) -> None:
    with source_cluster(tmp_path / "src", "3.5.16") as cluster, cluster.client() as client:
        make_backup(backups, client)
    result = run_cli(backups, workdir, "--latest", "--sandbox", "docker",
                     env={"DOCKER_HOST": f"unix://{tmp_path}/nothing.sock"})
    assert result.returncode == ExitCode.SANDBOX, result.stderr
    error = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(error) == 1 and "--sandbox process" in error[0] and "Docker is not available" in error[0]


def test_usage_and_fail_closed(tmp_path: Path, backups: Backups, workdir: Path) -> None:
    with source_cluster(tmp_path / "src", "3.5.16") as cluster, cluster.client() as client:
        make_backup(backups, client)
    assert run_cli(backups, workdir, "--sandbox", "process").returncode == ExitCode.USAGE
    assert run_cli(backups, workdir, "x", "--latest").returncode == ExitCode.USAGE
    no_key = run_cli(backups, workdir, "--latest", "--sandbox", "process", "--signing-pub",
                     str(backups.keys.signing_pub), keys=False)
    assert no_key.returncode == ExitCode.CONFIG and "--allow-unsigned" in no_key.stderr
    unsigned = run_cli(backups, workdir, "--latest", "--sandbox", "process", "--signing-pub",
                       str(backups.keys.signing_pub), "--allow-unsigned", keys=False)
    assert unsigned.returncode == 0, unsigned.stderr
    assert "UNSIGNED" in unsigned.stdout
