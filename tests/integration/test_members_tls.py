"""`member add`/`replace` on a TLS cluster with kubeadm-shaped PKI: certificate checks, --manifest-out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from etcdguard.etcd.client import MemberClient
from tests.integration.members_helpers import etcdguard, free_etcd_data, new_peer_url
from tests.support.etcd_cluster import EtcdCluster, etcd_cluster, installation
from tests.support.kubeadm import KubeadmNode, make_kubeadm_node
from tests.support.require import missing
from tests.support.tls import TLSBundle

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def kubeadm_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KubeadmNode, EtcdCluster]]:
    if installation("3.5.16") is None:
        missing("etcd 3.5.16 is not installed (scripts/install-test-deps.sh)")
    root = tmp_path_factory.mktemp("kubeadm")
    node = make_kubeadm_node(root / "cp1", name="cp1")
    pki = node.pki_dir
    bundle = TLSBundle(ca=pki / "etcd" / "ca.crt", server_cert=pki / "etcd" / "server.crt",
                       server_key=pki / "etcd" / "server.key", client_cert=pki / "apiserver-etcd-client.crt",
                       client_key=pki / "apiserver-etcd-client.key", other_ca=pki / "front-proxy-ca.crt")
    with etcd_cluster(root / "etcd", "3.5.16", size=1, tls=bundle) as cluster:
        yield node, cluster
    free_etcd_data(root)


def tls_flags(node: KubeadmNode, cluster: EtcdCluster) -> list[str]:
    ca, cert, key = node.etcd_client_tls
    return ["--endpoints", cluster.endpoints[0], "--cacert", str(ca), "--cert", str(cert), "--key", str(key)]


def member_ids(cluster: EtcdCluster) -> list[int]:
    with MemberClient(cluster.endpoints[0], tls=cluster.tls_files, timeout=5) as c:
        return sorted(m.id for m in c.member_list())


def test_a_certificate_without_the_new_address_is_refused_before_any_change(
        kubeadm_cluster: tuple[KubeadmNode, EtcdCluster], tmp_path: Path) -> None:
    node, cluster = kubeadm_cluster
    before = member_ids(cluster)
    wrong = node.issue_leaf("etcd", tmp_path / "peer", common_name="cp2", ips=["127.0.0.2"], dns=["cp2"],
                            server=True, client=True)
    peer = new_peer_url().replace("http://", "https://")
    added = etcdguard("member", "add", "cp2", "--peer-url", peer, "--learner", "--peer-cert", str(wrong.cert_path),
                      "--yes", *tls_flags(node, cluster))
    assert added.returncode == 3, added.stderr
    assert "do not include 127.0.0.1" in added.stderr and "could not join" in added.stderr
    replaced = etcdguard("member", "replace", "m0", "--name", "cp2", "--peer-url", peer, "--server-cert",
                         str(wrong.cert_path), "--yes", "--journal-dir", str(tmp_path / "j"), *tls_flags(node, cluster))
    assert replaced.returncode == 3 and "server certificate" in replaced.stderr, replaced.stderr
    last = etcdguard("member", "remove", "m0", "--force", "--yes", *tls_flags(node, cluster))
    assert last.returncode == 10 and "last member" in last.stderr, last.stderr  # --force does not override
    assert member_ids(cluster) == before


def test_add_a_learner_with_its_kubeadm_manifest(kubeadm_cluster: tuple[KubeadmNode, EtcdCluster],
                                                 tmp_path: Path) -> None:
    node, cluster = kubeadm_cluster
    peer = new_peer_url().replace("http://", "https://")
    good = node.issue_leaf("etcd", tmp_path / "peer", common_name="cp2", ips=["127.0.0.1"], dns=["cp2"],
                           server=True, client=True)
    out = tmp_path / "cp2-etcd.yaml"
    added = etcdguard("member", "add", "cp2", "--peer-url", peer, "--learner", "--peer-cert", str(good.cert_path),
                      "--server-cert", str(good.cert_path), "--manifest-from", str(node.etcd_manifest),
                      "--manifest-out", str(out), "--yes", *tls_flags(node, cluster))
    assert added.returncode == 0, added.stderr
    assert "certificates signed by the etcd CA" in added.stdout
    command = yaml.safe_load(out.read_text())["spec"]["containers"][0]["command"]
    flags = dict(a.partition("=")[::2] for a in command[1:])
    assert flags["--name"] == "cp2" and flags["--initial-cluster-state"] == "existing"
    assert set(flags["--initial-cluster"].split(",")) == {f"m0={cluster.members[0].peer_url}", f"cp2={peer}"}
    assert flags["--initial-advertise-peer-urls"] == flags["--listen-peer-urls"] == peer
    assert cluster.members[0].client_url in added.stdout  # the voters' endpoints; the learner is not listed
    assert f"client endpoints (voting members): {cluster.members[0].client_url}\n" in added.stdout
    removed = etcdguard("member", "remove", peer, "--yes", *tls_flags(node, cluster))
    assert removed.returncode == 0, removed.stderr
    assert len(member_ids(cluster)) == 1
