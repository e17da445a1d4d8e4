"""Generate a kubeadm-shaped control-plane node on disk (no Kubernetes needed).

Everything kubeadm writes to a control-plane node that matters to etcd and to etcdguard, under a
chosen root directory, with real X.509 material made by ``cryptography``:

* ``<root>/etc/kubernetes/pki``: the cluster CA, the front-proxy CA and the etcd CA (certificate and
  key each), the leaf certificates kubeadm issues (apiserver, apiserver-kubelet-client,
  apiserver-etcd-client, front-proxy-client, etcd/server, etcd/peer, etcd/healthcheck-client) with
  chosen expiry and SANs, and the service-account key pair (``sa.key``/``sa.pub``);
* ``<root>/etc/kubernetes/enc/encryption-config.yaml``: an EncryptionConfiguration with an aescbc key
  (plus, optionally, a KMS provider);
* ``<root>/etc/kubernetes/manifests/etcd.yaml`` and ``kube-apiserver.yaml``: static pod manifests
  shaped after kubeadm's generator (https client and peer URLs with server/peer certificates and
  client-cert auth, metrics and probes on 127.0.0.1:<metrics port>, the ``etcd-data`` and
  ``etcd-certs`` hostPath volumes; ``--encryption-provider-config`` and ``--etcd-servers``), with
  every path inside the root so that hostPath == mountPath and the container command runs as a
  plain process on this host;
* ``<root>/etc/kubernetes/kubeadm-config.yaml``: the InitConfiguration + ClusterConfiguration.

Usage::

    from tests.support.kubeadm import make_kubeadm_node, free_low_ports

    client, peer, metrics, api = free_low_ports(4)
    node = make_kubeadm_node(tmp_path / "cp1", name="cp1", client_port=client, peer_port=peer,
                             metrics_port=metrics, apiserver_port=api,
                             etcd_command=[str(install.etcd)],
                             apiserver_command=[sys.executable, "-m", "tests.support.apiserver"])
    node.etcd_manifest            # <root>/etc/kubernetes/manifests/etcd.yaml
    node.etcd_endpoint            # https://127.0.0.1:<client>
    node.etcd_client_tls          # (ca.crt, apiserver-etcd-client.crt, .key) for etcdguard
    node.etcd_argv()              # the etcd container command from the manifest (run it as a process)

    with running_etcd(node, tmp_path / "etcd.log"):   # etcd from the manifest, until the block ends
        ...

A second control-plane node sharing the CAs (what ``kubeadm join --control-plane`` does)::

    node2 = make_kubeadm_node(tmp_path / "cp2", name="cp2", ..., share_cas_with=node,
                              initial_cluster=f"cp1={node.peer_url},cp2=https://127.0.0.1:{peer2}",
                              initial_cluster_state="existing")

Issue another certificate from one of the node's CAs (e.g. a peer certificate for a replacement
member, or one that expires in 5 days)::

    node.issue_leaf("etcd", node.pki_dir / "etcd" / "peer", common_name="cp1", days=5,
                    ips=["127.0.0.1"], dns=["cp1", "localhost"], server=True, client=True)

Test servers must listen on 127.0.0.1 (the default ``ip``) and on ports below 32768:
:func:`free_low_ports` picks random ones in 20000-32000 checked with bind.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import random
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support.kubeadm_manifests import ENCRYPTION_KEY_NAME as ENCRYPTION_KEY_NAME
from tests.support.kubeadm_manifests import (
    apiserver_pod,
    encryption_configuration,
    etcd_pod,
    kubeadm_configuration,
)

KeyAlgorithm = Literal["ecdsa", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_DAYS = 3650
LEAF_DAYS = 365
# CA name -> file stem under the pki dir (kubeadm's names)
CA_STEMS = {"ca": "ca", "front-proxy": "front-proxy-ca", "etcd": "etcd/ca"}


def free_low_ports(count: int, low: int = 20000, high: int = 32000) -> list[int]:
    """``count`` distinct random ports in [low, high) that bind on 127.0.0.1 right now."""
    chosen: list[int] = []
    rng = random.SystemRandom()
    while len(chosen) < count:
        port = rng.randrange(low, high)
        if port in chosen:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        chosen.append(port)
    return chosen


def _new_key(algorithm: KeyAlgorithm) -> PrivateKey:
    if algorithm == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: PrivateKey) -> bytes:
    fmt = (serialization.PrivateFormat.TraditionalOpenSSL if isinstance(key, rsa.RSAPrivateKey)
           else serialization.PrivateFormat.PKCS8)
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


@dataclass
class CertificateAuthority:
    """A CA kept in memory (to issue more certificates) and on disk."""

    name: str
    cert: x509.Certificate
    key: PrivateKey = field(repr=False)
    cert_path: Path
    key_path: Path


@dataclass(frozen=True)
class IssuedCert:
    """One certificate written by the generator."""

    name: str            # e.g. "etcd/server", "apiserver", "ca"
    cert_path: Path
    key_path: Path
    not_after: dt.datetime
    is_ca: bool


@dataclass
class KubeadmNode:
    """A generated kubeadm control-plane node (see the module docstring)."""

    root: Path
    name: str
    ip: str
    client_port: int
    peer_port: int
    metrics_port: int
    apiserver_port: int
    key_algorithm: KeyAlgorithm
    cas: dict[str, CertificateAuthority] = field(default_factory=dict)
    certs: dict[str, IssuedCert] = field(default_factory=dict)
    encryption_secret: str = field(default="", repr=False)
    initial_cluster: str = ""
    etcd_wal_dir: Path | None = None  # --wal-dir (its own hostPath volume), None: the WAL in the data dir

    # -- paths ------------------------------------------------------------------------------
    @property
    def kubernetes_dir(self) -> Path:
        return self.root / "etc" / "kubernetes"

    @property
    def pki_dir(self) -> Path:
        return self.kubernetes_dir / "pki"

    @property
    def etcd_pki_dir(self) -> Path:
        return self.pki_dir / "etcd"

    @property
    def manifests_dir(self) -> Path:
        return self.kubernetes_dir / "manifests"

    @property
    def etcd_manifest(self) -> Path:
        return self.manifests_dir / "etcd.yaml"

    @property
    def apiserver_manifest(self) -> Path:
        return self.manifests_dir / "kube-apiserver.yaml"

    @property
    def encryption_config(self) -> Path:
        return self.kubernetes_dir / "enc" / "encryption-config.yaml"

    @property
    def kubeadm_config(self) -> Path:
        return self.kubernetes_dir / "kubeadm-config.yaml"

    @property
    def etcd_data_dir(self) -> Path:
        return self.root / "var" / "lib" / "etcd"

    # -- URLs ------------------------------------------------------------------------------
    @property
    def etcd_endpoint(self) -> str:
        """The client URL etcdguard (and the apiserver) use."""
        return f"https://127.0.0.1:{self.client_port}"

    @property
    def advertise_client_url(self) -> str:
        return f"https://{self.ip}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{self.ip}:{self.peer_port}"

    @property
    def etcd_client_tls(self) -> tuple[Path, Path, Path]:
        """(cacert, cert, key) a client of etcd uses: the etcd CA and apiserver-etcd-client."""
        c = self.certs["apiserver-etcd-client"]
        return self.cas["etcd"].cert_path, c.cert_path, c.key_path

    def manifest(self, path: Path | None = None) -> dict[str, Any]:
        """A static pod manifest parsed (the etcd one by default)."""
        loaded: dict[str, Any] = yaml.safe_load((path or self.etcd_manifest).read_text())
        return loaded

    def etcd_argv(self) -> list[str]:
        """The etcd container's command line, as written in the manifest."""
        return list(self.manifest()["spec"]["containers"][0]["command"])

    def apiserver_argv(self) -> list[str]:
        """The kube-apiserver container's command line, as written in its manifest."""
        return list(self.manifest(self.apiserver_manifest)["spec"]["containers"][0]["command"])

    # -- certificates ----------------------------------------------------------------------------
    def issue_leaf(self, ca: str, stem: Path, *, common_name: str, days: int = LEAF_DAYS,
                   dns: list[str] | None = None, ips: list[str] | None = None, server: bool = False,
                   client: bool = True, organization: str | None = None) -> IssuedCert:
        """Write ``<stem>.crt`` and ``<stem>.key`` (0600) signed by CA ``ca`` ("ca", "front-proxy", "etcd").

        ``days`` may be negative: an already expired certificate."""
        authority = self.cas[ca]
        key = _new_key(self.key_algorithm)
        now = dt.datetime.now(dt.timezone.utc)
        names = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if organization:
            names.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + \
                 ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
        not_after = now + dt.timedelta(days=days)
        builder = (x509.CertificateBuilder().subject_name(x509.Name(names))
                   .issuer_name(authority.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(min(now - dt.timedelta(minutes=5), not_after - dt.timedelta(days=1)))
                   .not_valid_after(not_after)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                                content_commitment=False, data_encipherment=False,
                                                key_agreement=False, key_cert_sign=False, crl_sign=False,
                                                encipher_only=False, decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       authority.cert.public_key()), critical=False))  # type: ignore[arg-type]
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns or []]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips or []]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(authority.key, hashes.SHA256())
        cert_path, key_path = stem.with_name(stem.name + ".crt"), stem.with_name(stem.name + ".key")
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(key_path, _key_pem(key), 0o600)
        rel = str(stem.relative_to(self.pki_dir)) if stem.is_relative_to(self.pki_dir) else stem.name
        issued = IssuedCert(rel, cert_path, key_path, cert.not_valid_after_utc, is_ca=False)
        self.certs[rel] = issued
        return issued

    def _make_ca(self, name: str, common_name: str, days: int) -> None:
        key = _new_key(self.key_algorithm)
        now = dt.datetime.now(dt.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                             content_commitment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=True, crl_sign=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        self._store_ca(name, cert, key)

    def _store_ca(self, name: str, cert: x509.Certificate, key: PrivateKey) -> None:
        stem = self.pki_dir / CA_STEMS[name]
        cert_path, key_path = stem.with_name(stem.name + ".crt"), stem.with_name(stem.name + ".key")
        _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(key_path, _key_pem(key), 0o600)
        self.cas[name] = CertificateAuthority(name, cert, key, cert_path, key_path)
        self.certs[CA_STEMS[name]] = IssuedCert(CA_STEMS[name], cert_path, key_path,
                                                cert.not_valid_after_utc, is_ca=True)


def _write_yaml(path: Path, data: dict[str, Any], mode: int = 0o600) -> None:
    _write(path, yaml.safe_dump(data, sort_keys=True).encode(), mode)


def make_kubeadm_node(
    root: Path,
    *,
    name: str = "cp1",
    ip: str = "127.0.0.1",
    client_port: int = 2379,
    peer_port: int = 2380,
    metrics_port: int = 2381,
    apiserver_port: int = 6443,
    etcd_command: list[str] | None = None,
    apiserver_command: list[str] | None = None,
    etcd_servers: list[str] | None = None,
    initial_cluster: str | None = None,
    initial_cluster_state: Literal["new", "existing"] = "new",
    extra_etcd_flags: list[str] | None = None,
    key_algorithm: KeyAlgorithm = "ecdsa",
    ca_days: int = CA_DAYS,
    leaf_days: int = LEAF_DAYS,
    days: dict[str, int] | None = None,
    share_cas_with: KubeadmNode | None = None,
    kms_endpoint: str | None = None,
    kubeadm_config: bool = True,
    kubernetes_version: str = "v1.31.0",
    etcd_image: str = "registry.k8s.io/etcd:3.5.16-0",
    wal_dir: bool = False,
) -> KubeadmNode:
    """Write a kubeadm control-plane node under ``root`` and return its description.

    ``days`` overrides the validity of single certificates by name ("ca", "etcd/ca",
    "front-proxy-ca", "etcd/server", "etcd/peer", "apiserver", ...). ``etcd_command`` and
    ``apiserver_command`` are the container commands before the flags (default ``etcd`` and
    ``kube-apiserver``, as kubeadm writes them). ``initial_cluster`` defaults to this member alone.
    ``wal_dir`` puts etcd's WAL in ``<root>/var/lib/etcd-wal`` (``--wal-dir`` on its own hostPath volume).
    """
    root = Path(root)
    node = KubeadmNode(root, name, ip, client_port, peer_port, metrics_port, apiserver_port, key_algorithm)
    node.initial_cluster = initial_cluster or f"{name}={node.peer_url}"
    node.etcd_wal_dir = root / "var" / "lib" / "etcd-wal" if wal_dir else None
    lifetimes = days or {}
    node.pki_dir.mkdir(parents=True, exist_ok=True)
    node.pki_dir.chmod(0o755)
    if share_cas_with is not None:
        for ca_name, ca in share_cas_with.cas.items():
            node._store_ca(ca_name, ca.cert, ca.key)
    else:
        node._make_ca("ca", "kubernetes", lifetimes.get("ca", ca_days))
        node._make_ca("front-proxy", "front-proxy-ca", lifetimes.get("front-proxy-ca", ca_days))
        node._make_ca("etcd", "etcd-ca", lifetimes.get("etcd/ca", ca_days))

    def leaf(ca: str, stem: str, cn: str, **kw: Any) -> None:
        node.issue_leaf(ca, node.pki_dir / stem, common_name=cn, days=lifetimes.get(stem, leaf_days), **kw)

    member_dns, member_ips = sorted({name, "localhost"}), sorted({ip, "127.0.0.1", "::1"})
    leaf("etcd", "etcd/server", name, dns=member_dns, ips=member_ips, server=True)
    leaf("etcd", "etcd/peer", name, dns=member_dns, ips=member_ips, server=True)
    leaf("etcd", "etcd/healthcheck-client", "kube-etcd-healthcheck-client")
    leaf("etcd", "apiserver-etcd-client", "kube-apiserver-etcd-client")
    leaf("ca", "apiserver", "kube-apiserver", server=True, client=False,
         dns=["kubernetes", "kubernetes.default", "kubernetes.default.svc",
              "kubernetes.default.svc.cluster.local", name], ips=sorted({"10.96.0.1", ip}))
    leaf("ca", "apiserver-kubelet-client", "kube-apiserver-kubelet-client", organization="kubeadm:cluster-admins")
    leaf("front-proxy", "front-proxy-client", "front-proxy-client")

    sa_key = (share_cas_with.pki_dir / "sa.key").read_bytes() if share_cas_with else None
    if sa_key is None:
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        sa_key = _key_pem(sa)
    loaded = serialization.load_pem_private_key(sa_key, password=None)
    _write(node.pki_dir / "sa.key", sa_key, 0o600)
    _write(node.pki_dir / "sa.pub", loaded.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo), 0o644)

    if share_cas_with is not None:
        node.encryption_secret = share_cas_with.encryption_secret
    else:
        node.encryption_secret = base64.b64encode(secrets.token_bytes(32)).decode()
    _write_yaml(node.encryption_config, encryption_configuration(node.encryption_secret, kms_endpoint))
    node.encryption_config.parent.chmod(0o700)

    etcd_flags = [f"--initial-cluster-state={initial_cluster_state}"] if initial_cluster_state == "existing" else []
    etcd_flags += extra_etcd_flags or []
    node.manifests_dir.mkdir(parents=True, exist_ok=True)
    _write_yaml(node.etcd_manifest, etcd_pod(node, etcd_command or ["etcd"], etcd_image, etcd_flags))
    _write_yaml(node.apiserver_manifest, apiserver_pod(
        node, apiserver_command or ["kube-apiserver"], etcd_servers or [node.etcd_endpoint],
        f"registry.k8s.io/kube-apiserver:{kubernetes_version}"))
    if kubeadm_config:
        _write(node.kubeadm_config, kubeadm_configuration(node, kubernetes_version).encode(), 0o600)
    return node


@contextmanager
def running_etcd(node: KubeadmNode, log_path: Path, timeout: float = 30.0) -> Iterator[subprocess.Popen[bytes]]:
    """Run the etcd command of ``node``'s manifest as a process until the block ends (a tiny kubelet
    for tests that need etcd but not the manifest watching); waits until it serves TLS clients."""
    from etcdguard.etcd.client import MemberClient, TLSFiles

    cacert, cert, key = node.etcd_client_tls
    with log_path.open("ab") as log:
        proc = subprocess.Popen(node.etcd_argv(), stdout=log, stderr=log, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with MemberClient(node.etcd_endpoint, tls=TLSFiles(cacert=cacert, cert=cert, key=key)) as client:
                    client.status()
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(f"etcd from {node.etcd_manifest} did not start: "
                                         f"{log_path.read_text()[-2000:]}") from None
                time.sleep(0.3)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
