"""`etcdguard restore` on a kubeadm node (static pods run by the kubelet stand-in), end to end."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from etcdguard.backup.keys import generate_keys
from etcdguard.etcd.datadir import wal_ids
from etcdguard.restore.fencing import port_open
from etcdguard.steps import Journal
from tests.integration.restore_fixtures import (
    Setup,
    cli_env,
    destroy_db,
    keys_with_prefix,
    kubeadm_node,
    node_tls,
    wait_serving,
    write_config,
)
from tests.integration.snapshot_fixtures import CLI, require_etcd
from tests.support import crictl
from tests.support.seaweed import SeaweedS3

pytestmark = pytest.mark.integration

SECRET = b"k8s:enc:aescbc:v1:key1:" + secrets.token_bytes(48)


def _setup(tmp_path: Path, seaweed: SeaweedS3, bucket: str, node_endpoint: str, tls: tuple[Path, Path, Path],
           manifests: Path) -> Setup:
    keys = generate_keys(tmp_path / "keys")
    home = tmp_path / "home"
    home.mkdir()
    ca, cert, key = tls
    state = tmp_path / "state"
    config = write_config(tmp_path / "etcdguard.yaml", store=bucket, seaweed=seaweed, keys=keys, cluster="cp",
                          state_dir=state, etcd={"endpoints": [node_endpoint], "cacert": str(ca), "cert": str(cert),
                                                 "key": str(key)},
                          restore={"manifests_dir": str(manifests)})
    return Setup(config, keys, CLI(home, cli_env(seaweed)), state)


def test_single_node_kubeadm_restore_from_s3(tmp_path: Path, s3_bucket: tuple[SeaweedS3, str]) -> None:
    require_etcd("3.5.16")
    seaweed, bucket = s3_bucket
    with kubeadm_node(tmp_path / "node") as (node, kubelet):
        s = _setup(tmp_path, seaweed, bucket, node.etcd_endpoint, node.etcd_client_tls, node.manifests_dir)
        tls = node_tls(node)
        with wait_serving(node.etcd_endpoint, tls) as c:
            c.put(b"/registry/secrets/default/db-password", SECRET)
            c.put(b"/registry/pods/default/web", b"pod")
            c.put(b"/registry/masterleases/10.0.0.9", b"stale")
            before_rev = c.status().revision
        snap = s.run("snapshot")
        assert snap.returncode == 0, snap.stderr
        with wait_serving(node.etcd_endpoint, tls) as c:
            c.put(b"/registry/pods/default/after-backup", b"lost")
        destroy_db(node, kubelet, tmp_path / "etcd.yaml")  # the disaster: etcd crash-loops under the kubelet

        result = s.run("restore", "--yes", "--backup", "latest")
        assert result.returncode == 0, result.stderr
        for step in ("fetch", "preflight", "restore-snapshot", "stop-apiserver", "stop-etcd", "move-aside",
                     "swap-in", "fence", "start-etcd", "clean-staging", "wait-healthy", "post-checks",
                     "clean-masterleases", "start-apiserver"):
            assert step in result.stderr
        assert "(c) restore from the backup" in result.stderr

        with wait_serving(node.etcd_endpoint, tls) as c:
            assert c.get(b"/registry/secrets/default/db-password") == SECRET
            assert c.get(b"/registry/pods/default/web") == b"pod"
            assert c.get(b"/registry/pods/default/after-backup") is None
            assert keys_with_prefix(c, b"/registry/masterleases/") == []
            assert c.status().revision >= before_rev + 1_000_000_000
        kept = list(node.etcd_data_dir.parent.glob("etcd.etcdguard-old-*"))
        assert len(kept) == 1 and (kept[0] / "member" / "snap" / "db").read_bytes() == b"\0" * 4096
        assert sorted(p.name for p in node.manifests_dir.iterdir()) == ["etcd.yaml", "kube-apiserver.yaml"]
        # the restored manifest names the new token: a new static pod, not the crash-looping one
        (journal,) = (s.state_dir / "journal").glob("restore-*.json")
        token = json.loads(journal.read_text())["params"]["plan"]["token"]
        assert f"--initial-cluster-token={token}" in (node.manifests_dir / "etcd.yaml").read_text()
        assert port_open("127.0.0.1", node.apiserver_port)
        assert kubelet.running("kube-apiserver.yaml")
        assert not list((s.state_dir).glob("*/snapshot.db"))  # no decrypted copy left behind

        # the restored cluster has a new id: the old cluster's backups do not count for it until
        # a backup of its own is taken, as the next steps say
        assert "take a backup of the restored cluster now" in result.stderr
        stale = s.run("check")
        assert stale.returncode == 2 and "CRITICAL backup_age: no backup found" in stale.stdout, stale.stdout
        assert s.run("snapshot").returncode == 0
        fresh = s.run("check")
        assert "backup_age" not in fresh.stdout and fresh.returncode == 1, fresh.stdout  # not verified yet


def _state(node_root: Path, manifests: Path) -> tuple[list[str], list[str]]:
    """What a refused restore must not change: the manifests dir and the data dirs beside etcd's."""
    return (sorted(p.name for p in manifests.iterdir()),
            sorted(p.name for p in (node_root / "var" / "lib").iterdir()))


