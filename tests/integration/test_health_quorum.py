"""Member health and quorum against real 3-member etcd clusters (SIGSTOP to take members away)."""

from __future__ import annotations

import json

import pytest

from etcdguard.config import EtcdConfig
from etcdguard.etcd.cluster import ClusterHealth, probe_cluster
from etcdguard.etcd.connection import open_connection
from etcdguard.etcd.quorum import QuorumState, assess_quorum
from tests.integration.health_fixtures import (
    TIMEOUT,
    cli,
    cli_endpoint_args,
    cluster3_any_fixture,  # noqa: F401 - fixture "cluster3_any"
    cluster3_fixture,  # noqa: F401 - fixture "cluster3"
    follower_indexes,
    paused,
    probe,
    sources,
    wait_for,
)
from tests.support.etcd_cluster import EtcdCluster, free_port
from tests.support.waits import finishes

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def test_healthy_cluster(cluster3_any: EtcdCluster) -> None:
    health = probe(cluster3_any)
    version = cluster3_any.install.version
    assert len(health.members) == 3 and all(m.reachable and m.healthy for m in health.members)
    assert sum(m.is_leader for m in health.members) == 1 and health.leader_id
    for m in health.members:
        assert m.version == str(version)
        assert m.quota_source == "metrics" and m.quota_bytes == 2 * 1024**3
        assert m.db_size and m.raft_term and m.raft_index and m.raft_applied_index is not None
        assert m.lag is not None and m.lag < 100 and m.leader_changes_seen is not None
    v = assess_quorum(health.members)
    assert v.state is QuorumState.HEALTHY and v.failures_tolerated == 1
    assert sources(cluster3_any)[0].is_leader

    r = cli("check", *cli_endpoint_args(cluster3_any))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ETCDGUARD OK - HEALTHY (can lose 1 more) | ")
    r = cli("status", *cli_endpoint_args(cluster3_any))
    assert r.returncode == 0 and "HEALTHY (can lose 1 more)" in r.stdout and "leader" in r.stdout
    assert all(name in r.stdout for name in ("m0", "m1", "m2"))


def test_one_member_stopped_is_degraded(cluster3_any: EtcdCluster) -> None:
    victim = follower_indexes(cluster3_any)[0]
    name = cluster3_any.members[victim].name
    with paused(cluster3_any, victim):
        health = finishes(lambda: probe(cluster3_any))
        down = health.member(name)
        assert down is not None and not down.reachable and down.error
        assert {m.name for m in health.reachable_members} == {m.name for m in health.members} - {name}
        v = assess_quorum(health.members)
        assert v.state is QuorumState.DEGRADED and v.failures_tolerated == 0
        assert v.headline == "DEGRADED (can lose 0 more)"
        assert f"not healthy: {name} (unreachable)" in v.reason

        r = cli("check", *cli_endpoint_args(cluster3_any))
        assert r.returncode == 2, r.stdout + r.stderr
        first, *rest = r.stdout.splitlines()
        assert first.startswith("ETCDGUARD CRITICAL - DEGRADED (can lose 0 more)")
        assert any(line.startswith("CRITICAL quorum:") and f"bring back {name}" in line for line in rest)


def test_leader_stopped_new_leader_elected(cluster3: EtcdCluster) -> None:
    leader = probe(cluster3).leader
    assert leader is not None
    index = next(i for i, m in enumerate(cluster3.members) if m.client_url == leader.endpoint)
    with paused(cluster3, index):
        def new_leader() -> ClusterHealth | None:
            h = probe(cluster3)
            ok = h.leader is not None and h.leader.name != leader.name and h.leader.reachable
            return h if ok and assess_quorum(h.members).state is QuorumState.DEGRADED else None

        health = wait_for(new_leader)
        old = health.member(leader.name)
        assert old is not None and not old.reachable and not old.is_leader
        assert health.leader is not None
        assert sources(cluster3)[0].name == health.leader.name


def test_two_members_stopped_is_quorum_lost(cluster3: EtcdCluster) -> None:
    with paused(cluster3, *follower_indexes(cluster3)):
        health = probe(cluster3)
        v = assess_quorum(health.members)
        assert v.state is QuorumState.QUORUM_LOST and v.healthy_voting <= 1 and v.quorum == 2
        assert "quorum needs 2" in v.reason
        assert len(health.reachable_members) == 1
        assert [m.name for m in sources(cluster3)] == [health.reachable_members[0].name]

        r = cli("check", *cli_endpoint_args(cluster3))
        assert r.returncode == 2
        assert r.stdout.startswith("ETCDGUARD CRITICAL - QUORUM LOST")
        r = cli("status", "-o", "json", *cli_endpoint_args(cluster3))
        assert r.returncode == 0, r.stderr  # a member answered: status reports, check alerts
        assert json.loads(r.stdout)["verdict"]["state"] == "QUORUM LOST"


def test_all_members_stopped(cluster3: EtcdCluster) -> None:
    with paused(cluster3, 0, 1, 2):
        health = finishes(lambda: probe(cluster3))
        assert not health.discovered and not health.reachable_members
        r = cli("status", *cli_endpoint_args(cluster3))
        assert r.returncode == 4 and "UNREACHABLE" in r.stdout and "no etcd endpoint answered" in r.stdout
        r = cli("check", *cli_endpoint_args(cluster3))
        assert r.returncode == 2 and r.stdout.startswith("ETCDGUARD CRITICAL - no etcd endpoint answered")


def test_unreachable_endpoints_cost_one_timeout(cluster3: EtcdCluster) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    victim = follower_indexes(cluster3)[0]
    with paused(cluster3, victim):
        # The closed port and the stopped member are listed FIRST: discovery must not wait on them.
        stopped = cluster3.members[victim].client_url
        endpoints = [closed, stopped, *(e for e in cluster3.endpoints if e != stopped)]
        with open_connection(EtcdConfig(endpoints=endpoints)) as conn:
            health = finishes(lambda: probe_cluster(conn, timeout=TIMEOUT))
        assert len(health.reachable_members) == 2 and len(health.members) == 3
        assert any(closed in e and "Connection refused" in e for e in health.endpoint_errors)
        r = cli("check", *cli_endpoint_args(cluster3, extra=[closed]))
        assert r.returncode == 2
        assert any(line.startswith("WARNING endpoints:") for line in r.stdout.splitlines())
