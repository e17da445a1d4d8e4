"""Check a new member's certificates before it is added: signed by the etcd CA, the right SANs.

A peer or server certificate that does not name the new member's address is the most common
reason a replacement never joins: its peers refuse the TLS handshake and it stays an unstarted
learner. Checking first turns that into a clear error before the cluster is changed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import ExtendedKeyUsageOID

from etcdguard.errors import ConfigError


@dataclass(frozen=True)
class CertCheck:
    """One certificate checked: what it is for, and the problems found (none = good)."""

    what: str
    path: Path
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems


def load_certificates(path: Path, what: str) -> list[x509.Certificate]:
    """Every PEM certificate in ``path``; ConfigError when unreadable or empty."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise ConfigError(f"{what} {path} holds no PEM certificate")
    return certs


def san_names(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) in the certificate's subjectAltName."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [], []
    return san.get_values_for_type(x509.DNSName), [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]


def _dns_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        return "." in host and host.split(".", 1)[1] == pattern[2:]
    return pattern == host


def names_host(cert: x509.Certificate, host: str) -> bool:
    """True when the SANs cover ``host`` (an IP must be an IP SAN, a name a DNS SAN)."""
    dns, ips = san_names(cert)
    try:
        wanted = ipaddress.ip_address(host)
    except ValueError:
        return any(_dns_matches(p, host) for p in dns)
    return any(ipaddress.ip_address(ip) == wanted for ip in ips)


def _signed_by(cert: x509.Certificate, cas: list[x509.Certificate]) -> bool:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
            return True
        except (ValueError, TypeError, InvalidSignature):
            continue
    return False


def _usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier] | None:
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return None


def check_certificate(path: Path, what: str, cas: list[x509.Certificate], hosts: list[str], *,
                      client_auth: bool, now: datetime | None = None) -> CertCheck:
    """Check one certificate: signed by a CA in ``cas``, valid now, SANs cover every host in ``hosts``."""
    cert = load_certificates(path, what)[0]
    now = now or datetime.now(timezone.utc)
    problems: list[str] = []
    if not _signed_by(cert, cas):
        problems.append(f"not signed by the etcd CA (issuer {cert.issuer.rfc4514_string()})")
    if now < cert.not_valid_before_utc:
        problems.append(f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z")
    if now > cert.not_valid_after_utc:
        problems.append(f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z")
    dns, ips = san_names(cert)
    for host in hosts:
        if not names_host(cert, host):
            problems.append(f"its SANs ({', '.join([*dns, *ips]) or 'none'}) do not include {host}")
    usages = _usages(cert)
    if usages is not None:
        if ExtendedKeyUsageOID.SERVER_AUTH not in usages:
            problems.append("lacks the serverAuth extended key usage")
        if client_auth and ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
            problems.append("lacks the clientAuth extended key usage (peers authenticate with it)")
    return CertCheck(what, Path(path), tuple(problems))


def check_member_certificates(cacert: Path, *, peer_cert: Path | None, server_cert: Path | None,
                              peer_host: str, client_hosts: list[str]) -> list[CertCheck]:
    """Check the new member's peer and server certificates (those given) against the etcd CA."""
    checks: list[CertCheck] = []
    if peer_cert is None and server_cert is None:
        return checks
    cas = load_certificates(cacert, "etcd CA certificate")
    if peer_cert is not None:
        checks.append(check_certificate(peer_cert, "peer certificate", cas, [peer_host], client_auth=True))
    if server_cert is not None:
        checks.append(check_certificate(server_cert, "server certificate", cas,
                                        list(dict.fromkeys(client_hosts or [peer_host])), client_auth=False))
    return checks


def require_good(checks: list[CertCheck]) -> None:
    """ConfigError naming every problem of every bad certificate."""
    bad = [c for c in checks if not c.ok]
    if bad:
        raise ConfigError("; ".join(f"{c.what} {c.path}: {', '.join(c.problems)}" for c in bad)
                          + ": the new member could not join with it")
