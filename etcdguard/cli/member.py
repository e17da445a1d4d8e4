"""``etcdguard member``: list, add, promote, remove and replace etcd members behind quorum guardrails."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table
from rich.text import Text

from etcdguard.cli import options as opt
from etcdguard.cli.common import OutputFormat, handle_errors, print_json, settings, stderr, stdout
from etcdguard.config import Settings
from etcdguard.errors import AbortedError, ConfigError
from etcdguard.etcd.cluster import ClusterHealth, MemberHealth
from etcdguard.etcd.connection import open_connection
from etcdguard.etcd.quorum import assess_quorum
from etcdguard.members.access import LiveMembership
from etcdguard.members.certs import check_member_certificates, require_good
from etcdguard.members.newmember import (
    NewMemberSettings,
    SettingsOutput,
    client_endpoints,
    url_host,
    validate_name,
    validate_peer_url,
    write_outputs,
)
from etcdguard.members.operations import add_member, promote_member, remove_member
from etcdguard.members.replace import Replacement, ReplaceRequest, open_journal
from etcdguard.members.waits import Waits
from etcdguard.steps import StepRecord, StepState, default_journal_dir, step_line

app = typer.Typer(help="List, add, promote, remove and replace etcd members, with quorum guardrails.",
                  no_args_is_help=True)

EPILOG = (
    "Exit codes:\n\n  0  done\n\n  3  invalid input: unknown member, peer URL in use, bad certificate or SAN\n\n"
    "  4  etcd unreachable or refused the change (too many learners, learner not caught up, "
    "a new member that never started, a wait that ran out)\n\n"
    "  10 a quorum guardrail refused the change (--force overrides, except removing the last member), "
    "or the confirmation was declined\n\n  130 interrupted: run the same command again to continue"
)

Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
Force = Annotated[bool, typer.Option("--force", help="Override a quorum guardrail (says what may happen).")]
PeerURL = Annotated[str, typer.Option("--peer-url", help="The new member's peer URL, e.g. https://10.0.0.4:2380.")]
EnvFile = Annotated[Path | None, typer.Option(
    "--env-file", help="Write the new member's settings as an etcd environment file (systemd EnvironmentFile, "
    "docker --env-file).")]
ManifestOut = Annotated[Path | None, typer.Option(
    "--manifest-out", help="Write a kubeadm static pod manifest for the new member.")]
ManifestFrom = Annotated[Path | None, typer.Option(
    "--manifest-from", help="An existing member's etcd.yaml to derive --manifest-out from.",
    show_default="/etc/kubernetes/manifests/etcd.yaml")]
PeerCert = Annotated[Path | None, typer.Option(
    "--peer-cert", help="The new member's peer certificate: checked against --cacert and its SANs.")]
ServerCert = Annotated[Path | None, typer.Option(
    "--server-cert", help="The new member's server certificate: checked against --cacert and its SANs.")]
RefusalTimeout = Annotated[float, typer.Option(
    "--refusal-timeout", min=1, help="Seconds to keep retrying while etcd briefly refuses a change.")]
StartTimeout = Annotated[float, typer.Option(
    "--start-timeout", min=1, help="Seconds to wait for the new member to start before removing it again.")]
CatchUpTimeout = Annotated[float, typer.Option(
    "--catch-up-timeout", min=1, help="Seconds to wait for the learner to catch up with the leader.")]


class ConsoleReporter:
    """Tells the operator what happens, on stderr; a progress bar while a learner catches up."""

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def info(self, message: str) -> None:
        """A finding or a step."""
        self._stop()
        stderr.print(escape(message))

    def warn(self, message: str) -> None:
        """Something to know."""
        self._stop()
        stderr.print(f"[yellow]warning:[/] {escape(message)}")

    def change(self, message: str) -> None:
        """A change made to the cluster."""
        self._stop()
        stderr.print(f"[bold]changed:[/] {escape(message)}")

    def progress(self, what: str, done: int, total: int) -> None:
        """Applied index of the learner against the leader's."""
        if self._progress is None:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                      TextColumn("applied {task.completed:.0f} of {task.total:.0f}"),
                                      console=stderr, transient=False)
            self._progress.start()
            self._task = self._progress.add_task(escape(what), total=max(total, 1))
        assert self._task is not None
        self._progress.update(self._task, completed=min(done, total), total=max(total, 1))

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def close(self) -> None:
        """End the progress bar, if any."""
        self._stop()


