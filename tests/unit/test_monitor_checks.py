"""Every cluster check, OK and not, over fake cluster snapshots."""

from __future__ import annotations

import pytest

from etcdguard.config import EtcdConfig, MonitorConfig
from etcdguard.monitor import checks
from etcdguard.monitor.model import Severity
from tests.unit.test_monitor_fakes import MIB, cluster, config, healthy3, mem

OK, WARNING, CRITICAL, UNKNOWN = Severity.OK, Severity.WARNING, Severity.CRITICAL, Severity.UNKNOWN


# -- quorum ------------------------------------------------------------------------------------
def test_quorum_ok_when_all_healthy() -> None:
    r = checks.check_quorum(healthy3())
    assert r.severity is OK and r.summary.startswith("HEALTHY (can lose 1 more)")


def test_quorum_critical_when_can_lose_zero_more() -> None:
    r = checks.check_quorum(cluster(mem("m0", leader=True), mem("m1", up=False), mem("m2")))
    assert r.severity is CRITICAL
    assert "DEGRADED (can lose 0 more)" in r.summary and "bring back m1" in r.advice


def test_quorum_warning_when_degraded_but_tolerant() -> None:
    h = cluster(mem("m0", leader=True), mem("m1", up=False), mem("m2"), mem("m3"), mem("m4"))
    r = checks.check_quorum(h)
    assert r.severity is WARNING and "can lose 1 more" in r.summary


def test_quorum_lost_is_critical() -> None:
    r = checks.check_quorum(cluster(mem("m0", sees_leader=False), mem("m1", up=False), mem("m2", up=False)))
    assert r.severity is CRITICAL and r.summary.startswith("QUORUM LOST")
    assert "survivor" in r.advice


def test_nothing_reachable_is_critical_and_says_quorum_is_unknown() -> None:
    r = checks.check_quorum(cluster(mem("m0", up=False), mem("m1", up=False)))
    assert r.severity is CRITICAL and r.summary.startswith("UNREACHABLE: no etcd endpoint answered")
    assert "cannot tell whether the cluster has quorum" in r.summary and "QUORUM LOST" not in r.summary


def test_single_member_is_ok_by_design() -> None:
    r = checks.check_quorum(cluster(mem("m0", leader=True)))
    assert r.severity is OK
    assert r.summary == "HEALTHY (can lose 0 more): single member: no fault tolerance, by design"


@pytest.mark.parametrize(("minimum", "members", "severity"), [
    (1, 1, WARNING),   # a single member below the wanted tolerance
    (1, 3, OK),        # 3 healthy tolerate 1
    (2, 3, WARNING),   # ... but not 2
    (2, 5, OK),
])
def test_min_fault_tolerance(minimum: int, members: int, severity: Severity) -> None:
    h = cluster(*[mem(f"m{i}", leader=i == 0) for i in range(members)])
    config = MonitorConfig.model_validate({"min_fault_tolerance": minimum})
    r = checks.check_quorum(h, config)
    assert r.severity is severity, r
    if severity is WARNING:
        assert f"below monitor.min_fault_tolerance {minimum}" in r.summary and "Add voting members" in r.advice


def test_two_healthy_members_are_critical() -> None:
    r = checks.check_quorum(cluster(mem("m0", leader=True), mem("m1")))
    assert r.severity is CRITICAL and "add one" in r.advice


# -- leader --------------------------------------------------------------------------------------
def test_leader_ok() -> None:
    r = checks.check_leader(healthy3())
    assert r.severity is OK and "m0" in r.summary


def test_no_leader_is_critical() -> None:
    h = cluster(mem("m0", sees_leader=False), mem("m1", sees_leader=False), mem("m2", up=False))
    assert h.leader_id is None
    r = checks.check_leader(h)
    assert r.severity is CRITICAL and "no leader" in r.summary


def test_no_member_no_leader() -> None:
    assert checks.check_leader(cluster(mem("m0", up=False))).severity is CRITICAL


def test_members_disagree_on_leader() -> None:
    h = cluster(mem("m0", leader=True), mem("m1", leader_id=12345), mem("m2"))
    assert checks.check_leader(h).severity is WARNING


def test_leader_not_in_member_list() -> None:
    h = cluster(mem("m1"), mem("m2"), leader_id=0xDEAD)
    assert checks.check_leader(h).severity is WARNING


# -- parity and learners ---------------------------------------------------------------------------
def test_even_voting_members_warn() -> None:
    r = checks.check_voting_parity(cluster(*(mem(f"m{i}", leader=i == 0) for i in range(4))))
    assert r.severity is WARNING and "4 voting members" in r.summary and "odd" in r.advice
    assert checks.check_voting_parity(healthy3()).severity is OK


def test_learners_do_not_make_it_even() -> None:
    h = cluster(mem("m0", leader=True), mem("m1"), mem("m2"), mem("l1", learner=True))
    assert checks.check_voting_parity(h).severity is OK


def test_learner_present_warns_with_promote_command() -> None:
    h = cluster(mem("m0", leader=True), mem("m1"), mem("m2"), mem("l1", learner=True, lag=7))
    r = checks.check_learners(h, "--cacert=/ca.crt")
    learner = h.member("l1")
    assert learner is not None
    assert r.severity is WARNING and "l1 (lag 7)" in r.summary
    assert f"member promote {learner.id_hex}" in r.advice and "--cacert=/ca.crt" in r.advice
    assert checks.check_learners(healthy3()).severity is OK


