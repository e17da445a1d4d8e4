"""The kit manifest: every file's path, mode, owner and digest, the certificates seen, and the object."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from etcdguard.backup.manifest import StoredObject

KIT_FORMAT_VERSION = 1
KITS_DIR = "kits"
KIT_OBJECT = "kit.tar.zst.age"
KIT_PLAIN_OBJECT = "kit.tar.zst"
KIT_MANIFEST_NAME = "manifest.json"
KIT_ID_RE = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")

FileRole = Literal["ca-cert", "ca-key", "sa-key", "sa-pub", "encryption-config", "encryption-key-file",
                   "static-pod-manifest", "kubeadm-config", "directory"]
SECRET_ROLES: frozenset[str] = frozenset({"ca-key", "sa-key", "encryption-config", "encryption-key-file"})


def new_kit_id(now: datetime | None = None) -> str:
    """A time-sortable id, like backup ids: ``20261126T150000Z-<6 hex>``."""
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def kits_prefix(cluster: str) -> str:
    """Store key prefix of every kit of ``cluster``."""
    return f"{cluster}/{KITS_DIR}"


def kit_prefix(cluster: str, kit_id: str) -> str:
    """Store key prefix of one kit."""
    return f"{kits_prefix(cluster)}/{kit_id}"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KitFile(_Record):
    """One file (or directory) in the kit, as it was on the host."""

    path: str                 # absolute path on the host, e.g. /etc/kubernetes/pki/ca.key
    role: FileRole
    mode: int                 # permission bits (st_mode & 0o7777)
    uid: int
    gid: int
    user: str = ""
    group: str = ""
    size: int = 0
    sha256: str = ""          # "" for directories

    @property
    def is_dir(self) -> bool:
        """True for a directory entry."""
        return self.role == "directory"

    @property
    def member_name(self) -> str:
        """The tar member name (the path without its leading slash)."""
        return self.path.lstrip("/")


class CertificateInfo(_Record):
    """A certificate seen while collecting: CAs are in the kit, leaf certificates only listed."""

    path: str
    subject: str
    issuer: str
    not_after: datetime
    is_ca: bool
    in_kit: bool


class KitSources(_Record):
    """Where the kit was collected from."""

    pki_dir: str
    manifests_dir: str
    encryption_config: str | None = None
    kubeadm_config: list[str] = Field(default_factory=list)


class ArchiveInfo(_Record):
    """The plain tar archive."""

    size: int
    sha256: str


class KitManifest(_Record):
    """Everything needed to trust and restore one kit."""

    format_version: int = KIT_FORMAT_VERSION
    kit_id: str
    cluster_name: str
    cluster_id: str
    node: str
    content_sha256: str
    files: list[KitFile]
    certificates: list[CertificateInfo] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    sources: KitSources
    archive: ArchiveInfo
    stored: StoredObject  # the same record as a backup's stored object
    signing_key_id: str | None
    created_at: datetime
    tool_version: str


def content_hash(files: list[KitFile], certificates: list[CertificateInfo]) -> str:
    """sha256 over what a restore would reproduce (every path, role, mode, owner and digest) and the
    certificates listed (path and expiry, so a renewed leaf certificate is recorded).

    Two collections with the same hash make the same kit, so no new kit is needed.
    """
    rows = sorted((f.path, f.role, f.mode, f.uid, f.gid, f.user, f.group, f.sha256) for f in files)
    certs = sorted((c.path, c.subject, c.not_after.isoformat()) for c in certificates)
    return hashlib.sha256(json.dumps([rows, certs], separators=(",", ":")).encode()).hexdigest()