def _settings(ctx: typer.Context, endpoints: str | None, cacert: Path | None, cert: Path | None,
              key: Path | None, timeout: float | None) -> Settings:
    return settings(ctx, opt.etcd_overrides(endpoints, cacert, cert, key, timeout))


@contextmanager
def _membership(cfg: Settings) -> Iterator[LiveMembership]:
    """The cluster over one etcd connection, closed when the command is done."""
    with open_connection(cfg.etcd) as conn:
        yield LiveMembership(cfg.etcd, cfg.monitor, conn)


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not stdout.is_terminal and not stderr.is_terminal:
        raise AbortedError("not changing the cluster without confirmation; pass --yes in scripts")
    if not typer.confirm(question, default=False, err=True):
        raise AbortedError("nothing changed")


def _check_certificates(cfg: Settings, peer: str, peer_cert: Path | None, server_cert: Path | None) -> None:
    """The new member's certificates (those given) against the etcd CA and its address."""
    if peer_cert is None and server_cert is None:
        return
    if cfg.etcd.cacert is None:
        raise ConfigError("--peer-cert/--server-cert are checked against the etcd CA: pass --cacert")
    require_good(check_member_certificates(cfg.etcd.cacert, peer_cert=peer_cert, server_cert=server_cert,
                                           peer_host=url_host(peer), client_hosts=[url_host(peer)]))
    stdout.print("certificates signed by the etcd CA, SANs cover " + url_host(peer), markup=False)


def _waits(refusal: float, start: float = 120.0, catch_up: float = 600.0) -> Waits:
    return Waits(refusal=refusal, start=start, catch_up=catch_up)


def print_settings(new: NewMemberSettings, output: SettingsOutput) -> None:
    """Show the new member's settings and write the files asked for."""
    stdout.print(Text(f"settings for the new member {new.name} (start it with these):", style="bold"))
    for key, value in new.environment().items():
        stdout.print(f"  {key}={value}", markup=False, highlight=False)
    stdout.print(f"  flags: {' '.join(new.flags())}", markup=False, highlight=False)
    if new.client_endpoints:
        stdout.print(f"  client endpoints (voting members): {','.join(new.client_endpoints)}", markup=False)
    for line in write_outputs(new, output):
        stdout.print(f"  {line}", markup=False, highlight=False)


# -- list ---------------------------------------------------------------------------------------
def _role(m: MemberHealth) -> Text:
    if not m.name and not m.client_urls:
        return Text("unstarted learner" if m.is_learner else "unstarted", style="yellow")
    if m.is_learner:
        return Text("learner", style="cyan")
    return Text("leader" if m.is_leader else "voter", style="bold" if m.is_leader else "")


