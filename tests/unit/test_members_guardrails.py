"""Quorum guardrails of membership changes: refusals with the arithmetic, --force, warnings."""

from __future__ import annotations

import pytest

from etcdguard.errors import AbortedError, ExitCode
from etcdguard.etcd.cluster import MemberHealth
from etcdguard.members.guardrails import arithmetic, guard_add, guard_promote, guard_remove


def member(i: int, *, up: bool = True, learner: bool = False) -> MemberHealth:
    return MemberHealth(name=f"m{i}", id=i, endpoint=f"http://10.0.0.{i}:2379", reachable=up,
                        leader_id=1 if up else 0, is_learner=learner, is_leader=i == 1)


def cluster(*states: bool, learners: int = 0) -> list[MemberHealth]:
    out = [member(i + 1, up=up) for i, up in enumerate(states)]
    return out + [member(10 + j, learner=True) for j in range(learners)]


def test_removing_a_down_member_of_three_is_allowed_and_warns_about_two_voters() -> None:
    guarded = guard_remove(cluster(True, True, False), 3, force=False)
    assert not guarded.forced
    assert any("even" in w for w in guarded.warnings)
    assert arithmetic(guarded.change) == ("members 3, voters 3, reachable voters 2, quorum 2 -> "
                                          "members 2, voters 2, reachable voters 2, quorum 2")


def test_removing_a_healthy_member_while_another_is_down_is_refused_with_exit_10() -> None:
    with pytest.raises(AbortedError) as err:
        guard_remove(cluster(True, True, False), 2, force=False)
    assert err.value.exit_code == ExitCode.ABORTED == 10
    text = str(err.value)
    assert "only 1 of 2 voters would be healthy" in text and "quorum would need 2" in text
    assert "--force overrides" in text


def test_force_overrides_a_refusal_and_says_what_may_happen() -> None:
    guarded = guard_remove(cluster(True, True, False), 2, force=True)
    assert guarded.forced
    assert "lose quorum" in guarded.warnings[0] and "reachable voters" in guarded.warnings[0]


def test_removing_the_last_member_is_refused_even_with_force() -> None:
    with pytest.raises(AbortedError, match="last member") as err:
        guard_remove(cluster(True), 1, force=True)
    assert "--force" not in str(err.value)


def test_adding_a_voter_to_a_degraded_cluster_is_refused_and_suggests_learner() -> None:
    with pytest.raises(AbortedError, match="--learner"):
        guard_add(cluster(True, True, False), learner=False, force=False)
    assert guard_add(cluster(True, True, False), learner=True, force=False).change.safe


def test_adding_a_voter_to_one_member_is_refused_but_a_learner_is_fine() -> None:
    with pytest.raises(AbortedError, match="--learner"):
        guard_add(cluster(True), learner=False, force=False)
    assert guard_add(cluster(True), learner=True, force=False).warnings == ()


def test_adding_a_fourth_voter_to_a_healthy_three_warns_about_an_even_count() -> None:
    guarded = guard_add(cluster(True, True, True), learner=False, force=False)
    assert any("even" in w for w in guarded.warnings)


def test_no_quorum_refuses_even_a_learner() -> None:
    with pytest.raises(AbortedError, match="no quorum"):
        guard_add(cluster(True, False, False), learner=True, force=False)


def test_promoting_a_down_learner_into_a_degraded_cluster_is_refused() -> None:
    members = [member(1), member(2), member(3, up=False), member(4, up=False, learner=True)]
    with pytest.raises(AbortedError, match="quorum would need 3"):
        guard_promote(members, 4, force=False)
    healthy_learner = [member(1), member(2), member(4, learner=True)]
    assert guard_promote(healthy_learner, 4, force=False).change.after.voters == 3
