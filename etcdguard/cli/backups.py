"""``etcdguard backups``: list, show, download, delete, pin and unpin backups."""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer
from rich.table import Table

from etcdguard.backup.catalog import BackupEntry, safe_entries
from etcdguard.backup.download import download_backup
from etcdguard.backup.leftovers import Leftover, find_leftovers
from etcdguard.backup.manifest import Manifest
from etcdguard.cli import options as opt
from etcdguard.cli.common import (
    OutputFormat,
    exit_codes_epilog,
    handle_errors,
    print_json,
    restore_command,
    settings,
    state,
    stderr,
    stdout,
)
from etcdguard.cli.render import clean, human_age, human_bytes, transfer_bar, when
from etcdguard.errors import AbortedError, UsageError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

backups_app = typer.Typer(help="List, inspect, download and delete backups.", no_args_is_help=True,
                          epilog=exit_codes_epilog())


def entry_dict(entry: BackupEntry) -> dict[str, Any]:
    """JSON form of one catalog entry."""
    return entry.to_dict()


def _verification_cell(entry: BackupEntry) -> str:
    v = entry.verification
    if not entry.trusted:
        return f"[bold red]UNTRUSTED[/]: {clean(entry.problem)}"
    if v is None:
        rejected = f" (verdict rejected: {clean(entry.verification_problem)})" if entry.verification_problem else ""
        return f"[yellow]never[/]{rejected}"
    if v.result == "passed":
        return f"[green]verified[/] {human_age(v.finished_at)}"
    return f"[red]failed[/] {human_age(v.finished_at)}: {clean(v.reason)}"


@backups_app.command("list")
def list_backups(
    ctx: typer.Context,
    store: opt.Store = None,
    s3_endpoint_url: opt.S3Endpoint = None,
    cluster_name: opt.Cluster = None,
    signing_pub: opt.SigningPub = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o")] = OutputFormat.table,
) -> None:
    """List complete backups, newest first, with their verification state.

    Only backups whose manifest is signed by a trusted key (signing.public_keys, --signing-pub)
    count; the others are listed as UNTRUSTED and are never pruned (`backups delete ID`).
    """
    overrides = {**opt.store_overrides(store, s3_endpoint_url, cluster_name), "signing.public_keys": signing_pub}
    with handle_errors():
        cfg = settings(ctx, overrides)
        catalog = opt.open_catalog(cfg)
        entries = safe_entries(catalog)
        leftovers = find_leftovers(catalog)
    grace = cfg.retention.incomplete_grace_minutes
    if output is OutputFormat.json:
        print_json([entry_dict(e) for e in entries])
        if leftovers:
            stderr.print(f"[yellow]{len(leftovers)} leftover(s) of interrupted backups; "
                         "list them with: etcdguard backups list (without -o json)[/]")
        return
    table = Table(title=f"backups of {catalog.cluster} in {catalog.store.url}", title_justify="left")
    for col in ("id", "created", "revision", "keys", "snapshot", "stored", "source", "verification"):
        table.add_column(col)
    for e in entries:
        m = e.manifest
        if m is None:
            table.add_row(e.backup_id, "-", "-", "-", "-", "-", "-", f"[red]unreadable: {clean(e.problem)}[/]")
            continue
        table.add_row(e.backup_id + (" [cyan](pinned)[/]" if e.pinned else ""), when(m.created_at),
                      str(m.hashkv.revision), str(m.key_counts.total if m.key_counts else "-"),
                      human_bytes(m.snapshot.size), human_bytes(m.stored.size),
                      f"{clean(m.source.name)} ({clean(m.source.etcd_version)})", _verification_cell(e))
    stdout.print(table if entries else f"no backups of {catalog.cluster} in {catalog.store.url}")
    untrusted = [e.backup_id for e in entries if not e.trusted]
    if untrusted:
        stderr.print(f"[bold red]{len(untrusted)} untrusted backup(s)[/] count for nothing and are never "
                     f"pruned ({catalog.trust.describe()}); remove them with `backups delete ID`")
    if leftovers:
        stdout.print(leftovers_table(leftovers, grace))


def leftovers_table(leftovers: list[Leftover], grace_minutes: float) -> Table:
    """The leftovers of interrupted backups, with how long each has been idle."""
    now = datetime.now(timezone.utc)
    table = Table(title=f"leftovers of interrupted backups (not restorable; backups prune removes those "
                        f"idle for over {grace_minutes:g} min)", title_justify="left")
    for col in ("kind", "key", "last write", "size"):
        table.add_column(col)
    for lo in leftovers:
        state = "" if lo.age_seconds(now) > grace_minutes * 60 else " [yellow](may still be written)[/]"
        table.add_row(lo.kind, clean(lo.key), f"{human_age(lo.last_activity, now)}{state}",
                      "-" if lo.size is None else human_bytes(lo.size))
    return table


