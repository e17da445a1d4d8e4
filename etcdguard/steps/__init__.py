"""The one step engine: named, idempotent steps recorded in a journal as they run.

Backups and verifications record their steps with it; restore and the member workflows run
plans on it (resume after a crash at any step boundary, rollback newest first). See
:mod:`etcdguard.steps.engine` and :mod:`etcdguard.steps.journal`.
"""

from __future__ import annotations

import os
from pathlib import Path

from etcdguard.steps.engine import Step, StepContext, StepListener, StepRunner, describe_error
from etcdguard.steps.journal import (
    Journal,
    RunLock,
    RunLockedError,
    RunOutcome,
    StepRecord,
    StepState,
    atomic_write,
    ensure_private_dir,
    prune_journals,
)
from etcdguard.steps.render import journal_table, step_line, step_lines

__all__ = [
    "Journal",
    "RunLock",
    "RunLockedError",
    "RunOutcome",
    "Step",
    "StepContext",
    "StepListener",
    "StepRecord",
    "StepRunner",
    "StepState",
    "atomic_write",
    "default_journal_dir",
    "describe_error",
    "ensure_private_dir",
    "journal_table",
    "prune_journals",
    "step_line",
    "step_lines",
]


def default_journal_dir() -> Path:
    """Where run journals live: ``$ETCDGUARD_STATE_DIR/journal``, else /var/lib/etcdguard/journal
    as root, else ``$XDG_STATE_HOME/etcdguard/journal`` (default ``~/.local/state``)."""
    explicit = os.environ.get("ETCDGUARD_STATE_DIR")
    if explicit:
        return Path(explicit) / "journal"
    if os.geteuid() == 0:
        return Path("/var/lib/etcdguard/journal")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "etcdguard" / "journal"
