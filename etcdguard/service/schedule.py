"""Cron expressions for the service's schedules (5 fields, or 6 with seconds first)."""

from __future__ import annotations

import re
from datetime import timezone

from apscheduler.triggers.cron import CronTrigger

from etcdguard.errors import ConfigError

_DOW_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _crontab_dow(field: str) -> str:
    """Crontab numbers day-of-week from Sunday=0; APScheduler from Monday=0: use names."""
    return re.sub(r"\b([0-7])\b", lambda m: _DOW_NAMES[int(m.group(1))], field)


def cron_trigger(expr: str, jitter: int = 0) -> CronTrigger:
    """A UTC CronTrigger for ``m h dom mon dow`` or ``s m h dom mon dow``; ConfigError if invalid."""
    fields = expr.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ConfigError(f"invalid cron expression {expr!r}: expected 5 fields (or 6 with seconds)")
    second, minute, hour, day, month, dow = fields
    try:
        return CronTrigger(second=second, minute=minute, hour=hour, day=day, month=month,
                           day_of_week=_crontab_dow(dow), timezone=timezone.utc, jitter=jitter or None)
    except ValueError as exc:
        raise ConfigError(f"invalid cron expression {expr!r}: {exc}") from None