def test_guardrails_refuse_before_any_change(tmp_path: Path, s3_bucket: tuple[SeaweedS3, str]) -> None:
    require_etcd("3.5.16")
    seaweed, bucket = s3_bucket
    with kubeadm_node(tmp_path / "node") as (node, _kubelet):
        s = _setup(tmp_path, seaweed, bucket, node.etcd_endpoint, node.etcd_client_tls, node.manifests_dir)
        tls = node_tls(node)
        with wait_serving(node.etcd_endpoint, tls) as c:
            c.put(b"/registry/secrets/default/s", SECRET)
        assert s.run("snapshot").returncode == 0
        before = _state(node.root, node.manifests_dir)

        healthy = s.run("restore", "--yes")
        assert healthy.returncode == 10, healthy.stderr
        assert "error: refusing to restore" in healthy.stderr and "quorum" in healthy.stderr

        # a tampered object: exit 6 from the fetch, before anything is stopped, --force or not
        s3 = seaweed.client()
        objects = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
        stored = next(k for k in objects if k.endswith(".age"))
        body = bytearray(s3.get_object(Bucket=bucket, Key=stored)["Body"].read())
        body[len(body) // 2] ^= 0xFF
        s3.put_object(Bucket=bucket, Key=stored, Body=bytes(body))
        tampered = s.run("restore", "--yes", "--force", "--backup", "latest")
        assert tampered.returncode == 6, tampered.stderr
        assert "ok stop-apiserver" not in tampered.stderr and "error: backup" in tampered.stderr

        # the apiserver's config lacks the key the backup's Secrets were encrypted with
        assert s.run("snapshot").returncode == 0
        node.encryption_config.write_text(node.encryption_config.read_text().replace("key1", "key2"))
        nokey = s.run("restore", "--yes", "--force", "--backup", "latest")
        assert nokey.returncode == 10, nokey.stderr
        assert "encryption keys" in nokey.stderr and "key1" in nokey.stderr

        assert _state(node.root, node.manifests_dir) == before
        with wait_serving(node.etcd_endpoint, tls) as c:
            assert c.get(b"/registry/secrets/default/s") == SECRET


def test_crash_at_every_step_boundary_then_resume_and_rollback(tmp_path: Path,
                                                                s3_bucket: tuple[SeaweedS3, str]) -> None:
    require_etcd("3.5.16")
    seaweed, bucket = s3_bucket
    steps = ["fetch", "preflight", "restore-snapshot", "emergency-snapshot", "stop-apiserver", "stop-etcd",
             "move-aside", "swap-in", "fence", "start-etcd", "clean-staging", "wait-healthy", "post-checks",
             "clean-masterleases", "start-apiserver"]
    with kubeadm_node(tmp_path / "node") as (node, _kubelet):
        s = _setup(tmp_path, seaweed, bucket, node.etcd_endpoint, node.etcd_client_tls, node.manifests_dir)
        tls = node_tls(node)
        with wait_serving(node.etcd_endpoint, tls) as c:
            c.put(b"/registry/pods/default/kept", b"v")
        assert s.run("snapshot").returncode == 0

        # the staged snapshot is damaged after the fetch (disk, or someone with access): the trailer
        # check beside snapshot restore refuses it before anything is changed
        crashed = s.run("restore", "--yes", "--force", "--backup", "latest",
                        env={"ETCDGUARD_TEST_CRASH_AFTER_STEP": "fetch"})
        assert crashed.returncode == -9, crashed.stderr
        (staged,) = s.state_dir.glob("*/snapshot.db")
        with staged.open("r+b") as f:
            f.seek(staged.stat().st_size // 2)
            byte = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([byte[0] ^ 0xFF]))
        damaged = s.run("restore", "--resume")
        assert damaged.returncode == 6, damaged.stderr
        assert "sha256 trailer" in damaged.stderr and "nothing was changed" in damaged.stderr
        assert not list((node.root / "var" / "lib").glob("etcd.etcdguard-*"))
        with wait_serving(node.etcd_endpoint, tls) as c:
            assert c.get(b"/registry/pods/default/kept") == b"v"

        for step in steps:
            with wait_serving(node.etcd_endpoint, tls) as c:
                c.put(b"/registry/pods/default/after-backup", b"lost")
            crashed = s.run("restore", "--yes", "--force", "--backup", "latest",
                            env={"ETCDGUARD_TEST_CRASH_AFTER_STEP": step})
            assert crashed.returncode == -9, (step, crashed.stderr)
            again = s.run("restore", "--yes", "--force", "--backup", "latest")
            assert (again.returncode == 10 and "--resume" in again.stderr) or step in (
                "fetch", "preflight", "restore-snapshot", "emergency-snapshot"), (step, again.stderr)
            new_dirs = (node.root / "var" / "lib").glob("etcd.etcdguard-new-*")
            if again.returncode == 0:  # nothing had changed: the new run did the whole restore
                assert not list(new_dirs), step  # and removed what the superseded run had restored
                continue
            resumed = s.run("restore", "--resume")
            assert resumed.returncode == 0, (step, resumed.stderr)
            assert not list(new_dirs), step
            with wait_serving(node.etcd_endpoint, tls) as c:
                assert c.get(b"/registry/pods/default/kept") == b"v", step
                assert c.get(b"/registry/pods/default/after-backup") is None, step
                assert c.status().revision > 1_000_000_000
            assert sorted(p.name for p in node.manifests_dir.iterdir()) == ["etcd.yaml", "kube-apiserver.yaml"]
            for kept in (node.root / "var" / "lib").glob("etcd.etcdguard-old-*"):
                shutil.rmtree(kept)  # etcdguard never deletes them; the test does, to bound its disk use
            shutil.rmtree(s.state_dir / "emergency", ignore_errors=True)

        # rollback after the restored member started: the old member and its data come back
        with wait_serving(node.etcd_endpoint, tls) as c:
            c.put(b"/registry/pods/default/before-rollback", b"old")
            old_rev = c.status().revision
        crashed = s.run("restore", "--yes", "--force", "--backup", "latest",
                        env={"ETCDGUARD_TEST_CRASH_AFTER_STEP": "start-etcd"})
        assert crashed.returncode == -9
        rolled = s.run("restore", "--rollback")
        assert rolled.returncode == 0, rolled.stderr
        assert "rolled back" in rolled.stderr
        with wait_serving(node.etcd_endpoint, tls) as c:
            assert c.get(b"/registry/pods/default/before-rollback") == b"old"
            assert c.status().revision == old_rev
        assert sorted(p.name for p in node.manifests_dir.iterdir()) == ["etcd.yaml", "kube-apiserver.yaml"]
        assert port_open("127.0.0.1", node.apiserver_port) or _wait_port(node.apiserver_port)
        restored_aside = list((node.root / "var" / "lib").glob("etcd.etcdguard-restored-*"))
        assert len(restored_aside) == 1  # the restored data is kept aside too, never deleted


def _wait_port(port: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open("127.0.0.1", port):
            return True
        time.sleep(0.2)
    return False


def test_wal_dir_restored_in_place_and_rolled_back(tmp_path: Path, s3_bucket: tuple[SeaweedS3, str]) -> None:
    require_etcd("3.5.16")
    seaweed, bucket = s3_bucket
    with kubeadm_node(tmp_path / "node", wal_dir=True) as (node, kubelet):
        wal, data, lib = node.etcd_wal_dir, node.etcd_data_dir, node.root / "var" / "lib"
        assert wal is not None and list(wal.glob("*.wal")) and not (data / "member" / "wal").exists()
        s = _setup(tmp_path, seaweed, bucket, node.etcd_endpoint, node.etcd_client_tls, node.manifests_dir)
        tls = node_tls(node)
        with wait_serving(node.etcd_endpoint, tls) as c:
            c.put(b"/registry/pods/default/web", b"pod")
            before_rev = c.status().revision
        assert s.run("snapshot").returncode == 0
        with wait_serving(node.etcd_endpoint, tls) as c:
            c.put(b"/registry/pods/default/after-backup", b"lost")
        old_wal_id = wal_ids(wal)[0]
        destroy_db(node, kubelet, tmp_path / "etcd.yaml")

        result = s.run("restore", "--yes", "--backup", "latest")
        assert result.returncode == 0, result.stderr
        with wait_serving(node.etcd_endpoint, tls) as c:
            assert c.get(b"/registry/pods/default/web") == b"pod"
            assert c.get(b"/registry/pods/default/after-backup") is None
            assert c.status().revision >= before_rev + 1_000_000_000
            (member,) = c.member_list()
        # the new member's WAL is in the wal dir (etcdutl got --wal-dir), none in the data dir
        assert wal_ids(wal)[0] == member.id != old_wal_id
        assert list(wal.glob("*.wal")) and not (data / "member" / "wal").exists()
        # the old data and wal dirs are kept beside each other, with one timestamp
        (old_data,) = lib.glob("etcd.etcdguard-old-*")
        (old_wal,) = lib.glob("etcd-wal.etcdguard-old-*")
        assert old_data.name.rsplit("-", 1)[1] == old_wal.name.rsplit("-", 1)[1]
        assert (old_data / "member" / "snap" / "db").read_bytes() == b"\0" * 4096
        assert wal_ids(old_wal)[0] == old_wal_id

        # killed once the restored data and wal dirs took the old ones' place (swap-in), then --rollback:
        # the data and wal dirs of the member before are back
        with wait_serving(node.etcd_endpoint, tls) as c:
            c.put(b"/registry/pods/default/before-rollback", b"old")
            old_rev = c.status().revision
        crashed = s.run("restore", "--yes", "--force", "--backup", "latest",
                        env={"ETCDGUARD_TEST_CRASH_AFTER_STEP": "swap-in"})
        assert crashed.returncode == -9, crashed.stderr
        assert wal_ids(wal)[0] != member.id  # the crashed run had restored a new member in place
        rolled = s.run("restore", "--rollback")
        assert rolled.returncode == 0, rolled.stderr
        with wait_serving(node.etcd_endpoint, tls) as c:
            assert c.get(b"/registry/pods/default/before-rollback") == b"old"
            assert c.status().revision == old_rev
        assert wal_ids(wal)[0] == member.id and not (data / "member" / "wal").exists()
        assert len(list(lib.glob("etcd.etcdguard-restored-*"))) == 1
        (restored_wal,) = lib.glob("etcd-wal.etcdguard-restored-*")
        assert wal_ids(restored_wal)[0] not in (member.id, old_wal_id)
        assert len(list(lib.glob("etcd-wal.etcdguard-old-*"))) == 1  # the first restore's, still kept
        assert sorted(p.name for p in node.manifests_dir.iterdir()) == ["etcd.yaml", "kube-apiserver.yaml"]


def _hold_port(port: int, until: threading.Event) -> threading.Thread:
    """Bind 127.0.0.1:port as soon as it is free and listen on it until ``until`` is set."""
    def hold() -> None:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            while not until.is_set():
                try:
                    sock.bind(("127.0.0.1", port))
                    break
                except OSError:
                    time.sleep(0.05)
            sock.listen()
            until.wait(120)
    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread


def test_restore_waits_until_crictl_lists_no_etcd_and_shows_restarts(tmp_path: Path,
                                                                      s3_bucket: tuple[SeaweedS3, str]) -> None:
    require_etcd("3.5.16")
    seaweed, bucket = s3_bucket
    bin_dir = tmp_path / "bin"
    # the runtime lists a stopped pod's container as running 2s after its ports closed
    with kubeadm_node(tmp_path / "node", crictl_bin=bin_dir, crictl_linger=2.0) as (node, kubelet):
        s = _setup(tmp_path, seaweed, bucket, node.etcd_endpoint, node.etcd_client_tls, node.manifests_dir)
        s.cli.extra_env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
        tls = node_tls(node)
        with wait_serving(node.etcd_endpoint, tls) as c:
            c.put(b"/registry/pods/default/web", b"pod")
        assert s.run("snapshot").returncode == 0
        old_pod = kubelet.pods["etcd.yaml"]
        # a leftover process takes etcd's metrics port once the old etcd is stopped: the restored etcd
        # exits at start (address in use) until the port is free again
        release = threading.Event()
        holder = _hold_port(node.metrics_port, release)

        def free_after_two_restarts() -> None:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                pod = kubelet.pods.get("etcd.yaml")
                if pod is not None and pod is not old_pod and pod.starts >= 3:
                    break
                time.sleep(0.05)
            release.set()

        watcher = threading.Thread(target=free_after_two_restarts, daemon=True)
        watcher.start()
        try:
            result = s.run("restore", "--yes", "--force", "--backup", "latest")
        finally:
            release.set()
            watcher.join(10)
            holder.join(10)
        assert result.returncode == 0, result.stderr
        restored_pod = kubelet.pods["etcd.yaml"]
        assert restored_pod is not old_pod and restored_pod.starts >= 3
        m = re.search(r"etcd restarted (\d+) times while it rebuilt", result.stderr)
        assert m is not None, result.stderr
        assert int(m.group(1)) == restored_pod.starts - 1  # the attempt crictl shows for the serving container
        with wait_serving(node.etcd_endpoint, tls) as c:
            assert c.get(b"/registry/pods/default/web") == b"pod"

        # stop-etcd went on only once crictl listed no running etcd container (its ports had closed before)
        journal = _journal(s)
        stop, moved = journal.record("stop-etcd"), journal.record("move-aside")
        assert stop is not None and moved is not None and stop.started_at is not None
        asked = [c for c in crictl.calls(kubelet.crictl_state) if c["args"] == ["ps", "-q", "--name", "^etcd$"]
                 and c["time"] >= stop.started_at]
        listed = [c for c in asked if c["ids"]]
        gone = [c for c in asked if not c["ids"]]
        assert listed and gone and listed[-1]["time"] < gone[0]["time"], asked
        assert moved.started_at is not None and moved.started_at >= gone[0]["time"]


def _journal(s: Setup) -> Journal:
    (path,) = Journal.find(s.state_dir / "journal", "restore")
    return Journal.load(path)
