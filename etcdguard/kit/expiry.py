"""Which certificates the expiry check reads (the check itself: :mod:`etcdguard.monitor.certs`).

Sources: the configured etcd TLS files (``etcd.cert``, ``etcd.cacert``), every certificate in the
PKI dir (``kit.pki_dir``, when it exists: etcd server, peer and client certificates and the CAs),
and the certificates listed in the newest trusted kit. A certificate read from disk wins over the
kit's record of the same path.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cryptography import x509

from etcdguard.backup.keys import trusted_verify_keys
from etcdguard.config import Settings
from etcdguard.errors import ConfigError
from etcdguard.kit.model import CertificateInfo
from etcdguard.monitor.certs import CertExpiry
from etcdguard.storage.base import BlobStore


def read_certificates(path: Path, source: str) -> list[CertExpiry]:
    """Every PEM certificate in ``path`` (a bundle may hold several); [] when unreadable."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        return []
    out = []
    for cert in certs:
        try:
            is_ca = bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
        except x509.ExtensionNotFound:
            is_ca = False
        out.append(CertExpiry(str(path), source, cert.subject.rfc4514_string(), cert.not_valid_after_utc, is_ca))
    return out


def from_kit(certificates: Iterable[CertificateInfo]) -> list[CertExpiry]:
    """The certificates a kit manifest lists."""
    return [CertExpiry(c.path, "kit", c.subject, c.not_after, c.is_ca) for c in certificates]


def local_certificates(settings: Settings) -> list[CertExpiry]:
    """Certificates readable on this host: the etcd TLS files and the PKI dir."""
    found: list[CertExpiry] = []
    for path in (settings.etcd.cert, settings.etcd.cacert):
        if path is not None:
            found += read_certificates(path, "etcd-tls")
    pki = settings.kit.pki_dir
    if pki.is_dir():
        for path in sorted(pki.rglob("*.crt")):
            found += read_certificates(path, "pki")
    return found


def merge(*groups: Iterable[CertExpiry]) -> list[CertExpiry]:
    """One entry per (path, subject), earlier groups winning; sorted by expiry."""
    seen: dict[tuple[str, str], CertExpiry] = {}
    for group in groups:
        for cert in group:
            seen.setdefault((str(Path(cert.path).absolute()), cert.subject), cert)
    return sorted(seen.values(), key=lambda c: c.not_after)


def kit_certificates(store: BlobStore, settings: Settings) -> list[CertExpiry]:
    """The certificates the newest trusted kit lists ([] without trusted keys or kits)."""
    from etcdguard.kit.catalog import KitCatalog

    try:
        keys = trusted_verify_keys(list(settings.signing.public_keys), settings.signing.key_file,
                                   settings.encryption.identity_file)
    except ConfigError:  # an unsafe signing.pub: no kit can be trusted
        return []
    if not keys:
        return []
    newest = KitCatalog(store, settings.backup.cluster_name).newest_trusted(keys)
    return from_kit(newest.manifest.certificates) if newest and newest.manifest else []


def certificates_for(settings: Settings, store: BlobStore | None = None) -> list[CertExpiry]:
    """Every certificate to check: on this host first, then the newest trusted kit's (with ``store``)."""
    local = local_certificates(settings)
    return merge(local, kit_certificates(store, settings)) if store is not None else merge(local)
