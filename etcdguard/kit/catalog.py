"""The kits of one cluster in a store: listing, trust, fetching, and the kit matching a snapshot.

A kit exists only when its manifest does (written last). A kit whose manifest does not verify
against the trusted keys is listed as untrusted and counts for nothing: it is never "latest",
never the kit a snapshot matches, and never the baseline that decides whether a new kit is saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import pyrage

from etcdguard.backup.keys import VerifyKey
from etcdguard.errors import BackupNotFoundError, IntegrityError
from etcdguard.kit.archive import decode, read_members
from etcdguard.kit.model import KIT_ID_RE, KIT_MANIFEST_NAME, KitManifest, kit_prefix, kits_prefix
from etcdguard.kit.record import open_kit, read_kit
from etcdguard.storage.base import BlobStore


@dataclass(frozen=True)
class KitEntry:
    """One kit as listed: its manifest (parsed) and whether it verified."""

    kit_id: str
    manifest: KitManifest | None
    trusted: bool
    problem: str | None = None
    signer: str | None = None

    @property
    def created_at(self) -> datetime | None:
        """When the kit was collected, if the manifest could be read."""
        return self.manifest.created_at if self.manifest else None


@dataclass(frozen=True)
class KitMatch:
    """The kit that goes with a snapshot, and why."""

    entry: KitEntry
    reason: str


class KitCatalog:
    """Kits of one cluster in one store."""

    def __init__(self, store: BlobStore, cluster: str) -> None:
        self.store = store
        self.cluster = cluster

    def manifest_key(self, kit_id: str) -> str:
        """Store key of a kit's manifest."""
        return f"{kit_prefix(self.cluster, kit_id)}/{KIT_MANIFEST_NAME}"

    def object_key(self, manifest: KitManifest) -> str:
        """Store key of a kit's object."""
        return f"{kit_prefix(self.cluster, manifest.kit_id)}/{manifest.stored.key}"

    def kit_ids(self) -> list[str]:
        """Ids of complete kits (manifest present), oldest first."""
        base = kits_prefix(self.cluster) + "/"
        ids = []
        for info in self.store.list(base):
            parts = info.key[len(base):].split("/")
            if len(parts) == 2 and parts[1] == KIT_MANIFEST_NAME and KIT_ID_RE.match(parts[0]):
                ids.append(parts[0])
        return sorted(ids)

    def entry(self, kit_id: str, keys: Sequence[VerifyKey] | None) -> KitEntry:
        """One kit's entry; trusted only when its manifest verifies (``keys=None``: unsigned mode)."""
        try:
            raw = self.store.get_bytes(self.manifest_key(kit_id))
        except KeyError:
            raise BackupNotFoundError(f"no kit {kit_id!r} for cluster {self.cluster!r} in {self.store.url}") from None
        try:
            manifest, signer = read_kit(raw, f"kit manifest {kit_id}")
        except IntegrityError as exc:
            return KitEntry(kit_id, None, False, str(exc))
        try:
            open_kit(raw, keys, self.cluster, kit_id, what=f"kit manifest {kit_id}")
        except IntegrityError as exc:
            return KitEntry(kit_id, manifest, False, str(exc), signer)
        return KitEntry(kit_id, manifest, True, None, signer)

    def entries(self, keys: Sequence[VerifyKey] | None) -> list[KitEntry]:
        """Every kit, newest first (kits deleted while listing are skipped)."""
        out = []
        for kit_id in reversed(self.kit_ids()):
            try:
                out.append(self.entry(kit_id, keys))
            except BackupNotFoundError:
                continue
        return out

    def newest_trusted(self, keys: Sequence[VerifyKey] | None) -> KitEntry | None:
        """The newest kit whose manifest verifies, or None."""
        return next((e for e in self.entries(keys) if e.trusted), None)

    def resolve(self, selector: str, keys: Sequence[VerifyKey] | None) -> str:
        """A kit id from an id, a unique id prefix, or 'latest' (the newest trusted kit)."""
        if selector == "latest":
            newest = self.newest_trusted(keys)
            if newest is None:
                raise BackupNotFoundError(f"no trusted kit for cluster {self.cluster!r} in {self.store.url}")
            return newest.kit_id
        ids = self.kit_ids()
        matches = [i for i in ids if i == selector] or [i for i in ids if i.startswith(selector)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise BackupNotFoundError(f"kit id {selector!r} is ambiguous ({len(matches)} match)")
        raise BackupNotFoundError(f"no kit {selector!r} for cluster {self.cluster!r} in {self.store.url}")

    def open(self, kit_id: str, keys: Sequence[VerifyKey] | None) -> KitManifest:
        """The manifest of ``kit_id`` with its signature and binding checked (``keys=None`` skips the signature)."""
        try:
            raw = self.store.get_bytes(self.manifest_key(kit_id))
        except KeyError:
            raise BackupNotFoundError(f"no kit {kit_id!r} for cluster {self.cluster!r} in {self.store.url}") from None
        return open_kit(raw, keys, self.cluster, kit_id, what=f"kit manifest {kit_id}")

    def fetch(self, manifest: KitManifest, identities: list[pyrage.x25519.Identity]) -> dict[str, bytes]:
        """Every file's bytes by host path, after all checks (stored size first, before the download)."""
        key = self.object_key(manifest)
        info = self.store.stat(key)
        if info is None:
            raise IntegrityError(f"kit {manifest.kit_id}: its object {manifest.stored.key} is missing")
        if info.size != manifest.stored.size:
            raise IntegrityError(f"kit {manifest.kit_id}: the stored object has {info.size} bytes, "
                                 f"its manifest says {manifest.stored.size}")
        try:
            with self.store.open_reader(key) as reader:  # never more than the manifest states (+1 to notice)
                stored = reader.read(manifest.stored.size + 1)
        except KeyError:
            raise IntegrityError(f"kit {manifest.kit_id}: its object {manifest.stored.key} is missing") from None
        return read_members(decode(stored, manifest, identities), manifest)

    def delete(self, kit_id: str) -> None:
        """Delete a kit: its manifest first (so it stops existing at once), then the rest."""
        prefix = kit_prefix(self.cluster, kit_id) + "/"
        keys = [info.key for info in self.store.list(prefix)]
        for key in sorted(keys, key=lambda k: not k.endswith("/" + KIT_MANIFEST_NAME)):
            self.store.delete(key)


def matching_kit(store: BlobStore, cluster: str, at: datetime, keys: Sequence[VerifyKey] | None,
                 cluster_id: str | None = None) -> KitMatch | None:
    """The trusted kit of ``cluster`` (and ``cluster_id`` when given) that goes with a snapshot taken at ``at``.

    Kits are saved only when the control plane changed, so the kit in effect at ``at`` is the newest
    one collected at or before it; when every kit is newer, the closest one after it.
    """
    entries = [e for e in KitCatalog(store, cluster).entries(keys) if e.trusted and e.manifest is not None
               and (cluster_id is None or e.manifest.cluster_id == cluster_id)]
    before = [e for e in entries if e.manifest is not None and e.manifest.created_at <= at]
    if before:
        best = max(before, key=lambda e: e.manifest.created_at if e.manifest else at)
        return KitMatch(best, "the kit in effect when the snapshot was taken")
    if entries:
        best = min(entries, key=lambda e: e.manifest.created_at if e.manifest else at)
        return KitMatch(best, "the oldest kit, collected after the snapshot")
    return None
