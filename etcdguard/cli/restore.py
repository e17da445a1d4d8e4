"""``etcdguard restore``: diagnose, recommend, plan, confirm and run a journaled etcd restore."""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from etcdguard.backup.catalog import Catalog
from etcdguard.backup.keys import load_signing_key
from etcdguard.cli import options as opt
from etcdguard.cli.common import OutputFormat, exit_codes_epilog, handle_errors, print_json, settings, state, stderr
from etcdguard.cli.render import transfer_bar
from etcdguard.config import Settings
from etcdguard.errors import AbortedError, ConfigError
from etcdguard.etcd.cluster import probe_cluster
from etcdguard.etcd.connection import open_connection
from etcdguard.etcd.quorum import assess_quorum
from etcdguard.restore import session
from etcdguard.restore.assess import describe_data_dir
from etcdguard.restore.execute import RestoreJob
from etcdguard.restore.job import JobParams, Services
from etcdguard.restore.plan import RestorePlan, read_plan, write_plan
from etcdguard.restore.recommend import Recommendation, RestorePath, human_age
from etcdguard.steps import StepRecord, StepState, step_line

if TYPE_CHECKING:
    from rich.progress import Progress

# Test-only: SIGKILL (crash-safety tests) or SIGSTOP (signal tests: the test then sends its signal
# and SIGCONT) this process right after the named step is recorded done.
_STEP_HOOKS = {"ETCDGUARD_TEST_CRASH_AFTER_STEP": signal.SIGKILL, "ETCDGUARD_TEST_PAUSE_AFTER_STEP": signal.SIGSTOP}


