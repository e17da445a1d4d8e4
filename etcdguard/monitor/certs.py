"""The certificate-expiry check: days left on each certificate, WARNING / CRITICAL thresholds.

WARNING under ``monitor.cert_warning_days`` (30), CRITICAL under ``monitor.cert_critical_days``
(7) or once lapsed (kubeadm's leaf certificates lapse after one year). Which certificates are
read is decided by :mod:`etcdguard.kit.expiry`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from etcdguard.config import MonitorConfig
from etcdguard.monitor.model import CheckResult, Severity

CHECK_NAME = "certificates"
RENEW_ADVICE = ("Renew before they lapse: on kubeadm nodes `kubeadm certs check-expiration`, then "
                "`kubeadm certs renew all` and restart the control-plane static pods; elsewhere reissue "
                "them from the CA and restart etcd (and update etcd.cert/key here).")


@dataclass(frozen=True)
class CertExpiry:
    """When one certificate lapses."""

    path: str
    source: str          # "etcd-tls", "pki" or "kit"
    subject: str
    not_after: datetime
    is_ca: bool = False

    def days_left(self, now: datetime) -> float:
        """Days until it lapses (negative once expired)."""
        return (self.not_after - now).total_seconds() / 86400


def _describe(cert: CertExpiry, now: datetime) -> str:
    days = cert.days_left(now)
    when = f"expired {-days:.0f} days ago" if days < 0 else f"{days:.0f} days left"
    return f"{cert.path} ({when})"


def check_certificates(certs: Sequence[CertExpiry], config: MonitorConfig,
                       now: datetime | None = None) -> CheckResult:
    """CRITICAL when one lapses within ``cert_critical_days`` (or has lapsed), WARNING within ``cert_warning_days``."""
    now = now or datetime.now(timezone.utc)
    if not certs:
        return CheckResult(CHECK_NAME, Severity.UNKNOWN, "no certificate readable")
    critical = [c for c in certs if c.days_left(now) < config.cert_critical_days]
    warning = [c for c in certs if config.cert_critical_days <= c.days_left(now) < config.cert_warning_days]
    soonest = min(certs, key=lambda c: c.not_after)
    if critical:
        listed = ", ".join(_describe(c, now) for c in critical[:4])
        more = f" and {len(critical) - 4} more" if len(critical) > 4 else ""
        return CheckResult(CHECK_NAME, Severity.CRITICAL,
                           f"{len(critical)} certificate(s) lapse within {config.cert_critical_days:g} days: "
                           f"{listed}{more}", RENEW_ADVICE)
    if warning:
        listed = ", ".join(_describe(c, now) for c in warning[:4])
        more = f" and {len(warning) - 4} more" if len(warning) > 4 else ""
        return CheckResult(CHECK_NAME, Severity.WARNING,
                           f"{len(warning)} certificate(s) lapse within {config.cert_warning_days:g} days: "
                           f"{listed}{more}", RENEW_ADVICE)
    return CheckResult(CHECK_NAME, Severity.OK,
                       f"{len(certs)} certificate(s); the soonest lapses in {soonest.days_left(now):.0f} days "
                       f"({soonest.path})")
