"""`member replace` against a simulated cluster: the steps, resume, refusals and bounded waits."""

from __future__ import annotations

from pathlib import Path

import pytest

from etcdguard.errors import AbortedError, ConfigError, OperationInterruptedError
from etcdguard.etcd.client import MemberInfo
from etcdguard.etcd.errors import LearnerNotReadyError, TooManyLearnersError, UnhealthyClusterError
from etcdguard.members.newmember import NewMemberSettings
from etcdguard.members.operations import promote_member
from etcdguard.members.replace import Replacement, ReplaceRequest, open_journal
from etcdguard.members.waits import LearnerNeverStartedError, WaitTimeoutError
from etcdguard.steps import StepState
from tests.unit.members_fakes import FakeClock, FakeCluster, FakeMember, Recorder

NEW_PEER = "http://10.0.0.4:2380"


def run(cluster: FakeCluster, journal_dir: Path, *, clock: FakeClock | None = None, **kw: object
        ) -> tuple[Recorder, list[NewMemberSettings]]:
    request = ReplaceRequest(dead=str(kw.pop("dead", "m2")), name="m3", peer_url=str(kw.pop("peer_url", NEW_PEER)),
                             **kw)  # type: ignore[arg-type]
    clock = clock or FakeClock(cluster)
    recorder, emitted = Recorder(), []
    Replacement(cluster, request, recorder, clock.waits(), emitted.append).run(open_journal(journal_dir, request))
    return recorder, emitted


def voters(cluster: FakeCluster) -> list[str]:
    return sorted(m.info.name for m in cluster.members_ if not m.info.is_learner)


def test_replace_a_dead_member_end_to_end(tmp_path: Path) -> None:
    cluster = FakeCluster.of(3)
    cluster.member("m2").up = False
    recorder, emitted = run(cluster, tmp_path)
    assert voters(cluster) == ["m0", "m1", "new" + f"{cluster.next_id:x}"]
    assert cluster.calls == ["remove 3", f"add {NEW_PEER}", f"promote {cluster.next_id:x}"]
    assert [s.initial_cluster for s in emitted] == [
        "m0=http://10.0.0.1:2380,m1=http://10.0.0.2:2380,m3=" + NEW_PEER]
    assert recorder.progress_seen and recorder.progress_seen[-1][0] >= recorder.progress_seen[-1][1]
    assert any("removed member m2 3" in c and "before: [m0 1, m1 2, m2 3]" in c for c in recorder.changes)
    assert any(c.startswith("promoted") for c in recorder.changes)


def test_a_member_that_still_answers_is_not_replaced_without_force(tmp_path: Path) -> None:
    cluster = FakeCluster.of(3)
    with pytest.raises(AbortedError, match="still answers"):
        run(cluster, tmp_path)
    assert cluster.calls == [] and len(cluster.members_) == 3


def test_force_moves_leadership_away_from_a_live_leader_first(tmp_path: Path) -> None:
    cluster = FakeCluster.of(3)
    run(cluster, tmp_path, dead="m0", force=True)
    assert cluster.calls[:2] == ["move-leader 2", "remove 1"]
    assert voters(cluster)[:2] == ["m1", "m2"]


def test_a_learner_that_never_starts_is_told_apart_reported_and_removed(tmp_path: Path) -> None:
    cluster = FakeCluster.of(3, process_peer_url="http://10.0.0.9:2380")  # its etcd announces another URL
    cluster.member("m2").up = False
    with pytest.raises(LearnerNeverStartedError, match="never started") as err:
        run(cluster, tmp_path)
    assert "not merely slow" in str(err.value) and NEW_PEER in str(err.value)
    assert voters(cluster) == ["m0", "m1"] and not any(m.info.is_learner for m in cluster.members_)
    cluster.process_peer_url = None  # fixed: the next attempt works
    run(cluster, tmp_path)
    assert len(voters(cluster)) == 3


def test_a_slow_learner_is_reported_as_slow_and_kept(tmp_path: Path) -> None:
    cluster = FakeCluster.of(3, catch_up_rate=1)
    cluster.member("m2").up = False
    cluster.leader_applied = 10_000
    clock = FakeClock(cluster)
    with pytest.raises(WaitTimeoutError, match="slow to catch up"):
        run(cluster, tmp_path, clock=clock)
    learner = [m for m in cluster.members_ if m.info.is_learner]
    assert len(learner) == 1 and learner[0].info.name  # started, kept for the next run
    cluster.catch_up_rate = 10_000
    run(cluster, tmp_path, clock=clock)
    assert len(voters(cluster)) == 3 and cluster.calls.count(f"add {NEW_PEER}") == 1


