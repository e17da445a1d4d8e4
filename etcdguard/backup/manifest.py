"""Backup format v1: the manifest and verification records, canonical JSON and signatures.

Layout in a store (keys relative to the store root)::

    <cluster>/<backup-id>/snapshot.db.zst.age   age(X25519) over one zstd frame
    <cluster>/<backup-id>/manifest.json         written last: a backup exists only if this does
    <cluster>/<backup-id>/verification.json     the latest signed verification verdict
    <cluster>/<backup-id>/pin.json              present while the backup is pinned

Both JSON records are envelopes ``{"<record>": {...}, "signature": {...}}`` where the
signature is Ed25519 over the canonical JSON (sorted keys, no spaces, UTF-8) of the record.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from etcdguard.backup.keys import SigningKey, VerifyKey, check_signature
from etcdguard.errors import IntegrityError

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
VERIFICATION_NAME = "verification.json"
PIN_NAME = "pin.json"
ENCRYPTED_OBJECT = "snapshot.db.zst.age"
PLAIN_OBJECT = "snapshot.db.zst"
BACKUP_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")


def new_backup_id(now: datetime | None = None) -> str:
    """A time-sortable id: ``20261126T150000Z-<6 hex>``."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def backup_prefix(cluster: str, backup_id: str) -> str:
    """Store key prefix of one backup."""
    return f"{cluster}/{backup_id}"


def canonical_json(data: Any) -> bytes:
    """The exact bytes that are signed."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClusterRef(_Record):
    """Which cluster the backup came from."""

    name: str
    cluster_id: str


class SourceMember(_Record):
    """The member that streamed the snapshot."""

    name: str
    member_id: str
    endpoint: str
    etcd_version: str


class HashKVRecord(_Record):
    """HashKV(0) taken on the source member right before the snapshot stream."""

    revision: int
    hash: int
    compact_revision: int


class KeyCounts(_Record):
    """Key counts at the HashKV revision (per Kubernetes resource prefix under /registry/)."""

    total: int
    by_prefix: dict[str, int] = Field(default_factory=dict)


class SnapshotInfo(_Record):
    """The plain etcd snapshot (what ``etcdctl snapshot save`` would write)."""

    size: int
    sha256: str
    trailer_sha256: str


class StoredObject(_Record):
    """The object as stored: compressed and (normally) encrypted."""

    key: str
    size: int
    sha256: str
    compression: Literal["zstd"] = "zstd"
    compression_level: int
    encryption: Literal["age-x25519", "none"]
    recipients: list[str] = Field(default_factory=list)


class Manifest(_Record):
    """Everything needed to trust, verify and restore one backup."""

    format_version: int = FORMAT_VERSION
    backup_id: str
    cluster: ClusterRef
    source: SourceMember
    hashkv: HashKVRecord
    key_counts: KeyCounts | None = None
    snapshot: SnapshotInfo
    stored: StoredObject
    signing_key_id: str | None
    created_at: datetime
    finished_at: datetime
    tool_version: str

    @property
    def duration_seconds(self) -> float:
        """Wall time of the backup."""
        return (self.finished_at - self.created_at).total_seconds()


class Verification(_Record):
    """The verdict of restoring a backup into a throwaway etcd."""

    backup_id: str
    result: Literal["passed", "failed"]
    reason: str = ""
    hash_proof: Literal["passed", "failed", "inconclusive"] | None = None
    key_counts_match: bool | None = None
    snapshot_revision: int | None = None
    etcd_version_used: str = ""
    etcd_version_exact: bool = True
    sandbox: str = ""
    steps: dict[str, float] = Field(default_factory=dict)
    started_at: datetime
    finished_at: datetime
    signing_key_id: str | None = None
    tool_version: str = ""


class Signature(_Record):
    """Detached Ed25519 signature in an envelope."""

    algorithm: Literal["ed25519"] = "ed25519"
    key_id: str
    value: str


def seal(record_name: str, record: _Record, key: SigningKey | None) -> bytes:
    """Serialize ``record`` into a (signed when ``key`` is given) envelope."""
    payload = record.model_dump(mode="json")
    envelope: dict[str, Any] = {record_name: payload}
    if key is not None:
        sig = key.sign(canonical_json(payload))
        envelope["signature"] = Signature(key_id=key.key_id,
                                          value=base64.b64encode(sig).decode()).model_dump()
    return json.dumps(envelope, indent=2, sort_keys=True).encode() + b"\n"


def _open(record_name: str, data: bytes, what: str) -> tuple[dict[str, Any], Signature | None]:
    try:
        envelope = json.loads(data)
        payload = envelope[record_name]
        sig = Signature.model_validate(envelope["signature"]) if envelope.get("signature") else None
    except (ValueError, KeyError, TypeError, ValidationError):
        raise IntegrityError(f"{what} is not a valid etcdguard {record_name} record") from None
    if not isinstance(payload, dict):
        raise IntegrityError(f"{what} is not a valid etcdguard {record_name} record")
    return payload, sig


def _verify(payload: dict[str, Any], sig: Signature | None, keys: list[VerifyKey] | None, what: str) -> None:
    if keys is None:
        return  # the caller explicitly skips signature checks
    if sig is None:
        raise IntegrityError(f"{what} is not signed; refusing it (use --insecure-skip-signature to override)")
    try:
        raw = base64.b64decode(sig.value, validate=True)
    except ValueError:
        raise IntegrityError(f"{what} has a malformed signature") from None
    check_signature(keys, sig.key_id, raw, canonical_json(payload), what)


def open_manifest(data: bytes, keys: list[VerifyKey] | None, what: str = "manifest") -> Manifest:
    """Parse a manifest envelope, checking its signature against ``keys`` (None = skip check)."""
    payload, sig = _open("manifest", data, what)
    _verify(payload, sig, keys, what)
    try:
        manifest = Manifest.model_validate(payload)
    except ValidationError:
        raise IntegrityError(f"{what} does not match backup format v{FORMAT_VERSION}") from None
    if manifest.format_version != FORMAT_VERSION:
        raise IntegrityError(f"{what}: unsupported format version {manifest.format_version}")
    return manifest


def open_verification(data: bytes, keys: list[VerifyKey] | None, what: str = "verification") -> Verification:
    """Parse a verification envelope, checking its signature (None = skip check)."""
    payload, sig = _open("verification", data, what)
    _verify(payload, sig, keys, what)
    try:
        return Verification.model_validate(payload)
    except ValidationError:
        raise IntegrityError(f"{what} is not a valid verification record") from None
