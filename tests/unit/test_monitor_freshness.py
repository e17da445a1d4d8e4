"""Backup age, verification and leader-change checks, and the leader-change tracker."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from etcdguard.monitor.freshness import (
    check_backup_age,
    check_leader_changes,
    check_verification,
    format_age,
)
from etcdguard.monitor.history import LeaderChangeTracker
from etcdguard.monitor.model import BackupFreshness, Severity
from tests.unit.test_monitor_fakes import NOW, cluster, config, healthy3, mem

H = timedelta(hours=1)


def fresh(backup_h: float | None = 1, verified_h: float | None = 2,
          passed: bool | None = True) -> BackupFreshness:
    return BackupFreshness(None if backup_h is None else NOW - backup_h * H,
                           None if verified_h is None else NOW - verified_h * H, passed)


def test_format_age() -> None:
    assert format_age(timedelta(seconds=17)) == "17s"
    assert format_age(timedelta(minutes=42)) == "42m"
    assert format_age(timedelta(hours=5, minutes=12)) == "5h 12m"
    assert format_age(timedelta(days=3, hours=4)) == "3d 4h"
    assert "future" in format_age(timedelta(seconds=-5))


def test_backup_age() -> None:
    cfg = config(max_backup_age_hours=26)
    assert check_backup_age(fresh(backup_h=1), cfg, NOW).severity is Severity.OK
    assert check_backup_age(fresh(backup_h=25.9), cfg, NOW).severity is Severity.OK
    old = check_backup_age(fresh(backup_h=27), cfg, NOW)
    assert old.severity is Severity.CRITICAL and "1d 3h old" in old.summary and old.advice
    none = check_backup_age(fresh(backup_h=None), cfg, NOW)
    assert none.severity is Severity.CRITICAL and none.summary == "no backup found"


def test_naive_datetimes_are_utc() -> None:
    naive = BackupFreshness((NOW - H).replace(tzinfo=None), None, None)
    assert check_backup_age(naive, config(), NOW).severity is Severity.OK


def test_verification() -> None:
    cfg = config(max_verification_age_hours=50)
    assert check_verification(fresh(verified_h=2), cfg, NOW).severity is Severity.OK
    failed = check_verification(fresh(verified_h=2, passed=False), cfg, NOW)
    assert failed.severity is Severity.CRITICAL and "FAILED" in failed.summary
    old = check_verification(fresh(verified_h=51), cfg, NOW)
    assert old.severity is Severity.WARNING and "too old" in old.summary
    never = check_verification(fresh(verified_h=None, passed=None), cfg, NOW)
    assert never.severity is Severity.WARNING and "no backup has been verified" in never.summary


def test_leader_changes_window() -> None:
    cfg = config(leader_changes_window_seconds=3600, leader_changes_warning=3)
    recent = [NOW - timedelta(minutes=m) for m in (1, 10, 20)]
    assert check_leader_changes(recent, cfg, NOW).severity is Severity.WARNING
    assert check_leader_changes(recent[:2], cfg, NOW).severity is Severity.OK
    old = [*recent[:2], NOW - timedelta(hours=2)]
    r = check_leader_changes(old, cfg, NOW)
    assert r.severity is Severity.OK and r.summary.startswith("2 leader change(s) in the last 1h")


def test_tracker_counts_leader_id_changes() -> None:
    t = LeaderChangeTracker(timedelta(hours=1))
    h1 = healthy3()
    assert t.observe(h1) == 0  # first poll only primes
    assert t.observe(replace(h1, timestamp=NOW + timedelta(minutes=1))) == 0
    moved = cluster(mem("m0"), mem("m1", leader=True), mem("m2"))
    moved = replace(moved, timestamp=NOW + timedelta(minutes=2))
    assert t.observe(moved) == 1
    assert t.changes() == [NOW + timedelta(minutes=2)]
    assert t.changes(NOW + timedelta(hours=2)) == []


def test_tracker_uses_member_counters_between_polls() -> None:
    t = LeaderChangeTracker(timedelta(hours=1))
    base = healthy3()
    with_counter = [replace(m, leader_changes_seen=5) for m in base.members]
    t.observe(replace(base, members=tuple(with_counter)))
    bumped = [replace(m, leader_changes_seen=8) for m in base.members]
    assert t.observe(replace(base, members=tuple(bumped), timestamp=NOW + timedelta(minutes=1))) == 3
    restarted = [replace(m, leader_changes_seen=1) for m in base.members]  # counter reset: ignored
    assert t.observe(replace(base, members=tuple(restarted), timestamp=NOW + timedelta(minutes=2))) == 0
    assert len(t.changes()) == 3


def test_tracker_ignores_leaderless_polls() -> None:
    t = LeaderChangeTracker(timedelta(hours=1))
    t.observe(healthy3())
    none = cluster(mem("m0", sees_leader=False), mem("m1", up=False), mem("m2", up=False))
    assert t.observe(none) == 0
    assert t.observe(healthy3()) == 0  # same leader came back
