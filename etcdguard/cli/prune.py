"""``etcdguard backups prune``: apply the retention policy (see docs/retention.md)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

import typer
from rich.table import Table

from etcdguard.backup.catalog import BackupEntry, Catalog, safe_entries
from etcdguard.backup.leftovers import Leftover, find_leftovers, remove_leftovers, stale
from etcdguard.backup.retention import RetentionDecision, execute_retention, plan_entries
from etcdguard.cli import options as opt
from etcdguard.cli.backups import backups_app, leftovers_table
from etcdguard.cli.common import OutputFormat, handle_errors, print_json, settings, stderr, stdout
from etcdguard.cli.render import clean, when
from etcdguard.config import RetentionConfig
from etcdguard.errors import AbortedError


def _action(decision: RetentionDecision, backup_id: str) -> str:
    if backup_id in decision.deleted:
        return "deleted"
    if backup_id in decision.keep:
        return "keep"
    return "gone" if backup_id in decision.problems else "delete"


def decision_dict(decision: RetentionDecision, entries: list[BackupEntry], policy: RetentionConfig,
                  now: datetime, dry_run: bool) -> dict[str, Any]:
    """JSON form of a prune run: the policy, every backup with its action, and what was deleted."""
    return {
        "now": now.isoformat(),
        "dry_run": dry_run,
        "policy": policy.model_dump(),
        "backups": [{
            "backup_id": e.backup_id,
            "created_at": e.created_at.isoformat() if e.created_at else None,
            "pinned": e.pinned,
            "verification": e.verification_state,
            "action": _action(decision, e.backup_id),
            "reasons": decision.reasons(e.backup_id),
            "problem": decision.problems.get(e.backup_id),
        } for e in entries],
        "keep": list(decision.keep),
        "delete": decision.delete,
        "deleted": decision.deleted,
    }


def _table(decision: RetentionDecision, entries: list[BackupEntry], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("id", "created", "verification", "action", "reasons"):
        table.add_column(col)
    for e in entries:
        action = _action(decision, e.backup_id)
        style = {"keep": "green", "delete": "bold red"}.get(action, "red")
        why = ", ".join(decision.reasons(e.backup_id))
        if e.backup_id in decision.problems:
            why = f"{why}: {decision.problems[e.backup_id]}" if why else decision.problems[e.backup_id]
        table.add_row(e.backup_id, when(e.created_at), e.verification_state, f"[{style}]{action}[/]", clean(why))
    return table


def _confirm(question: str) -> None:
    """Ask on the terminal; refuse (AbortedError) when there is none or the answer is no."""
    if not stdout.is_terminal and not stderr.is_terminal:
        raise AbortedError("not pruning without confirmation; pass --yes in scripts (or --dry-run to see the plan)")
    if not typer.confirm(question, default=False, err=True):
        raise AbortedError("nothing deleted")


def _execute(catalog: Catalog, planned: RetentionDecision, as_json: bool) -> RetentionDecision:
    """Carry out the confirmed plan, reporting each deletion and each planned one left alone."""
    out = stderr if as_json else stdout

    def report(backup_id: str, objects: int) -> None:
        out.print(f"deleted backup {backup_id} ({objects} objects)")

    done = execute_retention(catalog, planned, report)
    for backup_id in planned.delete:
        if backup_id not in done.deleted:
            why = done.problems.get(backup_id) or ", ".join(done.reasons(backup_id))
            stderr.print(f"[yellow]did not delete {backup_id}: {why}[/]")
    return done


def prune(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be deleted.")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    keep_last: Annotated[int | None, typer.Option(
        "--keep-last", help="Keep the newest N complete backups (overrides retention.keep_last).")] = None,
    hourly: Annotated[int | None, typer.Option(
        "--hourly", help="Keep the newest backup of each of the N latest hours with one.")] = None,
    daily: Annotated[int | None, typer.Option(
        "--daily", help="Keep the newest backup of each of the N latest UTC days with one.")] = None,
    weekly: Annotated[int | None, typer.Option(
        "--weekly", help="Keep the newest backup of each of the N latest ISO weeks with one.")] = None,
    monthly: Annotated[int | None, typer.Option(
        "--monthly", help="Keep the newest backup of each of the N latest months with one.")] = None,
    min_count: Annotated[int | None, typer.Option(
        "--min-count", help="Always keep at least the newest N complete backups.")] = None,
    incomplete_grace_minutes: Annotated[float | None, typer.Option(
        "--incomplete-grace-minutes", min=0,
        help="Remove leftovers of interrupted backups idle for longer than this (default 60; 0 removes "
             "all of them: only when no other backup is running).")] = None,
    store: opt.Store = None,
    s3_endpoint_url: opt.S3Endpoint = None,
    cluster_name: opt.Cluster = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o")] = OutputFormat.table,
) -> None:
    """Delete the backups the retention policy no longer keeps.

    The counts default to the retention.* config keys. Never deletes a pinned backup, the
    newest verified backup, or below --min-count complete backups. Shows every backup with
    keep/delete and why; asks before deleting unless --yes.

    Also removes the leftovers of interrupted backups (open multipart uploads, partial files,
    objects without a manifest) once nothing has written to them for
    --incomplete-grace-minutes, so a backup still being written is never touched.
    """
    overrides: dict[str, Any] = {
        **opt.store_overrides(store, s3_endpoint_url, cluster_name),
        "retention.keep_last": keep_last, "retention.hourly": hourly, "retention.daily": daily,
        "retention.weekly": weekly, "retention.monthly": monthly, "retention.min_count": min_count,
        "retention.incomplete_grace_minutes": incomplete_grace_minutes,
    }
    as_json = output is OutputFormat.json
    with handle_errors():
        cfg = settings(ctx, overrides)
        catalog = opt.open_catalog(cfg)
        now = datetime.now(timezone.utc)
        entries = safe_entries(catalog)
        grace = timedelta(minutes=cfg.retention.incomplete_grace_minutes)
        leftovers = find_leftovers(catalog)
        doomed = stale(leftovers, grace, now)
        decision = plan_entries(entries, cfg.retention, now)
        where = f"{catalog.cluster} in {catalog.store.url}"
        if not as_json:
            stdout.print(_table(decision, entries, f"retention plan for {where}") if entries
                         else f"no backups of {where}")
            if leftovers:
                stdout.print(leftovers_table(leftovers, cfg.retention.incomplete_grace_minutes))
        removed: list[Leftover] = []
        if (decision.delete or doomed) and not dry_run:
            if not yes:
                _confirm(f"delete {len(decision.delete)} backup(s) and {len(doomed)} leftover(s) of {where}?")
            if decision.delete:
                decision = _execute(catalog, decision, as_json)
            if doomed:
                removed = remove_leftovers(catalog, grace, now)
                (stderr if as_json else stdout).print(f"removed {len(removed)} leftover(s) of interrupted backups")
    if as_json:
        print_json({**decision_dict(decision, entries, cfg.retention, now, dry_run),
                    "leftovers": [lo.to_dict() for lo in leftovers],
                    "leftovers_removed": [lo.to_dict() for lo in removed]})
        return
    kept = len(decision.keep)
    if dry_run:
        stdout.print(f"dry run: would delete {len(decision.delete)} and keep {kept} backup(s), "
                     f"and remove {len(doomed)} leftover(s)")
    elif not decision.delete:
        stdout.print(f"nothing to delete; keeping {kept} backup(s)")
    else:
        stdout.print(f"deleted {len(decision.deleted)} and kept {kept} backup(s)")


def register(app: typer.Typer) -> None:
    """Add ``prune`` to the ``backups`` group (registered by etcdguard.cli.backups)."""
    del app
    backups_app.command("prune")(prune)
