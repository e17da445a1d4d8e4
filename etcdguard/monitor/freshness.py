"""Checks over time: leader changes in a window, backup age, verification result and age."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

from etcdguard.backup.catalog import BackupEntry
from etcdguard.config import MonitorConfig
from etcdguard.monitor.model import BackupFreshness, CheckResult, Severity


def _age(now: datetime, then: datetime) -> timedelta:
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    return now - then


def format_age(delta: timedelta) -> str:
    """``3d 4h``, ``5h 12m``, ``42m``, ``17s`` (negative ages: ``in the future``)."""
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "in the future (clock skew?)"
    days, rem = divmod(seconds, 86400)
    hours, rem = divmod(rem, 3600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{secs}s"


def check_leader_changes(changes: Sequence[datetime], config: MonitorConfig, now: datetime) -> CheckResult:
    """WARNING when the leader changed ``leader_changes_warning`` times or more within the window."""
    window = timedelta(seconds=config.leader_changes_window_seconds)
    recent = [t for t in changes if timedelta(0) <= _age(now, t) <= window]
    summary = f"{len(recent)} leader change(s) in the last {format_age(window)}"
    if len(recent) >= config.leader_changes_warning:
        return CheckResult("leader_changes", Severity.WARNING,
                           f"{summary} (threshold {config.leader_changes_warning})",
                           "Frequent elections: check disk fsync latency "
                           "(etcd_disk_wal_fsync_duration_seconds p99 under 10ms), network latency between "
                           "members and CPU starvation; if the network is slow, raise --heartbeat-interval "
                           "and --election-timeout together.")
    return CheckResult("leader_changes", Severity.OK, summary)


def check_backup_age(freshness: BackupFreshness, config: MonitorConfig, now: datetime) -> CheckResult:
    """CRITICAL when there is no backup or the newest is older than ``max_backup_age_hours``."""
    limit = timedelta(hours=config.max_backup_age_hours)
    if freshness.newest_backup_at is None:
        return CheckResult("backup_age", Severity.CRITICAL, "no backup found",
                           "Take one now (`etcdguard snapshot`) and check the backup schedule.")
    age = _age(now, freshness.newest_backup_at)
    summary = f"newest backup is {format_age(age)} old (max {format_age(limit)})"
    if age > limit:
        return CheckResult("backup_age", Severity.CRITICAL, summary,
                           "Scheduled backups are not succeeding: check the `etcdguard serve` logs and "
                           "etcdguard_backups_total{result=\"failure\"}, then take one now.")
    return CheckResult("backup_age", Severity.OK, summary)


def check_verification(freshness: BackupFreshness, config: MonitorConfig, now: datetime) -> CheckResult:
    """CRITICAL when the newest verification failed; WARNING when there is none or it is too old."""
    limit = timedelta(hours=config.max_verification_age_hours)
    at, passed = freshness.newest_verification_at, freshness.newest_verification_passed
    if at is None:
        return CheckResult("verification", Severity.WARNING, "no backup has been verified",
                           "Verify the newest backup (`etcdguard verify latest`): until then it is a hope.")
    age = _age(now, at)
    if passed is False:
        return CheckResult("verification", Severity.CRITICAL,
                           f"newest verification FAILED ({format_age(age)} ago)",
                           "Do not rely on that backup: read the verification report, take a new snapshot "
                           "and verify it.")
    summary = f"newest verification passed {format_age(age)} ago (max {format_age(limit)})"
    if age > limit:
        return CheckResult("verification", Severity.WARNING, f"{summary}: too old",
                           "Scheduled verification is not running: check verify_cron / verify_after_snapshot "
                           "and the Docker or local etcd sandbox.")
    return CheckResult("verification", Severity.OK, summary)


def freshness_from_entries(entries: Sequence[BackupEntry]) -> BackupFreshness:
    """Newest backup and newest verification of a catalog listing; only trusted backups and
    their trusted verdicts count (a planted or copied record earns no credit)."""
    trusted = [e for e in entries if e.trusted]
    newest = max((e.created_at for e in trusted if e.created_at is not None), default=None)
    verified = [e.verification for e in trusted if e.verification is not None]
    latest = max(verified, key=lambda v: v.finished_at, default=None)
    return BackupFreshness(newest_backup_at=newest,
                           newest_verification_at=latest.finished_at if latest else None,
                           newest_verification_passed=(latest.result == "passed") if latest else None)
