"""The one health report: every check over one probe, rendered for ``check``, ``status`` and the service."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from etcdguard.config import MonitorConfig
from etcdguard.etcd.cluster import ClusterHealth
from etcdguard.etcd.quorum import QuorumVerdict
from etcdguard.monitor import checks
from etcdguard.monitor.certs import CertExpiry, check_certificates
from etcdguard.monitor.freshness import check_backup_age, check_leader_changes, check_verification
from etcdguard.monitor.model import BackupFreshness, CheckResult, Severity, worst


@dataclass(frozen=True)
class CheckReport:
    """All check results for one probe, the quorum verdict, and what was skipped and why."""

    health: ClusterHealth
    verdict: QuorumVerdict
    results: tuple[CheckResult, ...]
    skipped: tuple[str, ...] = ()
    db_warning_percent: float = 80.0
    db_critical_percent: float = 95.0

    @property
    def severity(self) -> Severity:
        """The worst severity of all results."""
        return worst(r.severity for r in self.results)

    @property
    def exit_code(self) -> int:
        """Monitoring-plugin exit code of the worst severity."""
        return self.severity.exit_code

    def problems(self) -> list[CheckResult]:
        """Non-OK results, worst first."""
        bad = [r for r in self.results if r.severity is not Severity.OK]
        return sorted(bad, key=lambda r: -r.severity.rank)

    def summary(self) -> str:
        """One line: the quorum headline, then the worst problems."""
        problems = [r for r in self.problems() if r.name != "quorum"]
        head = self.verdict.headline if self.health.reachable_members else self.verdict.reason
        parts = [head] + [f"{r.name}: {r.summary}" for r in problems[:3]]
        if len(problems) > 3:
            parts.append(f"{len(problems) - 3} more problem(s)")
        return "; ".join(parts)

    def perfdata(self) -> str:
        """Nagios perfdata: ``label=value;warn;crit;min;max`` pairs."""
        v = self.verdict
        reachable = self.health.reachable_members
        pct = max((m.quota_percent or 0.0 for m in reachable), default=0.0)
        lag = max((m.lag or 0 for m in reachable), default=0)
        return " ".join([
            f"members={v.members};;;0", f"voting_members={v.voting};;;0",
            f"healthy_voting_members={v.healthy_voting};;;0;{v.voting}",
            f"quorum_size={v.quorum};;;0", f"failures_tolerated={v.failures_tolerated};;;0",
            f"db_quota_max={pct:.2f}%;{self.db_warning_percent:g};{self.db_critical_percent:g};0;100",
            f"raft_lag_max={lag};;;0",
            f"probe_seconds={self.health.probe_seconds:.3f}s;;;0",
        ])

    def to_text(self) -> str:
        """``ETCDGUARD <SEVERITY> - <summary> | <perfdata>``, then one line per non-OK check."""
        lines = [f"ETCDGUARD {self.severity.value} - {self.summary()} | {self.perfdata()}"]
        for r in self.problems():
            line = f"{r.severity.value} {r.name}: {r.summary}"
            lines.append(line + (f" -- advice: {r.advice}" if r.advice else ""))
        lines += [f"skipped: {s}" for s in self.skipped]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view, including the cluster snapshot."""
        return {
            "status": self.severity.value, "exit_code": self.exit_code, "summary": self.summary(),
            "verdict": self.verdict.to_dict(), "checks": [r.to_dict() for r in self.results],
            "skipped": list(self.skipped), "cluster": self.health.to_dict(),
        }


def status_document(report: CheckReport) -> dict[str, Any]:
    """``{"verdict": ..., "cluster": ..., "checks": ...}``: what ``status -o json`` returns."""
    return {"verdict": report.verdict.to_dict(), "cluster": report.health.to_dict(),
            "status": report.severity.value, "checks": [r.to_dict() for r in report.results]}


def run_checks(
    health: ClusterHealth,
    config: MonitorConfig,
    *,
    freshness: BackupFreshness | None = None,
    leader_changes: Sequence[datetime] | None = None,
    now: datetime | None = None,
    etcdctl_flags: str = "",
    certificates: Sequence[CertExpiry] | None = None,
) -> CheckReport:
    """Run every check. ``freshness=None`` skips the backup checks, ``leader_changes=None`` the
    leader-change check; both are then listed in :attr:`CheckReport.skipped`."""
    now = now or datetime.now(timezone.utc)
    results = [checks.check_quorum(health, config)]
    skipped: list[str] = []
    if health.reachable_members:
        results += [
            checks.check_leader(health),
            checks.check_voting_parity(health),
            checks.check_learners(health, etcdctl_flags),
            checks.check_raft_lag(health, config),
            checks.check_db_size(health, config, etcdctl_flags),
            checks.check_alarms(health, etcdctl_flags),
            checks.check_version_skew(health),
            checks.check_endpoints(health),
        ]
    else:
        skipped.append("member checks: no member answered")
    if leader_changes is None:
        skipped.append("leader_changes: needs the leader history that `etcdguard serve` keeps")
    else:
        results.append(check_leader_changes(leader_changes, config, now))
    if certificates:
        results.append(check_certificates(certificates, config, now))
    elif certificates is not None:
        skipped.append("certificates: none readable (etcd.cert, etcd.cacert, kit.pki_dir, a kit in the store)")
    if freshness is None:
        skipped.append("backup_age, verification: no backup catalog given")
    else:
        results += [check_backup_age(freshness, config, now), check_verification(freshness, config, now)]
    return CheckReport(health, health.verdict(), tuple(results), tuple(skipped),
                       config.db_quota_warning_percent, config.db_quota_critical_percent)
