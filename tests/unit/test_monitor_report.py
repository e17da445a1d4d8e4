"""run_checks, the worst-severity rule and the monitoring-plugin / JSON rendering."""

from __future__ import annotations

import json
import re

from etcdguard.monitor.model import BackupFreshness, CheckResult, Severity, worst
from etcdguard.monitor.report import run_checks
from tests.unit.test_monitor_fakes import NOW, cluster, config, healthy3, mem


def test_exit_codes_and_rank() -> None:
    assert [s.exit_code for s in Severity] == [0, 1, 2, 3]
    assert worst([]) is Severity.OK
    assert worst([Severity.OK, Severity.WARNING]) is Severity.WARNING
    assert worst([Severity.UNKNOWN, Severity.WARNING]) is Severity.UNKNOWN
    assert worst([Severity.UNKNOWN, Severity.CRITICAL, Severity.OK]) is Severity.CRITICAL


def test_healthy_cluster_is_ok_and_skips_what_it_cannot_check() -> None:
    report = run_checks(healthy3(), config(), now=NOW)
    assert report.severity is Severity.OK and report.exit_code == 0
    text = report.to_text()
    first = text.splitlines()[0]
    assert first.startswith("ETCDGUARD OK - HEALTHY (can lose 1 more) | ")
    assert "healthy_voting_members=3;;;0;3" in first and "failures_tolerated=1" in first
    assert "skipped: backup_age, verification" in text and "skipped: leader_changes" in text
    names = {r.name for r in report.results}
    assert {"quorum", "leader", "voting_members", "learners", "raft_lag", "db_size", "alarms",
            "version_skew", "endpoints"} <= names
    assert "backup_age" not in names and "leader_changes" not in names


def test_degraded_cluster_is_critical_with_one_line_per_problem() -> None:
    h = cluster(mem("m0", leader=True), mem("m1", up=False), mem("m2", version="3.4.23"))
    report = run_checks(h, config(), now=NOW)
    assert report.exit_code == 2
    lines = report.to_text().splitlines()
    assert lines[0].startswith("ETCDGUARD CRITICAL - DEGRADED (can lose 0 more); version_skew: ")
    assert lines[1].startswith("CRITICAL quorum: ") and "-- advice: " in lines[1]
    assert lines[2].startswith("WARNING version_skew: ")
    assert not any(line.startswith("OK ") for line in lines)


def test_perfdata_is_plugin_syntax() -> None:
    perf = run_checks(healthy3(), config(), now=NOW).perfdata()
    for item in perf.split():
        assert re.fullmatch(r"[a-z_]+=[0-9.]+(%|s)?(;[0-9.]*){0,4}", item), item


def test_backup_checks_run_when_freshness_given() -> None:
    fresh = BackupFreshness(NOW, NOW, True)
    report = run_checks(healthy3(), config(), freshness=fresh, leader_changes=[], now=NOW)
    assert {"backup_age", "verification", "leader_changes"} <= {r.name for r in report.results}
    assert report.skipped == () and report.severity is Severity.OK
    stale = BackupFreshness(None, None, None)
    assert run_checks(healthy3(), config(), freshness=stale, now=NOW).severity is Severity.CRITICAL


def test_summary_caps_the_problem_list() -> None:
    h = cluster(mem("m0", leader=True, alarms=("NOSPACE",)), mem("m1", version="3.4.1", lag=9999),
                mem("m2"), mem("l1", learner=True), endpoint_errors=("x",))
    summary = run_checks(h, config(), now=NOW).summary()
    assert "more problem(s)" in summary


def test_unreachable_summary() -> None:
    report = run_checks(cluster(mem("m0", up=False), mem("m1", up=False)), config(), now=NOW)
    assert report.exit_code == 2
    assert report.to_text().startswith("ETCDGUARD CRITICAL - no etcd endpoint answered")
    assert report.verdict.state.value == "UNREACHABLE" and "QUORUM LOST" not in report.to_text()
    assert [r.name for r in report.results] == ["quorum"]
    assert "member checks: no member answered" in report.skipped


def test_json_round_trip() -> None:
    data = json.loads(json.dumps(run_checks(healthy3(), config(), now=NOW).to_dict()))
    assert data["status"] == "OK" and data["exit_code"] == 0
    assert data["verdict"]["state"] == "HEALTHY" and len(data["cluster"]["members"]) == 3
    assert all(set(c) == {"name", "severity", "summary", "advice"} for c in data["checks"])


def test_check_result_to_dict() -> None:
    r = CheckResult("x", Severity.WARNING, "s", "a")
    assert r.to_dict() == {"name": "x", "severity": "WARNING", "summary": "s", "advice": "a"}
