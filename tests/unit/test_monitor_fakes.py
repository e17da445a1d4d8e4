"""Builders of fake MemberHealth / ClusterHealth for the monitor unit tests (plus sanity tests)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from etcdguard.config import MonitorConfig
from etcdguard.etcd.cluster import ClusterHealth, MemberHealth

NOW = datetime(2026, 11, 26, 15, 0, tzinfo=timezone.utc)
MIB = 1024 * 1024
_ids: dict[str, int] = {}


def member_id(name: str) -> int:
    """A stable fake id per name."""
    return _ids.setdefault(name, 0x1000 + len(_ids))


def mem(name: str, *, up: bool = True, learner: bool = False, leader: bool = False, sees_leader: bool = True,
        **fields: Any) -> MemberHealth:
    """A member; ``leader=True`` makes it the leader, everyone else (up) sees the leader 'm0'."""
    mid = member_id(name)
    base: dict[str, Any] = {
        "name": name, "id": mid, "endpoint": f"http://10.0.0.{mid % 250}:2379", "reachable": up,
        "is_learner": learner, "is_leader": leader,
        "client_urls": (f"http://10.0.0.{mid % 250}:2379",),
    }
    if up:
        base.update(leader_id=(mid if leader else member_id("m0")) if sees_leader else 0, version="3.5.16",
                    db_size=10 * MIB, db_size_in_use=8 * MIB, quota_bytes=2048 * MIB, quota_source="config",
                    raft_term=2, raft_index=1000, raft_applied_index=1000, lag=0, revision=500)
    else:
        base.update(error=f"etcd {base['endpoint']}: Status failed: DEADLINE_EXCEEDED")
    base.update(fields)
    return MemberHealth(**base)


def cluster(*members: MemberHealth, **fields: Any) -> ClusterHealth:
    """A cluster whose leader id is that of the member flagged ``is_leader`` (if it is seen)."""
    leader = next((m for m in members if m.is_leader and m.reachable), None)
    seen = any(m.leader_id for m in members if m.reachable)
    base: dict[str, Any] = {
        "members": tuple(members), "leader_id": leader.id if leader and seen else None,
        "cluster_id": 0xC1, "timestamp": NOW,
        "endpoints": tuple(m.endpoint for m in members if m.endpoint),
    }
    base.update(fields)
    return ClusterHealth(**base)


def healthy3() -> ClusterHealth:
    """Three healthy voting members, m0 leading."""
    return cluster(mem("m0", leader=True), mem("m1"), mem("m2"))


def config(**fields: Any) -> MonitorConfig:
    """MonitorConfig with overrides."""
    return MonitorConfig.model_validate(fields)


def test_fake_cluster_has_a_leader() -> None:
    h = healthy3()
    assert h.leader is not None and h.leader.name == "m0"
    assert all(m.healthy for m in h.members)


def test_fake_down_member_is_unhealthy() -> None:
    m = mem("m9", up=False)
    assert not m.reachable and not m.healthy and m.error
