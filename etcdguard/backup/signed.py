"""Signed records: the one envelope for every record etcdguard acts on.

A record (backup manifest, verification verdict, control-plane kit manifest, restore plan or
journal) is stored as::

    {"etcdguard": "signed-record", "version": 2, "type": "manifest",
     "subject": {"cluster": "prod", "cluster_id": "9a3f...", "id": "20261126T150000Z-abcdef"},
     "record": {...},
     "signature": {"algorithm": "ed25519", "key_id": "<16 hex>", "value": "<base64>"}}

The signature is Ed25519 over :data:`DOMAIN` followed by the canonical JSON (sorted keys, no
whitespace, UTF-8) of ``{"record", "subject", "type", "version"}``: the record type and the
subject (cluster name, cluster id, record id) are signed with the content, so a record copied
to another id, cluster or type no longer checks. A reader states what it expects
(:class:`Expect`) and which keys it trusts; :func:`open_record` refuses anything else.

Format v1 manifests (``{"manifest": {...}, "signature": {...}}``, signed over the canonical
JSON of the manifest alone) are still read: their subject is taken from the signed content.
Every other v1 record (verification verdicts) counts for nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from etcdguard.backup.keys import SigningKey, VerifyKey, check_signature
from etcdguard.errors import IntegrityError

RECORD_VERSION = 2
ENVELOPE_TAG = "signed-record"
DOMAIN = b"etcdguard signed record v2\n"

# Record types (the ``type`` field); each reader names the one it expects.
MANIFEST = "manifest"
VERIFICATION = "verification"
KIT_MANIFEST = "kit-manifest"
RESTORE_PLAN = "restore-plan"
RESTORE_JOURNAL = "restore-journal"
_TYPE_RE = re.compile(r"^[a-z][a-z0-9-]{0,39}$")


def canonical_json(data: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8: the exact bytes that are signed."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Subject(_Frozen):
    """What a record is about: the cluster (name and etcd cluster id) and the record's own id."""

    cluster: str
    cluster_id: str
    id: str


class Signature(_Frozen):
    """Detached Ed25519 signature in an envelope."""

    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str
    value: str


@dataclass(frozen=True)
class Expect:
    """What a reader requires of a record: its type, cluster name and id, and (when the reader
    knows it) the etcd cluster id."""

    type: str
    cluster: str
    id: str
    cluster_id: str | None = None


@dataclass(frozen=True)
class SignedRecord:
    """A parsed envelope (nothing in it is trusted until :func:`check_record` passed)."""

    type: str
    subject: Subject
    record: dict[str, Any]
    signature: Signature | None
    version: int
    digest: str  # sha256 (hex) of the signed bytes: names this exact record

    @property
    def signer(self) -> str | None:
        """Key id the record claims to be signed by."""
        return self.signature.key_id if self.signature else None


def _signed_bytes(record_type: str, subject: Subject, record: Mapping[str, Any]) -> bytes:
    body = {"record": record, "subject": subject.model_dump(), "type": record_type, "version": RECORD_VERSION}
    return DOMAIN + canonical_json(body)


