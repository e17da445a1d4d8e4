"""Leftovers of backups that were killed (SIGKILL, OOM, power loss) before they could clean up.

Three kinds, all under ``<cluster>/`` in the store and none of them restorable:

* ``multipart upload``: an S3 upload that was never completed nor aborted (billed storage);
* ``partial file`` / ``empty directory``: a local store's ``.partial-*`` temp file, or the
  backup directory it was in;
* ``no manifest``: objects of a backup whose manifest was never written.

Each has a *last activity*: the newest write to it (for a backup directory, also the backup's
start time encoded in its id and any write still going on inside it). :func:`remove_leftovers`
removes only those whose last activity is older than the grace period, so a backup that
another process is writing right now (its parts or temp file keep growing) is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from etcdguard.backup.catalog import Catalog
from etcdguard.backup.manifest import BACKUP_ID_RE, MANIFEST_NAME
from etcdguard.storage.base import IncompleteWrite

NO_MANIFEST = "no manifest"


@dataclass(frozen=True)
class Leftover:
    """One leftover of an interrupted backup."""

    kind: str
    key: str
    backup_id: str | None
    last_activity: datetime
    size: int | None = None

    def age_seconds(self, now: datetime) -> float:
        """Seconds since the last write."""
        return max(0.0, (now - self.last_activity).total_seconds())

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"kind": self.kind, "key": self.key, "backup_id": self.backup_id,
                "last_activity": self.last_activity.isoformat(), "size": self.size}


def backup_started(backup_id: str) -> datetime | None:
    """The UTC start time a backup id encodes (``20261126T150000Z-1a2b3c``), or None."""
    if not BACKUP_ID_RE.match(backup_id):
        return None
    return datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)


def _backup_id_of(catalog: Catalog, key: str) -> str | None:
    parts = key[len(catalog.cluster) + 1:].split("/")
    return parts[0] if len(parts) > 1 and BACKUP_ID_RE.match(parts[0]) else None


def find_leftovers(catalog: Catalog) -> list[Leftover]:
    """Every leftover of ``catalog``'s cluster, oldest activity first."""
    store = catalog.store
    writes: list[IncompleteWrite] = store.list_incomplete(f"{catalog.cluster}/")
    found = [Leftover(w.kind, w.key, _backup_id_of(catalog, w.key), w.last_activity, w.size) for w in writes]
    for backup_id in catalog.incomplete_ids():
        objects = list(store.list(catalog.prefix(backup_id) + "/"))
        if any(o.key.endswith("/" + MANIFEST_NAME) for o in objects):
            continue  # completed meanwhile
        times = [o.modified or datetime.now(timezone.utc) for o in objects]
        times += [w.last_activity for w in found if w.backup_id == backup_id]
        started = backup_started(backup_id)
        if started is not None:
            times.append(started)
        found.append(Leftover(NO_MANIFEST, catalog.prefix(backup_id) + "/", backup_id, max(times),
                              sum(o.size for o in objects)))
    return sorted(found, key=lambda leftover: (leftover.last_activity, leftover.key))


def stale(leftovers: list[Leftover], grace: timedelta, now: datetime) -> list[Leftover]:
    """The leftovers whose last activity is older than ``grace``; a backup directory counts
    as active while anything inside it is."""
    cutoff = now - grace
    active = {lo.backup_id for lo in leftovers if lo.backup_id and lo.last_activity > cutoff}
    return [lo for lo in leftovers if lo.last_activity <= cutoff and lo.backup_id not in active]


def remove_leftovers(catalog: Catalog, grace: timedelta, now: datetime | None = None) -> list[Leftover]:
    """Remove the leftovers idle for longer than ``grace``; returns what was removed."""
    now = now or datetime.now(timezone.utc)
    doomed = stale(find_leftovers(catalog), grace, now)
    store = catalog.store
    for leftover in doomed:
        if leftover.kind != NO_MANIFEST:
            continue
        keys = [o.key for o in store.list(leftover.key)]
        if any(k.endswith("/" + MANIFEST_NAME) for k in keys):
            continue  # a manifest appeared: it is a backup now
        for key in keys:
            store.delete(key)
    if any(lo.kind != NO_MANIFEST for lo in doomed):
        store.cleanup_incomplete(f"{catalog.cluster}/", older_than_seconds=grace.total_seconds())
    return doomed
