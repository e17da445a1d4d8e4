"""Retention: which backups ``prune`` keeps and which it deletes.

:func:`plan_retention` is a pure function (backups in, decision out) with these guarantees,
checked by property tests:

* a pinned backup is never deleted; neither is the newest verified complete backup;
* at least ``min(min_count, number of complete backups)`` complete backups are kept;
* incomplete backups and backups dated after ``now`` are never deleted (and take no slot);
* every backup lands in exactly one of ``keep`` / ``delete``;
* raising any count of the policy never deletes more, and planning again over the kept
  backups deletes nothing.

Buckets follow restic/borg: ``daily=7`` keeps the newest backup of each of the 7 most recent
UTC days *that have a backup*, so a gap in the schedule does not eat into retention.

The rest of the module adapts the catalog (:func:`plan_entries`) and carries a plan out
(:func:`execute_retention`, :func:`apply_retention`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from etcdguard.backup.catalog import BackupEntry, Catalog, safe_entries
from etcdguard.config import RetentionConfig
from etcdguard.errors import BackupNotFoundError

PINNED = "pinned"
NEWEST_VERIFIED = "newest verified"
MINIMUM_COUNT = "minimum count"
FUTURE_DATED = "future-dated"
INCOMPLETE = "incomplete (not pruned)"
UNREADABLE = "unreadable manifest"
UNTRUSTED = "untrusted (not pruned: remove it with `backups delete ID`)"
PINNED_MEANWHILE = "pinned meanwhile"


@dataclass(frozen=True)
class RetainableBackup:
    """What retention needs to know about one backup (``created_at`` must be timezone-aware)."""

    backup_id: str
    created_at: datetime
    complete: bool
    verified: bool
    pinned: bool

    def __post_init__(self) -> None:
        if self.created_at.tzinfo is None or self.created_at.utcoffset() is None:
            raise ValueError(f"created_at of {self.backup_id} must be timezone-aware")


@dataclass(frozen=True)
class RetentionDecision:
    """``keep``: id -> reasons (newest first); ``delete``: ids, oldest first.

    After :func:`execute_retention`, ``deleted`` lists what was actually removed (in order);
    ``problems`` explains backups that were left alone because they could not be judged.
    """

    keep: dict[str, list[str]]
    delete: list[str]
    deleted: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)

    def reasons(self, backup_id: str) -> list[str]:
        """Why ``backup_id`` is kept ([] when it is deleted or unknown)."""
        return list(self.keep.get(backup_id, []))


def _hour(t: datetime) -> str:
    return f"hourly {t:%Y-%m-%dT%H}Z"


def _day(t: datetime) -> str:
    return f"daily {t:%Y-%m-%d}"


def _week(t: datetime) -> str:
    year, week, _ = t.isocalendar()
    return f"weekly {year}-W{week:02d}"


def _month(t: datetime) -> str:
    return f"monthly {t:%Y-%m}"


BucketFn = Callable[[datetime], str]


def _newest_per_bucket(ordered: Sequence[RetainableBackup], count: int, bucket: BucketFn) -> dict[str, str]:
    """id -> bucket label for the newest backup of each of the ``count`` newest buckets."""
    chosen: dict[str, str] = {}
    last: str | None = None
    for b in ordered:
        if len(chosen) >= count:
            break
        label = bucket(b.created_at.astimezone(timezone.utc))
        if label != last:
            chosen[b.backup_id] = label
            last = label
    return chosen


def plan_retention(backups: Iterable[RetainableBackup], policy: RetentionConfig,
                   now: datetime) -> RetentionDecision:
    """Decide which backups to keep (with reasons) and which to delete. Pure; see the module doc."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    items = list(backups)
    if len({b.backup_id for b in items}) != len(items):
        raise ValueError("duplicate backup ids")
    newest_first = sorted(items, key=lambda b: (b.created_at, b.backup_id), reverse=True)
    reasons: dict[str, list[str]] = {b.backup_id: [] for b in newest_first}

    complete = [b for b in newest_first if b.complete]
    verified = [b for b in complete if b.verified]
    for b in newest_first:
        if b.pinned:
            reasons[b.backup_id].append(PINNED)
        if verified and b is verified[0]:
            reasons[b.backup_id].append(NEWEST_VERIFIED)
        if b.complete and b.created_at > now:
            reasons[b.backup_id].append(FUTURE_DATED)
        if not b.complete:
            reasons[b.backup_id].append(INCOMPLETE)

    slotted = [b for b in complete if b.created_at <= now]
    for b in slotted[:policy.keep_last]:
        reasons[b.backup_id].append(f"last {policy.keep_last}")
    for count, bucket in ((policy.hourly, _hour), (policy.daily, _day),
                          (policy.weekly, _week), (policy.monthly, _month)):
        for backup_id, label in _newest_per_bucket(slotted, count, bucket).items():
            reasons[backup_id].append(label)
    # The floor: the newest min_count are always kept. (Topping up only when the other rules
    # keep too few would make raising another count able to delete more.)
    for b in slotted[:policy.min_count]:
        if not reasons[b.backup_id]:
            reasons[b.backup_id].append(MINIMUM_COUNT)

    keep = {i: r for i, r in reasons.items() if r}
    delete = [b.backup_id for b in reversed(newest_first) if b.backup_id not in keep]
    return RetentionDecision(keep=keep, delete=delete)


