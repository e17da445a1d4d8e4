"""The backup pipeline's etcd side against the fake connection: source choice, failover, one client
per member, emergency snapshots without quorum."""

from __future__ import annotations

from pathlib import Path

import pytest

from etcdguard.backup.pipeline import BackupRequest, take_backup
from etcdguard.config import EtcdConfig
from etcdguard.errors import EtcdUnavailableError
from etcdguard.storage.local import LocalStore
from tests.support.fake_etcd import FakeCluster, FakeConnection


@pytest.fixture(autouse=True)
def private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Backup journals go to the test's temp dir."""
    monkeypatch.setenv("ETCDGUARD_STATE_DIR", str(tmp_path / "state"))


def request(**fields: object) -> BackupRequest:
    base: dict[str, object] = {"etcd": EtcdConfig(endpoints=["http://m0:2379"]), "cluster_name": "fake",
                               "recipients": [], "recipient_texts": [], "signing_key": None,
                               "allow_unencrypted": True, "allow_unsigned": True}
    base.update(fields)
    return BackupRequest(**base)  # type: ignore[arg-type]


def loaded(size: int = 3, leader: int = 1) -> FakeCluster:
    fake = FakeCluster.of(size, leader=leader)
    fake.data = {b"/registry/pods/a": b"1", b"/registry/pods/b": b"2", b"/other": b"3"}
    return fake


def test_backup_streams_from_the_leader_over_one_client_per_member(tmp_path: Path) -> None:
    fake = loaded()
    conn = FakeConnection(fake, ["http://m0:2379"])
    result = take_backup(request(), LocalStore(tmp_path), connection=conn)
    m = result.manifest
    assert m.source.name == "m1" and m.source.endpoint == "http://m1:2379"
    assert m.snapshot.size == len(fake.snapshot_bytes())
    assert m.key_counts is not None and m.key_counts.total == 3
    assert m.key_counts.by_prefix == {"/registry/pods": 2}
    streamed = {url for url, call in fake.calls if call in {"HashKV", "Snapshot"}}
    assert streamed == {"http://m1:2379"}
    assert sorted(conn.opened) == ["http://m0:2379", "http://m1:2379", "http://m2:2379"]
    assert not conn.closed  # the caller's connection stays open


def test_a_failing_stream_moves_to_the_next_member(tmp_path: Path) -> None:
    fake = loaded(leader=0)
    fake.node("m0").snapshot_fails_after = 2
    fake.node("m2").applied = 1001
    conn = FakeConnection(fake)
    result = take_backup(request(), LocalStore(tmp_path), connection=conn)
    assert result.sources_tried == ["m0", "m2"]
    assert result.manifest.source.name == "m2"
    assert len(conn.opened) == 3


def test_member_pins_the_source(tmp_path: Path) -> None:
    fake = loaded()
    result = take_backup(request(member="m2"), LocalStore(tmp_path), connection=FakeConnection(fake))
    assert result.manifest.source.name == "m2"
    assert {url for url, call in fake.calls if call == "Snapshot"} == {"http://m2:2379"}


def test_every_member_failing_is_transient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("etcdguard.backup.pipeline.RETRY_ROUND_DELAY", 0.0)
    fake = loaded()
    for n in fake.nodes:
        n.snapshot_fails_after = 1
    with pytest.raises(EtcdUnavailableError, match="member went away"):
        take_backup(request(), LocalStore(tmp_path), connection=FakeConnection(fake))
    assert not list(tmp_path.rglob("manifest.json"))
    assert {url for url, call in fake.calls if call == "Snapshot"} == {"http://m0:2379", "http://m1:2379",
                                                                         "http://m2:2379"}


def test_emergency_snapshot_needs_no_quorum(tmp_path: Path) -> None:
    fake = loaded(leader=0)
    fake.node("m1").up = fake.node("m2").up = False
    fake.node("m0").sees_leader = False
    result = take_backup(request(local_endpoint="http://m0:2379"), LocalStore(tmp_path),
                         connection=FakeConnection(fake))
    assert result.manifest.source.endpoint == "http://m0:2379"
    assert result.manifest.key_counts is not None and result.manifest.key_counts.total == 3
