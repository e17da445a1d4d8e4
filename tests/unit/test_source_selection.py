"""The one source-selection rule (snapshot_sources) and the connection's discovery helpers, on the fake."""

from __future__ import annotations

import pytest

from etcdguard.errors import ConfigError, EtcdUnavailableError
from etcdguard.etcd.connect import snapshot_sources
from tests.support.fake_etcd import FakeCluster, FakeConnection, FakeNode


def test_leader_first_then_most_caught_up_learners_never() -> None:
    fake = FakeCluster.of(4, leader=1)
    fake.node("m0").applied, fake.node("m2").applied = 900, 990
    fake.node("m3").up = False
    fake.nodes.append(FakeNode(0x200, "l1", "http://l1:2379", learner=True, applied=2000))
    sources = snapshot_sources(FakeConnection(fake, ["http://m0:2379"]))
    assert [s.name for s in sources] == ["m1", "m2", "m0"]
    assert sources[0].is_leader and sources[0].endpoint == "http://m1:2379"


def test_without_quorum_the_survivors_are_offered() -> None:
    fake = FakeCluster.of(3)
    fake.node("m1").up = False
    fake.node("m0").sees_leader = fake.node("m2").sees_leader = False
    fake.node("m0").applied, fake.node("m2").applied = 5, 9
    assert [s.name for s in snapshot_sources(FakeConnection(fake))] == ["m2", "m0"]


def test_discovery_falls_through_to_the_next_endpoint() -> None:
    fake = FakeCluster.of(3)
    fake.node("m0").up = False
    conn = FakeConnection(fake, ["http://m0:2379", "http://m1:2379"])
    assert {s.name for s in snapshot_sources(conn)} == {"m1", "m2"}


def test_nothing_answers() -> None:
    fake = FakeCluster.of(2)
    for n in fake.nodes:
        n.up = False
    with pytest.raises(EtcdUnavailableError, match="no etcd endpoint answered"):
        snapshot_sources(FakeConnection(fake))


def test_named_member() -> None:
    fake = FakeCluster.of(3)
    fake.node("m2").up = False
    conn = FakeConnection(fake, ["http://m0:2379"])
    assert [s.name for s in snapshot_sources(conn, "m1")] == ["m1"]
    assert [s.name for s in snapshot_sources(conn, f"{fake.node('m1').id:x}")] == ["m1"]
    assert [s.name for s in snapshot_sources(conn, "http://m1:2379")] == ["m1"]
    with pytest.raises(ConfigError, match="no etcd member 'mx'"):
        snapshot_sources(conn, "mx")
    with pytest.raises(EtcdUnavailableError, match="m2 did not answer"):
        snapshot_sources(conn, "m2")


def test_a_named_learner_may_be_chosen() -> None:
    fake = FakeCluster.of(1)
    fake.nodes.append(FakeNode(0x200, "l1", "http://l1:2379", learner=True))
    assert [s.name for s in snapshot_sources(FakeConnection(fake), "l1")] == ["l1"]


def test_one_client_per_member_url() -> None:
    fake = FakeCluster.of(3)
    conn = FakeConnection(fake, ["http://m0:2379", "http://m1:2379"])
    for _ in range(3):
        snapshot_sources(conn)
    assert sorted(conn.opened) == ["http://m0:2379", "http://m1:2379", "http://m2:2379"]


def test_leader_lookup_and_move_leader() -> None:
    fake = FakeCluster.of(3, leader=2)
    conn = FakeConnection(fake, ["http://m0:2379"])
    info, client = conn.leader()
    assert info.name == "m2" and client.endpoint == "http://m2:2379"
    conn.move_leader(fake.node("m0").id)
    assert fake.leader_id == fake.node("m0").id
    conn.move_leader(fake.node("m0").id)  # already the leader: nothing to do
    assert ("http://m0:2379", "MoveLeader") not in fake.calls


def test_no_leader() -> None:
    fake = FakeCluster.of(3)
    for n in fake.nodes:
        n.sees_leader = False
    with pytest.raises(EtcdUnavailableError, match="no leader"):
        FakeConnection(fake).leader()


def test_plain_text_urls_are_skipped_when_the_endpoints_use_tls(caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeCluster.of(2)
    fake.node("m0").url = "https://m0:2379"   # configured and advertised over TLS
    conn = FakeConnection(fake, ["https://m0:2379"])
    assert conn.secure_only
    assert conn.usable_urls(["http://m1:2379", "https://m1:2379"]) == ["https://m1:2379"]
    with pytest.raises(ConfigError, match="plain-text"):
        conn.client("http://m1:2379")
    sources = snapshot_sources(conn)
    assert [s.name for s in sources] == ["m0"]         # m1 advertises only http://: never contacted
    assert not any(url.startswith("http://") for url, _ in fake.calls)
    assert "skipping advertised client URL http://m1:2379" in caplog.text
