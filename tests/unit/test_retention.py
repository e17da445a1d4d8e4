"""Retention policy: property tests for its guarantees, and examples for the buckets."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etcdguard.backup.catalog import BackupEntry
from etcdguard.backup.retention import (
    FUTURE_DATED,
    INCOMPLETE,
    MINIMUM_COUNT,
    NEWEST_VERIFIED,
    PINNED,
    UNREADABLE,
    RetainableBackup,
    RetentionDecision,
    plan_entries,
    plan_retention,
)
from etcdguard.config import RetentionConfig

UTC = timezone.utc
BASE = datetime(2026, 6, 1, tzinfo=UTC)
NOTHING = RetentionConfig(keep_last=0, hourly=0, daily=0, weekly=0, monthly=0, min_count=1)
POLICY_FIELDS = ("keep_last", "hourly", "daily", "weekly", "monthly", "min_count")

zones = st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))])


@st.composite
def backup_lists(draw: st.DrawFn) -> list[RetainableBackup]:
    """Up to 40 backups spread over ~40 intervals of one scale, so that buckets hold several."""
    scale = draw(st.sampled_from([10, 60, 60 * 24, 60 * 24 * 7, 60 * 24 * 30]))  # minutes
    size = draw(st.integers(0, 40))
    offsets = draw(st.lists(st.integers(0, 40 * scale), min_size=size, max_size=size))
    return [RetainableBackup(backup_id=f"b{i:03d}",
                             created_at=(BASE + timedelta(minutes=m)).astimezone(draw(zones)),
                             complete=draw(st.integers(0, 5)) > 0, verified=draw(st.integers(0, 3)) == 0,
                             pinned=draw(st.integers(0, 15)) == 0)
            for i, m in enumerate(offsets)]


def count(high: int) -> st.SearchStrategy[int]:
    """Zero half of the time: small policies are where the rules interact."""
    return st.one_of(st.just(0), st.integers(1, high))


policies = st.builds(RetentionConfig, keep_last=count(8), hourly=count(8), daily=count(8), weekly=count(6),
                     monthly=count(6), min_count=st.integers(1, 12))
# Few rules and a high floor: where min_count and the buckets interact.
sparse_policies = st.builds(RetentionConfig, keep_last=st.integers(0, 2), hourly=st.integers(0, 3),
                            daily=st.integers(0, 3), weekly=st.integers(0, 3), monthly=st.integers(0, 3),
                            min_count=st.integers(2, 12))
# Mostly after every backup; sometimes before the newest ones, so future-dated ones occur.
LATER = BASE + timedelta(days=4 * 365)
nows = st.one_of(st.just(LATER), st.builds(lambda m: BASE + timedelta(minutes=m), st.integers(0, 60 * 24 * 400)))

PROPS = settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)


def newest(backups: list[RetainableBackup]) -> RetainableBackup | None:
    return max(backups, key=lambda b: (b.created_at, b.backup_id), default=None)


def plan(backups: list[RetainableBackup], policy: RetentionConfig = NOTHING,
         now: datetime = BASE + timedelta(days=400)) -> RetentionDecision:
    return plan_retention(backups, policy, now)


# ---- properties ---------------------------------------------------------------------------------

@PROPS
@given(backup_lists(), policies, nows)
def test_every_backup_is_kept_or_deleted_exactly_once(backups: list[RetainableBackup],
                                                      policy: RetentionConfig, now: datetime) -> None:
    d = plan_retention(backups, policy, now)
    ids = {b.backup_id for b in backups}
    assert set(d.keep) | set(d.delete) == ids
    assert not set(d.keep) & set(d.delete)
    assert len(d.delete) == len(set(d.delete))
    assert all(d.keep.values()), "every kept backup says why"


@PROPS
@given(backup_lists(), policies, nows)
def test_pinned_incomplete_and_future_dated_backups_are_never_deleted(
        backups: list[RetainableBackup], policy: RetentionConfig, now: datetime) -> None:
    deleted = set(plan_retention(backups, policy, now).delete)
    for b in backups:
        if b.pinned or not b.complete or b.created_at > now:
            assert b.backup_id not in deleted


@PROPS
@given(backup_lists(), policies, nows)
def test_the_newest_verified_backup_is_never_deleted(backups: list[RetainableBackup],
                                                     policy: RetentionConfig, now: datetime) -> None:
    d = plan_retention(backups, policy, now)
    for candidates in ([b for b in backups if b.verified and b.complete], [b for b in backups if b.verified]):
        best = newest(candidates)
        if best is not None:
            assert best.backup_id in d.keep


@PROPS
@given(backup_lists(), policies, nows)
def test_never_below_min_count_complete_backups(backups: list[RetainableBackup],
                                                policy: RetentionConfig, now: datetime) -> None:
    d = plan_retention(backups, policy, now)
    complete = [b for b in backups if b.complete]
    kept = [b for b in complete if b.backup_id in d.keep]
    assert len(kept) >= min(policy.min_count, len(complete))


@PROPS
@given(backup_lists(), policies, nows)
def test_delete_is_oldest_first(backups: list[RetainableBackup], policy: RetentionConfig, now: datetime) -> None:
    by_id = {b.backup_id: b for b in backups}
    order = [(by_id[i].created_at, i) for i in plan_retention(backups, policy, now).delete]
    assert order == sorted(order)


@PROPS
@given(backup_lists(), policies, nows)
def test_planning_again_over_the_kept_backups_deletes_nothing(
        backups: list[RetainableBackup], policy: RetentionConfig, now: datetime) -> None:
    first = plan_retention(backups, policy, now)
    again = plan_retention([b for b in backups if b.backup_id in first.keep], policy, now)
    assert again.delete == []
    assert again.keep == first.keep


@settings(PROPS, max_examples=1000)
@given(backup_lists(), st.one_of(policies, sparse_policies), nows, st.sampled_from(POLICY_FIELDS),
       st.integers(1, 5))
def test_raising_any_count_never_deletes_more(backups: list[RetainableBackup], policy: RetentionConfig,
                                              now: datetime, name: str, extra: int) -> None:
    bigger = policy.model_copy(update={name: getattr(policy, name) + extra})
    assert set(plan_retention(backups, bigger, now).delete) <= set(plan_retention(backups, policy, now).delete)


@PROPS
@given(backup_lists(), policies, nows, st.randoms(use_true_random=False))
def test_input_order_does_not_matter(backups: list[RetainableBackup], policy: RetentionConfig,
                                     now: datetime, rnd: object) -> None:
    shuffled = list(backups)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert plan_retention(shuffled, policy, now) == plan_retention(backups, policy, now)


@PROPS
@given(backup_lists(), policies, nows)
def test_timezone_of_the_input_does_not_matter(backups: list[RetainableBackup], policy: RetentionConfig,
                                               now: datetime) -> None:
    in_utc = [dataclasses.replace(b, created_at=b.created_at.astimezone(UTC)) for b in backups]
    assert plan_retention(in_utc, policy, now) == plan_retention(backups, policy, now)


# ---- examples -----------------------------------------------------------------------------------

def b(backup_id: str, when: str, *, complete: bool = True, verified: bool = False,
      pinned: bool = False) -> RetainableBackup:
    return RetainableBackup(backup_id, datetime.fromisoformat(when), complete, verified, pinned)


def test_keep_last_keeps_the_newest_complete_ones() -> None:
    backups = [b(f"h{h:02d}", f"2026-11-25T{h:02d}:00:00+00:00") for h in range(10)]
    d = plan(backups, NOTHING.model_copy(update={"keep_last": 3}))
    assert d.keep == {"h09": ["last 3"], "h08": ["last 3"], "h07": ["last 3"]}
    assert d.delete == [f"h{h:02d}" for h in range(7)]


def test_daily_keeps_the_newest_of_each_recent_day_with_a_backup() -> None:
    backups = [b(f"d{day}-{h:02d}", f"2026-11-{day}T{h:02d}:00:00+00:00") for day in (20, 21, 24, 25) for h in (1, 13)]
    d = plan(backups, NOTHING.model_copy(update={"daily": 3}))
    # Days without backups (22, 23) do not count: the 3 latest days that have one are 25, 24, 21.
    assert d.keep == {"d25-13": ["daily 2026-11-25"], "d24-13": ["daily 2026-11-24"],
                      "d21-13": ["daily 2026-11-21"]}
    assert d.delete == ["d20-01", "d20-13", "d21-01", "d24-01", "d25-01"]


def test_hourly_buckets_are_calendar_hours() -> None:
    backups = [b("a", "2026-11-25T10:05:00+00:00"), b("b", "2026-11-25T10:55:00+00:00"),
               b("c", "2026-11-25T11:01:00+00:00")]
    d = plan(backups, NOTHING.model_copy(update={"hourly": 5}))
    assert d.keep == {"c": ["hourly 2026-11-25T11Z"], "b": ["hourly 2026-11-25T10Z"]}
    assert d.delete == ["a"]


def test_weekly_uses_iso_weeks_across_the_new_year() -> None:
    backups = [b("thu", "2026-12-31T12:00:00+00:00"), b("sun", "2027-01-03T12:00:00+00:00"),
               b("mon", "2027-01-04T12:00:00+00:00")]
    d = plan(backups, NOTHING.model_copy(update={"weekly": 2}))
    assert d.keep == {"mon": ["weekly 2027-W01"], "sun": ["weekly 2026-W53"]}
    assert d.delete == ["thu"]


def test_monthly_and_several_reasons_for_one_backup() -> None:
    backups = [b("sep", "2026-09-30T23:00:00+00:00"), b("oct1", "2026-10-01T00:00:00+00:00"),
               b("oct2", "2026-10-31T23:59:59+00:00"), b("nov", "2026-11-02T00:00:00+00:00")]
    d = plan(backups, NOTHING.model_copy(update={"monthly": 2, "keep_last": 1, "daily": 1}))
    assert d.keep == {"nov": ["last 1", "daily 2026-11-02", "monthly 2026-11"], "oct2": ["monthly 2026-10"]}
    assert d.delete == ["sep", "oct1"]


def test_buckets_are_utc_whatever_the_offset_of_the_timestamp() -> None:
    # 23:30 at -02:00 is 01:30 UTC the next day.
    backups = [b("late", "2026-11-25T23:30:00-02:00"), b("early", "2026-11-26T00:30:00+00:00")]
    d = plan(backups, NOTHING.model_copy(update={"daily": 5}))
    assert d.keep == {"late": ["daily 2026-11-26"]}
    assert d.delete == ["early"]


def test_pinned_newest_verified_and_minimum_count_reasons() -> None:
    backups = [b("old-pinned", "2026-01-01T00:00:00+00:00", pinned=True),
               b("old-verified", "2026-02-01T00:00:00+00:00", verified=True),
               b("older-verified", "2026-01-15T00:00:00+00:00", verified=True),
               b("x", "2026-03-01T00:00:00+00:00"), b("y", "2026-03-02T00:00:00+00:00"),
               b("z", "2026-03-03T00:00:00+00:00")]
    d = plan(backups, NOTHING.model_copy(update={"min_count": 2}))
    assert d.keep == {"z": [MINIMUM_COUNT], "y": [MINIMUM_COUNT], "old-verified": [NEWEST_VERIFIED],
                      "old-pinned": [PINNED]}
    assert d.delete == ["older-verified", "x"]


def test_incomplete_backups_are_kept_and_take_no_slot() -> None:
    backups = [b("done", "2026-11-25T10:00:00+00:00"),
               b("partial", "2026-11-25T11:00:00+00:00", complete=False, verified=True),
               b("older", "2026-11-25T09:00:00+00:00")]
    d = plan(backups, NOTHING.model_copy(update={"keep_last": 1}))
    assert d.keep == {"partial": [INCOMPLETE], "done": ["last 1"]}
    assert d.delete == ["older"]


def test_future_dated_backups_are_kept_and_take_no_slot() -> None:
    now = datetime(2026, 11, 25, 12, tzinfo=UTC)
    backups = [b("future", "2026-11-25T13:00:00+00:00"), b("now", "2026-11-25T11:00:00+00:00"),
               b("past", "2026-11-25T10:00:00+00:00")]
    d = plan_retention(backups, NOTHING.model_copy(update={"keep_last": 1}), now)
    assert d.keep == {"future": [FUTURE_DATED], "now": ["last 1"]}
    assert d.delete == ["past"]


def test_min_count_is_a_floor_of_newest_backups_so_other_counts_stay_monotonic() -> None:
    # Topping up "newest extras" only when the rules keep too few would keep x2 under the first
    # policy and delete it under the second (bigger) one; the newest-min_count floor keeps it in both.
    backups = [b("x1", "2026-11-25T10:00:00+00:00"), b("x2", "2026-11-25T09:00:00+00:00"),
               b("x3", "2026-11-25T08:00:00+00:00"), b("oct", "2026-10-01T08:00:00+00:00")]
    small = NOTHING.model_copy(update={"min_count": 3})
    bigger = small.model_copy(update={"monthly": 2})
    assert plan(backups, small).delete == ["oct"]
    assert plan(backups, bigger).delete == []


def test_empty_input() -> None:
    assert plan([]) == RetentionDecision(keep={}, delete=[])


def test_invalid_input_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        RetainableBackup("a", datetime(2026, 1, 1), True, False, False)
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_retention([], NOTHING, datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="duplicate"):
        plan([b("a", "2026-01-01T00:00:00+00:00"), b("a", "2026-01-02T00:00:00+00:00")])


def test_plan_entries_keeps_and_reports_an_unreadable_manifest() -> None:
    broken = BackupEntry("20261125T100000Z-aaaaaa", None, None, False, "manifest of x is not valid")
    d = plan_entries([broken], NOTHING, BASE)
    assert d.keep == {broken.backup_id: [UNREADABLE]}
    assert d.delete == [] and d.problems == {broken.backup_id: "manifest of x is not valid"}
