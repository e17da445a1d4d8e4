"""The catalog: which complete backups a store holds for one cluster, and which of them count.

A backup is complete only when its manifest.json exists. It *counts* (retention slot, freshness,
"latest", the newest verification) only when its manifest is a record of this cluster and
backup id signed by a trusted key (:class:`Trust`); its verdict counts only when it is signed
too and names the digest of that manifest. Untrusted entries are still listed, marked, so an
operator sees what someone planted, and are removed only by an explicit ``backups delete``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from etcdguard.backup.keys import SigningKey, VerifyKey, trusted_verify_keys
from etcdguard.backup.manifest import (
    BACKUP_ID_RE,
    MANIFEST_NAME,
    PIN_NAME,
    VERIFICATION_NAME,
    ClusterRef,
    Manifest,
    Verification,
    backup_prefix,
    manifest_expect,
    open_manifest,
    open_verification,
    read_manifest,
    seal_verification,
)
from etcdguard.backup.signed import check_record
from etcdguard.config import Settings
from etcdguard.errors import BackupNotFoundError, EtcdGuardError, IntegrityError
from etcdguard.storage.base import BlobStore

LATEST = "latest"
LATEST_VERIFIED = "latest-verified"


@dataclass(frozen=True)
class Trust:
    """Which records count: signed by one of ``keys`` (``None``: the operator explicitly accepts
    unsigned records) and, when ``cluster_id`` is known, naming that etcd cluster id."""

    keys: tuple[VerifyKey, ...] | None = ()
    cluster_id: str | None = None

    @classmethod
    def of(cls, keys: Sequence[VerifyKey] | None, cluster_id: str | None = None) -> Trust:
        """Trust built from a key list (None = accept unsigned records)."""
        return cls(None if keys is None else tuple(keys), cluster_id)

    def describe(self) -> str:
        """One line for humans: which keys are trusted."""
        if self.keys is None:
            return "signatures NOT checked (unsigned records accepted)"
        return "trusted keys: " + (", ".join(k.key_id for k in self.keys) or "none configured")


@dataclass(frozen=True)
class BackupEntry:
    """One complete backup as listed.

    ``manifest`` is whatever the store holds (shown, never acted on unless ``trusted``);
    ``problem`` says why it is unreadable or untrusted. ``verification`` is set only for a
    verdict that checks against the trusted manifest (``verification_problem`` otherwise).
    """

    backup_id: str
    manifest: Manifest | None
    verification: Verification | None
    pinned: bool
    problem: str | None = None
    trusted: bool = False
    verification_problem: str | None = None

    @property
    def created_at(self) -> datetime | None:
        """When the backup started, if the manifest could be read (trusted or not)."""
        return self.manifest.created_at if self.manifest else None

    @property
    def verified(self) -> bool:
        """True when the backup is trusted and its latest (trusted) verification passed."""
        return self.trusted and self.verification is not None and self.verification.result == "passed"

    @property
    def trust_state(self) -> str:
        """'trusted', 'untrusted' (readable, but the signature or binding does not check) or 'unreadable'."""
        if self.trusted:
            return "trusted"
        return "untrusted" if self.manifest is not None else "unreadable"

    def to_dict(self, *, detail: bool = True) -> dict[str, Any]:
        """JSON form (``backups list -o json``, the service API). ``detail=False`` leaves out the
        manifest's endpoints, member ids and store keys (the service's unauthenticated view)."""
        m, v = self.manifest, self.verification
        out: dict[str, Any] = {
            "backup_id": self.backup_id,
            "pinned": self.pinned,
            "trust": self.trust_state,
            "problem": self.problem,
            "verification": self.verification_state,
            "verification_problem": self.verification_problem,
            "verification_detail": None if v is None else {
                "result": v.result, "reason": v.reason if detail else None, "hash_proof": v.hash_proof,
                "finished_at": v.finished_at.isoformat(), "etcd_version_used": v.etcd_version_used,
                "sandbox": v.sandbox},
        }
        if detail:
            out["manifest"] = None if m is None else m.model_dump(mode="json")
        else:
            out["problem"] = None if self.problem is None else self.trust_state
            out["verification_problem"] = None if self.verification_problem is None else "rejected"
            out["manifest"] = None if m is None else {
                "created_at": m.created_at.isoformat(), "revision": m.hashkv.revision,
                "snapshot_size": m.snapshot.size, "stored_size": m.stored.size,
                "etcd_version": m.source.etcd_version}
        return out

    @property
    def verification_state(self) -> str:
        """'verified', 'failed', or 'never' (an untrusted verdict counts as never)."""
        if self.verification is None:
            return "never"
        return "verified" if self.verification.result == "passed" else "failed"


def cluster_id_hex(cluster_id: int | None) -> str | None:
    """etcd's numeric cluster id as manifests record it (lower-case hex); None stays None."""
    return f"{cluster_id:x}" if cluster_id else None


def trust_from_settings(settings: Settings, *, skip_signature: bool = False,
                        cluster_id: int | str | None = None) -> Trust:
    """The configured trust: the keys of :func:`trusted_verify_keys`; with none configured and
    ``signing.allow_unsigned`` (or ``skip_signature``) unsigned records are accepted, otherwise
    nothing counts. ``cluster_id`` (when the live cluster is known) must match too."""
    expected = cluster_id_hex(cluster_id) if isinstance(cluster_id, int) else cluster_id
    if skip_signature:
        return Trust(None, expected)
    keys = trusted_verify_keys(list(settings.signing.public_keys), settings.signing.key_file,
                               settings.encryption.identity_file)
    if not keys and settings.signing.allow_unsigned:
        return Trust(None, expected)
    return Trust(tuple(keys), expected)


