"""The generated kubeadm node (tests/support/kubeadm.py) is shaped like kubeadm's."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
from pathlib import Path

import yaml
from cryptography import x509

from tests.support.kubeadm import free_low_ports, make_kubeadm_node


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_pki_chains_sans_modes_and_expiry(tmp_path: Path) -> None:
    node = make_kubeadm_node(tmp_path / "root", name="cp1", ip="127.0.0.1", days={"etcd/server": 5})
    etcd_ca = _cert(node.etcd_pki_dir / "ca.crt")
    server = _cert(node.etcd_pki_dir / "server.crt")
    server.verify_directly_issued_by(etcd_ca)
    _cert(node.pki_dir / "apiserver.crt").verify_directly_issued_by(_cert(node.pki_dir / "ca.crt"))
    _cert(node.pki_dir / "front-proxy-client.crt").verify_directly_issued_by(_cert(node.pki_dir / "front-proxy-ca.crt"))
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "cp1" in sans.get_values_for_type(x509.DNSName)
    left = server.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(days=4) < left <= dt.timedelta(days=5)
    assert node.certs["etcd/server"].not_after == server.not_valid_after_utc
    for key in [*node.pki_dir.rglob("*.key"), node.encryption_config]:
        assert key.stat().st_mode & 0o777 == 0o600, key
    assert (node.pki_dir / "sa.pub").read_bytes().startswith(b"-----BEGIN PUBLIC KEY")


def test_manifests_are_kubeadm_shaped(tmp_path: Path) -> None:
    client, peer, metrics, api = free_low_ports(4)
    assert all(20000 <= p < 32000 for p in (client, peer, metrics, api))
    node = make_kubeadm_node(tmp_path / "r", name="m1", client_port=client, peer_port=peer,
                             metrics_port=metrics, apiserver_port=api, etcd_command=["/opt/etcd"])
    pod = node.manifest()
    container = pod["spec"]["containers"][0]
    argv = container["command"]
    assert argv[0] == "/opt/etcd"
    assert f"--listen-metrics-urls=http://127.0.0.1:{metrics}" in argv
    assert f"--initial-cluster=m1=https://127.0.0.1:{peer}" in argv
    assert "--client-cert-auth=true" in argv and "--peer-client-cert-auth=true" in argv
    assert f"--data-dir={node.etcd_data_dir}" in argv
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert volumes == mounts == {"etcd-data": str(node.etcd_data_dir), "etcd-certs": str(node.etcd_pki_dir)}
    assert container["livenessProbe"]["httpGet"]["port"] == metrics
    api_argv = node.apiserver_argv()
    assert f"--encryption-provider-config={node.encryption_config}" in api_argv
    assert f"--etcd-servers=https://127.0.0.1:{client}" in api_argv
    enc = yaml.safe_load(node.encryption_config.read_text())
    key = enc["resources"][0]["providers"][0]["aescbc"]["keys"][0]
    assert key["name"] == "key1" and len(base64.b64decode(key["secret"])) == 32
    docs = list(yaml.safe_load_all(node.kubeadm_config.read_text()))
    assert [d["kind"] for d in docs] == ["InitConfiguration", "ClusterConfiguration"]


def test_second_node_shares_cas(tmp_path: Path) -> None:
    first = make_kubeadm_node(tmp_path / "a", name="a")
    second = make_kubeadm_node(tmp_path / "b", name="b", ip="127.0.0.2", share_cas_with=first,
                               initial_cluster_state="existing")
    assert (first.etcd_pki_dir / "ca.key").read_bytes() == (second.etcd_pki_dir / "ca.key").read_bytes()
    assert (first.pki_dir / "sa.key").read_bytes() == (second.pki_dir / "sa.key").read_bytes()
    _cert(second.etcd_pki_dir / "peer.crt").verify_directly_issued_by(_cert(first.etcd_pki_dir / "ca.crt"))
    assert "--initial-cluster-state=existing" in second.etcd_argv()
    assert second.encryption_config.read_bytes() == first.encryption_config.read_bytes()