@backups_app.command("show")
def show(
    ctx: typer.Context,
    backup_id: Annotated[str, typer.Argument(help="Backup id, a unique prefix of it, or 'latest'.")],
    store: opt.Store = None,
    s3_endpoint_url: opt.S3Endpoint = None,
    cluster_name: opt.Cluster = None,
    signing_pub: opt.SigningPub = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o")] = OutputFormat.table,
) -> None:
    """Show one backup's manifest, whether it is trusted, and its latest verification."""
    overrides = {**opt.store_overrides(store, s3_endpoint_url, cluster_name), "signing.public_keys": signing_pub}
    with handle_errors():
        catalog = opt.open_catalog(settings(ctx, overrides))
        entry = catalog.entry(catalog.resolve(backup_id))
    data = entry_dict(entry)
    if output is OutputFormat.json or entry.manifest is None:
        print_json(data)
        return
    m = entry.manifest
    signer = clean(m.signing_key_id) if m.signing_key_id else "nobody"
    rows = [
        ("backup", m.backup_id + ("  (pinned)" if entry.pinned else "")),
        ("trust", f"[green]trusted[/], signed by {signer}" if entry.trusted
         else f"[bold red]UNTRUSTED[/]: {clean(entry.problem)}"),
        ("cluster", f"{clean(m.cluster.name)} (id {clean(m.cluster.cluster_id)})"),
        ("source", f"{clean(m.source.name)} {clean(m.source.endpoint)} etcd {clean(m.source.etcd_version)}"),
        ("created", f"{when(m.created_at)} ({human_age(m.created_at)}), took {m.duration_seconds:.1f}s"),
        ("hashkv", f"revision {m.hashkv.revision}, hash {m.hashkv.hash}, compact {m.hashkv.compact_revision}"),
        ("keys", "-" if m.key_counts is None else str(m.key_counts.total)),
        ("snapshot", f"{human_bytes(m.snapshot.size)} sha256 {clean(m.snapshot.sha256)}"),
        ("stored", f"{clean(m.stored.key)} {human_bytes(m.stored.size)} sha256 {clean(m.stored.sha256)}"),
        ("encryption", f"{m.stored.encryption} recipients {clean(', '.join(m.stored.recipients)) or '-'}"),
        ("verification", _verification_cell(entry)),
    ]
    for name, value in rows:
        stdout.print(f"[bold]{name:<13}[/] {value}")
    if m.key_counts and m.key_counts.by_prefix:
        stdout.print("[bold]keys by resource[/]")
        for prefix, count in m.key_counts.by_prefix.items():
            stdout.print(f"  {clean(prefix):<50} {count}")


