"""Per-run TLS for the verification sandbox: a throwaway CA, a server and a client certificate.

The restored etcd serves the whole keyspace of a backup (every Secret). It accepts only clients
with a certificate of this run's CA (``--client-cert-auth``), and etcdguard trusts only a server
certificate of this CA, so neither another local user reading the port nor a process answering
in the sandbox's place gets anywhere. The keys never leave the run's private (0700) work dir and
die with it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from etcdguard.etcd.client import TLSFiles
from etcdguard.etcd.local import ServerTLS

VALIDITY = dt.timedelta(days=1)


@dataclass(frozen=True)
class SandboxPKI:
    """Paths of this run's CA, server certificate (also for peers) and client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    @property
    def server(self) -> ServerTLS:
        """etcd's side: its certificate, and client-cert auth against the run's CA."""
        return ServerTLS(self.server_cert, self.server_key, self.ca)

    @property
    def client(self) -> TLSFiles:
        """etcdguard's side: its client certificate, and the run's CA as the only trusted root."""
        return TLSFiles(cacert=self.ca, cert=self.client_cert, key=self.client_key)

    def pem_files(self) -> dict[str, bytes]:
        """File name -> contents (to copy into a container volume)."""
        return {p.name: p.read_bytes() for p in (self.ca, self.server_cert, self.server_key)}


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def create_pki(directory: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> SandboxPKI:
    """Generate the run's CA, server (server + client auth, for ``hosts``) and client certificates
    into ``directory`` (a private dir; files are created 0600)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "etcdguard verification sandbox CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))

    def leaf(name: str, usages: list[x509.ObjectIdentifier],
             sans: list[x509.GeneralName]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                   .issuer_name(ca.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(ca_key, hashes.SHA256()), key

    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    server, server_key = leaf("etcdguard-sandbox", [ExtendedKeyUsageOID.SERVER_AUTH,
                                                    ExtendedKeyUsageOID.CLIENT_AUTH], sans)
    client, client_key = leaf("etcdguard-verify", [ExtendedKeyUsageOID.CLIENT_AUTH], [])
    pki = SandboxPKI(directory / "ca.crt", directory / "server.crt", directory / "server.key",
                     directory / "client.crt", directory / "client.key")
    pem = serialization.Encoding.PEM
    _write(pki.ca, ca.public_bytes(pem))
    _write(pki.server_cert, server.public_bytes(pem))
    _write(pki.server_key, _key_pem(server_key))
    _write(pki.client_cert, client.public_bytes(pem))
    _write(pki.client_key, _key_pem(client_key))
    return pki
