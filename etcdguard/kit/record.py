"""The kit manifest as a signed record (:mod:`etcdguard.backup.signed`, type ``kit-manifest``).

The signature covers the record type, the cluster name, the etcd cluster id and the kit id with
the content: a manifest copied to another kit id or cluster, or a record of another type, does
not open.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from etcdguard.backup.keys import SigningKey, VerifyKey
from etcdguard.backup.signed import KIT_MANIFEST, Expect, SignedRecord, Subject, check_record, parse_record, seal_record
from etcdguard.errors import IntegrityError
from etcdguard.kit.model import KIT_FORMAT_VERSION, KitManifest


def seal_kit(manifest: KitManifest, key: SigningKey | None) -> bytes:
    """The manifest as a (signed when ``key`` is given) record."""
    subject = Subject(cluster=manifest.cluster_name, cluster_id=manifest.cluster_id, id=manifest.kit_id)
    return seal_record(KIT_MANIFEST, subject, manifest, key)


def _parse(data: bytes, what: str) -> tuple[SignedRecord, KitManifest]:
    rec = parse_record(data, what)
    if rec.type != KIT_MANIFEST:
        raise IntegrityError(f"{what} is a {rec.type!r} record, not a kit manifest")
    try:
        manifest = KitManifest.model_validate(rec.record)
    except ValidationError:
        raise IntegrityError(f"{what} does not match kit format v{KIT_FORMAT_VERSION}") from None
    if manifest.format_version != KIT_FORMAT_VERSION:
        raise IntegrityError(f"{what}: unsupported kit format version {manifest.format_version}")
    s = rec.subject
    if (s.cluster, s.cluster_id, s.id) != (manifest.cluster_name, manifest.cluster_id, manifest.kit_id):
        raise IntegrityError(f"{what}: its signed subject and its content name different kits")
    return rec, manifest


def read_kit(data: bytes, what: str = "kit manifest") -> tuple[KitManifest, str | None]:
    """Parse a kit manifest without trusting it (for listing); returns it and the claimed signer."""
    rec, manifest = _parse(data, what)
    return manifest, rec.signer


def open_kit(data: bytes, keys: Sequence[VerifyKey] | None, cluster: str, kit_id: str,
             cluster_id: str | None = None, what: str = "kit manifest") -> KitManifest:
    """Parse a kit manifest and check that it is kit ``kit_id`` of ``cluster`` (and ``cluster_id``
    when known), signed by one of ``keys`` (``keys=None``: explicitly accept it unchecked)."""
    rec, manifest = _parse(data, what)
    check_record(rec, Expect(KIT_MANIFEST, cluster, kit_id, cluster_id), keys, what)
    return manifest
