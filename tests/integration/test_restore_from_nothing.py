"""A single control-plane node that lost everything comes back: kit first, then etcd's data.

The kubelet stand-in keeps running throughout, as on a real node: once ``etcdguard kit restore``
puts the static pod manifests back, it starts etcd on an empty data dir, and ``etcdguard restore``
must recognise that empty etcd and restore the backup into it without --force.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

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
from tests.support.kubeadm import KubeadmNode

pytestmark = pytest.mark.integration

DATA = {b"/registry/pods/default/web": b"pod", b"/registry/configmaps/default/settings": b"x" * 2048,
        b"/registry/services/specs/default/api": b"svc"}


def _wait(condition: object, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not callable(condition) or not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _issue_etcd_leaves(node: KubeadmNode) -> None:
    """What ``kubeadm init phase certs all`` does for etcd: new leaves signed by the restored etcd CA."""
    ca_dir = node.etcd_pki_dir
    cert = x509.load_pem_x509_certificate((ca_dir / "ca.crt").read_bytes())
    key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    node._store_ca("etcd", cert, key)  # type: ignore[arg-type]
    names, ips = sorted({node.name, "localhost"}), sorted({node.ip, "127.0.0.1", "::1"})
    for stem in ("etcd/server", "etcd/peer"):
        node.issue_leaf("etcd", node.pki_dir / stem, common_name=node.name, dns=names, ips=ips, server=True)
    node.issue_leaf("etcd", node.pki_dir / "etcd/healthcheck-client", common_name="kube-etcd-healthcheck-client")
    node.issue_leaf("etcd", node.pki_dir / "apiserver-etcd-client", common_name="kube-apiserver-etcd-client")


def test_node_restored_from_nothing_with_kit_then_backup(tmp_path: Path) -> None:
    require_etcd("3.5.16")
    with kubeadm_node(tmp_path / "node") as (node, kubelet):
        keys = generate_keys(tmp_path / "keys")
        home = tmp_path / "home"
        home.mkdir()
        ca, cert, key = node.etcd_client_tls
        config = write_config(tmp_path / "etcdguard.yaml", store=str(tmp_path / "store"), seaweed=None, keys=keys,
                              cluster="cp", state_dir=tmp_path / "state",
                              etcd={"endpoints": [node.etcd_endpoint], "cacert": str(ca), "cert": str(cert),
                                    "key": str(key)},
                              restore={"manifests_dir": str(node.manifests_dir)})
        s = Setup(config, keys, CLI(home, cli_env(None)), tmp_path / "state")
        tls = node_tls(node)
        with wait_serving(node.etcd_endpoint, tls) as c:
            for k, v in DATA.items():
                c.put(k, v)
        snap = s.run("snapshot")
        assert snap.returncode == 0, snap.stderr
        kit = s.run("kit", "save", "--pki-dir", str(node.pki_dir), "--manifests-dir", str(node.manifests_dir),
                    "--kubeadm-config", str(node.kubeadm_config), "-o", "json")
        assert kit.returncode == 0, kit.stderr

        # the disaster: every pod stops, PKI, manifests and etcd's data are gone
        shutil.rmtree(node.manifests_dir)
        _wait(lambda: not kubelet.running("etcd.yaml") and not kubelet.running("kube-apiserver.yaml"), "pods to stop")
        shutil.rmtree(node.pki_dir)
        shutil.rmtree(node.etcd_data_dir)

        nothing = s.run("restore", "--yes")
        assert nothing.returncode == 3, nothing.stderr
        assert "restore the control-plane kit first" in nothing.stderr and "etcdguard kit restore" in nothing.stderr

        restored = s.run("kit", "restore", "latest", "--identity", str(keys.identity), "--yes")
        assert restored.returncode == 0, restored.stderr
        assert "etcdguard restore --yes" in restored.stdout and "empty" in restored.stdout
        assert (node.manifests_dir / "etcd.yaml").exists() and (node.pki_dir / "etcd" / "ca.key").exists()
        _issue_etcd_leaves(node)
        # the kubelet starts etcd from the restored manifest, on an empty data dir
        with wait_serving(node.etcd_endpoint, tls) as c:
            assert c.status().revision == 1
            assert keys_with_prefix(c, b"/registry/") == []

        result = s.run("restore", "--yes")
        assert result.returncode == 0, result.stderr
        assert "(c) restore from the backup" in result.stderr and "empty (revision 1)" in result.stderr
        with wait_serving(node.etcd_endpoint, tls) as c:
            assert {k: c.get(k) for k in keys_with_prefix(c, b"/registry/")} == DATA
            assert c.status().revision > 1_000_000_000
        _wait(lambda: kubelet.running("kube-apiserver.yaml") and port_open("127.0.0.1", node.apiserver_port),
              "the apiserver stand-in")
