"""MemberClient's membership calls against a real 3-member etcd: add (with the full list), update,
remove, move leader, and etcd's refusals as distinct errors."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from etcdguard.etcd.errors import (
    LearnerNotReadyError,
    MemberNotFoundError,
    NotLeaderError,
    PeerURLExistsError,
    TooManyLearnersError,
    UnhealthyClusterError,
)
from tests.integration.health_fixtures import PRIMARY, need
from tests.support.etcd_cluster import EtcdCluster, etcd_cluster, free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
T = TypeVar("T")


def settled(call: Callable[[], T], timeout: float = 20.0) -> T:
    """Retry while etcd refuses reconfiguration as "unhealthy cluster" (right after a start)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except UnhealthyClusterError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture(scope="module", name="cluster")
def cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    need(PRIMARY)
    with etcd_cluster(tmp_path_factory.mktemp("members"), PRIMARY, 3) as cluster:
        yield cluster


def test_add_update_remove_and_refusals(cluster: EtcdCluster) -> None:
    peer = f"http://127.0.0.1:{free_port()}"
    with cluster.client(0) as client:
        before = client.member_list()
        added = settled(lambda: client.member_add([peer], learner=True))
        try:
            assert added.member.is_learner and added.member.peer_urls == (peer,) and added.member.name == ""
            assert {m.id for m in added.members} == {m.id for m in before} | {added.member.id}
            with pytest.raises(TooManyLearnersError, match="only one learner"):
                client.member_add([f"http://127.0.0.1:{free_port()}"], learner=True)
            with pytest.raises(PeerURLExistsError):
                client.member_add([peer], learner=True)
            with pytest.raises(LearnerNotReadyError):  # never started: not in sync
                client.member_promote(added.member.id)
            moved = f"http://127.0.0.1:{free_port()}"
            after = settled(lambda: client.member_update(added.member.id, [moved]))
            assert next(m for m in after if m.id == added.member.id).peer_urls == (moved,)
        finally:
            settled(lambda: client.member_remove(added.member.id))
        assert {m.id for m in client.member_list()} == {m.id for m in before}
        with pytest.raises(MemberNotFoundError):
            client.member_remove(added.member.id)


def test_move_leader(cluster: EtcdCluster) -> None:
    clients = [cluster.client(i) for i in range(3)]
    try:
        leader_id = clients[0].status().leader
        by_id = {c.status().member_id: c for c in clients}
        leader = by_id[leader_id]
        target = next(mid for mid in by_id if mid != leader_id)
        with pytest.raises(NotLeaderError):
            by_id[target].move_leader(leader_id)
        leader.move_leader(target)
        assert by_id[target].status().leader == target
    finally:
        for c in clients:
            c.close()
    cluster.wait_healthy()
