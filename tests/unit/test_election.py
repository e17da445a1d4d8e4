"""Lease-based leader election among replicas, against the fake connection."""

from __future__ import annotations

from etcdguard.service.election import LEADER_KEY_PREFIX, EtcdLeaseElector
from tests.support.fake_etcd import FakeCluster, FakeConnection


def elector(conn: FakeConnection, replica: str) -> EtcdLeaseElector:
    return EtcdLeaseElector(lambda: conn, "fake", replica, ttl=6)


def test_one_leader_then_hand_over_when_its_lease_expires() -> None:
    fake = FakeCluster.of(3)
    conn = FakeConnection(fake)
    a, b = elector(conn, "a"), elector(conn, "b")
    assert a.tick() and not b.tick()
    assert a.is_leader() and not b.is_leader() and b.leader_id() == "a"
    assert fake.data[(LEADER_KEY_PREFIX + "fake").encode()] == b"a"
    assert a.tick() and not b.tick()  # renewals keep it
    lease = next(iter(fake.lease_keys))
    fake.expire_lease(lease)          # a stalls past its TTL
    assert b.tick() and b.leader_id() == "b"
    assert not a.tick() and not a.is_leader()


def test_resign_revokes_the_lease() -> None:
    fake = FakeCluster.of(1)
    conn = FakeConnection(fake)
    a, b = elector(conn, "a"), elector(conn, "b")
    assert a.tick()
    a.resign()
    assert not a.is_leader() and fake.data == {}
    assert b.tick()


def test_a_down_endpoint_falls_through_to_the_next() -> None:
    fake = FakeCluster.of(3)
    fake.node("m0").up = False
    conn = FakeConnection(fake)
    assert elector(conn, "a").tick()
    assert {url for url, call in fake.calls if call == "Txn"} == {"http://m1:2379"}


def test_without_quorum_nobody_leads_and_a_leader_keeps_its_lease_time() -> None:
    fake = FakeCluster.of(3)
    conn = FakeConnection(fake)
    a = elector(conn, "a")
    assert a.tick()
    fake.node("m1").up = fake.node("m2").up = False
    assert a.tick()            # cannot renew, but the lease it holds is still valid
    assert not elector(conn, "b").tick()