def test_interrupted_after_the_removal_the_same_command_continues(tmp_path: Path) -> None:
    cluster = FakeCluster.of(3, refusals={"add": [OperationInterruptedError("interrupted")]})
    cluster.member("m2").up = False
    with pytest.raises(OperationInterruptedError):
        run(cluster, tmp_path)
    journal = open_journal(tmp_path, ReplaceRequest("m2", "m3", NEW_PEER))
    states = {r.name: r.state for r in journal.steps}
    assert states["remove-old"] is StepState.done and states["add-learner"] is StepState.failed
    run(cluster, tmp_path)  # m2 is gone from the member list: the journal knows it was removed
    assert cluster.calls.count("remove 3") == 1 and len(voters(cluster)) == 3


def test_a_learner_left_by_a_killed_attempt_is_recognised_by_its_peer_url(tmp_path: Path) -> None:
    cluster = FakeCluster.of(3)
    cluster.member("m2").up = False
    cluster.remove(3)  # a killed attempt removed m2 and added the learner, but recorded neither
    cluster.add([NEW_PEER], learner=True)
    cluster.calls.clear()
    run(cluster, tmp_path)
    assert "add" not in " ".join(cluster.calls) and len(voters(cluster)) == 3


def test_a_stale_learner_with_a_wrong_peer_url_is_removed_and_added_again(tmp_path: Path) -> None:
    cluster = FakeCluster.of(3, process_peer_url="http://10.0.0.4:2380")
    cluster.member("m2").up = False
    with pytest.raises(LearnerNeverStartedError):
        run(cluster, tmp_path, peer_url="http://10.0.0.5:2380")  # typo: the node is 10.0.0.4
    cluster.start_after = None  # this time the killed attempt leaves the wrong learner behind
    cluster.add(["http://10.0.0.5:2380"], learner=True)
    stale = cluster.next_id
    journal = open_journal(tmp_path, ReplaceRequest("m2", "m3", "http://10.0.0.5:2380"))
    journal.steps[4].result["learner_id"] = stale
    journal.save()
    cluster.start_after = 2
    run(cluster, tmp_path)
    assert f"remove {stale:x}" in cluster.calls and len(voters(cluster)) == 3
    assert all("10.0.0.5" not in m.info.peer_urls[0] for m in cluster.members_)


def test_transient_refusals_are_retried_and_the_wait_is_explained(tmp_path: Path) -> None:
    cluster = FakeCluster.of(3, refusals={"remove": [UnhealthyClusterError("etcdserver: unhealthy cluster")] * 2})
    cluster.member("m2").up = False
    recorder, _ = run(cluster, tmp_path)
    assert any("removing m2" in w and "waiting" in w and "connected" in w for w in recorder.warnings)
    assert len(voters(cluster)) == 3


def test_another_learner_or_a_taken_peer_url_stops_before_any_change(tmp_path: Path) -> None:
    cluster = FakeCluster.of(3)
    cluster.member("m2").up = False
    cluster.members_.append(FakeMember(MemberInfo(0x77, "", ("http://10.0.0.7:2380",), (), True), up=False))
    with pytest.raises(TooManyLearnersError, match=r"never started.*member remove 77"):
        run(cluster, tmp_path)
    cluster.remove(0x77)
    cluster.calls.clear()
    with pytest.raises(ConfigError, match="already used by member m1"):
        run(cluster, tmp_path / "2", peer_url="http://10.0.0.2:2380")
    assert cluster.calls == []


def test_remove_only_stops_after_the_removal(tmp_path: Path) -> None:
    cluster = FakeCluster.of(3)
    cluster.member("m2").up = False
    _, emitted = run(cluster, tmp_path, remove_only=True)
    assert cluster.calls == ["remove 3"] and emitted == [] and voters(cluster) == ["m0", "m1"]


def test_promote_before_catch_up_says_so_and_wait_waits(tmp_path: Path) -> None:
    cluster = FakeCluster.of(3, catch_up_rate=5)
    added = cluster.add(["http://10.0.0.4:2380"], learner=True)
    cluster.start_new(added.member.id, name="m3")
    clock = FakeClock(cluster)
    with pytest.raises(LearnerNotReadyError, match="has not caught up with the leader yet; promote it with --wait"):
        promote_member(cluster, "m3", wait=False, force=False, reporter=Recorder(), waits=clock.waits())
    recorder = Recorder()
    status = promote_member(cluster, "m3", wait=True, force=False, reporter=recorder, waits=clock.waits())
    assert not status.is_learner and recorder.progress_seen[-1][0] >= recorder.progress_seen[-1][1]
    assert any("promoted m3" in c for c in recorder.changes)
