"""Verification in the Docker sandbox: real dockerd, locally built etcd images, real backups."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from etcdguard.errors import SandboxUnavailableError
from etcdguard.etcd.binaries import EtcdVersion
from etcdguard.steps import StepRecord, StepState
from etcdguard.verify.docker import DockerSandbox
from etcdguard.verify.dockerres import CREATED_LABEL, OWNER_LABEL, SANDBOX_LABEL, cleanup_leftovers
from etcdguard.verify.hosttools import pick_host_etcd
from etcdguard.verify.images import build_local_image
from tests.integration.verify_fixtures import (  # noqa: F401 - fixtures
    Backups,
    assert_port_closed,
    backups,
    docker_or_skip,
    make_backup,
    no_leftovers,
    source_cluster,
    workdir,
)
from tests.support.etcd_cluster import TEST_ETCD_DIRS

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.usefixtures("no_leftovers")]


@pytest.fixture
def docker_client() -> Any:
    return docker_or_skip()


def _inspect_sandbox(client: Any, backup_id: str) -> dict[str, Any]:
    found = client.containers.list(filters={"label": f"etcdguard.backup-id={backup_id}"})
    assert len(found) == 1, found
    container = found[0]
    network = client.networks.get(next(iter(container.attrs["NetworkSettings"]["Networks"])))
    return {"container": container.attrs, "network": network.attrs}


@pytest.mark.parametrize(("version", "mode"), [("3.4.23", "bind"), ("3.5.1", "bind"), ("3.5.16", "bind"),
                                               ("3.4.23", "volume"), ("3.5.16", "volume")])
def test_good_backup_passes(tmp_path: Path, backups: Backups, workdir: Path, docker_client: Any,
                            version: str, mode: str) -> None:
    with source_cluster(tmp_path / "src", version) as cluster, cluster.client() as client:
        manifest = make_backup(backups, client)
    seen: dict[str, Any] = {}

    def on_step(record: StepRecord) -> None:
        if (record.name, record.state) == ("hashkv", StepState.running):  # the sandbox is up: look at it
            seen.update(_inspect_sandbox(docker_client, manifest.backup_id))

    report = backups.verifier("docker", workdir, on_step=on_step,
                              config={"docker_data_mode": "auto" if mode == "bind" else mode}
                              ).verify(manifest.backup_id)
    v = report.verification
    assert v.result == "passed", v.reason
    used = ("3.5.16", False) if version == "3.5.1" else (version, True)  # never 3.5.0-3.5.2 as a sandbox
    assert (v.hash_proof, v.key_counts_match, v.etcd_version_used, v.etcd_version_exact) == ("passed", True, *used)
    assert v.sandbox.startswith("docker:") and v.sandbox.endswith(f"({mode})")
    assert (v.reason == "") == (version != "3.5.1")
    assert {"restore.image", "restore.restore", "restore.start"} <= set(v.steps)
    assert ("restore.copy" in v.steps) == (mode == "volume")
    container, network = seen["container"], seen["network"]
    mounts = container["Mounts"]
    assert len(mounts) == 1 and mounts[0]["Destination"] == "/var/lib/etcdguard"
    if mode == "bind":  # a private 0700 dir of the run, owned by the caller, who the container runs as
        assert mounts[0]["Type"] == "bind" and Path(mounts[0]["Source"]).parent == workdir
        assert container["Config"]["User"] == f"{os.getuid()}:{os.getgid()}"
    else:
        assert mounts[0]["Type"] == "volume" and mounts[0]["Name"].startswith("etcdguard-sandbox-")
    labels = container["Config"]["Labels"]
    assert labels[SANDBOX_LABEL] == "1" and labels["etcdguard.backup-id"] == manifest.backup_id
    assert container["HostConfig"]["Memory"] == 1024**3
    assert container["HostConfig"]["ReadonlyRootfs"] is True
    bindings = container["NetworkSettings"]["Ports"]
    assert list(bindings) == ["2379/tcp"]
    assert {b["HostIp"] for b in bindings["2379/tcp"]} == {"127.0.0.1"}
    assert network["Options"]["com.docker.network.bridge.enable_ip_masquerade"] == "false"
    assert network["Labels"][SANDBOX_LABEL] == "1"
    # the published port serves TLS to holders of the run's client certificate only
    args = container["Args"]
    assert "--client-cert-auth" in args and "https://0.0.0.0:2379" in args
    env_names = {e.split("=", 1)[0] for e in container["Config"]["Env"] or []}
    assert not {n for n in env_names if n.startswith(("AWS_", "ETCDGUARD_", "ETCD_", "ETCDCTL_"))}, env_names
    assert report.running is not None and report.running.endpoint.startswith("https://127.0.0.1:")
    assert_port_closed(report.running.endpoint)


def test_content_not_matching_manifest_fails(tmp_path: Path, backups: Backups, workdir: Path,
                                             docker_client: Any) -> None:
    with source_cluster(tmp_path / "a", "3.4.23", objects=80, seed=3) as a, \
            source_cluster(tmp_path / "b", "3.4.23", objects=110, seed=4) as b, \
            a.client() as ca, b.client() as cb:
        forged = make_backup(backups, cb, manifest_from=ca)
    v = backups.verifier("docker", workdir).verify(forged.backup_id).verification
    assert (v.result, v.hash_proof, v.key_counts_match) == ("failed", "failed", False)
    assert "HashKV at revision" in v.reason and "key counts differ" in v.reason


def test_snapshot_status_inside_the_image(tmp_path: Path, workdir: Path, docker_client: Any) -> None:
    """Without host etcd tools the sandbox runs `snapshot status` and the restore in the image."""
    with source_cluster(tmp_path / "src", "3.5.16") as cluster, cluster.client() as client:
        snapshot = tmp_path / "snap.db"
        with snapshot.open("wb") as f:
            for chunk in client.snapshot():
                f.write(chunk)
        revision = client.status().revision
    with DockerSandbox(backup_id="status-test", etcd_path=TEST_ETCD_DIRS, data_mode="volume") as sandbox:
        status = sandbox.snapshot_status(snapshot, "3.5.16")
        running = sandbox.start(snapshot, "3.5.16")
        assert status.revision == revision and running.version == "3.5.16"
    assert_port_closed(running.endpoint)


def test_docker_unavailable_suggests_process_sandbox(tmp_path: Path, backups: Backups, workdir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with source_cluster(tmp_path / "src", "3.5.16") as cluster, cluster.client() as client:
        manifest = make_backup(backups, client)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/dead.sock")
    with pytest.raises(SandboxUnavailableError, match="--sandbox process"):
        backups.verifier("docker", workdir).verify(manifest.backup_id)
    assert backups.catalog.entry(manifest.backup_id).verification is None  # not the backup's fault


def test_leftovers_of_a_crashed_run_are_removed(docker_client: Any) -> None:
    image = DockerSandbox(etcd_path=TEST_ETCD_DIRS)._image("3.5.16").ref
    dead_owner = {SANDBOX_LABEL: "1", OWNER_LABEL: "elsewhere:1:1", CREATED_LABEL: str(int(time.time()) - 3600)}
    live_owner = {SANDBOX_LABEL: "1", OWNER_LABEL: "elsewhere:1:1", CREATED_LABEL: str(int(time.time()))}
    crashed = docker_client.containers.create(image, command=["--version"], labels=dead_owner)
    volume = docker_client.volumes.create(labels=dead_owner)
    recent = docker_client.containers.create(image, command=["--version"], labels=live_owner)
    try:
        assert cleanup_leftovers(docker_client, stale_after=600) >= 2  # other test runs may add theirs
        ids = {c.id for c in docker_client.containers.list(all=True, filters={"label": SANDBOX_LABEL})}
        assert crashed.id not in ids and recent.id in ids
        assert volume.name not in {v.name for v in docker_client.volumes.list()}
    finally:
        recent.remove(force=True)


def test_local_image_build_from_dynamic_binaries(docker_client: Any) -> None:
    """Debian's dynamically linked etcd runs in an imported image with its libraries copied in."""
    host = pick_host_etcd("3.4.23")
    assert host.install.version == EtcdVersion(3, 4, 23)
    tag = "etcdguard/etcd-buildtest:3.4.23-local"
    build_local_image(docker_client, host.install, tag)
    try:
        out = docker_client.containers.run(tag, command=["--version"], remove=True, network_mode="none")
        assert b"etcd Version: 3.4.23" in out
        labels = docker_client.images.get(tag).attrs["Config"]["Labels"]
        assert labels["etcdguard.etcd-version"] == "3.4.23" and labels["etcdguard.etcdutl"] == "0"
    finally:
        docker_client.images.remove(tag, force=True)


