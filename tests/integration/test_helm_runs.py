"""The chart's rendered containers, run for real: the snapshot CronJob's steps and the verification
CronJob against a real etcd over TLS and a real SeaweedFS, with the environment and mounts the chart
gives them and the image's entrypoint (tini as PID 1); SIGTERM in the middle of an upload; the
NOTES.txt verify command; the Deployment's probes against a real ``etcdguard serve``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.fake_kubelet import IMAGE_ETCD_DIRS, FakeKubelet
from tests.support.helm_chart import (  # noqa: F401  (fixtures)
    FULLNAME,
    KEYS_SECRET,
    chart,
    cli_has,
    dockerfile_instructions,
    etcdguard_cmd,
    helm,
    image_entrypoint,
    missing,
    notes,
    notes_commands,
    one,
    pod_spec,
    render,
    steps,
)
from tests.support.seaweed import SeaweedS3

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("keys") / "keys"
    subprocess.run([*etcdguard_cmd(), "keys", "generate", "--dir", str(directory)], check=True,
                   capture_output=True, timeout=60)
    return directory


class ControlPlane:
    """A kubeadm-shaped control-plane node (PKI, manifests, encryption config) whose etcd runs
    from its static pod manifest."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.endpoints = [node.etcd_endpoint]

    def client(self) -> Any:
        from etcdguard.etcd.client import MemberClient, TLSFiles

        cacert, cert, key = self.node.etcd_client_tls
        return MemberClient(self.node.etcd_endpoint, tls=TLSFiles(cacert=cacert, cert=cert, key=key))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A kubeadm node's etcd over TLS (client certificates), with some Kubernetes-shaped data."""
    try:
        from tests.support.etcd_cluster import installation
        from tests.support.kubeadm import free_low_ports, make_kubeadm_node, running_etcd
    except ImportError as exc:
        missing(f"test support unavailable: {exc}")
    install = installation("3.5.16")
    if install is None:
        missing("etcd 3.5.16 is not installed (scripts/install-test-deps.sh)")
    if shutil.which("tini") is None:
        missing("tini is not installed (apt-get install tini)")
    base = tmp_path_factory.mktemp("control-plane")
    client_port, peer_port, metrics_port, api_port = free_low_ports(4)
    node = make_kubeadm_node(base / "cp1", client_port=client_port, peer_port=peer_port, metrics_port=metrics_port,
                             apiserver_port=api_port, etcd_command=[str(install.etcd)])
    with running_etcd(node, base / "etcd.log"):
        plane = ControlPlane(node)
        with plane.client() as c:
            for i in range(50):
                c.put(f"/registry/configmaps/default/cm-{i}".encode(), b"x" * 100)
        yield plane


def _kit_values(cluster: ControlPlane) -> dict[str, Any]:
    """The node's paths, hostPath == mountPath as on a kubeadm node (under the test's root)."""
    node = cluster.node
    return {
        "etcdCerts": {"hostPath": str(node.etcd_pki_dir), "mountPath": str(node.etcd_pki_dir)},
        "kit": {"enabled": cli_has("kit"), "pkiDir": str(node.pki_dir), "manifestsDir": str(node.manifests_dir),
                "extraHostPaths": [str(node.encryption_config.parent)]},
    }


def _values(cluster: ControlPlane, seaweed: SeaweedS3, bucket: str) -> dict[str, Any]:
    return {
        "config": {"etcd": {"endpoints": cluster.endpoints},
                   "store": {"type": "s3", "bucket": bucket, "prefix": "etcd", "endpoint_url": seaweed.endpoint_url,
                             "max_concurrency": 1},
                   "backup": {"cluster_name": "kubeadm"}},
        **_kit_values(cluster),
        "s3": {"existingSecret": "s3-write", "pruneSecret": "s3-delete", "verifySecret": "s3-verify"},
        "verification": {"enabled": True, "identitySecret": {"name": "etcdguard-identity"}, "dbSizeMiB": 64},
    }


