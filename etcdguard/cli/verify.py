"""``etcdguard verify``: restore backups into a throwaway etcd and prove they match their manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.status import Status
from rich.table import Table

from etcdguard.backup.catalog import Catalog, safe_entries, to_verify
from etcdguard.cli import options as opt
from etcdguard.cli.common import OutputFormat, fail, handle_errors, print_json, settings, state, stderr, stdout
from etcdguard.cli.render import clean
from etcdguard.errors import ExitCode, IntegrityError, VerificationFailedError
from etcdguard.steps import StepRecord, StepState, step_line
from etcdguard.verify import VerificationReport, Verifier, options_from_settings, sandbox_factory


class StepPrinter:
    """Renders step records on stderr: a spinner naming the running steps (some run side by
    side), and one line per finished step."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self._running: dict[str, str] = {}
        self._status: Status | None = None

    def __call__(self, record: StepRecord) -> None:
        if self.quiet:
            return
        if record.state is StepState.running:
            self._running[record.name] = record.detail
        else:
            self._running.pop(record.name, None)
            self._stop_spinner()
            stderr.print(step_line(record), highlight=False)
        self._refresh()

    def _refresh(self) -> None:
        self._stop_spinner()
        if self._running and stderr.is_terminal:
            text = ", ".join(f"{n}: {d}" if d else n for n, d in self._running.items())
            self._status = stderr.status(escape(text))
            self._status.start()

    def _stop_spinner(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def close(self) -> None:
        """Stop any spinner left running (on errors)."""
        self._running.clear()
        self._stop_spinner()


def _targets(catalog: Catalog, backup_id: str | None, latest: bool, unverified: bool) -> list[str]:
    if unverified:
        return to_verify(safe_entries(catalog))
    return [catalog.resolve("latest" if latest else str(backup_id))]


def _render(report: VerificationReport) -> None:
    v = report.verification
    verdict = "[bold green]PASSED[/]" if v.result == "passed" else "[bold red]FAILED[/]"
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    version = clean(v.etcd_version_used) + ("" if v.etcd_version_exact else " [yellow](nearest available)[/]")
    rows = [
        ("backup", v.backup_id), ("verdict", verdict), ("reason", clean(v.reason) or "-"),
        ("hash proof", v.hash_proof or "-"),
        ("key counts", {True: "match", False: "[red]differ[/]", None: "-"}[v.key_counts_match]),
        ("snapshot rev", str(v.snapshot_revision) if v.snapshot_revision is not None else "-"),
        ("etcd", version or "-"), ("sandbox", clean(v.sandbox) or "-"),
        ("took", f"{v.steps.get('total', 0.0):.1f}s"),
        ("recorded", "signed verification.json" if v.signing_key_id else "[red]UNSIGNED[/] verification.json"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    stdout.print(table)
    for line in report.differences:
        stdout.print(f"  [red]differs[/] {clean(line)}")


def verify_command(
    ctx: typer.Context,
    backup_id: Annotated[str | None, typer.Argument(help="Backup id, a unique prefix of it, or 'latest'.")] = None,
    latest: Annotated[bool, typer.Option("--latest", help="Verify the newest backup.")] = False,
    unverified: Annotated[bool, typer.Option("--unverified", help="Verify every never-verified backup.")] = False,
    identity: opt.Identity = None,
    sandbox: Annotated[str | None, typer.Option(
        "--sandbox", help="docker (default) or process (a local etcd; for hosts without Docker).")] = None,
    image: Annotated[str | None, typer.Option(
        "--image", help="etcd image for the Docker sandbox; {version} is replaced.")] = None,
    signing_key: Annotated[Path | None, typer.Option(
        "--signing-key", help="Ed25519 private key that signs the verification verdict.")] = None,
    signing_pub: opt.SigningPub = None,
    insecure_skip_signature: opt.SkipSignature = False,
    allow_unsigned: Annotated[bool, typer.Option(
        "--allow-unsigned", help="Write an unsigned verdict when no signing key is configured.")] = False,
    accept_inconclusive: Annotated[bool, typer.Option(
        "--accept-inconclusive", help="Pass a backup whose hash proof is inconclusive (compaction "
        "raced the backup) when everything else matches.")] = False,
    store: opt.Store = None,
    s3_endpoint_url: opt.S3Endpoint = None,
    cluster_name: opt.Cluster = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o")] = OutputFormat.table,
) -> None:
    """Restore backups into a throwaway etcd and prove they match their manifest.

    Checks the manifest signature, the stored and plain sha256 and etcd's trailer, restores the
    snapshot (no revision bump) into a Docker container or a local etcd process, compares HashKV
    and the key counts at the recorded revision, runs a write/read smoke test, and writes a signed
    verification.json beside the backup. Exit 7 when a backup does not match (the reason names
    what differed), 6 on an integrity failure, 9 when the sandbox is unavailable.
    """
    if sum([backup_id is not None, latest, unverified]) != 1:
        raise typer.BadParameter("give exactly one of: a backup ID, --latest, --unverified")
    if sandbox not in (None, "docker", "process"):
        raise typer.BadParameter("--sandbox must be docker or process")
    overrides: dict[str, Any] = {
        **opt.store_overrides(store, s3_endpoint_url, cluster_name),
        "encryption.identity_file": identity, "signing.public_keys": signing_pub or None,
        "signing.key_file": signing_key, "signing.allow_unsigned": allow_unsigned or None,
        "verify.sandbox": sandbox, "verify.image": image,
        "verify.accept_inconclusive_hash": accept_inconclusive or None,
    }
    quiet = state(ctx).quiet or output is OutputFormat.json
    printer = StepPrinter(quiet)
    reports: list[dict[str, Any]] = []
    exit_code = ExitCode.OK
    failed: list[str] = []
    with handle_errors():
        cfg = settings(ctx, overrides)
        if insecure_skip_signature:
            stderr.print("[bold red]WARNING: --insecure-skip-signature: manifest signatures are NOT "
                         "checked; a forged backup would be verified[/]")
        if cfg.signing.key_file is None and cfg.signing.allow_unsigned:
            stderr.print("[bold yellow]WARNING: no signing key: the verdict is written UNSIGNED[/]")
        catalog = opt.open_catalog(cfg)
        options = options_from_settings(cfg, opt.verify_keys(cfg, insecure_skip_signature))
        verifier = Verifier(catalog, sandbox_factory(cfg.verify), options, on_step=printer)
        targets = _targets(catalog, backup_id, latest, unverified)
        if not targets and not quiet:
            stderr.print(f"no unverified backups of {catalog.cluster} in {catalog.store.url}")
        for target in targets:
            if not quiet:
                stderr.print(f"[bold]verifying {target}[/] ({cfg.verify.sandbox} sandbox)")
            try:
                report = verifier.verify(target)
            except IntegrityError as exc:
                printer.close()
                if output is OutputFormat.json:
                    reports.append({"backup_id": target, "error": str(exc), "exit_code": int(exc.exit_code)})
                else:
                    fail(exc)
                exit_code = ExitCode.INTEGRITY
                continue
            finally:
                printer.close()
            reports.append(report.as_dict())
            if output is OutputFormat.table:
                _render(report)
            if not report.passed:
                failed.append(f"{target}: {report.verification.reason}")
                if exit_code is ExitCode.OK:
                    exit_code = ExitCode.VERIFICATION_FAILED
    if output is OutputFormat.json:
        print_json(reports if unverified else (reports[0] if reports else {}))
    if failed:  # the one error: line of a failed verification (exit 7)
        fail(VerificationFailedError(f"{len(failed)} backup(s) do not match their manifest: {'; '.join(failed)}"))
    if exit_code is not ExitCode.OK:
        raise typer.Exit(int(exit_code))


def register(app: typer.Typer) -> None:
    """Add ``etcdguard verify``."""
    app.command("verify")(verify_command)
