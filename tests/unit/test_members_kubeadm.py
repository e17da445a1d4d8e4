"""A new member's kubeadm static pod manifest, and its certificates checked before it is added."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from etcdguard.errors import ConfigError
from etcdguard.members.certs import check_member_certificates, require_good
from etcdguard.members.manifest import ADVERTISE_ANNOTATION, derive_manifest
from tests.support.kubeadm import make_kubeadm_node

OLD_IP, NEW_IP = "10.0.0.11", "10.0.0.14"
NEW_PEER = f"https://{NEW_IP}:2380"
INITIAL = f"cp1=https://{OLD_IP}:2380,cp2=https://10.0.0.12:2380,cp4={NEW_PEER}"


def flags(command: list[str]) -> dict[str, str]:
    return dict(a.partition("=")[::2] for a in command[1:])


def test_manifest_for_the_new_member_moves_every_address_and_keeps_the_rest(tmp_path: Path) -> None:
    node = make_kubeadm_node(tmp_path / "cp1", name="cp1", ip=OLD_IP, extra_etcd_flags=["--force-new-cluster"])
    source = node.etcd_manifest.read_text()
    derived = derive_manifest(source, name="cp4", peer_url=NEW_PEER, initial_cluster=INITIAL)
    pod = yaml.safe_load(derived.text)
    container = pod["spec"]["containers"][0]
    f = flags(container["command"])
    assert f["--name"] == "cp4"
    assert f["--initial-cluster"] == INITIAL and f["--initial-cluster-state"] == "existing"
    assert f["--initial-advertise-peer-urls"] == NEW_PEER and f["--listen-peer-urls"] == NEW_PEER
    assert f["--advertise-client-urls"] == f"https://{NEW_IP}:2379"
    assert f["--listen-client-urls"] == f"https://127.0.0.1:2379,https://{NEW_IP}:2379"
    assert f["--listen-metrics-urls"] == "http://127.0.0.1:2381"
    assert "--force-new-cluster" not in f
    assert pod["metadata"]["annotations"][ADVERTISE_ANNOTATION] == f"https://{NEW_IP}:2379"
    # every IP-bearing flag and the annotation were rewritten (the initial cluster names cp1 rightly)
    assert OLD_IP not in derived.text.replace(INITIAL, "")
    old = yaml.safe_load(source)["spec"]
    assert pod["spec"]["volumes"] == old["volumes"]  # same data dir path: it must be empty on the new node
    assert f["--data-dir"] == flags(old["containers"][0]["command"])["--data-dir"] == derived.data_dir
    assert container["livenessProbe"] == old["containers"][0]["livenessProbe"]  # probes stay on 127.0.0.1
    assert (derived.source_host, derived.new_host) == (OLD_IP, NEW_IP)


def test_a_manifest_without_etcd_is_refused() -> None:
    with pytest.raises(ConfigError, match="no container running etcd"):
        derive_manifest("apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: x\n    command: [sh]\n",
                        name="a", peer_url=NEW_PEER, initial_cluster="a=" + NEW_PEER)


def test_certificates_signed_by_the_etcd_ca_with_the_new_address_pass(tmp_path: Path) -> None:
    node = make_kubeadm_node(tmp_path / "cp1", name="cp1", ip=OLD_IP)
    peer = node.issue_leaf("etcd", tmp_path / "peer", common_name="cp4", ips=[NEW_IP], dns=["cp4"],
                           server=True, client=True)
    server = node.issue_leaf("etcd", tmp_path / "server", common_name="cp4", ips=[NEW_IP, "127.0.0.1"],
                             dns=["cp4"], server=True, client=True)
    checks = check_member_certificates(node.etcd_pki_dir / "ca.crt", peer_cert=peer.cert_path,
                                       server_cert=server.cert_path, peer_host=NEW_IP, client_hosts=[NEW_IP])
    assert [c.ok for c in checks] == [True, True]
    require_good(checks)


def test_a_wrong_san_or_a_foreign_ca_is_named_before_anything_changes(tmp_path: Path) -> None:
    node = make_kubeadm_node(tmp_path / "cp1", name="cp1", ip=OLD_IP)
    other = make_kubeadm_node(tmp_path / "other", name="x", ip=OLD_IP)
    old_peer = node.pki_dir / "etcd" / "peer.crt"  # the old node's certificate: its IP, not the new one
    foreign = other.issue_leaf("etcd", tmp_path / "foreign", common_name="cp4", ips=[NEW_IP], server=True)
    checks = check_member_certificates(node.etcd_pki_dir / "ca.crt", peer_cert=old_peer, server_cert=foreign.cert_path,
                                       peer_host=NEW_IP, client_hosts=[NEW_IP])
    assert [c.ok for c in checks] == [False, False]
    assert any(f"do not include {NEW_IP}" in p for p in checks[0].problems)
    assert any("not signed by the etcd CA" in p for p in checks[1].problems)
    with pytest.raises(ConfigError, match="could not join"):
        require_good(checks)
