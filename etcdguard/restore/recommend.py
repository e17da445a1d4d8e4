"""The recommendation: which recovery path, and what each would lose, in words and numbers.

Paths: (a) quorum is healthy: no restore (unless the etcd that answers is a new, empty one,
as ``etcdguard.restore.emptiness`` decides, while the backup holds data: then (c) or (d));
(b) quorum lost but a survivor holds data newer than any backup: recover from the survivor;
(c) restore from the backup;
(d) restore this node alone as a one-member cluster (the single control-plane fallback), from the
backup. (b) and (c) become one-member restores too when only this node is restored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from etcdguard.monitor.freshness import format_age
from etcdguard.restore.assess import Assessment, BackupRef, Survivor

BUMP_MINIMUM = 1_000_000_000
_BUMP_ROUNDING = 1_000_000


class RestorePath(str, Enum):
    """The recovery paths (letters as in docs/restore.md)."""

    NONE = "a"
    SURVIVOR = "b"
    BACKUP = "c"
    SINGLE = "d"


PATH_TITLES = {
    RestorePath.NONE: "no restore: the cluster has quorum",
    RestorePath.SURVIVOR: "recover from the surviving member's data",
    RestorePath.BACKUP: "restore from the backup",
    RestorePath.SINGLE: "restore this node as a one-member cluster from the backup",
}


def human_age(seconds: float) -> str:
    """``3d 4h``, ``2h 5m``, ``40s``."""
    return format_age(timedelta(seconds=seconds))


def bump_amount(snapshot_revision: int, newest_seen_revision: int) -> int:
    """How far to bump the restored revision: >= 1e9 and that much above the newest revision seen.

    Informers and watches that saw revisions up to ``newest_seen_revision`` must never see a
    restored revision at or below it again. Rounded up to a whole million for readability.
    """
    wanted = BUMP_MINIMUM + max(0, newest_seen_revision - snapshot_revision)
    return -(-wanted // _BUMP_ROUNDING) * _BUMP_ROUNDING


@dataclass(frozen=True)
class Recommendation:
    """The chosen path, its source, and the data it gives up."""

    path: RestorePath
    reason: str
    data_loss: str
    single_member: bool
    backup: BackupRef | None = None
    survivor: Survivor | None = None
    lost_revisions: int | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def restores(self) -> bool:
        """False for path (a)."""
        return self.path is not RestorePath.NONE

    @property
    def source_revision(self) -> int | None:
        """The revision the restored cluster starts from (before any bump)."""
        if self.survivor is not None:
            return self.survivor.revision
        return self.backup.revision if self.backup else None

    @property
    def title(self) -> str:
        """``(c) restore from the backup`` and so on."""
        text = PATH_TITLES[self.path]
        if self.single_member and self.path is RestorePath.SURVIVOR:
            text += " (as a one-member cluster)"
        return f"({self.path.value}) {text}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"path": self.path.value, "title": self.title, "reason": self.reason,
                "data_loss": self.data_loss, "single_member": self.single_member,
                "backup_id": self.backup.backup_id if self.backup else None,
                "survivor": self.survivor.name if self.survivor else None,
                "source_revision": self.source_revision, "lost_revisions": self.lost_revisions,
                "notes": list(self.notes)}


def _backup_words(backup: BackupRef, now: datetime) -> str:
    verified = "verified" if backup.verified else "NOT verified"
    return (f"backup {backup.backup_id} (revision {backup.revision:,}, {human_age(backup.age_seconds(now))} old, "
            f"{verified})")


def recommend(a: Assessment, *, backup: BackupRef | None, force: bool = False, single_member: bool = False,
              multi_member_plan: bool = False, prefer_backup: bool = False) -> Recommendation:
    """Choose a path for ``a`` restoring from ``backup`` (the one the operator chose, or the newest).

    A cluster with quorum that is a new, empty etcd (``Assessment.empty_check``) is restored
    without ``force`` when ``backup`` holds data. ``force`` turns path (a) into a restore anyway;
    ``single_member`` asks for (d); ``multi_member_plan`` means every member is restored from one
    plan (never single); ``prefer_backup`` ignores a newer survivor (the operator chose a backup explicitly).
    """
    now = a.taken_at
    single = single_member or not multi_member_plan  # without a plan for every member, only this node
    notes: list[str] = []
    empty = a.quorum.has_quorum and a.empty_cluster and backup is not None and backup.revision > 1
    if a.quorum.has_quorum and not force and not empty:
        return Recommendation(
            RestorePath.NONE,
            f"the cluster has quorum ({a.quorum.headline}): {a.quorum.reason}. Restoring would throw away "
            "every write since the backup and split the cluster; replace failed members with "
            "'etcdguard member replace' instead",
            "none (nothing is restored)", single)
    if a.quorum.has_quorum and not empty:
        notes.append("--force: restoring although the cluster has quorum; every write after the source "
                     "revision is lost and clients must be pointed at the restored cluster")
    best = a.best_survivor
    newest_backup_rev = a.newest_backup.revision if a.newest_backup else 0
    if best is not None and best.revision > newest_backup_rev and not prefer_backup and not a.quorum.has_quorum:
        gap = best.revision - newest_backup_rev
        against = (f"{gap:,} revisions newer than the newest {_backup_words(a.newest_backup, now)}"
                   if a.newest_backup else "and there is no backup at all")
        return Recommendation(
            RestorePath.SURVIVOR,
            f"quorum is lost, but {best.describe()} holds data {against}; it is recovered as a snapshot "
            "of that member with a new cluster identity (not --force-new-cluster, which keeps stale peer "
            "URLs and learners)",
            f"only writes that reached no surviving member (beyond revision {best.revision:,}); "
            f"restoring the backup instead would lose {gap:,} revisions" if a.newest_backup else
            f"only writes that reached no surviving member (beyond revision {best.revision:,})",
            single, survivor=best, lost_revisions=0, notes=tuple(notes))
    if backup is None:
        return Recommendation(RestorePath.BACKUP, "no backup of this cluster was found in the store and no "
                              "member holds data", "everything", single, notes=tuple(notes))
    lost = max(0, a.newest_seen_revision - backup.revision)
    loss = (f"every write after revision {backup.revision:,}: {lost:,} revisions up to the newest seen "
            f"({a.newest_seen_revision:,}), {human_age(backup.age_seconds(now))} of changes")
    if best is not None and best.revision > backup.revision:
        loss += f"; {best.name} still holds revision {best.revision:,}"
    if not backup.verified:
        notes.append(f"backup {backup.backup_id} was never verified: run 'etcdguard verify {backup.backup_id}' "
                     "first if there is time")
    if a.newest_verified is not None and a.newest_verified.backup_id != backup.backup_id and not backup.verified:
        notes.append(f"the newest verified backup is {a.newest_verified.backup_id}")
    path = RestorePath.SINGLE if (single and a.known_members > 1) or single_member else RestorePath.BACKUP
    if empty:
        check = a.empty_check
        why = (f"{check.reason}; it was started fresh, e.g. from a restored manifest; " + (
            "restoring replaces nothing" if (check.revision or 0) <= 1 else
            f"restoring replaces only what was written to it since (revision {check.revision:,}; its data "
            "dir is kept aside)"))
    elif a.quorum.has_quorum:
        why = "forced"
    else:
        why = "quorum is lost and no member holds data newer than the backup"
    if path is RestorePath.SINGLE:
        why += ("; this node is restored alone as a one-member cluster (grow it back with "
                "'etcdguard member add'); to restore every member from one backup instead, write a plan with "
                "--plan-only --plan-file and run it on each node")
    return Recommendation(path, f"{why}: {_backup_words(backup, now)}", loss, single, backup=backup,
                          lost_revisions=lost, notes=tuple(notes))
