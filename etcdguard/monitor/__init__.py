"""Health monitoring: named checks, the health report, leader-change history and Prometheus metrics."""

from etcdguard.monitor.model import BackupFreshness, CheckResult, Severity, worst
from etcdguard.monitor.report import CheckReport, run_checks, status_document

__all__ = [
    "BackupFreshness",
    "CheckReport",
    "CheckResult",
    "Severity",
    "run_checks",
    "status_document",
    "worst",
]