class _Printer:
    """Step lines on stderr as the journal records them; a download bar on a terminal."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.bar: Progress | None = None
        self.task: Any = None
        self.last_wait = ""

    def __call__(self, record: StepRecord) -> None:
        if record.state in (StepState.done, StepState.failed, StepState.undone, StepState.skipped):
            self._stop_bar()
            if not self.quiet:
                stderr.print(step_line(record, 20), highlight=False)
            for hook, sig in _STEP_HOOKS.items():
                if record.state is StepState.done and os.environ.get(hook) == record.name:
                    os.kill(os.getpid(), sig)

    def fetch_start(self, total: int | None) -> None:
        if self.quiet or not stderr.is_terminal:
            return
        self.bar = transfer_bar(stderr)
        self.task = self.bar.add_task("fetch", total=total)
        self.bar.start()

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def wait(self, text: str) -> None:
        if not self.quiet and text != self.last_wait and stderr.is_terminal:
            stderr.print(f"  [dim]{escape(text)}[/]", highlight=False)
        self.last_wait = text

    def _stop_bar(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _services(cfg: Settings, printer: _Printer, skip_signature: bool, need_store: bool,
              catalog: Catalog | None = None) -> Services:
    """What the steps use; ``catalog``: the one the diagnosis opened (one store client per run)."""
    keys = None
    if need_store:
        catalog = catalog or opt.open_catalog(cfg, skip_signature=skip_signature)
        keys = opt.verify_keys(cfg, skip_signature)
    else:
        catalog = None
    return Services(settings=cfg, catalog=catalog, verify_keys=keys, identities=opt.identities(cfg),
                    on_bytes=printer.advance, on_fetch_start=printer.fetch_start, on_wait=printer.wait)


def _print_diagnosis(diag: session.Diagnosis) -> None:
    a = diag.assessment
    now = a.taken_at
    stderr.print(f"[bold]diagnosis[/] of cluster {escape(a.cluster_name)} ({diag.run_mode} run mode)")
    stderr.print(f"  quorum        {escape(a.quorum.headline)}: {escape(a.quorum.reason)}")
    for m in a.health.members if a.health else ():
        state_ = (f"revision {m.revision:,}, raft index {m.raft_index:,}" if m.reachable and m.revision is not None
                  and m.raft_index is not None else f"[red]down[/]: {escape(m.error or 'no answer')}")
        stderr.print(f"  member        {escape(m.display_name):<12} {state_}")
    if a.answering and a.quorum.has_quorum:
        stderr.print(f"  empty etcd    {'yes' if a.empty_cluster else 'no'}: {escape(a.empty_check.reason)}")
    if a.local is not None:
        stderr.print(f"  this node     {escape(a.local.name)} ({escape(a.local.source)})")
    if a.local_data is not None:
        stderr.print(f"  data dir      {escape(describe_data_dir(a.local_data))}")
    for label, ref in (("newest backup", a.newest_backup), ("newest verified", a.newest_verified)):
        text = (f"{ref.backup_id}: revision {ref.revision:,}, {human_age(ref.age_seconds(now))} old"
                if ref else "none")
        stderr.print(f"  {label:<13} {escape(text)}")
    if diag.tool is not None:
        stderr.print(f"  restore tool  {diag.tool.path} ({diag.tool.version})")
    elif diag.tool_problem:
        stderr.print(f"  restore tool  [red]{escape(diag.tool_problem)}[/]")


def _print_recommendation(rec: Recommendation) -> None:
    stderr.print(f"[bold]recommendation[/] {escape(rec.title)}")
    stderr.print(f"  why           {escape(rec.reason)}")
    stderr.print(f"  data lost     {escape(rec.data_loss)}")
    for note in rec.notes:
        stderr.print(f"  [yellow]note[/]          {escape(note)}")


def _print_plan(plan: RestorePlan, job: RestoreJob | None) -> None:
    stderr.print(f"[bold]plan[/] {plan.restore_id}: path ({plan.path}), {len(plan.members)} member(s), "
                 f"token {plan.token}, new cluster id {plan.new_cluster_id}")
    stderr.print(f"  initial cluster {escape(plan.initial_cluster)}")
    bump = (f"+{plan.bump_revision:,} (--bump-revision with --mark-compacted; restored revision "
            f"{plan.source.revision + plan.bump_revision:,})" if plan.bump_revision else "none")
    stderr.print(f"  revision bump   {bump}")
    if job is not None:
        for i, step in enumerate(job.steps(), 1):
            stderr.print(f"  {i:>2}. {step.name:<20} {escape(step.detail)}")


def _plan_json(diag: session.Diagnosis | None, rec: Recommendation | None, plan: RestorePlan,
               job: RestoreJob | None) -> dict[str, Any]:
    return {"diagnosis": diag.assessment.to_dict() if diag else None,
            "recommendation": rec.to_dict() if rec else None,
            "plan": plan.model_dump(mode="json"),
            "steps": [{"name": s.name, "detail": s.detail} for s in job.steps()] if job else []}


def _confirm(question: str, yes: bool, default: bool = False) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise AbortedError("no terminal to confirm on: pass --yes to run without prompts")
    if not typer.confirm(question, default=default, err=True):
        raise AbortedError("declined; nothing was changed")


def _finish(params: JobParams, cfg: Settings, quiet: bool) -> None:
    """The final cluster verdict and what to do next (neither is printed with --quiet)."""
    if quiet:
        return
    plan = params.plan
    job_local = params.local.member()
    endpoints = [u for u in job_local.listen_client_urls if "127.0.0.1" in u] or list(job_local.client_urls)
    tls = params.client_tls.files()
    etcd = cfg.etcd.model_copy(update={"endpoints": endpoints, "cacert": tls.cacert if tls else None,
                                       "cert": tls.cert if tls else None, "key": tls.key if tls else None})
    with open_connection(etcd) as conn:
        verdict = assess_quorum(list(probe_cluster(conn, cfg.monitor).members))
    stderr.print(f"[bold]cluster verdict[/] {escape(verdict.headline)}: {escape(verdict.reason)}")
    stderr.print("[bold]next steps[/]")
    if plan.single and len(plan.old_members) > 1:
        stderr.print("  - grow the cluster back one member at a time: etcdguard member add NAME --peer-url URL "
                     "(see docs/members.md)")
    if params.run_mode == "kubeadm":
        stderr.print("  - before joining other control-plane nodes: kubeadm init phase upload-certs --upload-certs; "
                     "kubeadm token create --print-join-command")
    if not plan.bump_revision and plan.kubernetes:
        stderr.print("  - the revision was NOT bumped: restart every controller, scheduler and kubelet so no "
                     "watch keeps a stale cache")
    stderr.print(f"  - the old data was kept: {job_local.data_dir}.etcdguard-old-{params.stamp} "
                 "(remove it once the cluster is confirmed healthy)")
    stderr.print(f"  - take a backup of the restored cluster now: etcdguard snapshot (its cluster id "
                 f"{plan.new_cluster_id} is new: the old cluster's backups are kept but no longer count for "
                 "freshness or retention)")


def restore_command(
    ctx: typer.Context,
    backup: Annotated[str | None, typer.Option(
        "--backup", "-b", help="Backup id, 'latest' or 'latest-verified' (default: the recommendation's).")] = None,
    identity: opt.Identity = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Never prompt; take the recommendation.")] = False,
    manifests_dir: Annotated[Path | None, typer.Option(
        "--manifests-dir", help="kubeadm static pod manifests (default /etc/kubernetes/manifests).")] = None,
    single_member: Annotated[bool, typer.Option(
        "--single-member", help="Restore this node alone as a one-member cluster.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="DANGER: restore although the cluster has quorum, or past failed guardrails.")] = False,
    no_bump_revision: Annotated[bool, typer.Option(
        "--no-bump-revision", help="Keep the snapshot's revisions (restart every controller afterwards).")] = False,
    plan_only: Annotated[bool, typer.Option("--plan-only", help="Diagnose and print the plan; change nothing.")
                         ] = False,
    plan_file: Annotated[Path | None, typer.Option(
        "--plan-file", help="With --plan-only: write the plan here; else: run this node's part of it.")] = None,
    member: Annotated[str | None, typer.Option("--member", help="This node's member name in --plan-file.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Finish an interrupted restore.")] = False,
    rollback: Annotated[bool, typer.Option(
        "--rollback", help="Undo an interrupted restore: old data and manifests back, old member started.")] = False,
    etcdutl: Annotated[Path | None, typer.Option("--etcdutl", help="The etcdutl (or 3.4 etcdctl) to restore with.")
                       ] = None,
    signing_pub: opt.SigningPub = None,
    signing_key: Annotated[Path | None, typer.Option(
        "--signing-key", help="Ed25519 key that signs the plan file.")] = None,
    insecure_skip_signature: opt.SkipSignature = False,
    endpoints: opt.Endpoints = None,
    cacert: opt.CACert = None,
    cert: opt.Cert = None,
    key: opt.Key = None,
    store: opt.Store = None,
    s3_endpoint_url: opt.S3Endpoint = None,
    cluster_name: opt.Cluster = None,
    output: Annotated[OutputFormat, typer.Option("--output", "-o", help="table or json (--plan-only).")
                      ] = OutputFormat.table,
) -> None:
    """Restore etcd after a disaster: diagnose, recommend, plan, confirm, run (journaled, resumable).

    Diagnoses first and changes nothing until the plan is confirmed (or --yes). Paths: (a) the
    cluster has quorum: refused (exit 10) unless --force; (b) recover from a surviving member
    that holds newer data than any backup; (c) restore from the backup; (d) restore this node as
    a one-member cluster (--single-member). A bad backup is refused with exit 6 before anything is
    changed; failed guardrails (pre-flight, fencing) exit 10. Killed at any point, --resume
    finishes the restore and --rollback puts the old data and manifests back.
    """
    if resume and rollback:
        raise typer.BadParameter("give --resume or --rollback, not both")
    if plan_file is not None and not plan_only and member is None:
        raise typer.BadParameter("running a --plan-file needs --member NAME (this node's part)")
    overrides: dict[str, Any] = {
        **opt.etcd_overrides(endpoints, cacert, cert, key),
        **opt.store_overrides(store, s3_endpoint_url, cluster_name),
        "encryption.identity_file": identity, "signing.public_keys": signing_pub or None,
        "signing.key_file": signing_key, "restore.manifests_dir": manifests_dir,
    }
    as_json = output is OutputFormat.json
    quiet = state(ctx).quiet or as_json
    printer = _Printer(quiet)
    with handle_errors():
        cfg = settings(ctx, overrides)
        if resume or rollback:
            services = _services(cfg, printer, insecure_skip_signature, need_store=resume)
            if rollback:
                journal = session.rollback(services, printer)
                if not quiet:
                    stderr.print(f"[bold green]rolled back[/] restore {journal.run_id}: the old data and manifests "
                                 "are back and the old member was started")
                return
            journal = session.resume(services, printer)
            _finish(JobParams.model_validate(journal.params), cfg, quiet)
            return
        _run_new(cfg, printer, quiet, as_json, backup=backup, yes=yes, single_member=single_member, force=force,
                 no_bump=no_bump_revision, plan_only=plan_only, plan_file=plan_file, member=member,
                 etcdutl=etcdutl, skip_signature=insecure_skip_signature)


def _run_new(cfg: Settings, printer: _Printer, quiet: bool, as_json: bool, *, backup: str | None, yes: bool,
             single_member: bool, force: bool, no_bump: bool, plan_only: bool, plan_file: Path | None,
             member: str | None, etcdutl: Path | None, skip_signature: bool) -> None:
    session.refuse_if_interrupted(cfg)
    catalog = opt.open_catalog(cfg, skip_signature=skip_signature)
    diag = session.diagnose(cfg, catalog, etcdutl=etcdutl)
    if not quiet:
        _print_diagnosis(diag)
    if diag.local is None:
        raise ConfigError(f"no local etcd member found in {diag.run_mode} run mode (no etcd.yaml in "
                          f"{diag.manifests_dir}, no restore.member in the configuration)"
                          + session.kit_hint(diag, catalog))
    rec: Recommendation | None = None
    if plan_file is not None and not plan_only:
        keys = None if skip_signature else (opt.verify_keys(cfg, False) if cfg.signing.public_keys
                                            or cfg.signing.key_file else None)
        plan = read_plan(plan_file, keys, cfg.backup.cluster_name)
        if keys is None and not skip_signature and not quiet:
            stderr.print("[yellow]warning:[/] no signing key configured: the plan file's signature is not checked")
    else:
        choice = session.Choice(backup=backup, single_member=single_member, force=force, no_bump_revision=no_bump,
                                multi_member=plan_only and plan_file is not None and not single_member)
        if backup is None and not yes and not plan_only and sys.stdin.isatty() and diag.assessment.newest_backup:
            a = diag.assessment
            default = (a.newest_verified or a.newest_backup)
            assert default is not None
            backup = typer.prompt("backup to restore from (id, latest, latest-verified)", default=default.backup_id,
                                  err=True)
            choice = dataclasses.replace(choice, backup=backup)
        ref, manifest = session.select_backup(diag, catalog, backup)
        rec = session.decide(diag, ref, choice)
        if not quiet:
            _print_recommendation(rec)
        if rec.path is RestorePath.NONE:
            raise AbortedError(f"refusing to restore: {rec.reason} (--force overrides; dangerous)")
        plan = session.build(diag, rec, manifest, choice, list(cfg.restore.apiserver_endpoints))
        plan = _bump_fallback(plan, diag, yes)
        if plan_only and plan_file is not None:
            key = load_signing_key(cfg.signing.key_file) if cfg.signing.key_file else None
            write_plan(plan_file, plan, key)
            if not quiet:
                stderr.print(f"wrote plan {plan.restore_id} to {plan_file} ({'signed' if key else 'UNSIGNED'}); "
                             f"run on each node: etcdguard restore --plan-file {plan_file} --member NAME --yes")
        member = member or (diag.local.name if diag.local else None)
    job: RestoreJob | None = None
    params: JobParams | None = None
    if member is not None and (not plan_only or diag.local is not None):
        try:
            params = session.job_params(diag, plan, member, cfg, force=force)
            job = RestoreJob(params, _services(cfg, printer, skip_signature, need_store=False))
        except ConfigError:
            if not plan_only:
                raise
    if as_json:
        print_json(_plan_json(diag, rec, plan, job))
    elif not quiet:
        _print_plan(plan, job)
    if plan_only:
        return
    assert params is not None
    _confirm(f"Run this restore on {params.member_name}? Nothing has been changed yet.", yes)
    services = _services(cfg, printer, skip_signature, need_store=plan.source.kind == "backup", catalog=catalog)
    session.run(params, services, printer)
    _finish(params, cfg, quiet)


def _bump_fallback(plan: RestorePlan, diag: session.Diagnosis, yes: bool) -> RestorePlan:
    """Without a tool that bumps revisions: say what that risks; go on only after an interactive yes."""
    tool = diag.tool
    if not plan.bump_revision or tool is None or tool.supports_bump_revision:
        return plan
    risk = (f"{tool.path} ({tool.version}) cannot bump revisions (needs etcdutl 3.5.10+ or etcdctl 3.4.27+): "
            "watches and informers that saw newer revisions would miss changes and keep stale caches until every "
            "controller and kubelet is restarted")
    if yes or not sys.stdin.isatty():
        raise AbortedError(risk + "; pass --no-bump-revision to restore anyway, or --etcdutl a newer tool")
    stderr.print(f"[yellow]warning:[/] {escape(risk)}")
    _confirm("Restore without a revision bump?", False)
    return plan.model_copy(update={"bump_revision": 0})


def register(app: typer.Typer) -> None:
    """Add ``etcdguard restore``."""
    app.command("restore", epilog=exit_codes_epilog())(restore_command)