def retainable(entry: BackupEntry) -> RetainableBackup | None:
    """The retention view of a catalog entry; None unless its manifest is trusted."""
    if entry.manifest is None or not entry.trusted:
        return None
    created = entry.manifest.created_at
    if created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    return RetainableBackup(backup_id=entry.backup_id, created_at=created, complete=True,
                            verified=entry.verified, pinned=entry.pinned)


def _left_alone(entry: BackupEntry) -> str:
    return UNREADABLE if entry.manifest is None else UNTRUSTED


def plan_entries(entries: Iterable[BackupEntry], policy: RetentionConfig, now: datetime) -> RetentionDecision:
    """Plan over catalog entries. Only trusted entries take part; an unreadable or untrusted one
    takes no slot, is never deleted, and is reported in ``problems``."""
    listed = list(entries)
    candidates = [r for r in map(retainable, listed) if r is not None]
    decision = plan_retention(candidates, policy, now)
    alone = [e for e in listed if not e.trusted]
    keep = dict(decision.keep)
    for e in alone:
        keep[e.backup_id] = [_left_alone(e)]
    problems = {e.backup_id: e.problem or _left_alone(e) for e in alone}
    return RetentionDecision(keep=keep, delete=decision.delete, problems=problems)


DeleteCallback = Callable[[str, int], None]


def execute_retention(catalog: Catalog, decision: RetentionDecision,
                      on_delete: DeleteCallback | None = None) -> RetentionDecision:
    """Delete ``decision.delete`` oldest first; returns the decision as carried out.

    Each backup is read again right before it is deleted: one pinned (or whose manifest became
    unreadable or untrusted) since the plan was made is kept. One already gone is skipped. A store
    error stops the run (every delete removes the manifest first, so nothing half-deleted still
    looks complete).
    ``on_delete(backup_id, objects)`` is called after each deletion.
    """
    keep = {i: list(r) for i, r in decision.keep.items()}
    problems = dict(decision.problems)
    deleted: list[str] = []
    for backup_id in decision.delete:
        try:
            current = catalog.entry(backup_id)
            if current.pinned or not current.trusted:
                keep[backup_id] = [PINNED_MEANWHILE if current.pinned else _left_alone(current)]
                if not current.trusted:
                    problems[backup_id] = current.problem or _left_alone(current)
                continue
            objects = catalog.delete(backup_id)
        except BackupNotFoundError:
            problems[backup_id] = "already gone when prune reached it"
            continue
        deleted.append(backup_id)
        if on_delete is not None:
            on_delete(backup_id, objects)
    delete = [i for i in decision.delete if i not in keep]
    return RetentionDecision(keep=keep, delete=delete, deleted=deleted, problems=problems)


def apply_retention(catalog: Catalog, policy: RetentionConfig, now: datetime, dry_run: bool,
                    on_delete: DeleteCallback | None = None) -> RetentionDecision:
    """Plan retention over ``catalog`` and, unless ``dry_run``, delete what the plan says."""
    decision = plan_entries(safe_entries(catalog), policy, now)
    return decision if dry_run else execute_retention(catalog, decision, on_delete)