class _DownloadProgress:
    """A progress bar (bytes, MB/s) on stderr when it is a terminal; silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.bar: Progress | None = None
        if enabled and stderr.is_terminal:
            self.bar = transfer_bar(stderr, remaining=True)
        self.task: TaskID | None = None

    def start(self, manifest: Manifest) -> None:
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task(f"download {clean(manifest.backup_id)}", total=manifest.snapshot.size)

    def advance(self, plain_bytes: int) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.advance(self.task, plain_bytes)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@backups_app.command("download")
def download(
    ctx: typer.Context,
    backup_id: Annotated[str, typer.Argument(help="Backup id, a unique prefix of it, or 'latest'.")],
    output_path: Annotated[Path, typer.Option(
        "--output", "-o", help="Output file for the plain snapshot.db, or - for stdout.")],
    identity: opt.Identity = None,
    signing_pub: opt.SigningPub = None,
    insecure_skip_signature: opt.SkipSignature = False,
    store: opt.Store = None,
    s3_endpoint_url: opt.S3Endpoint = None,
    cluster_name: opt.Cluster = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing output file.")] = False,
) -> None:
    """Download, check, decrypt and decompress a backup into a plain etcd snapshot file.

    Refuses (exit 6) a backup whose manifest signature, stored digest, decryption or etcd
    trailer does not check out; nothing is left behind then, nor when interrupted. With -o -
    the snapshot goes to stdout, and only once every check has passed (it is staged in a
    private temporary directory first). The result restores with etcdutl snapshot restore.
    """
    overrides = {**opt.store_overrides(store, s3_endpoint_url, cluster_name),
                 "encryption.identity_file": identity, "signing.public_keys": signing_pub or None}
    to_stdout = str(output_path) == "-"
    progress = _DownloadProgress(enabled=not state(ctx).quiet)
    with handle_errors():
        cfg = settings(ctx, overrides)
        if not to_stdout and output_path.exists() and not force:
            raise AbortedError(f"{output_path} exists; pass --force to overwrite it")
        if to_stdout and sys.stdout.isatty():
            raise UsageError("-o -: stdout is a terminal; redirect it to a file or a pipe")
        if insecure_skip_signature:
            stderr.print("[bold red]WARNING: --insecure-skip-signature: the manifest signature is NOT "
                         "checked; a forged backup would be accepted[/]")
        keys = opt.verify_keys(cfg, insecure_skip_signature)
        dest: Path | BinaryIO = sys.stdout.buffer if to_stdout else output_path
        catalog = opt.open_catalog(cfg, skip_signature=insecure_skip_signature)
        try:
            result = download_backup(catalog, backup_id, keys, opt.identities(cfg), dest,
                                     on_start=progress.start, on_bytes=progress.advance)
        finally:
            progress.stop()
    m = result.manifest
    done = (f"({human_bytes(result.size)}, sha256 {result.sha256[:16]}..., revision {m.hashkv.revision}): "
            "digest, signature and etcd trailer checked")
    if result.path is None:
        stderr.print(f"[green]wrote[/] backup {clean(m.backup_id)} to stdout {done}")
        return
    stdout.print(f"[green]wrote[/] {clean(result.path)} {done}")
    stdout.print(f"restore it with: {restore_command(result.path)}")


@backups_app.command("delete")
def delete(
    ctx: typer.Context,
    backup_id: Annotated[str, typer.Argument(help="Backup id (exact).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    store: opt.Store = None,
    s3_endpoint_url: opt.S3Endpoint = None,
    cluster_name: opt.Cluster = None,
) -> None:
    """Delete one backup (asks for confirmation; refuses pinned backups)."""
    with handle_errors():
        catalog = opt.open_catalog(settings(ctx, opt.store_overrides(store, s3_endpoint_url, cluster_name)))
        entry = catalog.entry(catalog.resolve(backup_id))
        if entry.backup_id != backup_id:
            raise AbortedError(f"delete needs the exact backup id (did you mean {entry.backup_id}?)")
        if entry.pinned:
            raise AbortedError(f"backup {backup_id} is pinned; unpin it first")
        if not yes:
            if not stdout.is_terminal and not stderr.is_terminal:
                raise AbortedError("not deleting without confirmation; pass --yes in scripts")
            if not typer.confirm(f"delete backup {backup_id} from {catalog.store.url}?", default=False):
                raise AbortedError("not deleted")
        count = catalog.delete(backup_id)
    stdout.print(f"deleted backup {backup_id} ({count} objects)")


def _pin(ctx: typer.Context, backup_id: str, pinned: bool, reason: str, store: str | None,
         s3_endpoint_url: str | None, cluster_name: str | None) -> None:
    with handle_errors():
        catalog = opt.open_catalog(settings(ctx, opt.store_overrides(store, s3_endpoint_url, cluster_name)))
        resolved = catalog.resolve(backup_id)
        catalog.set_pinned(resolved, pinned, reason)
    stdout.print(f"{'pinned' if pinned else 'unpinned'} backup {resolved}")


@backups_app.command("pin")
def pin(
    ctx: typer.Context,
    backup_id: Annotated[str, typer.Argument(help="Backup id or 'latest'.")],
    reason: Annotated[str, typer.Option("--reason", help="Why it is kept.")] = "",
    store: opt.Store = None,
    s3_endpoint_url: opt.S3Endpoint = None,
    cluster_name: opt.Cluster = None,
) -> None:
    """Pin a backup: retention never deletes it."""
    _pin(ctx, backup_id, True, reason, store, s3_endpoint_url, cluster_name)


@backups_app.command("unpin")
def unpin(
    ctx: typer.Context,
    backup_id: Annotated[str, typer.Argument(help="Backup id.")],
    store: opt.Store = None,
    s3_endpoint_url: opt.S3Endpoint = None,
    cluster_name: opt.Cluster = None,
) -> None:
    """Unpin a backup."""
    _pin(ctx, backup_id, False, "", store, s3_endpoint_url, cluster_name)


def register(app: typer.Typer) -> None:
    """Add the ``backups`` group."""
    app.add_typer(backups_app, name="backups")