def _secrets(keys: Path, seaweed: SeaweedS3) -> dict[str, dict[str, str]]:
    creds = {"AWS_ACCESS_KEY_ID": seaweed.access_key, "AWS_SECRET_ACCESS_KEY": seaweed.secret_key}
    return {
        KEYS_SECRET: {name: (keys / name).read_text() for name in ("recipient.txt", "signing.key", "signing.pub")},
        "etcdguard-identity": {"identity.age": (keys / "identity.age").read_text()},
        "s3-write": creds, "s3-delete": dict(creds), "s3-verify": dict(creds),
    }


def _user_env(seaweed: SeaweedS3) -> dict[str, str]:
    """An operator's environment: the store's credentials, the image's etcd for the sandbox."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDGUARD_", "AWS_"))}
    env.update(AWS_ACCESS_KEY_ID=seaweed.access_key, AWS_SECRET_ACCESS_KEY=seaweed.secret_key)
    etcd_dirs = [d for d in IMAGE_ETCD_DIRS if (d / "etcd").exists()]
    if etcd_dirs:
        env["ETCDGUARD_ETCD_PATH"] = str(etcd_dirs[0])
    return env


def _listing(seaweed: SeaweedS3, bucket: str, keys: Path, *command: str) -> list[dict[str, Any]]:
    """``etcdguard <command> -o json`` (default: backups list) on the test's store."""
    out = subprocess.run([*etcdguard_cmd(), *(command or ("backups", "list")), "--store", f"s3://{bucket}/etcd",
                          "--s3-endpoint-url", seaweed.endpoint_url, "--cluster-name", "kubeadm",
                          "--signing-pub", str(keys / "signing.pub"), "-o", "json"],
                         capture_output=True, text=True, timeout=60, check=True, env=_user_env(seaweed))
    return list(json.loads(out.stdout))


def test_rendered_cronjobs_back_up_verify_and_prune(chart: Any, cluster: ControlPlane, seaweed: SeaweedS3, keys: Path,
                                                    tmp_path: Path) -> None:
    """The snapshot CronJob's steps (snapshot, kit save when the CLI has it, prune), twice, then the
    verification CronJob and NOTES.txt's verify command: every step exits 0 with only the mounts
    and variables the chart gives it, and both backups end up verified."""
    bucket = seaweed.create_bucket("helm-run")
    docs = render(chart, _values(cluster, seaweed, bucket))
    kubelet = FakeKubelet(tmp_path / "pods", docs, _secrets(keys, seaweed))
    backup_pod = pod_spec(one(docs, "CronJob", FULLNAME))
    for run in range(2):
        for container in steps(backup_pod):  # one after the other, as init containers run
            result = kubelet.run(f"backup-{run}", backup_pod, container, cwd=tmp_path)
            assert result.returncode == 0, (container["name"], result.stdout, result.stderr)
    verify_pod = pod_spec(one(docs, "CronJob", f"{FULLNAME}-verify"))
    (verify,) = verify_pod["containers"]
    result = kubelet.run("verify", verify_pod, verify, cwd=tmp_path)
    assert result.returncode == 0, (result.stdout, result.stderr)
    tmp = tmp_path / "pods" / "verify" / "volumes" / "tmp"
    assert tmp.is_dir() and not _scratch(tmp), "verification left its scratch data behind"

    entries = _listing(seaweed, bucket, keys)
    assert len(entries) == 2
    assert all(e["trust"] == "trusted" for e in entries), entries
    newest, older = sorted(entries, key=lambda e: e["backup_id"], reverse=True)
    assert newest["verification"] == "verified" and older["verification"] != "verified"

    # NOTES.txt's verify command (as shown when verification is off), where the identity lives.
    off = notes(chart, {**_values(cluster, seaweed, bucket), "verification": {"enabled": False}})
    (argv,) = [a for a in notes_commands(off, "etcdguard") if a[0] == "verify"]
    argv = [a.replace("keys/", f"{keys}/") for a in argv]
    result = subprocess.run([*etcdguard_cmd(), *argv], capture_output=True, text=True, timeout=240, check=False,
                            env=_user_env(seaweed), cwd=tmp_path)
    assert result.returncode == 0, (off, result.stdout, result.stderr)
    assert all(e["verification"] == "verified" for e in _listing(seaweed, bucket, keys))

    if cli_has("kit"):
        # The kit step saved one kit (the second run found nothing changed), signed and trusted.
        kits = _listing(seaweed, bucket, keys, "kit", "list")
        assert [k["trusted"] for k in kits] == [True], kits
        paths = {f["path"] for f in kits[0]["manifest"]["files"]}
        assert {"ca.key", "etcd/ca.key", "sa.key"} <= {p.split("pki/", 1)[-1] for p in paths}, paths


