"""Small formatting helpers for human output.

Every string that came from a store or from etcd (member names, manifest fields, verdict
reasons, error messages) goes through :func:`clean` (for markup strings) or :func:`plain` (for
``rich.text.Text``) before it is printed: a planted ``[red]`` or ``\x1b[2J`` is shown, not obeyed.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from etcdguard.monitor.checks import format_bytes as human_bytes
from etcdguard.text import clean, plain

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress

__all__ = ["clean", "human_age", "human_bytes", "plain", "transfer_bar", "when"]


def transfer_bar(console: Console, *, remaining: bool = False) -> Progress:
    """A transient bar for a byte transfer: description, bar, bytes, MB/s, and the time elapsed (or,
    with ``remaining``, the time left). rich.progress is imported only when a bar is shown."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    clock = TimeRemainingColumn() if remaining else TimeElapsedColumn()
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    clock, console=console, transient=True)


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
