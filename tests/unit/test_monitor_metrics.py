"""Prometheus collectors: own registry, names/units, member removal, backup and verification records."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from etcdguard.monitor.metrics import EtcdGuardMetrics
from etcdguard.monitor.model import BackupFreshness, CheckResult, Severity
from tests.unit.test_monitor_fakes import NOW, cluster, healthy3, mem


def samples(m: EtcdGuardMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: EtcdGuardMetrics, name: str, **labels: str) -> float | None:
    return samples(m).get((name, tuple(sorted(labels.items()))))


def test_no_default_registry_and_independent_instances() -> None:
    from prometheus_client import REGISTRY

    a, b = EtcdGuardMetrics(), EtcdGuardMetrics(CollectorRegistry())
    a.record_backup(True, 1.0)
    assert value(a, "etcdguard_backups_total", result="success") == 1
    assert value(b, "etcdguard_backups_total", result="success") == 0
    assert b"etcdguard_" not in generate_latest(REGISTRY)


def test_names_have_prefix_and_units() -> None:
    m = EtcdGuardMetrics()
    m.update_from_cluster(healthy3())
    m.record_backup(True, 12.5, plain_size_bytes=100, stored_size_bytes=40)
    m.record_verification(True)
    families = list(text_string_to_metric_families(m.render().decode()))
    assert families and all(f.name.startswith("etcdguard_") for f in families)
    for f in families:
        assert f.documentation, f.name
        if f.type == "counter":
            assert f.name.endswith(("s", "total")), f.name
    names = {f.name for f in families}
    for expected in ("etcdguard_member_db_size_bytes", "etcdguard_backup_duration_seconds",
                     "etcdguard_backup_last_success_timestamp_seconds", "etcdguard_backups",
                     "etcdguard_cluster_has_quorum", "etcdguard_cluster_failures_tolerated"):
        assert expected in names


def test_update_from_cluster() -> None:
    m = EtcdGuardMetrics()
    h = cluster(mem("m0", leader=True), mem("m1", up=False), mem("m2", alarms=("NOSPACE",)),
                mem("l1", learner=True))
    m.update_from_cluster(h)
    m0, m1, m2, l1 = (h.member(n) for n in ("m0", "m1", "m2", "l1"))
    assert m0 and m1 and m2 and l1
    assert value(m, "etcdguard_member_up", member="m0", member_id=m0.id_hex) == 1
    assert value(m, "etcdguard_member_up", member="m1", member_id=m1.id_hex) == 0
    assert value(m, "etcdguard_member_is_leader", member="m0", member_id=m0.id_hex) == 1
    assert value(m, "etcdguard_member_is_learner", member="l1", member_id=l1.id_hex) == 1
    assert value(m, "etcdguard_member_db_size_bytes", member="m0", member_id=m0.id_hex) == m0.db_size
    assert value(m, "etcdguard_member_db_size_bytes", member="m1", member_id=m1.id_hex) is None
    assert value(m, "etcdguard_member_alarm", member="m2", member_id=m2.id_hex, alarm="NOSPACE") == 1
    assert value(m, "etcdguard_cluster_has_quorum") == 1
    assert value(m, "etcdguard_cluster_failures_tolerated") == 0
    assert value(m, "etcdguard_cluster_voting_members") == 3
    assert value(m, "etcdguard_cluster_healthy_voting_members") == 2
    assert value(m, "etcdguard_cluster_last_probe_timestamp_seconds") == NOW.timestamp()


def test_departed_members_and_cleared_alarms_disappear() -> None:
    m = EtcdGuardMetrics()
    h = cluster(mem("m0", leader=True), mem("m1", alarms=("NOSPACE",)), mem("m2"))
    m.update_from_cluster(h)
    m1 = h.member("m1")
    assert m1 is not None
    m.update_from_cluster(cluster(mem("m0", leader=True), mem("m2")))
    assert value(m, "etcdguard_member_up", member="m1", member_id=m1.id_hex) is None
    assert value(m, "etcdguard_member_alarm", member="m1", member_id=m1.id_hex, alarm="NOSPACE") is None


def test_quorum_lost_gauges() -> None:
    m = EtcdGuardMetrics()
    m.update_from_cluster(cluster(mem("m0", up=False), mem("m1", up=False), mem("m2", up=False)))
    assert value(m, "etcdguard_cluster_has_quorum") == 0
    assert value(m, "etcdguard_cluster_has_leader") == 0


def test_record_backup_and_verification() -> None:
    m = EtcdGuardMetrics()
    unknown = value(m, "etcdguard_verification_last_success")
    assert unknown is not None and unknown != unknown  # NaN until a verification is known
    m.record_backup(False, 3.0)
    assert value(m, "etcdguard_backups_total", result="failure") == 1
    assert value(m, "etcdguard_backup_last_success_timestamp_seconds") == 0
    m.record_backup(True, 42.0, plain_size_bytes=1000, stored_size_bytes=300, finished_at=NOW)
    assert value(m, "etcdguard_backup_last_success_timestamp_seconds") == NOW.timestamp()
    assert value(m, "etcdguard_backup_last_size_bytes", kind="plain") == 1000
    assert value(m, "etcdguard_backup_last_size_bytes", kind="stored") == 300
    assert value(m, "etcdguard_backup_duration_seconds_count", result="success") == 1
    assert value(m, "etcdguard_backup_duration_seconds_bucket", result="success", le="60.0") == 1
    m.record_verification(False, at=NOW)
    assert value(m, "etcdguard_verification_last_success") == 0
    assert value(m, "etcdguard_verifications_total", result="failed") == 1


def test_set_freshness_and_checks(tmp_path: Path) -> None:
    m = EtcdGuardMetrics()
    m.set_freshness(BackupFreshness(NOW - timedelta(hours=1), NOW, True))
    an_hour_ago = (NOW - timedelta(hours=1)).timestamp()
    assert value(m, "etcdguard_backup_last_success_timestamp_seconds") == an_hour_ago
    assert value(m, "etcdguard_verification_last_success") == 1
    m.update_from_checks([CheckResult("quorum", Severity.CRITICAL, "x"),
                          CheckResult("alarms", Severity.OK, "")])
    assert value(m, "etcdguard_check_severity", check="quorum") == 2
    out = tmp_path / "etcdguard.prom"
    m.write_textfile(out)
    assert "etcdguard_check_severity" in out.read_text()


def test_unreachable_member_gauges_do_not_go_stale() -> None:
    m = EtcdGuardMetrics()
    h = healthy3()
    m.update_from_cluster(h)
    m1 = h.member("m1")
    assert m1 is not None
    down = replace(h, members=tuple(mem("m1", up=False) if x.name == "m1" else x for x in h.members))
    m.update_from_cluster(down)
    assert value(m, "etcdguard_member_raft_index", member="m1", member_id=m1.id_hex) is None
    assert value(m, "etcdguard_member_up", member="m1", member_id=m1.id_hex) == 0