# -- raft lag --------------------------------------------------------------------------------------
def test_lag_over_threshold_warns() -> None:
    h = cluster(mem("m0", leader=True), mem("m1", lag=5000), mem("m2", lag=10))
    r = checks.check_raft_lag(h, config(max_raft_lag=1000))
    assert r.severity is WARNING and "m1 5000 entries behind" in r.summary and "m2" not in r.summary


def test_lag_at_threshold_is_ok() -> None:
    h = cluster(mem("m0", leader=True), mem("m1", lag=1000), mem("m2"))
    r = checks.check_raft_lag(h, config(max_raft_lag=1000))
    assert r.severity is OK and "max lag 1000" in r.summary


def test_lag_unknown_without_members() -> None:
    assert checks.check_raft_lag(cluster(mem("m0", up=False)), config()).severity is UNKNOWN


def test_unreachable_member_lag_ignored() -> None:
    h = cluster(mem("m0", leader=True), mem("m1", up=False), mem("m2"))
    assert checks.check_raft_lag(h, config()).severity is OK


# -- db size ---------------------------------------------------------------------------------------
def test_db_size_thresholds() -> None:
    cfg = config(db_quota_warning_percent=80, db_quota_critical_percent=95)

    def at(db_mib: int) -> Severity:
        h = cluster(mem("m0", leader=True, db_size=db_mib * MIB, db_size_in_use=db_mib * MIB // 2,
                        quota_bytes=100 * MIB), mem("m1"), mem("m2"))
        return checks.check_db_size(h, cfg).severity

    assert at(10) is OK
    assert at(79) is OK
    assert at(80) is WARNING
    assert at(94) is WARNING
    assert at(95) is CRITICAL
    assert at(150) is CRITICAL


def test_db_size_advice_and_assumed_quota() -> None:
    h = cluster(mem("m0", leader=True, db_size=90 * MIB, db_size_in_use=30 * MIB, quota_bytes=100 * MIB,
                    quota_source="assumed", revision=4242), mem("m1"))
    r = checks.check_db_size(h, config())
    assert r.severity is WARNING
    assert "90.0% of 100.0 MiB quota" in r.summary and "quota assumed" in r.summary
    assert "compact 4242" in r.advice and "defrag" in r.advice and "60.0 MiB" in r.advice


def test_db_size_unknown_when_nothing_answers() -> None:
    assert checks.check_db_size(cluster(mem("m0", up=False)), config()).severity is UNKNOWN


# -- alarms ----------------------------------------------------------------------------------------
def test_no_alarms_ok() -> None:
    assert checks.check_alarms(healthy3()).severity is OK


def test_nospace_is_critical_with_ordered_commands() -> None:
    h = cluster(mem("m0", leader=True, alarms=("NOSPACE",), revision=777), mem("m1"), mem("m2"))
    r = checks.check_alarms(h, "--cacert=/ca.crt --cert=/c.crt --key=/c.key")
    assert r.severity is CRITICAL and "NOSPACE alarm on m0" in r.summary
    compact, defrag, disarm = (r.advice.index(w) for w in ("compact 777", " defrag`", "alarm disarm"))
    assert compact < defrag < disarm
    assert r.advice.count(" defrag`") == 3  # every member, one at a time
    leader = h.leader
    assert leader is not None and leader.endpoint is not None
    assert f"etcdctl --endpoints={leader.endpoint} --cacert=/ca.crt --cert=/c.crt --key=/c.key compact 777" \
        in r.advice


def test_corrupt_is_critical_and_not_just_disarm() -> None:
    h = cluster(mem("m0", leader=True), mem("m1", alarms=("CORRUPT",)), mem("m2"))
    r = checks.check_alarms(h)
    m1 = h.member("m1")
    assert m1 is not None
    assert r.severity is CRITICAL and "CORRUPT alarm on m1" in r.summary
    assert "do not just disarm" in r.advice and m1.id_hex in r.advice


# -- versions --------------------------------------------------------------------------------------
def test_same_version_ok() -> None:
    r = checks.check_version_skew(healthy3())
    assert r.severity is OK and "3.5.16" in r.summary


def test_patch_skew_is_noted_ok() -> None:
    h = cluster(mem("m0", leader=True), mem("m1", version="3.5.15"), mem("m2"))
    r = checks.check_version_skew(h)
    assert r.severity is OK and "patch versions differ" in r.summary


def test_minor_skew_warns() -> None:
    h = cluster(mem("m0", leader=True), mem("m1", version="3.4.23"), mem("m2"))
    r = checks.check_version_skew(h)
    assert r.severity is WARNING and "3.4.23 x1" in r.summary and "3.5.16 x2" in r.summary


def test_versions_unknown() -> None:
    assert checks.check_version_skew(cluster(mem("m0", up=False))).severity is UNKNOWN


# -- endpoints and helpers ---------------------------------------------------------------------------
def test_endpoint_errors_warn() -> None:
    assert checks.check_endpoints(healthy3()).severity is OK
    h = cluster(mem("m0", leader=True), endpoint_errors=("http://x:1 did not answer",))
    r = checks.check_endpoints(h)
    assert r.severity is WARNING and "http://x:1" in r.summary


def test_format_bytes() -> None:
    assert checks.format_bytes(None) == "-"
    assert checks.format_bytes(512) == "512 B"
    assert checks.format_bytes(1536) == "1.5 KiB"
    assert checks.format_bytes(2 * 1024**3) == "2.0 GiB"


def test_etcdctl_flags() -> None:
    cfg = EtcdConfig.model_validate({"cacert": "/ca", "cert": "/c", "key": "/k", "username": "root"})
    assert checks.etcdctl_flags(cfg) == "--cacert=/ca --cert=/c --key=/k --user=root"
    assert checks.etcdctl_flags(EtcdConfig.model_validate({})) == ""
