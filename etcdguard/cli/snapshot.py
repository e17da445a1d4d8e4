"""``etcdguard snapshot``: take one encrypted, signed backup now."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from etcdguard import interrupts
from etcdguard.backup.pipeline import BackupResult, request_from_settings, take_backup
from etcdguard.backup.pipeline import Progress as PipelineProgress
from etcdguard.cli import options as opt
from etcdguard.cli.common import (
    OutputFormat,
    exit_codes_epilog,
    handle_errors,
    print_json,
    settings,
    state,
    stderr,
    stdout,
)
from etcdguard.cli.kit import kit_after_snapshot
from etcdguard.cli.render import clean, human_bytes, transfer_bar
from etcdguard.etcd.connect import SourceCandidate
from etcdguard.steps import StepRecord, StepState

if TYPE_CHECKING:
    from rich.progress import Progress


class _RichProgress(PipelineProgress):
    """Renders pipeline progress on stderr (a bar on a terminal, step lines otherwise)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Progress | None = None
        self.task: Any = None
        if not quiet and stderr.is_terminal:
            self.bar = transfer_bar(stderr)

    def step(self, status: StepRecord) -> None:
        if self.quiet:
            return
        if status.state is StepState.running:
            if status.name == "stream" and self.bar is not None:
                self.bar.start()
            return
        if status.name == "stream" and self.bar is not None:
            self.bar.stop()
        mark = "[green]ok[/]" if status.state is StepState.done else "[red]failed[/]"
        stderr.print(f"  {mark} {status.name:<14} {status.detail}  [dim]{status.seconds:.1f}s[/]")

    def source(self, candidate: SourceCandidate) -> None:
        if self.bar is None:
            return
        if self.task is not None:
            self.bar.remove_task(self.task)
        self.task = self.bar.add_task(f"snapshot {candidate.name}", total=candidate.status.db_size or None)

    def advance(self, plain_bytes: int) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.advance(self.task, plain_bytes)


def summary(result: BackupResult, seconds: float) -> dict[str, Any]:
    """The machine-readable result of a snapshot."""
    m = result.manifest
    return {
        "backup_id": m.backup_id,
        "cluster": m.cluster.name,
        "store": result.store_url,
        "source_member": m.source.name,
        "etcd_version": m.source.etcd_version,
        "revision": m.hashkv.revision,
        "keys": m.key_counts.total if m.key_counts else None,
        "snapshot_bytes": m.snapshot.size,
        "stored_bytes": m.stored.size,
        "compression_ratio": round(m.snapshot.size / max(1, m.stored.size), 2),
        "seconds": round(seconds, 3),
        "throughput_mib_s": round(m.snapshot.size / max(seconds, 1e-6) / 2**20, 1),
        "encrypted": m.stored.encryption != "none",
        "signed": m.signing_key_id is not None,
        "sources_tried": result.sources_tried,
    }


def snapshot(
    ctx: typer.Context,
    endpoints: opt.Endpoints = None,
    cacert: opt.CACert = None,
    cert: opt.Cert = None,
    key: opt.Key = None,
    member: Annotated[str | None, typer.Option(
        "--member", help="Stream from this member: name, hex id or client URL (default: the leader).")] = None,
    store: opt.Store = None,
    s3_endpoint_url: opt.S3Endpoint = None,
    cluster_name: opt.Cluster = None,
    recipient: Annotated[list[str] | None, typer.Option(
        "--recipient", "-r", help="age recipient (age1...) to encrypt to; repeatable.")] = None,
    recipients_file: Annotated[Path | None, typer.Option(
        "--recipients-file", help="File of age recipients.")] = None,
    signing_key: Annotated[Path | None, typer.Option(
        "--signing-key", help="Ed25519 key that signs the manifest.")] = None,
    compression_level: Annotated[int | None, typer.Option(
        "--compression-level", help="zstd level 1-22 (default 3).")] = None,
    allow_unencrypted: Annotated[bool, typer.Option(
        "--allow-unencrypted", help="DANGER: store the snapshot unencrypted when no recipient is set.")] = False,
    allow_unsigned: Annotated[bool, typer.Option(
        "--allow-unsigned", help="DANGER: write an unsigned manifest when no signing key is set.")] = False,
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="table or json.")] = OutputFormat.table,
) -> None:
    """Take an encrypted, signed snapshot of etcd now and store it.

    Streams etcd's snapshot from the leader (or --member) through zstd and age into the store,
    then writes the signed manifest last. Without --store, the embedded local store is used.
    """
    overrides: dict[str, Any] = {
        **opt.etcd_overrides(endpoints, cacert, cert, key),
        **opt.store_overrides(store, s3_endpoint_url, cluster_name),
        "etcd.member": member,
        "encryption.recipients": recipient or None,
        "encryption.recipients_file": recipients_file,
        "signing.key_file": signing_key,
        "backup.compression_level": compression_level,
        "encryption.allow_unencrypted": allow_unencrypted or None,
        "signing.allow_unsigned": allow_unsigned or None,
    }
    quiet = state(ctx).quiet or output is OutputFormat.json
    with handle_errors():
        cfg = settings(ctx, overrides)
        request = request_from_settings(cfg)
        if request.allow_unencrypted and not request.recipients:
            stderr.print("[bold yellow]WARNING: no recipient: this backup is NOT encrypted "
                         "(--allow-unencrypted)[/]")
        if request.allow_unsigned and request.signing_key is None:
            stderr.print("[bold yellow]WARNING: no signing key: this backup's manifest is NOT signed "
                         "(--allow-unsigned)[/]")
        blob_store, is_default = opt.open_configured_store(cfg)
        if is_default and not quiet:
            stderr.print(f"no store configured: using the embedded local store {blob_store.url}")
        started = time.monotonic()
        result = take_backup(request, blob_store, progress=_RichProgress(quiet),
                             cancel=interrupts.cancel_event())
        info = summary(result, time.monotonic() - started)
        info["kit"] = kit_after_snapshot(cfg, result.manifest.cluster.cluster_id)  # with kit.enabled only
    if output is OutputFormat.json:
        print_json(info)
        return
    stdout.print(f"[bold green]backup {info['backup_id']}[/] of cluster {info['cluster']} -> {info['store']}")
    stdout.print(f"  source      {clean(info['source_member'])} (etcd {clean(info['etcd_version'])}), "
                 f"revision {info['revision']}, {info['keys']} keys")
    stdout.print(f"  size        {human_bytes(info['snapshot_bytes'])} snapshot -> "
                 f"{human_bytes(info['stored_bytes'])} stored (ratio {info['compression_ratio']}x)")
    stdout.print(f"  throughput  {info['throughput_mib_s']} MiB/s in {info['seconds']}s")


def register(app: typer.Typer) -> None:
    """Add the ``snapshot`` command."""
    app.command("snapshot", epilog=exit_codes_epilog())(snapshot)
