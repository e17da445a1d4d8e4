"""Check results, severities and the backup-freshness input of the checks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any


class Severity(str, Enum):
    """Monitoring-plugin severities. ``exit_code`` is the plugin code; ``rank`` orders them."""

    OK = "OK"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"
    UNKNOWN = "UNKNOWN"

    @property
    def exit_code(self) -> int:
        """0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (Nagios / Icinga / Sensu convention)."""
        return {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}[self.value]

    @property
    def rank(self) -> int:
        """Badness: OK < WARNING < UNKNOWN < CRITICAL (a known CRITICAL beats an UNKNOWN)."""
        return {"OK": 0, "WARNING": 1, "UNKNOWN": 2, "CRITICAL": 3}[self.value]


def worst(severities: Iterable[Severity]) -> Severity:
    """The worst severity by :attr:`Severity.rank` (OK for none)."""
    return max(severities, key=lambda s: s.rank, default=Severity.OK)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one named check; ``advice`` says what to do about it (empty when OK)."""

    name: str
    severity: Severity
    summary: str
    advice: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"name": self.name, "severity": self.severity.value, "summary": self.summary,
                "advice": self.advice}


@dataclass(frozen=True)
class BackupFreshness:
    """What the backup catalog knows about the newest backup and verification (UTC datetimes).

    ``None`` fields mean "there is none". Pass no BackupFreshness at all to skip the backup checks.
    """

    newest_backup_at: datetime | None
    newest_verification_at: datetime | None
    newest_verification_passed: bool | None
