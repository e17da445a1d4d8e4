"""`etcdguard restore` on a kubeadm node (static pods run by the kubelet stand-in), end to end."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest

from etcdguard.backup.keys import generate_keys
from etcdguard.restore.fencing import port_open
from tests.integration.restore_fixtures import (
    Setup,
    cli_env,
    keys_with_prefix,
    kubeadm_node,
    node_tls,
    wait_serving,
    write_config,
)
from tests.integration.snapshot_fixtures import CLI, require_etcd
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
        # the disaster: the db is destroyed; etcd crash-loops under the kubelet
        db = node.etcd_data_dir / "member" / "snap" / "db"
        (node.manifests_dir / "etcd.yaml").rename(tmp_path / "etcd.yaml")
        deadline = time.monotonic() + 30
        while kubelet.running("etcd.yaml") and time.monotonic() < deadline:
            time.sleep(0.1)
        db.write_bytes(b"\0" * 4096)
        (tmp_path / "etcd.yaml").rename(node.manifests_dir / "etcd.yaml")

        result = s.run("restore", "--yes", "--backup", "latest")
        print(result.stderr)
        assert result.returncode == 0, result.stderr
        for step in ("fetch", "preflight", "stop-apiserver", "stop-etcd", "move-aside", "restore-snapshot",
                     "fence", "start-etcd", "wait-healthy", "post-checks", "clean-masterleases", "start-apiserver"):
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
        assert port_open("127.0.0.1", node.apiserver_port)
        assert kubelet.running("kube-apiserver.yaml")
        assert not list((s.state_dir).glob("*/snapshot.db"))  # no decrypted copy left behind