def member_table(health: ClusterHealth) -> Table:
    """NAME, ID, ROLE, STATE, PEER URLS, CLIENT URLS, APPLIED."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("NAME", "ID", "ROLE", "STATE", "PEER URLS", "CLIENT URLS", "APPLIED"):
        table.add_column(col, justify="right" if col == "APPLIED" else "left")
    for m in health.members:
        state = Text("up", style="green") if m.reachable else Text("DOWN", style="bold red")
        table.add_row(m.display_name, m.id_hex, _role(m), state, ",".join(m.peer_urls), ",".join(m.client_urls),
                      "-" if m.raft_applied_index is None else str(m.raft_applied_index))
    return table


def list_members(
    ctx: typer.Context,
    endpoints: opt.Endpoints = None,
    cacert: opt.CACert = None,
    cert: opt.Cert = None,
    key: opt.Key = None,
    timeout: opt.Timeout = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="table or json.")] = OutputFormat.table,
) -> None:
    """Every member with its role (voter, leader, learner), state and URLs, and the quorum verdict."""
    with handle_errors():
        cfg = _settings(ctx, endpoints, cacert, cert, key, timeout)
        with _membership(cfg) as port:
            health = port.health()
    verdict = assess_quorum(health.members)
    if output is OutputFormat.json:
        print_json({"members": [m.to_dict() for m in health.members], "quorum": verdict.to_dict(),
                    "client_endpoints": client_endpoints(health.members)})
        return
    stdout.print(member_table(health))
    stdout.print(Text(f"{verdict.headline} - {verdict.reason}"))
    stdout.print(f"client endpoints (voting members): {','.join(client_endpoints(health.members)) or '-'}",
                 markup=False)


# -- add / promote / remove ---------------------------------------------------------------------
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The new member's name.")],
    peer_url: PeerURL,
    learner: Annotated[bool, typer.Option("--learner", help="Add it as a learner (no vote until promoted).")] = False,
    env_file: EnvFile = None,
    manifest_out: ManifestOut = None,
    manifest_from: ManifestFrom = None,
    peer_cert: PeerCert = None,
    server_cert: ServerCert = None,
    yes: Yes = False,
    force: Force = False,
    refusal_timeout: RefusalTimeout = 60.0,
    endpoints: opt.Endpoints = None,
    cacert: opt.CACert = None,
    cert: opt.Cert = None,
    key: opt.Key = None,
    timeout: opt.Timeout = None,
) -> None:
    """Add a member (a voter, or with --learner a learner) and print the settings it must start with."""
    reporter = ConsoleReporter()
    with handle_errors():
        validate_name(name)
        peer = validate_peer_url(peer_url)
        cfg = _settings(ctx, endpoints, cacert, cert, key, timeout)
        _check_certificates(cfg, peer, peer_cert, server_cert)
        _confirm(f"add {'learner' if learner else 'voting member'} {name} at {peer}?", yes)
        with _membership(cfg) as port:
            added = add_member(port, name, peer, learner=learner, force=force, reporter=reporter,
                               waits=_waits(refusal_timeout))
        print_settings(added.settings, SettingsOutput(env_file, manifest_from, manifest_out))
    if learner:
        stdout.print(f"start {name}, then: etcdguard member promote {name} --wait", markup=False)


def promote(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The learner: name, hex id, peer or client URL.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it has started and caught up first.")] = False,
    force: Force = False,
    refusal_timeout: RefusalTimeout = 60.0,
    start_timeout: StartTimeout = 120.0,
    catch_up_timeout: CatchUpTimeout = 600.0,
    endpoints: opt.Endpoints = None,
    cacert: opt.CACert = None,
    cert: opt.Cert = None,
    key: opt.Key = None,
    timeout: opt.Timeout = None,
) -> None:
    """Promote a learner to a voting member (with --wait: once it has caught up with the leader)."""
    reporter = ConsoleReporter()
    try:
        with handle_errors(), _membership(_settings(ctx, endpoints, cacert, cert, key, timeout)) as port:
            status = promote_member(port, name, wait=wait, force=force, reporter=reporter,
                                    waits=_waits(refusal_timeout, start_timeout, catch_up_timeout))
            verdict = assess_quorum(port.health().members)
    finally:
        reporter.close()
    stdout.print(f"member {status.member_id:x} reports itself as a voting member; cluster {verdict.headline}",
                 markup=False)


def remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The member: name, hex id, peer or client URL.")],
    force: Force = False,
    yes: Yes = False,
    refusal_timeout: RefusalTimeout = 60.0,
    endpoints: opt.Endpoints = None,
    cacert: opt.CACert = None,
    cert: opt.Cert = None,
    key: opt.Key = None,
    timeout: opt.Timeout = None,
) -> None:
    """Remove a member, refusing (exit 10) when the remaining reachable voters could not keep quorum."""
    reporter = ConsoleReporter()
    with handle_errors():
        cfg = _settings(ctx, endpoints, cacert, cert, key, timeout)
        _confirm(f"remove member {name}?", yes)
        with _membership(cfg) as port:
            removed = remove_member(port, name, force=force, reporter=reporter, waits=_waits(refusal_timeout))
            verdict = assess_quorum(port.health().members)
    stdout.print(f"removed {removed.name or 'member'} {removed.id:x}; cluster {verdict.headline}", markup=False)


# -- replace ------------------------------------------------------------------------------------
def _step_printer(record: StepRecord) -> None:
    if record.state in (StepState.done, StepState.failed):
        stderr.print(step_line(record))


def replace(
    ctx: typer.Context,
    dead: Annotated[str, typer.Argument(help="The dead member: name, hex id, peer or client URL.")],
    name: Annotated[str, typer.Option("--name", help="The new member's name.")],
    peer_url: PeerURL,
    env_file: EnvFile = None,
    manifest_out: ManifestOut = None,
    manifest_from: ManifestFrom = None,
    peer_cert: PeerCert = None,
    server_cert: ServerCert = None,
    remove_only: Annotated[bool, typer.Option(
        "--remove-only", help="Only confirm the member is down and remove it (then `kubeadm join` adds the "
        "new one as a learner).")] = False,
    yes: Yes = False,
    force: Force = False,
    refusal_timeout: RefusalTimeout = 60.0,
    start_timeout: StartTimeout = 120.0,
    catch_up_timeout: CatchUpTimeout = 600.0,
    journal_dir: Annotated[Path | None, typer.Option(
        "--journal-dir", help="Where the run's journal is kept.", show_default="the etcdguard state dir")] = None,
    endpoints: opt.Endpoints = None,
    cacert: opt.CACert = None,
    cert: opt.Cert = None,
    key: opt.Key = None,
    timeout: opt.Timeout = None,
) -> None:
    """Replace a dead member: remove it, add the new one as a learner, wait for it, promote it.

    Steps: confirm the old member is down (--force replaces a live one, moving leadership away
    first), remove it, add the new member as a learner and print its settings (--env-file,
    --manifest-out), wait until it has started and caught up (a progress bar), promote it,
    confirm from its own status that it votes, and show the cluster verdict. Interrupted, the
    same command continues where it stopped.
    """
    reporter = ConsoleReporter()
    try:
        with handle_errors():
            validate_name(name)
            peer = validate_peer_url(peer_url)
            cfg = _settings(ctx, endpoints, cacert, cert, key, timeout)
            if (peer_cert or server_cert) and cfg.etcd.cacert is None:
                raise ConfigError("--peer-cert/--server-cert are checked against the etcd CA: pass --cacert")
            request = ReplaceRequest(dead=dead, name=name, peer_url=peer, force=force, remove_only=remove_only,
                                     cacert=cfg.etcd.cacert, peer_cert=peer_cert, server_cert=server_cert,
                                     client_hosts=(url_host(peer),))
            _confirm(f"replace member {dead} with {name} at {peer}?", yes)
            output = SettingsOutput(env_file, manifest_from, manifest_out)
            with _membership(cfg) as port:
                replacement = Replacement(port, request, reporter,
                                          _waits(refusal_timeout, start_timeout, catch_up_timeout),
                                          lambda s: print_settings(s, output))
                outcome = replacement.run(open_journal(journal_dir or default_journal_dir(), request),
                                          on_change=_step_printer)
    finally:
        reporter.close()
    if remove_only:
        stdout.print(f"removed {dead}; now join the new node, e.g. `kubeadm join ... --control-plane`, which adds "
                     "it as a learner and promotes it", markup=False)
        return
    verdict = outcome.verdict
    if verdict is not None:
        stdout.print(f"replaced {dead} with {name}: cluster {verdict.headline} - {verdict.reason}", markup=False)
        stdout.print(f"client endpoints (voting members): {','.join(outcome.client_endpoints)}", markup=False)


def register(root: typer.Typer) -> None:
    """Add the ``member`` group to the root app."""
    app.command("list", epilog=EPILOG)(list_members)
    for command in (add, promote, remove, replace):
        app.command(command.__name__, epilog=EPILOG)(command)
    root.add_typer(app, name="member", help="List, add, promote, remove and replace etcd members.")

