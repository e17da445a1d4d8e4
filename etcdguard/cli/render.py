"""Small formatting helpers for human output."""

from __future__ import annotations

from datetime import datetime, timezone


def human_bytes(n: float | None) -> str:
    """1536 -> '1.5 KiB'."""
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def human_age(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago ``moment`` was: '5m ago', '3h ago', '2d ago'."""
    if moment is None:
        return "-"
    delta = ((now or datetime.now(timezone.utc)) - moment).total_seconds()
    if delta < 90:
        return f"{int(delta)}s ago"
    if delta < 5400:
        return f"{int(delta // 60)}m ago"
    if delta < 129600:
        return f"{int(delta // 3600)}h ago"
    return f"{int(delta // 86400)}d ago"


def when(moment: datetime | None) -> str:
    """UTC timestamp without microseconds."""
    return "-" if moment is None else moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