def to_verify(entries: Iterable[BackupEntry]) -> list[str]:
    """Ids worth verifying next, newest first: trusted backups without a trusted verdict."""
    return [e.backup_id for e in entries if e.trusted and e.verification_state == "never"]


def trusted_only(entries: Iterable[BackupEntry]) -> list[BackupEntry]:
    """The entries that count."""
    return [e for e in entries if e.trusted]


class Catalog:
    """Backups of one cluster in one store."""

    def __init__(self, store: BlobStore, cluster: str, trust: Trust | None = None) -> None:
        self.store = store
        self.cluster = cluster
        self.trust = trust or Trust()

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
        """One backup's entry, judged against :attr:`trust` (BackupNotFoundError when not complete)."""
        raw = self._read_json_record(backup_id, MANIFEST_NAME)
        if raw is None:
            raise BackupNotFoundError(f"no complete backup {backup_id!r} for cluster {self.cluster!r} "
                                      f"in {self.store.url}")
        pinned = self.store.stat(f"{self.prefix(backup_id)}/{PIN_NAME}") is not None
        what = f"manifest of {backup_id}"
        try:
            rec, manifest = read_manifest(raw, what)
        except IntegrityError as exc:
            return BackupEntry(backup_id, None, None, pinned, problem=str(exc))
        try:
            check_record(rec, manifest_expect(self.cluster, backup_id, self.trust.cluster_id), self.trust.keys, what)
        except IntegrityError as exc:
            return BackupEntry(backup_id, manifest, None, pinned, problem=str(exc))
        verification, verification_problem = None, None
        vraw = self._read_json_record(backup_id, VERIFICATION_NAME)
        if vraw is not None:
            try:
                verification = open_verification(vraw, self.trust.keys, manifest, f"verification of {backup_id}")
            except IntegrityError as exc:
                verification_problem = str(exc)
        return BackupEntry(backup_id, manifest, verification, pinned, trusted=True,
                           verification_problem=verification_problem)

    def entries(self) -> list[BackupEntry]:
        """Every complete backup, newest first."""
        return [self.entry(i) for i in reversed(self.backup_ids())]

    def resolve(self, selector: str) -> str:
        """A backup id from an id, a unique id prefix, 'latest' or 'latest-verified' (the newest
        trusted backup, the newest trusted and verified one)."""
        ids = self.backup_ids()
        if selector in (LATEST, LATEST_VERIFIED):
            untrusted = 0
            for backup_id in reversed(ids):
                entry = self._entry_or_none(backup_id)
                if entry is not None and entry.trusted and (selector == LATEST or entry.verified):
                    return backup_id
                untrusted += entry is None or not entry.trusted
            what = "verified " if selector == LATEST_VERIFIED else ""
            note = f" ({untrusted} untrusted; {self.trust.describe()})" if untrusted else ""
            raise BackupNotFoundError(f"no trusted {what}backup of cluster {self.cluster!r} in "
                                      f"{self.store.url}{note}")
        if selector in ids:
            return selector
        matches = [i for i in ids if i.startswith(selector)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise BackupNotFoundError(f"backup id {selector!r} is ambiguous ({len(matches)} match)")
        raise BackupNotFoundError(f"no complete backup {selector!r} for cluster {self.cluster!r} "
                                  f"in {self.store.url}")

    def _entry_or_none(self, backup_id: str) -> BackupEntry | None:
        try:
            return self.entry(backup_id)
        except EtcdGuardError:
            return None

    def open(self, backup_id: str, keys: Sequence[VerifyKey] | None) -> Manifest:
        """The manifest of ``backup_id``, checked to be this cluster's (and :attr:`trust`'s cluster
        id's) record of that id, signed by one of ``keys`` (``keys=None`` skips the signature)."""
        raw = self._read_json_record(backup_id, MANIFEST_NAME)
        if raw is None:
            raise BackupNotFoundError(f"no complete backup {backup_id!r} in {self.store.url}")
        return open_manifest(raw, keys, manifest_expect(self.cluster, backup_id, self.trust.cluster_id),
                             f"manifest of {backup_id}")

    def write_verification(self, verification: Verification, key: SigningKey | None,
                           manifest: Manifest | None = None) -> None:
        """Store the (signed) latest verdict beside the backup, bound to the ``manifest`` it judged
        (without one, e.g. for an unreadable manifest, the verdict counts for nothing)."""
        cluster = manifest.cluster if manifest else ClusterRef(name=self.cluster, cluster_id="")
        if manifest is not None:
            verification = verification.model_copy(update={"manifest_sha256": manifest.digest})
        self.store.put_bytes(f"{self.prefix(verification.backup_id)}/{VERIFICATION_NAME}",
                             seal_verification(verification, cluster, key))

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


def safe_entries(catalog: Catalog, workers: int = 8) -> list[BackupEntry]:
    """Entries, newest first, skipping backups deleted while listing.

    Each entry costs up to three requests (manifest, pin, verification): they are read ``workers``
    at a time, so a store holding weeks of backups answers in a fraction of the one-by-one time.
    """
    ids = list(reversed(catalog.backup_ids()))

    def read(backup_id: str) -> BackupEntry | None:
        try:
            return catalog.entry(backup_id)
        except EtcdGuardError:
            return None

    if len(ids) < 2:
        found = [read(i) for i in ids]
    else:
        with ThreadPoolExecutor(min(workers, len(ids))) as pool:
            found = list(pool.map(read, ids))
    return [e for e in found if e is not None]
