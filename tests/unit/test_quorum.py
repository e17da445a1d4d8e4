"""Quorum math over fake members: sizes 1-5, learners, members that see no leader, what-ifs."""

from __future__ import annotations

import pytest

from etcdguard.etcd.quorum import (
    QuorumState,
    assess_quorum,
    failures_tolerated,
    healthy_voting_members,
    quorum_margin,
    quorum_size,
    voting_members,
    what_if_add,
    what_if_promote,
    what_if_remove,
)
from tests.unit.test_monitor_fakes import mem, member_id


@pytest.mark.parametrize(("voting", "quorum"),
                         [(0, 1), (1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)])
def test_quorum_size(voting: int, quorum: int) -> None:
    assert quorum_size(voting) == quorum


@pytest.mark.parametrize(
    ("voting", "healthy", "state", "tolerated", "margin"),
    [
        (1, 1, QuorumState.HEALTHY, 0, 0),
        (1, 0, QuorumState.QUORUM_LOST, 0, -1),
        (2, 2, QuorumState.HEALTHY, 0, 0),
        (2, 1, QuorumState.QUORUM_LOST, 0, -1),
        (2, 0, QuorumState.QUORUM_LOST, 0, -2),
        (3, 3, QuorumState.HEALTHY, 1, 1),
        (3, 2, QuorumState.DEGRADED, 0, 0),
        (3, 1, QuorumState.QUORUM_LOST, 0, -1),
        (3, 0, QuorumState.QUORUM_LOST, 0, -2),
        (4, 4, QuorumState.HEALTHY, 1, 1),
        (4, 3, QuorumState.DEGRADED, 0, 0),
        (4, 2, QuorumState.QUORUM_LOST, 0, -1),
        (5, 5, QuorumState.HEALTHY, 2, 2),
        (5, 4, QuorumState.DEGRADED, 1, 1),
        (5, 3, QuorumState.DEGRADED, 0, 0),
        (5, 2, QuorumState.QUORUM_LOST, 0, -1),
    ],
)
def test_verdict_by_size(voting: int, healthy: int, state: QuorumState, tolerated: int, margin: int) -> None:
    members = [mem(f"m{i}", up=i < healthy, leader=i == 0) for i in range(voting)]
    v = assess_quorum(members)
    assert v.state is state
    assert v.failures_tolerated == tolerated == failures_tolerated(voting, healthy)
    assert v.margin == margin == quorum_margin(voting, healthy)
    assert (v.voting, v.healthy_voting, v.quorum) == (voting, healthy, quorum_size(voting))
    assert v.has_quorum is (state is not QuorumState.QUORUM_LOST)
    assert len(v.unhealthy) == voting - healthy


def test_learners_do_not_count() -> None:
    members = [mem("m0", leader=True), mem("m1"), mem("m2"), mem("l1", learner=True), mem("l2", learner=True)]
    assert len(voting_members(members)) == 3
    v = assess_quorum(members)
    assert (v.voting, v.quorum, v.learners, v.members) == (3, 2, 2, 5)
    assert v.state is QuorumState.HEALTHY and v.failures_tolerated == 1
    assert "2 learners (not voting)" in v.reason


def test_down_learner_does_not_degrade() -> None:
    v = assess_quorum([mem("m0", leader=True), mem("m1"), mem("m2"), mem("l1", learner=True, up=False)])
    assert v.state is QuorumState.HEALTHY


def test_healthy_learners_do_not_rescue_quorum() -> None:
    members = [mem("m0", leader=True), mem("m1", up=False), mem("m2", up=False),
               mem("l1", learner=True), mem("l2", learner=True)]
    assert len(healthy_voting_members(members)) == 1
    v = assess_quorum(members)
    assert v.state is QuorumState.QUORUM_LOST
    assert v.headline == "QUORUM LOST"


def test_reachable_member_without_leader_is_not_healthy() -> None:
    members = [mem("m0", sees_leader=False), mem("m1", up=False), mem("m2", up=False)]
    v = assess_quorum(members)
    assert v.state is QuorumState.QUORUM_LOST and v.healthy_voting == 0
    assert "m0 (sees no leader)" in v.reason and "m1 (unreachable)" in v.reason
    assert "quorum needs 2" in v.reason and "writes" in v.reason


def test_no_members_is_quorum_lost() -> None:
    v = assess_quorum([])
    assert v.state is QuorumState.QUORUM_LOST and v.reason.startswith("no voting members")


