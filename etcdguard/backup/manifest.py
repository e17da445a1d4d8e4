"""Backup format v2: the manifest and verification records.

Layout in a store (keys relative to the store root)::

    <cluster>/<backup-id>/snapshot.db.zst.age   age(X25519) over one zstd frame
    <cluster>/<backup-id>/manifest.json         written last: a backup exists only if this does
    <cluster>/<backup-id>/verification.json     the latest signed verification verdict
    <cluster>/<backup-id>/pin.json              present while the backup is pinned

Both JSON records are signed records (:mod:`etcdguard.backup.signed`): the signature covers
the record type, the cluster name and id, the backup id and the content; a verdict also names
the digest of the manifest it judged.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from etcdguard.backup.keys import SigningKey, VerifyKey
from etcdguard.backup.signed import (
    MANIFEST,
    VERIFICATION,
    Expect,
    SignedRecord,
    Subject,
    check_record,
    open_record,
    parse_record,
    seal_record,
)
from etcdguard.errors import IntegrityError

FORMAT_VERSION = 2
SUPPORTED_FORMATS = (1, 2)  # v1 manifests are still read (see docs/backup-format.md)
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


class ClusterMember(_Record):
    """A voting member when the backup was taken: a restore's plan can name every member from it."""

    name: str
    peer_urls: list[str]
    client_urls: list[str] = Field(default_factory=list)


class Manifest(_Record):
    """Everything needed to trust, verify and restore one backup."""

    format_version: int = FORMAT_VERSION
    backup_id: str
    cluster: ClusterRef
    source: SourceMember
    hashkv: HashKVRecord
    key_counts: KeyCounts | None = None
    members: list[ClusterMember] | None = None  # None: not recorded (older backups)
    snapshot: SnapshotInfo
    stored: StoredObject
    signing_key_id: str | None
    created_at: datetime
    finished_at: datetime
    tool_version: str
    _digest: str = PrivateAttr(default="")

    @property
    def digest(self) -> str:
        """sha256 of the signed manifest record it was read from ("" when built, not read)."""
        return self._digest

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
    manifest_sha256: str = ""  # digest of the manifest record it judged (SignedRecord.digest)


def seal_manifest(manifest: Manifest, key: SigningKey | None) -> bytes:
    """The manifest as a (signed when ``key`` is given) record; its subject comes from the manifest."""
    subject = Subject(cluster=manifest.cluster.name, cluster_id=manifest.cluster.cluster_id, id=manifest.backup_id)
    return seal_record(MANIFEST, subject, manifest, key)


def seal_verification(verification: Verification, cluster: ClusterRef, key: SigningKey | None) -> bytes:
    """The verdict as a (signed when ``key`` is given) record about ``cluster``/its backup id."""
    subject = Subject(cluster=cluster.name, cluster_id=cluster.cluster_id, id=verification.backup_id)
    return seal_record(VERIFICATION, subject, verification, key)


def manifest_expect(cluster: str, backup_id: str, cluster_id: str | None = None) -> Expect:
    """What a manifest stored under ``cluster``/``backup_id`` must say about itself."""
    return Expect(MANIFEST, cluster, backup_id, cluster_id)


def read_manifest(data: bytes, what: str = "manifest") -> tuple[SignedRecord, Manifest]:
    """Parse a manifest record without trusting it (for listing); IntegrityError when unreadable."""
    rec = parse_record(data, what)
    if rec.type != MANIFEST:
        raise IntegrityError(f"{what} is a {rec.type!r} record, not a manifest")
    try:
        manifest = Manifest.model_validate(rec.record)
    except ValidationError:
        raise IntegrityError(f"{what} does not match backup format v{FORMAT_VERSION}") from None
    if manifest.format_version not in SUPPORTED_FORMATS or manifest.format_version != rec.version:
        raise IntegrityError(f"{what}: unsupported format version {manifest.format_version}")
    s = rec.subject
    if (s.cluster, s.cluster_id, s.id) != (manifest.cluster.name, manifest.cluster.cluster_id, manifest.backup_id):
        raise IntegrityError(f"{what}: its signed subject and its content name different backups")
    manifest._digest = rec.digest
    return rec, manifest


def open_manifest(data: bytes, keys: Sequence[VerifyKey] | None, expect: Expect,
                  what: str = "manifest") -> Manifest:
    """Parse a manifest and check it is the one ``expect`` names, signed by one of ``keys``
    (``keys=None``: the operator explicitly skips the signature check)."""
    rec, manifest = read_manifest(data, what)
    check_record(rec, expect, keys, what)
    return manifest


def open_verification(data: bytes, keys: Sequence[VerifyKey] | None, manifest: Manifest,
                      what: str = "verification") -> Verification:
    """Parse a verdict and check that it judged exactly ``manifest`` (type, cluster, id, digest)
    and is signed by one of ``keys`` (None: explicitly accept an unsigned verdict)."""
    expect = Expect(VERIFICATION, manifest.cluster.name, manifest.backup_id, manifest.cluster.cluster_id)
    rec = open_record(data, expect, keys, what)
    try:
        verification = Verification.model_validate(rec.record)
    except ValidationError:
        raise IntegrityError(f"{what} is not a valid verification record") from None
    if verification.backup_id != manifest.backup_id or verification.manifest_sha256 != manifest.digest:
        raise IntegrityError(f"{what} judged another manifest than the one stored: it was moved or forged")
    return verification