def test_ctrl_c_removes_the_container(tmp_path: Path, backups: Backups, workdir: Path,
                                      docker_client: Any) -> None:
    with source_cluster(tmp_path / "src", "3.5.16") as cluster, cluster.client() as client:
        manifest = make_backup(backups, client)

    def on_step(record: StepRecord) -> None:
        if (record.name, record.state) == ("hashkv", StepState.running):
            assert docker_client.containers.list(filters={"label": f"etcdguard.backup-id={manifest.backup_id}"})
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        backups.verifier("docker", workdir, on_step=on_step).verify(manifest.backup_id)
    assert not docker_client.containers.list(all=True, filters={
        "label": f"etcdguard.backup-id={manifest.backup_id}"})


def test_sigint_to_the_cli_exits_130_and_cleans_up(tmp_path: Path, backups: Backups, workdir: Path,
                                                   docker_client: Any) -> None:
    """A real Ctrl-C (SIGINT) while the sandbox container runs."""
    import shutil
    import signal
    import subprocess

    with source_cluster(tmp_path / "src", "3.5.16", objects=400) as cluster, cluster.client() as client:
        manifest = make_backup(backups, client)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ETCDGUARD_")},
           "ETCDGUARD_VERIFY__ETCD_PATH": os.pathsep.join(map(str, TEST_ETCD_DIRS)),
           "ETCDGUARD_VERIFY__WORKDIR": str(workdir), "TMPDIR": str(tmp_path / "systmp"),
           "ETCDGUARD_VERIFY__START_TIMEOUT": "600"}
    flt = {"label": f"etcdguard.backup-id={manifest.backup_id}"}
    # a test run started in the background ignores SIGINT, and so would the CLI it starts: a
    # handler (reset to the default by exec) instead of SIG_IGN while the CLI is spawned
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [shutil.which("etcdguard") or "etcdguard", "verify", manifest.backup_id, "--store",
             str(backups.store.root), "--cluster-name", backups.cluster, "--identity", str(backups.keys.identity),
             "--signing-key", str(backups.keys.signing_key), "--sandbox", "docker"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 60
    while not docker_client.containers.list(filters=flt) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert not docker_client.containers.list(all=True, filters=flt)
    assert not docker_client.networks.list(filters=flt) and not docker_client.volumes.list(filters=flt)
    assert list(workdir.iterdir()) == []
