"""The catalog: which complete backups a store holds for one cluster, and their state.

A backup is complete only when its manifest.json exists. Reading the catalog never trusts
a manifest for restore; :meth:`Catalog.open` checks the signature when keys are given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from etcdguard.backup.keys import SigningKey, VerifyKey
from etcdguard.backup.manifest import (
    BACKUP_ID_RE,
    MANIFEST_NAME,
    PIN_NAME,
    VERIFICATION_NAME,
    Manifest,
    Verification,
    backup_prefix,
    open_manifest,
    open_verification,
    seal,
)
from etcdguard.errors import BackupNotFoundError, EtcdGuardError, IntegrityError
from etcdguard.storage.base import BlobStore


@dataclass(frozen=True)
class BackupEntry:
    """One complete backup as listed (the manifest is parsed, not yet trusted)."""

    backup_id: str
    manifest: Manifest | None
    verification: Verification | None
    pinned: bool
    problem: str | None = None

    @property
    def created_at(self) -> datetime | None:
        """When the backup started, if the manifest could be read."""
        return self.manifest.created_at if self.manifest else None

    @property
    def verified(self) -> bool:
        """True when the latest verification passed."""
        return self.verification is not None and self.verification.result == "passed"

    def to_dict(self) -> dict[str, Any]:
        """JSON form (used by ``backups list -o json`` and the service API)."""
        m, v = self.manifest, self.verification
        return {
            "backup_id": self.backup_id,
            "pinned": self.pinned,
            "problem": self.problem,
            "verification": self.verification_state,
            "verification_detail": None if v is None else {
                "result": v.result, "reason": v.reason, "hash_proof": v.hash_proof,
                "finished_at": v.finished_at.isoformat(), "etcd_version_used": v.etcd_version_used,
                "sandbox": v.sandbox},
            "manifest": None if m is None else m.model_dump(mode="json"),
        }

    @property
    def verification_state(self) -> str:
        """'verified', 'failed', or 'never'."""
        if self.verification is None:
            return "never"
        return "verified" if self.verification.result == "passed" else "failed"


class Catalog:
    """Backups of one cluster in one store."""

    def __init__(self, store: BlobStore, cluster: str) -> None:
        self.store = store
        self.cluster = cluster

    def prefix(self, backup_id: str) -> str:
        """Store key prefix of ``backup_id``."""
        return backup_prefix(self.cluster, backup_id)

    def backup_ids(self) -> list[str]:
        """Ids of complete backups (manifest present), oldest first."""
        ids = []
        for info in self.store.list(f"{self.cluster}/"):
            parts = info.key[len(self.cluster) + 1:].split("/")
            if len(parts) == 2 and parts[1] == MANIFEST_NAME and BACKUP_ID_RE.match(parts[0]):
                ids.append(parts[0])
        return sorted(ids)

    def incomplete_ids(self) -> list[str]:
        """Ids that have objects but no manifest (interrupted backups, never restorable)."""
        complete = set(self.backup_ids())
        seen: set[str] = set(self.store.list_children(self.cluster))
        return sorted(i for i in seen - complete if BACKUP_ID_RE.match(i))

    def _read_json_record(self, backup_id: str, name: str) -> bytes | None:
        try:
            return self.store.get_bytes(f"{self.prefix(backup_id)}/{name}")
        except KeyError:
            return None

    def entry(self, backup_id: str) -> BackupEntry:
        """One backup's entry (raises BackupNotFoundError when it is not complete)."""
        raw = self._read_json_record(backup_id, MANIFEST_NAME)
        if raw is None:
            raise BackupNotFoundError(f"no complete backup {backup_id!r} for cluster {self.cluster!r} "
                                      f"in {self.store.url}")
        manifest: Manifest | None = None
        problem = None
        try:
            manifest = open_manifest(raw, None, f"manifest of {backup_id}")
        except IntegrityError as exc:
            problem = str(exc)
        verification = None
        vraw = self._read_json_record(backup_id, VERIFICATION_NAME)
        if vraw is not None:
            try:
                verification = open_verification(vraw, None, f"verification of {backup_id}")
            except IntegrityError as exc:
                problem = problem or str(exc)
        pinned = self.store.stat(f"{self.prefix(backup_id)}/{PIN_NAME}") is not None
        return BackupEntry(backup_id, manifest, verification, pinned, problem)

    def entries(self) -> list[BackupEntry]:
        """Every complete backup, newest first."""
        return [self.entry(i) for i in reversed(self.backup_ids())]

    def resolve(self, selector: str) -> str:
        """A backup id from an id, a unique id prefix, or 'latest'."""
        ids = self.backup_ids()
        if selector == "latest":
            if not ids:
                raise BackupNotFoundError(f"no backups for cluster {self.cluster!r} in {self.store.url}")
            return ids[-1]
        if selector in ids:
            return selector
        matches = [i for i in ids if i.startswith(selector)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise BackupNotFoundError(f"backup id {selector!r} is ambiguous ({len(matches)} match)")
        raise BackupNotFoundError(f"no complete backup {selector!r} for cluster {self.cluster!r} "
                                  f"in {self.store.url}")

    def open(self, backup_id: str, keys: list[VerifyKey] | None) -> Manifest:
        """The manifest of ``backup_id`` with its signature checked (``keys=None`` skips the check)."""
        raw = self._read_json_record(backup_id, MANIFEST_NAME)
        if raw is None:
            raise BackupNotFoundError(f"no complete backup {backup_id!r} in {self.store.url}")
        manifest = open_manifest(raw, keys, f"manifest of {backup_id}")
        if manifest.backup_id != backup_id or manifest.cluster.name != self.cluster:
            raise IntegrityError(f"manifest of {backup_id} describes another backup "
                                 f"({manifest.cluster.name}/{manifest.backup_id}): it was moved or forged")
        return manifest

    def write_verification(self, verification: Verification, key: SigningKey | None) -> None:
        """Store the (signed) latest verification verdict beside the backup."""
        self.store.put_bytes(f"{self.prefix(verification.backup_id)}/{VERIFICATION_NAME}",
                             seal("verification", verification, key))

    def set_pinned(self, backup_id: str, pinned: bool, reason: str = "") -> None:
        """Pin (protect from retention) or unpin a backup."""
        key = f"{self.prefix(backup_id)}/{PIN_NAME}"
        if pinned:
            body = {"pinned_at": datetime.now(timezone.utc).isoformat(), "reason": reason}
            self.store.put_bytes(key, json.dumps(body).encode())
        else:
            self.store.delete(key)

    def delete(self, backup_id: str) -> int:
        """Delete a backup: manifest first (so it stops being complete at once), then the rest."""
        prefix = self.prefix(backup_id) + "/"
        keys = [info.key for info in self.store.list(prefix)]
        if not keys:
            raise BackupNotFoundError(f"no backup {backup_id!r} in {self.store.url}")
        manifest_key = prefix + MANIFEST_NAME
        ordered = [k for k in keys if k == manifest_key] + [k for k in keys if k != manifest_key]
        for key in ordered:
            self.store.delete(key)
        return len(ordered)


def safe_entries(catalog: Catalog) -> list[BackupEntry]:
    """Entries, skipping backups deleted while listing."""
    out = []
    for backup_id in reversed(catalog.backup_ids()):
        try:
            out.append(catalog.entry(backup_id))
        except EtcdGuardError:
            continue
    return out