def _payload(record: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(record, BaseModel):
        return record.model_dump(mode="json")
    plain: dict[str, Any] = json.loads(canonical_json(dict(record)))  # plain JSON types only
    return plain


def seal_record(record_type: str, subject: Subject, record: BaseModel | Mapping[str, Any],
                key: SigningKey | None) -> bytes:
    """Serialize ``record`` into an envelope, signed when ``key`` is given (pretty JSON + newline)."""
    if not _TYPE_RE.match(record_type):
        raise ValueError(f"invalid record type {record_type!r}")
    payload = _payload(record)
    envelope: dict[str, Any] = {"etcdguard": ENVELOPE_TAG, "version": RECORD_VERSION, "type": record_type,
                                "subject": subject.model_dump(), "record": payload}
    if key is not None:
        raw = key.sign(_signed_bytes(record_type, subject, payload))
        envelope["signature"] = Signature(key_id=key.key_id, value=base64.b64encode(raw).decode()).model_dump()
    return json.dumps(envelope, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n"


def _legacy(envelope: dict[str, Any], what: str) -> SignedRecord:
    """A format v1 envelope: ``{"<type>": {...}, "signature": {...}}``."""
    names = [k for k in envelope if k != "signature"]
    if len(names) != 1 or not isinstance(envelope[names[0]], dict):
        raise IntegrityError(f"{what} is not an etcdguard record")
    record_type, payload = names[0], envelope[names[0]]
    cluster = payload.get("cluster") if isinstance(payload.get("cluster"), dict) else {}
    subject = Subject(cluster=str(cluster.get("name", "")), cluster_id=str(cluster.get("cluster_id", "")),
                      id=str(payload.get("backup_id", "")))
    sig = Signature.model_validate(envelope["signature"]) if envelope.get("signature") else None
    digest = hashlib.sha256(canonical_json(payload)).hexdigest()
    return SignedRecord(record_type, subject, payload, sig, 1, digest)


def parse_record(data: bytes, what: str) -> SignedRecord:
    """Parse an envelope's structure; raises IntegrityError when it is not one. Checks nothing."""
    try:
        envelope = json.loads(data)
        if not isinstance(envelope, dict):
            raise ValueError("not an object")
        if envelope.get("etcdguard") != ENVELOPE_TAG:
            return _legacy(envelope, what)
        version = envelope["version"]
        record_type, payload = envelope["type"], envelope["record"]
        subject = Subject.model_validate(envelope["subject"])
        sig = Signature.model_validate(envelope["signature"]) if envelope.get("signature") else None
    except (ValueError, KeyError, TypeError, ValidationError):
        raise IntegrityError(f"{what} is not a valid etcdguard record") from None
    if version != RECORD_VERSION or not isinstance(record_type, str) or not isinstance(payload, dict):
        raise IntegrityError(f"{what}: unsupported record version {version!r}")
    digest = hashlib.sha256(_signed_bytes(record_type, subject, payload)).hexdigest()
    return SignedRecord(record_type, subject, payload, sig, version, digest)


def _check_signature(rec: SignedRecord, keys: Sequence[VerifyKey], what: str) -> None:
    if rec.signature is None:
        raise IntegrityError(f"{what} is not signed")
    try:
        raw = base64.b64decode(rec.signature.value, validate=True)
    except ValueError:
        raise IntegrityError(f"{what} has a malformed signature") from None
    data = canonical_json(rec.record) if rec.version == 1 else _signed_bytes(rec.type, rec.subject, rec.record)
    check_signature(list(keys), rec.signature.key_id, raw, data, what)


def check_record(rec: SignedRecord, expect: Expect, keys: Sequence[VerifyKey] | None, what: str) -> None:
    """Raise IntegrityError unless ``rec`` is the record ``expect`` describes, signed by one of
    ``keys`` (``keys=None``: the operator explicitly accepts unsigned records)."""
    if rec.version == 1 and rec.type != MANIFEST:
        raise IntegrityError(f"{what} predates signed-record format v{RECORD_VERSION} and counts for nothing")
    if keys is not None:
        _check_signature(rec, keys, what)
    if rec.type != expect.type:
        raise IntegrityError(f"{what} is a {rec.type!r} record, not a {expect.type!r}: it was moved or forged")
    s = rec.subject
    if s.cluster != expect.cluster or s.id != expect.id:
        raise IntegrityError(f"{what} belongs to {s.cluster}/{s.id}, not {expect.cluster}/{expect.id}: "
                             "it was moved or forged")
    if expect.cluster_id is not None and s.cluster_id != expect.cluster_id:
        raise IntegrityError(f"{what} belongs to etcd cluster id {s.cluster_id or '(none)'}, "
                             f"not {expect.cluster_id}")


def open_record(data: bytes, expect: Expect, keys: Sequence[VerifyKey] | None, what: str) -> SignedRecord:
    """Parse and check a record (see :func:`check_record`)."""
    rec = parse_record(data, what)
    check_record(rec, expect, keys, what)
    return rec
