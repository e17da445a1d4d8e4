"""Prometheus collectors shared by ``etcdguard serve`` and the CLI.

Everything is registered on the :class:`~prometheus_client.CollectorRegistry` owned by one
:class:`EtcdGuardMetrics` object (never the global default registry), so several instances can
live in one process (tests, several clusters).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, write_to_textfile
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from etcdguard.etcd.cluster import ClusterHealth
from etcdguard.monitor.certs import CertExpiry
from etcdguard.monitor.model import BackupFreshness, CheckResult

CONTENT_TYPE = CONTENT_TYPE_LATEST
MEMBER_LABELS = ("member", "member_id")
BACKUP_DURATION_BUCKETS = (1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600)
SEVERITY_VALUE = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


def _ts(when: datetime | None) -> float:
    when = when or datetime.now(timezone.utc)
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.timestamp()


class EtcdGuardMetrics:
    """The etcdguard metric families on one registry, with update methods."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry

        def member(name: str, doc: str, extra: tuple[str, ...] = ()) -> Gauge:
            return Gauge(name, doc, MEMBER_LABELS + extra, registry=r)

        self.member_up = member("etcdguard_member_up", "1 if the member answered the last probe, else 0.")
        self.member_leader = member("etcdguard_member_is_leader", "1 if the member is the raft leader.")
        self.member_learner = member("etcdguard_member_is_learner", "1 if the member is a learner.")
        self.db_size = member("etcdguard_member_db_size_bytes", "Size of the member's backend database file.")
        self.db_in_use = member("etcdguard_member_db_size_in_use_bytes",
                                "Logically used part of the member's backend database.")
        self.quota = member("etcdguard_member_quota_backend_bytes",
                            "Backend quota of the member (configured, from its /metrics, or 2 GiB assumed).")
        self.raft_index = member("etcdguard_member_raft_index", "Raft committed index of the member.")
        self.raft_applied = member("etcdguard_member_raft_applied_index", "Raft applied index of the member.")
        self.raft_term = member("etcdguard_member_raft_term", "Raft term reported by the member.")
        self.raft_lag = member("etcdguard_member_raft_lag_entries",
                               "Raft entries the member's applied index is behind the leader's index.")
        self.alarm = member("etcdguard_member_alarm", "1 for each active alarm (NOSPACE, CORRUPT).",
                            ("alarm",))
        self.probe_seconds = member("etcdguard_member_probe_duration_seconds",
                                    "How long the last probe of the member took.")
        self.has_quorum = Gauge("etcdguard_cluster_has_quorum", "1 if a quorum of voting members is healthy.",
                                registry=r)
        self.has_leader = Gauge("etcdguard_cluster_has_leader", "1 if the members see a leader.", registry=r)
        self.tolerated = Gauge("etcdguard_cluster_failures_tolerated",
                               "Voting members that can still fail before quorum is lost.", registry=r)
        self.voting = Gauge("etcdguard_cluster_voting_members", "Voting (non-learner) members.", registry=r)
        self.healthy_voting = Gauge("etcdguard_cluster_healthy_voting_members",
                                    "Voting members that answered and see a leader.", registry=r)
        self.members = Gauge("etcdguard_cluster_members", "Members in the member list, learners included.",
                             registry=r)
        self.quorum_size = Gauge("etcdguard_cluster_quorum_size", "Votes needed for quorum.", registry=r)
        self.last_probe = Gauge("etcdguard_cluster_last_probe_timestamp_seconds",
                                "Unix time of the last cluster probe.", registry=r)
        self.last_backup = Gauge("etcdguard_backup_last_success_timestamp_seconds",
                                 "Unix time the newest successful backup finished.", registry=r)
        self.backup_duration = Histogram("etcdguard_backup_duration_seconds",
                                         "Wall time of backup runs (successful or not).", ["result"],
                                         buckets=BACKUP_DURATION_BUCKETS, registry=r)
        self.backup_last_duration = Gauge("etcdguard_backup_last_duration_seconds",
                                          "Wall time of the newest successful backup.", registry=r)
        self.backup_size = Gauge("etcdguard_backup_last_size_bytes",
                                 "Size of the newest successful backup: plain snapshot or stored (compressed "
                                 "and encrypted).", ["kind"], registry=r)
        self.backups = Counter("etcdguard_backups", "Backup runs by result (success, failure).", ["result"],
                               registry=r)
        self.last_verification = Gauge("etcdguard_verification_last_timestamp_seconds",
                                       "Unix time of the newest verification.", registry=r)
        self.last_verification_ok = Gauge("etcdguard_verification_last_success",
                                          "1 if the newest verification passed, 0 if it failed, NaN if none "
                                          "is known.", registry=r)
        self.last_verification_ok.set(math.nan)
        self.verifications = Counter("etcdguard_verifications",
                                     "Verification runs by result (passed, failed).", ["result"], registry=r)
        self.check_severity = Gauge("etcdguard_check_severity",
                                    "Severity of each health check: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
                                    ["check"], registry=r)
        self.cert_days_left = Gauge("etcdguard_certificate_expiry_days",
                                    "Days until the certificate lapses (negative once expired).",
                                    ["path", "source", "subject"], registry=r)
        self._member_keys: set[tuple[str, str]] = set()
        self._alarm_keys: set[tuple[str, str, str]] = set()
        for result in ("success", "failure"):
            self.backups.labels(result=result)
        for result in ("passed", "failed"):
            self.verifications.labels(result=result)

    # -- updates ---------------------------------------------------------------------------
    def update_from_cluster(self, health: ClusterHealth) -> None:
        """Set every member and cluster gauge from one probe; forget members that left."""
        member_gauges = (self.member_up, self.member_leader, self.member_learner, self.db_size,
                         self.db_in_use, self.quota, self.raft_index, self.raft_applied, self.raft_term,
                         self.raft_lag, self.probe_seconds)
        keys: set[tuple[str, str]] = set()
        alarm_keys: set[tuple[str, str, str]] = set()
        for m in health.members:
            key = (m.display_name, m.id_hex)
            keys.add(key)
            self.member_up.labels(*key).set(1 if m.reachable else 0)
            self.member_leader.labels(*key).set(1 if m.is_leader else 0)
            self.member_learner.labels(*key).set(1 if m.is_learner else 0)
            self.quota.labels(*key).set(m.quota_bytes)
            self.probe_seconds.labels(*key).set(m.probe_seconds)
            for gauge, value in ((self.db_size, m.db_size), (self.db_in_use, m.db_size_in_use),
                                 (self.raft_index, m.raft_index), (self.raft_applied, m.raft_applied_index),
                                 (self.raft_term, m.raft_term), (self.raft_lag, m.lag)):
                if value is None:
                    _remove(gauge, key)  # no stale values for an unreachable member
                else:
                    gauge.labels(*key).set(value)
            for a in m.alarms:
                alarm_keys.add((*key, a))
                self.alarm.labels(*key, a).set(1)
        for gone in self._member_keys - keys:
            for gauge in member_gauges:
                _remove(gauge, gone)
        for gone_alarm in self._alarm_keys - alarm_keys:
            _remove(self.alarm, gone_alarm)
        self._member_keys, self._alarm_keys = keys, alarm_keys
        v = health.verdict()
        self.has_quorum.set(1 if v.has_quorum and health.reachable_members else 0)
        self.has_leader.set(1 if health.leader_id else 0)
        self.tolerated.set(v.failures_tolerated)
        self.voting.set(v.voting)
        self.healthy_voting.set(v.healthy_voting)
        self.members.set(v.members)
        self.quorum_size.set(v.quorum)
        self.last_probe.set(health.timestamp.timestamp())

    def update_from_checks(self, results: Iterable[CheckResult]) -> None:
        """Set ``etcdguard_check_severity`` for each check."""
        for r in results:
            self.check_severity.labels(check=r.name).set(SEVERITY_VALUE[r.severity.value])

    def set_certificates(self, certs: Iterable[CertExpiry], now: datetime | None = None) -> None:
        """Set ``etcdguard_certificate_expiry_days`` for each certificate (forgetting the others)."""
        moment = now or datetime.now(timezone.utc)
        self.cert_days_left.clear()
        for cert in certs:
            self.cert_days_left.labels(cert.path, cert.source, cert.subject).set(round(cert.days_left(moment), 3))

    def record_backup(self, success: bool, duration_seconds: float, *, plain_size_bytes: int | None = None,
                      stored_size_bytes: int | None = None, finished_at: datetime | None = None) -> None:
        """Count one backup run; a successful one also sets the last-success time and sizes."""
        result = "success" if success else "failure"
        self.backups.labels(result=result).inc()
        self.backup_duration.labels(result=result).observe(duration_seconds)
        if not success:
            return
        self.last_backup.set(_ts(finished_at))
        self.backup_last_duration.set(duration_seconds)
        if plain_size_bytes is not None:
            self.backup_size.labels(kind="plain").set(plain_size_bytes)
        if stored_size_bytes is not None:
            self.backup_size.labels(kind="stored").set(stored_size_bytes)

    def record_verification(self, passed: bool, *, at: datetime | None = None) -> None:
        """Count one verification and set the last verification time and result."""
        self.verifications.labels(result="passed" if passed else "failed").inc()
        self.last_verification.set(_ts(at))
        self.last_verification_ok.set(1 if passed else 0)

    def set_freshness(self, freshness: BackupFreshness) -> None:
        """Seed the last-backup / last-verification gauges from the catalog (e.g. at start-up)."""
        if freshness.newest_backup_at is not None:
            self.last_backup.set(_ts(freshness.newest_backup_at))
        if freshness.newest_verification_at is not None:
            self.last_verification.set(_ts(freshness.newest_verification_at))
            if freshness.newest_verification_passed is not None:
                self.last_verification_ok.set(1 if freshness.newest_verification_passed else 0)

    # -- exposition ------------------------------------------------------------------------
    def render(self) -> bytes:
        """The text exposition format (for ``/metrics``)."""
        return generate_latest(self.registry)

    def write_textfile(self, path: Path) -> None:
        """Write atomically for node_exporter's textfile collector."""
        write_to_textfile(str(path), self.registry)


def _remove(gauge: Gauge, key: tuple[str, ...]) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(*key)