def test_only_learners_is_quorum_lost() -> None:
    v = assess_quorum([mem("l1", learner=True)])
    assert v.state is QuorumState.QUORUM_LOST and v.voting == 0


def test_headlines_and_reasons() -> None:
    three = [mem("m0", leader=True), mem("m1"), mem("m2")]
    assert assess_quorum(three).headline == "HEALTHY (can lose 1 more)"
    degraded = assess_quorum([mem("m0", leader=True), mem("m1", up=False), mem("m2")])
    assert degraded.headline == "DEGRADED (can lose 0 more)"
    assert "2 of 3 voting members healthy, quorum is 2, can lose 0 more" in degraded.reason
    assert "not healthy: m1 (unreachable)" in degraded.reason
    single = assess_quorum([mem("m0", leader=True)])
    assert "single member: no fault tolerance" in single.reason
    two = assess_quorum([mem("m0", leader=True), mem("m1")])
    assert "cannot survive any failure" in two.reason


def test_to_dict_round_numbers() -> None:
    d = assess_quorum([mem("m0", leader=True), mem("m1"), mem("m2", up=False)]).to_dict()
    assert d["state"] == "DEGRADED" and d["failures_tolerated"] == 0 and d["quorum_size"] == 2
    assert d["unhealthy"] == ["m2 (unreachable)"]


# -- what if ------------------------------------------------------------------------------------
def three(*down: str) -> list:  # type: ignore[type-arg]
    return [mem(n, up=n not in down, leader=n == "m0") for n in ("m0", "m1", "m2")]


def test_remove_a_dead_member_of_three_is_safe() -> None:
    change = what_if_remove(three("m2"), member_id("m2"))
    assert change.safe and change.before.quorum == 2 and change.after.quorum == 2
    assert (change.after.voters, change.after.healthy_voters, change.after.fault_tolerance) == (2, 2, 0)
    assert "remove m2 (voter, unreachable): safe" in change.explanation
    assert any("even number" in w for w in change.warnings)


def test_remove_a_live_member_when_another_is_down_loses_quorum() -> None:
    change = what_if_remove(three("m2"), member_id("m1"))
    assert not change.safe
    assert "only 1 of 2 voters would be healthy and quorum would need 2" in change.explanation
    assert "before: 3 voters (2 healthy), quorum 2, can lose 0 more" in change.explanation


def test_no_change_without_quorum_now() -> None:
    change = what_if_remove(three("m1", "m2"), member_id("m2"))
    assert not change.safe and "no quorum now" in change.explanation


def test_remove_the_last_member_is_refused() -> None:
    change = what_if_remove([mem("m0", leader=True)], member_id("m0"))
    assert not change.safe and "last member" in change.explanation


def test_remove_a_learner_never_changes_the_voters() -> None:
    members = [*three(), mem("l1", learner=True, up=False)]
    change = what_if_remove(members, member_id("l1"))
    assert change.safe and change.after.voters == 3 and change.after.members == 3
    assert change.warnings == ()


@pytest.mark.parametrize(("down", "learner", "safe"), [
    ((), False, True),          # 3 healthy of 4: quorum 3, still holds
    (("m2",), False, False),    # 2 healthy of 4 (new one down): quorum 3 -> writes would stop
    (("m2",), True, True),      # a learner does not count
])
def test_add_counts_the_new_voter_as_down(down: tuple[str, ...], learner: bool, safe: bool) -> None:
    change = what_if_add(three(*down), learner=learner)
    assert change.safe is safe
    assert change.after.voters == (3 if learner else 4)
    assert change.after.healthy_voters == 3 - len(down)
    if not safe:
        assert "add it as a learner instead" in change.explanation


def test_grow_a_single_member() -> None:
    single = [mem("m0", leader=True)]
    assert not what_if_add(single).safe        # 2 voters, 1 healthy, quorum 2
    assert what_if_add(single, learner=True).safe
    learner = mem("n1", learner=True)
    change = what_if_promote([*single, learner], member_id("n1"))
    assert change.safe and change.after.voters == 2 and change.after.healthy_voters == 2
    down = what_if_promote([*single, mem("n2", learner=True, up=False)], member_id("n2"))
    assert not down.safe
    with pytest.raises(ValueError):
        what_if_promote(single, member_id("m0"))
    assert change.to_dict()["after"]["quorum"] == 2
