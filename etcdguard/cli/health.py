"""``etcdguard status`` and ``etcdguard check``: member health, quorum verdict, monitoring-plugin checks."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from etcdguard.backup.catalog import safe_entries
from etcdguard.cli import options as opt
from etcdguard.cli.common import OutputFormat, handle_errors, print_json, settings, stderr, stdout
from etcdguard.cli.render import clean, plain
from etcdguard.config import Settings
from etcdguard.errors import EtcdGuardError, ExitCode
from etcdguard.etcd.cluster import ClusterHealth, MemberHealth, probe_cluster
from etcdguard.etcd.connection import open_connection
from etcdguard.etcd.quorum import QuorumState, QuorumVerdict
from etcdguard.kit.expiry import certificates_for
from etcdguard.monitor.checks import etcdctl_flags, format_bytes
from etcdguard.monitor.freshness import freshness_from_entries
from etcdguard.monitor.metrics import EtcdGuardMetrics
from etcdguard.monitor.model import BackupFreshness, Severity
from etcdguard.monitor.report import CheckReport, run_checks, status_document


def _load(ctx: typer.Context, endpoints: str | None, cacert: Path | None, cert: Path | None,
          key: Path | None, timeout: float | None, extra: dict[str, Any] | None = None) -> Settings:
    overrides = opt.etcd_overrides(endpoints, cacert, cert, key, timeout)
    overrides["monitor.probe_timeout"] = timeout
    overrides.update(extra or {})
    return settings(ctx, overrides)


class CheckOutput(str, Enum):
    """Output of ``check``."""

    text = "text"
    json = "json"


STATUS_EPILOG = (
    "Exit codes:\n\n  0  the cluster was probed (whatever the verdict: use `check` for alerting)\n\n"
    "  3  invalid configuration (bad endpoint URL, unreadable TLS file)\n\n"
    "  4  no etcd endpoint answered (the verdict line says UNREACHABLE: quorum unknown)"
)
CHECK_EPILOG = (
    "Exit codes (monitoring-plugin convention, for Nagios, Icinga, Sensu, cron):\n\n"
    "  0  OK\n\n  1  WARNING\n\n  2  CRITICAL (including: no etcd endpoint answered)\n\n"
    "  3  UNKNOWN (could not check: invalid configuration, unreadable TLS files)\n\n"
    "The backup checks (backup_age, verification) run when a store is configured and are skipped "
    "(saying so) without one. The leader-change check needs a history of probes: it is skipped "
    "here and says so; `etcdguard serve` runs it."
)


# -- rendering ----------------------------------------------------------------------------------
_STATE_STYLE = {QuorumState.HEALTHY: "bold green", QuorumState.DEGRADED: "bold yellow",
                QuorumState.QUORUM_LOST: "bold red", QuorumState.UNREACHABLE: "bold red"}
_SEVERITY_STYLE = {Severity.OK: "green", Severity.WARNING: "yellow", Severity.CRITICAL: "bold red",
                   Severity.UNKNOWN: "magenta"}


def _role(m: MemberHealth) -> Text:
    if not m.reachable:
        return Text("DOWN", style="bold red")
    if m.is_learner:
        return Text("learner", style="cyan")
    if m.is_leader:
        return Text("leader", style="bold")
    return Text("follower" if m.leader_id else "no leader", style="" if m.leader_id else "yellow")


def _num(value: int | None) -> str:
    return "-" if value is None else str(value)


def member_table(health: ClusterHealth) -> Table:
    """One row per member."""
    table = Table(show_lines=False, pad_edge=False, box=None, header_style="bold")
    for col in ("NAME", "ID", "ENDPOINT", "ROLE", "VERSION", "DB SIZE", "IN USE", "QUOTA", "TERM",
                "INDEX", "APPLIED", "LAG", "ALARMS"):
        table.add_column(col, no_wrap=col in {"ID", "ENDPOINT"},
                         justify="right" if col in {"DB SIZE", "IN USE", "QUOTA", "TERM", "INDEX",
                                                    "APPLIED", "LAG"} else "left")
    for m in health.members:
        pct = m.quota_percent
        quota = "-" if pct is None else f"{pct:.1f}%" + ("*" if m.quota_source == "assumed" else "")
        table.add_row(clean(m.display_name), m.id_hex, clean(m.endpoint or "-"), _role(m), clean(m.version or "-"),
                      format_bytes(m.db_size), format_bytes(m.db_size_in_use), quota, _num(m.raft_term),
                      _num(m.raft_index), _num(m.raft_applied_index), _num(m.lag),
                      Text(plain(",".join(m.alarms)) or "-", style="bold red" if m.alarms else ""))
    return table


def _verdict_line(health: ClusterHealth, verdict: QuorumVerdict) -> Text:
    cluster = f"cluster {health.cluster_id:x}" if health.cluster_id else "cluster"
    line = Text(f"{cluster}: ")
    line.append(verdict.headline, style=_STATE_STYLE[verdict.state])
    return line.append(plain(f" - {verdict.reason}"))


def print_status(report: CheckReport) -> None:
    """The member table, the verdict line, the errors behind them and the checks that are not OK."""
    health, verdict = report.health, report.verdict
    if health.discovered:
        stdout.print(member_table(health))
    stdout.print(_verdict_line(health, verdict))
    for m in health.members:
        if m.error:
            stdout.print(Text(plain(f"  {m.display_name}: {m.error}"), style="red"))
        for err in m.errors:
            stdout.print(Text(plain(f"  {m.display_name} reports: {err}"), style="yellow"))
    for err in (*health.errors, *health.endpoint_errors):
        stdout.print(Text(plain(f"  {err}"), style="yellow"))
    if any(m.quota_source == "assumed" for m in health.reachable_members):
        stdout.print(Text("  * quota assumed to be etcd's 2 GiB default: set monitor.quota_backend_bytes",
                          style="dim"))
    for r in report.problems():
        if r.name != "quorum":
            stdout.print(Text(plain(f"  {r.severity.value} {r.name}: {r.summary}"),
                              style=_SEVERITY_STYLE[r.severity]))


def probe(settings: Settings) -> ClusterHealth:
    """Probe the configured cluster over one connection."""
    with open_connection(settings.etcd) as conn:
        return probe_cluster(conn, settings.monitor)


# -- commands -----------------------------------------------------------------------------------
def status(
    ctx: typer.Context,
    endpoints: opt.Endpoints = None,
    cacert: opt.CACert = None,
    cert: opt.Cert = None,
    key: opt.Key = None,
    timeout: opt.Timeout = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="table or json.")]
    = OutputFormat.table,
) -> None:
    """Show every member (probed in parallel) and the cluster verdict: HEALTHY / DEGRADED / QUORUM LOST."""
    with handle_errors():
        cfg = _load(ctx, endpoints, cacert, cert, key, timeout)
        health = probe(cfg)
    report = run_checks(health, cfg.monitor, etcdctl_flags=etcdctl_flags(cfg.etcd))
    if output is OutputFormat.json:
        print_json(status_document(report))
    else:
        print_status(report)
    if not health.reachable_members:
        raise typer.Exit(int(ExitCode.ETCD))


def check(
    ctx: typer.Context,
    endpoints: opt.Endpoints = None,
    cacert: opt.CACert = None,
    cert: opt.Cert = None,
    key: opt.Key = None,
    timeout: opt.Timeout = None,
    output: Annotated[CheckOutput, typer.Option("--output", "-o", help="text (plugin format) or json.")]
    = CheckOutput.text,
    metrics_file: Annotated[Path | None, typer.Option(
        "--metrics-file", help="Also write the metrics here (node_exporter textfile collector).")] = None,
    store: Annotated[str | None, typer.Option(
        "--store", help="Check the backups in this store: s3://bucket/prefix, file:///path or a path. "
                        "Without a store (flag, ETCDGUARD_STORE or config file) the backup checks are skipped.")]
    = None,
    s3_endpoint_url: opt.S3Endpoint = None,
    cluster_name: opt.Cluster = None,
) -> None:
    """Run the health checks; print a monitoring-plugin line and exit with its code.

    With a store configured (config file, ETCDGUARD_STORE or --store), the newest backup's age
    and the newest verification are checked too; without one those checks are skipped.
    """
    fresh: BackupFreshness | None = None
    with handle_errors():  # Ctrl-C -> 130; etcdguard errors are UNKNOWN below
        try:
            cfg = _load(ctx, endpoints, cacert, cert, key, timeout,
                        opt.store_overrides(store, s3_endpoint_url, cluster_name))
            health = probe(cfg)
            certs = certificates_for(cfg)
            if cfg.store is not None:
                fresh = freshness_from_entries(safe_entries(opt.open_catalog(cfg, cluster_id=health.cluster_id)))
                certs = certificates_for(cfg, opt.open_configured_store(cfg)[0])
        except EtcdGuardError as err:
            if output is CheckOutput.json:
                print_json({"status": "UNKNOWN", "exit_code": 3, "summary": err.message})
            else:
                typer.echo(f"ETCDGUARD UNKNOWN - {err.message}")
            raise typer.Exit(Severity.UNKNOWN.exit_code) from None
    report = run_checks(health, cfg.monitor, freshness=fresh, etcdctl_flags=etcdctl_flags(cfg.etcd),
                        certificates=certs)
    if output is CheckOutput.json:
        print_json(report.to_dict())
    else:
        typer.echo(report.to_text())
    if metrics_file is not None:
        metrics = EtcdGuardMetrics()
        metrics.update_from_cluster(health)
        metrics.update_from_checks(report.results)
        metrics.set_certificates(certs)
        try:
            metrics.write_textfile(metrics_file)
        except OSError as exc:
            stderr.print(f"[bold red]error:[/] cannot write {metrics_file}: {exc.strerror or exc}")
    raise typer.Exit(report.exit_code)


def register(app: typer.Typer) -> None:
    """Add ``status`` and ``check`` to the root app."""
    app.command("status", epilog=STATUS_EPILOG)(status)
    app.command("check", epilog=CHECK_EPILOG)(check)
