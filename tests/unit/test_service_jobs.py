"""The service's jobs against the fake connection: one connection for every job, health with the
leader-change history, snapshots only on the leader, emergency snapshots without quorum."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from etcdguard.config import EtcdConfig, Settings
from etcdguard.monitor.metrics import EtcdGuardMetrics
from etcdguard.service import jobs
from etcdguard.service.election import AlwaysLeader, LeaderElector
from etcdguard.service.metrics import ServiceMetrics
from tests.support.fake_etcd import FakeCluster, FakeConnection


class NeverLeader(AlwaysLeader):
    def tick(self) -> bool:
        return False

    def is_leader(self) -> bool:
        return False


@pytest.fixture(autouse=True)
def private_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Backup journals go to the test's temp dir."""
    monkeypatch.setenv("ETCDGUARD_STATE_DIR", str(tmp_path / "state"))


def runtime(tmp_path: Path, fake: FakeCluster, elector: LeaderElector | None = None,
            **service: Any) -> tuple[jobs.Runtime, list[FakeConnection]]:
    settings = Settings.model_validate({
        "etcd": {"endpoints": ["http://m0:2379"]},
        "store": {"type": "local", "path": str(tmp_path / "store")},
        "encryption": {"allow_unencrypted": True}, "signing": {"allow_unsigned": True},
        "service": {"verify_after_snapshot": False, "prune_after_snapshot": False, **service},
    })
    opened: list[FakeConnection] = []

    def connect(cfg: EtcdConfig) -> FakeConnection:
        opened.append(FakeConnection(fake, cfg.endpoints))
        return opened[-1]

    metrics = EtcdGuardMetrics()
    rt = jobs.Runtime(settings, metrics, ServiceMetrics(metrics.registry), elector or AlwaysLeader(),
                      connect=connect)
    return rt, opened


def manifests(tmp_path: Path) -> list[Path]:
    return list(tmp_path.rglob("manifest.json"))


def test_health_job_reports_and_counts_leader_changes(tmp_path: Path) -> None:
    fake = FakeCluster.of(3, leader=0)
    rt, opened = runtime(tmp_path, fake)
    jobs.health_job(rt)
    assert rt.report is not None and rt.report.verdict.state.value == "HEALTHY"
    fake.leader_id = fake.node("m2").id
    jobs.health_job(rt)
    assert rt.report is not None
    (changes,) = [r for r in rt.report.results if r.name == "leader_changes"]
    assert changes.summary.startswith("1 leader change(s)")
    assert len(opened) == 1 and rt.state("health").last_result == "ok"


def test_snapshot_job_uses_the_same_connection(tmp_path: Path) -> None:
    fake = FakeCluster.of(3, leader=1)
    rt, opened = runtime(tmp_path, fake)
    jobs.health_job(rt)
    jobs.snapshot_job(rt)
    jobs.snapshot_job(rt)
    assert rt.state("snapshot").last_result == "ok", rt.state("snapshot")
    assert len(manifests(tmp_path)) == 2
    assert len(opened) == 1 and sorted(opened[0].opened) == ["http://m0:2379", "http://m1:2379",
                                                                "http://m2:2379"]
    rt.close()
    assert opened[0].closed


def test_a_replica_that_does_not_lead_takes_no_snapshot(tmp_path: Path) -> None:
    fake = FakeCluster.of(3)
    rt, _ = runtime(tmp_path, fake, NeverLeader())
    jobs.snapshot_job(rt)
    assert rt.state("snapshot").skipped == 1 and not manifests(tmp_path)
    assert not any(call == "Snapshot" for _, call in fake.calls)


def test_emergency_snapshot_when_quorum_is_lost(tmp_path: Path) -> None:
    fake = FakeCluster.of(3, leader=0)
    fake.node("m1").up = fake.node("m2").up = False
    fake.node("m0").sees_leader = False
    emergency = tmp_path / "emergency"
    rt, _ = runtime(tmp_path, fake, NeverLeader(), emergency_local_store=str(emergency))
    jobs.health_job(rt)
    assert rt.report is not None and rt.report.verdict.state.value == "QUORUM LOST"
    jobs.snapshot_job(rt)
    assert len(manifests(emergency)) == 1 and not manifests(tmp_path / "store")


def test_a_reload_with_other_etcd_settings_opens_a_new_connection(tmp_path: Path) -> None:
    fake = FakeCluster.of(3)
    rt, opened = runtime(tmp_path, fake)
    first = rt.etcd()
    assert rt.etcd() is first
    rt.settings = rt.settings.model_copy(update={"etcd": EtcdConfig(endpoints=["http://m1:2379"])})
    assert rt.etcd() is not first and rt.etcd().endpoints == ("http://m1:2379",)
    rt.close()
    assert [c.closed for c in opened] == [True, True]
