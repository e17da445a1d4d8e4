"""Small formatting helpers for human output.

Every string that came from a store or from etcd (member names, manifest fields, verdict
reasons, error messages) goes through :func:`clean` (for markup strings) or :func:`plain` (for
``rich.text.Text``) before it is printed: a planted ``[red]`` or ``\x1b[2J`` is shown, not obeyed.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from rich.markup import escape

from etcdguard.monitor.checks import format_bytes as human_bytes

__all__ = ["clean", "human_age", "human_bytes", "plain", "when"]

# C0 and C1 controls, DEL, and the Unicode bidi overrides/isolates that reorder what is shown.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def plain(value: object) -> str:
    """``value`` as text with control characters made visible (``\x1b`` -> ``\\x1b``)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256
                        else f"\\u{ord(m.group()):04x}", str(value))


def clean(value: object) -> str:
    """``value`` safe to embed in Rich markup: control characters made visible, markup escaped."""
    return escape(plain(value))


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
