"""Health monitoring: quorum math, named checks, the check report and Prometheus metrics."""

from etcdguard.etcd.quorum import QuorumState, QuorumVerdict, assess_quorum
from etcdguard.monitor.model import BackupFreshness, CheckResult, Severity, worst
from etcdguard.monitor.report import CheckReport, run_checks, status_document

__all__ = [
    "BackupFreshness",
    "CheckReport",
    "CheckResult",
    "QuorumState",
    "QuorumVerdict",
    "Severity",
    "assess_quorum",
    "run_checks",
    "status_document",
    "worst",
]