def test_sigterm_mid_upload_through_tini_leaves_nothing_behind(chart: Any, cluster: ControlPlane, seaweed: SeaweedS3,
                                                               keys: Path, tmp_path: Path) -> None:
    """The kubelet's SIGTERM (deadline, drain, Job deletion) reaches tini, PID 1 of the pod, which
    forwards it to etcdguard: the upload in flight is aborted, nothing partial stays in the store or
    in /tmp, and it exits 130 within the chart's termination grace period."""
    import psutil

    from tests.integration.snapshot_fixtures import fill_random

    with cluster.client() as client:
        fill_random(client, 64)
    bucket = seaweed.create_bucket("helm-sigterm")
    docs = render(chart, _values(cluster, seaweed, bucket))
    pod = pod_spec(one(docs, "CronJob", FULLNAME))
    grace = pod["terminationGracePeriodSeconds"]
    snapshot = steps(pod)[0]
    assert snapshot["name"] == "snapshot"
    kubelet = FakeKubelet(tmp_path / "pods", docs, _secrets(keys, seaweed))
    argv, env = kubelet.command("sigterm", pod, snapshot)
    s3 = seaweed.client()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"):
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no upload in flight"
            time.sleep(0.05)
        # PID 1 of the pod: tini (the child of unshare when there is a PID namespace).
        tini = psutil.Process(psutil_child_tini(proc.pid))
        assert Path(tini.exe()).name.startswith("tini"), tini.exe()
        tini.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=grace)  # the kubelet would SIGKILL after the grace period
        output = proc.communicate()[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130, output
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    keys_left = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert not [k for k in keys_left if k.endswith("snapshot.db.zst.age")
                and k.replace("snapshot.db.zst.age", "manifest.json") not in keys_left], keys_left
    tmp = tmp_path / "pods" / "sigterm" / "volumes" / "tmp"
    assert not _scratch(tmp), "files left in the pod's /tmp"
    journals = list((tmp / "etcdguard-state").glob("journal/*"))
    assert all(b"AWS_SECRET" not in j.read_bytes() for j in journals if j.is_file())


def _scratch(tmp: Path) -> list[Path]:
    """What a run left in the pod's /tmp besides its step journals (ETCDGUARD_STATE_DIR)."""
    return [p for p in tmp.iterdir() if p.name != "etcdguard-state"]


def _free_port() -> int:
    """A free port on 127.0.0.1 below the ephemeral range."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_serve_container_answers_its_probes(chart: Any, cluster: ControlPlane, keys: Path, tmp_path: Path) -> None:
    """The Deployment's container, as rendered, serves the probe paths on the probe port, passes
    the image's HEALTHCHECK command, and exits 0 on SIGTERM (through tini)."""
    port = _free_port()
    values = {
        "mode": "serve", "serve": {"port": port, "listen": f"127.0.0.1:{port}"},
        **_kit_values(cluster),
        "hostStore": {"enabled": True, "path": str(tmp_path / "backups")},
        "config": {"etcd": {"endpoints": cluster.endpoints}, "service": {"snapshot_cron": "0 0 1 1 *"}},
    }
    docs = render(chart, values)
    pod = pod_spec(one(docs, "Deployment"))
    (container,) = pod["containers"]
    key_files = {n: (keys / n).read_text() for n in ("recipient.txt", "signing.key", "signing.pub")}
    kubelet = FakeKubelet(tmp_path / "pods", docs, {KEYS_SECRET: key_files})
    argv, env = kubelet.command("serve", pod, container)
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
        try:
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            probes = {name: container[name]["httpGet"] for name in ("livenessProbe", "readinessProbe")}
            deadline = time.monotonic() + 60
            status: dict[str, int] = {}
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    status = {n: _get(f"http://127.0.0.1:{ports[p['port']]}{p['path']}") for n, p in probes.items()}
                except OSError:
                    status = {}
                if status and all(code == 200 for code in status.values()):
                    break
                time.sleep(0.3)
            assert proc.poll() is None, log_path.read_text()
            assert status == {"livenessProbe": 200, "readinessProbe": 200}, log_path.read_text()
            health = next(a for op, a in dockerfile_instructions() if op == "HEALTHCHECK")
            check = json.loads(health[health.index("CMD") + 3:].strip())
            assert check[0] == "python"
            check = [sys.executable, *[a.replace("9479", str(port)) for a in check[1:]]]
            assert subprocess.run(check, timeout=30, check=False).returncode == 0
        finally:
            tini = psutil_child_tini(proc.pid)
            os.kill(tini, signal.SIGTERM)
            try:
                code = proc.wait(timeout=pod["terminationGracePeriodSeconds"])
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    assert code == 0, log_path.read_text()


def psutil_child_tini(pid: int) -> int:
    """The pid of tini: ``pid`` itself, or unshare's child in a PID namespace."""
    import psutil

    proc = psutil.Process(pid)
    if Path(proc.exe()).name == "unshare":
        proc = proc.children()[0]
    return int(proc.pid)


def test_dual_stack_listener_answers_on_ipv6_loopback() -> None:
    """An IPv6 listen address (the chart's default is ``[::]:port``) binds an IPv6 socket."""
    from etcdguard.service.http import Endpoints, HttpServer

    if not socket.has_ipv6:
        missing("no IPv6 on this host")
    port = _free_port()
    ok = (200, {"ok": True})
    server = HttpServer(f"[::1]:{port}", Endpoints(lambda: ok, lambda: ok, lambda: b"", lambda: ok, lambda: ok))
    server.start()
    try:
        assert server.address == f"[::1]:{port}"
        assert _get(f"http://[::1]:{port}/healthz") == 200
    finally:
        server.stop()


def _zombies_under_pid_1(argv: list[str], marker: Path) -> list[Any]:
    """Run argv as PID 1 of a new PID namespace; its main process leaves an orphan that exits
    after 0.5 s. Returns the zombies left in the namespace after that (waiting up to 5 s for them
    to be reaped)."""
    import psutil

    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", *argv])
    try:
        deadline = time.monotonic() + 30
        while not (marker.exists() and marker.read_text().strip()):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        pid_one = psutil.Process(psutil.Process(proc.pid).children()[0].pid)
        deadline = time.monotonic() + 30
        while any(p.name() == "sleep" and p.status() != psutil.STATUS_ZOMBIE
                  for p in pid_one.children(recursive=True)):  # the orphan still runs
            assert time.monotonic() < deadline
            time.sleep(0.05)
        settle = time.monotonic() + 5  # PID 1 gets SIGCHLD; a reaper needs moments, not seconds
        while True:
            zombies = [p for p in pid_one.children(recursive=True) if p.status() == psutil.STATUS_ZOMBIE]
            if not zombies or time.monotonic() > settle:
                return zombies
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.wait()


def test_tini_reaps_orphans_as_pid_1(tmp_path: Path) -> None:
    """With the image's entrypoint as PID 1 of a PID namespace, a child orphaned by its parent (a
    sandbox etcd whose etcdguard died, say) is reaped when it exits; with the Python process
    itself as PID 1, it stays a zombie."""
    from tests.support.fake_kubelet import pid_namespace_available

    if not pid_namespace_available():
        missing("no PID namespaces here (unshare --pid needs root or user namespaces)")
    tini = shutil.which("tini")
    if tini is None:
        missing("tini is not installed (apt-get install tini)")
    entry = image_entrypoint()
    assert entry[:3] == ["tini", "-g", "--"]
    results = {}
    for name, prefix in (("tini", [tini, *entry[1:3]]), ("python", [])):
        marker = tmp_path / f"{name}.pid"
        code = ("import subprocess, time; "
                f"subprocess.run(['sh', '-c', 'sleep 0.5 & echo $! > {marker}'], check=True); time.sleep(30)")
        results[name] = _zombies_under_pid_1([*prefix, sys.executable, "-c", code], marker)
    assert results["tini"] == []
    assert len(results["python"]) == 1, "the check must see a zombie when nobody reaps"
