"""The restore use case: diagnose, build the plan, and run, resume or roll back a node's part.

:func:`diagnose` changes nothing. :func:`prepare` turns a diagnosis and the operator's choices
into :class:`JobParams`. :func:`run`, :func:`resume` and :func:`rollback` hold the restore lock
(one restore at a time on a node) and drive the steps through the journal.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from etcdguard import interrupts
from etcdguard.backup.catalog import Catalog, safe_entries
from etcdguard.backup.manifest import Manifest
from etcdguard.config import EtcdConfig, Settings
from etcdguard.errors import AbortedError, ConfigError, EtcdGuardError, SandboxUnavailableError
from etcdguard.etcd.binaries import EtcdVersion
from etcdguard.etcd.client import TLSFiles
from etcdguard.etcd.cluster import ClusterHealth, probe_cluster
from etcdguard.etcd.connection import open_connection
from etcdguard.etcd.datadir import DataDirInfo, read_data_dir
from etcdguard.etcd.ports import EtcdConnection
from etcdguard.etcd.tools import SnapshotTool, child_env
from etcdguard.restore.assess import Assessment, BackupRef, assess, is_kubernetes, newest_backups
from etcdguard.restore.discovery import (
    APISERVER_MANIFEST,
    ETCD_MANIFEST,
    ApiServer,
    LocalMember,
    apiserver_from_manifest,
    member_config_complete,
    member_from_config,
    member_from_manifest,
    member_with_overrides,
    parse_initial_cluster,
)
from etcdguard.restore.execute import CHANGING_STEPS, RestoreJob
from etcdguard.restore.fencing import port_open
from etcdguard.restore.job import (
    JOURNAL_KIND,
    ApiServerParams,
    JobParams,
    MemberParams,
    Services,
    TLSParams,
    new_stamp,
)
from etcdguard.restore.plan import OldMember, PlanMember, PlanSource, RestorePlan, build_plan
from etcdguard.restore.preflight import parse_owner
from etcdguard.restore.recommend import Recommendation, RestorePath, bump_amount, recommend
from etcdguard.restore.runmode import resolve_run_mode
from etcdguard.restore.systemd_unit import member_from_unit, read_unit, service_spec
from etcdguard.steps import Journal, RunLock, RunOutcome, StepListener, StepRunner, StepState, ensure_private_dir

DEFAULT_ENDPOINTS = ["http://127.0.0.1:2379"]


@dataclass(frozen=True)
class Diagnosis:
    """What :func:`diagnose` found (nothing was changed to find it)."""

    assessment: Assessment
    run_mode: Literal["kubeadm", "systemd", "command"]
    manifests_dir: Path
    etcd: EtcdConfig
    tool: SnapshotTool | None
    tool_problem: str = ""

    @property
    def local(self) -> LocalMember | None:
        """The local member, when its run mode describes one."""
        return self.assessment.local


def _tool_version(path: Path) -> tuple[EtcdVersion, bool]:
    is_etcdutl = path.name.startswith("etcdutl")
    env = child_env(None if is_etcdutl else {"ETCDCTL_API": "3"})
    try:
        out = subprocess.run([str(path), "version"], capture_output=True, text=True, env=env, timeout=30,
                             check=False).stdout
    except OSError as exc:
        raise ConfigError(f"--etcdutl {path}: cannot run it: {exc.strerror or exc}") from None
    m = re.search(r"(?:etcdutl|etcdctl) version:\s*(\d+\.\d+\.\d+)", out)
    if not m:
        raise ConfigError(f"--etcdutl {path}: not an etcdutl or etcdctl (no version in its output)")
    return EtcdVersion.parse(m.group(1)), is_etcdutl


def find_tool(explicit: Path | None, wanted_version: str | None, extra_dirs: list[Path]) -> SnapshotTool:
    """The snapshot tool: ``--etcdutl PATH``, else the installation nearest the server's version."""
    if explicit is not None:
        version, is_etcdutl = _tool_version(explicit)
        return SnapshotTool(explicit, version, is_etcdutl)
    from etcdguard.verify.hosttools import pick_host_etcd

    host = pick_host_etcd(wanted_version, extra_dirs)
    return SnapshotTool.of(host.install)


def _local(settings: Settings, mode: str, manifests_dir: Path,
           unit_text: str | None) -> tuple[LocalMember | None, ApiServer | None]:
    api_path = manifests_dir / APISERVER_MANIFEST
    apiserver = apiserver_from_manifest(api_path) if mode == "kubeadm" and api_path.exists() else None
    if mode == "kubeadm":
        path = manifests_dir / ETCD_MANIFEST
        return (member_from_manifest(path) if path.exists() else None), apiserver
    cfg = settings.restore.member
    if mode == "systemd" and not member_config_complete(cfg):
        unit = settings.restore.etcd_unit
        spec = service_spec(unit_text if unit_text is not None else read_unit(unit), unit)
        return member_with_overrides(member_from_unit(spec), cfg), None
    return (member_from_config(cfg) if cfg is not None else None), apiserver


def _etcd_config(settings: Settings, local: LocalMember | None) -> EtcdConfig:
    """Endpoints and TLS for probing: the configured ones, else the local member's (kubeadm PKI)."""
    etcd = settings.etcd
    updates: dict[str, object] = {}
    if local is not None and etcd.endpoints == DEFAULT_ENDPOINTS:
        loop = [u for u in local.listen_client_urls if "127.0.0.1" in u] or list(local.client_urls)
        updates["endpoints"] = loop
    if local is not None and etcd.cacert is None and etcd.cert is None:
        tls = local.client_tls()
        if tls is not None:
            updates.update(cacert=tls.cacert, cert=tls.cert, key=tls.key)
    return etcd.model_copy(update=updates) if updates else etcd


def diagnose(settings: Settings, catalog: Catalog | None, *, manifests_dir: Path | None = None,
             etcdutl: Path | None = None, now: datetime | None = None) -> Diagnosis:
    """Find the local member and its run mode, probe every member, read the backups. Changes nothing."""
    mdir = manifests_dir or settings.restore.manifests_dir
    mode, unit_text = resolve_run_mode(settings.restore, mdir)
    local, apiserver = _local(settings, mode, mdir, unit_text)
    etcd = _etcd_config(settings, local)
    health: ClusterHealth | None = None
    key_count: int | None = None
    entries = safe_entries(catalog) if catalog is not None else []
    newest, _ = newest_backups(entries, settings.backup.cluster_name)
    try:
        with open_connection(etcd) as conn:
            health = probe_cluster(conn, settings.monitor)
            key_count = _key_count(conn, health, newest)
    except ConfigError:
        if local is not None:
            raise
        # a node that lost everything has no manifest and no PKI: the configured client certificate is
        # gone too; the diagnosis goes on without the probe so it can name the kit to restore first
    server_version = (local.image_version if local else None) or next(
        (m.version for m in health.members if m.version), None) if health else None
    tool: SnapshotTool | None = None
    problem = ""
    try:
        tool = find_tool(etcdutl, server_version, list(settings.verify.etcd_path))
    except EtcdGuardError as exc:
        problem = str(exc)
    local_data: DataDirInfo | None = None
    if local is not None:
        stopped = not any(port_open(h, p, 0.5) for h, p in local.ports)
        # a running member holds its db locked: only a stopped member's db is read
        local_data = read_data_dir(local.data_dir, tool if stopped else None, local.wal_dir)
    a = assess(settings.backup.cluster_name, health, local, local_data, apiserver, entries, now, key_count)
    return Diagnosis(a, mode, mdir, etcd, tool, problem)


def _key_count(conn: EtcdConnection, health: ClusterHealth, newest: BackupRef | None) -> int | None:
    """Keys in the whole keyspace (a count-only range), asked only when the emptiness rule needs it:
    an answering member's revision is above 1 and below the newest backup's. None when unknown."""
    members = [m for m in health.reachable_members if m.endpoint and m.revision is not None]
    top = max((m.revision or 0 for m in members), default=0)
    if newest is None or not 1 < top < newest.revision:
        return None
    for m in sorted(members, key=lambda m: not m.is_leader):
        try:
            return conn.client(m.endpoint or "").count(b"\0", b"\0", serializable=True)[0]
        except EtcdGuardError:
            continue
    return None


# -- choosing the source and building the plan -----------------------------------------------------

@dataclass(frozen=True)
class Choice:
    """What the operator asked for."""

    backup: str | None = None  # an id, 'latest' or 'latest-verified'; None: the recommendation's
    single_member: bool = False
    force: bool = False
    no_bump_revision: bool = False
    multi_member: bool = False


def select_backup(diag: Diagnosis, catalog: Catalog | None, selector: str | None) -> tuple[BackupRef | None,
                                                                                         Manifest | None]:
    """The backup to restore from (checked manifest) for ``selector`` (None: newest trusted)."""
    if catalog is None:
        return None, None
    a = diag.assessment
    if selector is None and a.newest_backup is None:
        return None, None
    backup_id = catalog.resolve(selector or "latest")
    manifest = catalog.open(backup_id, catalog.trust.keys)
    return BackupRef.from_manifest(manifest, catalog.entry(backup_id).verified), manifest


def decide(diag: Diagnosis, backup: BackupRef | None, choice: Choice) -> Recommendation:
    """The recommendation for this diagnosis and choice."""
    return recommend(diag.assessment, backup=backup, force=choice.force, single_member=choice.single_member,
                     multi_member_plan=choice.multi_member, prefer_backup=choice.backup is not None)


def _old_members(diag: Diagnosis, manifest: Manifest | None) -> list[OldMember]:
    """Every member of the old cluster that is known: from the probe, the local member's initial
    cluster and the backup's recorded members (which also name the configured endpoints' owners)."""
    a = diag.assessment
    out: dict[str, OldMember] = {}
    if a.health is not None and a.health.discovered:
        for m in a.health.members:
            out[m.display_name] = OldMember(name=m.display_name, member_id=m.id_hex, peer_urls=list(m.peer_urls),
                                            client_urls=list(m.client_urls))
    for r in manifest.members or () if manifest is not None else ():
        probed = out.get(r.name)
        out[r.name] = OldMember(name=r.name, member_id=probed.member_id if probed else "",
                                peer_urls=sorted({*r.peer_urls, *(probed.peer_urls if probed else [])}),
                                client_urls=sorted({*r.client_urls, *(probed.client_urls if probed else [])}))
    local = a.local
    if local is not None:
        for name, urls in parse_initial_cluster(local.initial_cluster or "").items():
            out.setdefault(name, OldMember(name=name, peer_urls=list(urls)))
        prev = out.get(local.name)
        out[local.name] = OldMember(name=local.name, member_id=prev.member_id if prev else "",
                                    peer_urls=sorted({*local.peer_urls, *(prev.peer_urls if prev else [])}),
                                    client_urls=sorted({*local.client_urls, *(prev.client_urls if prev else [])}))
    known = {u for m in out.values() for u in m.client_urls}
    extra = [u for u in diag.etcd.endpoints if u not in known]
    if extra:
        out["(configured endpoints)"] = OldMember(name="(configured endpoints)", client_urls=extra)
    return list(out.values())


def kit_hint(diag: Diagnosis, catalog: Catalog | None) -> str:
    """On a node with no etcd manifest and no PKI: which control-plane kit to restore first."""
    if diag.local is not None or diag.run_mode != "kubeadm" or catalog is None:
        return ""
    if (diag.manifests_dir.parent / "pki").exists():
        return ""
    from etcdguard.kit.catalog import matching_kit

    a = diag.assessment
    at = a.newest_backup.created_at if a.newest_backup else a.taken_at
    try:
        match = matching_kit(catalog.store, a.cluster_name, at, catalog.trust.keys)
    except EtcdGuardError:
        return ""
    if match is None:
        return "; no control-plane kit of this cluster was found either"
    return (f"; this node has no etcd manifest and no PKI: restore the control-plane kit first "
            f"(kit {match.entry.kit_id}: {match.reason}): etcdguard kit restore {match.entry.kit_id}, "
            "then run etcdguard restore again")


def _plan_members(diag: Diagnosis, single: bool, manifest: Manifest | None) -> list[PlanMember]:
    local = diag.local
    if local is None:
        raise ConfigError("no local etcd member found: no etcd.yaml in the manifests dir and no restore.member "
                          "in the configuration")
    me = PlanMember(name=local.name, peer_urls=list(local.peer_urls), client_urls=list(local.client_urls))
    if single:
        return [me]
    cluster = parse_initial_cluster(local.initial_cluster or "")
    recorded = {m.name: tuple(m.peer_urls) for m in manifest.members or ()} if manifest is not None else {}
    if len(cluster) < 2 and len(recorded) >= 2 and local.name in recorded:
        cluster = recorded  # e.g. kubeadm's first node names only itself: the backup names everyone
    if len(cluster) < 2:
        where = (" (kubeadm writes every member into the etcd.yaml of the last control-plane node it joined: "
                 "make the plan there)" if diag.run_mode == "kubeadm" else "")
        raise ConfigError(f"a multi-member plan needs every member's name and peer URL, and {local.name}'s "
                          f"--initial-cluster names only itself (nor does the backup name its members){where}; "
                          "or restore this node alone with --single-member")
    health = diag.assessment.health
    clients = {m.name: list(m.client_urls) for m in health.members} if health else {}
    return [me if name == local.name else PlanMember(name=name, peer_urls=list(urls),
                                                      client_urls=clients.get(name, []))
            for name, urls in cluster.items()]


def build(diag: Diagnosis, rec: Recommendation, manifest: Manifest | None, choice: Choice,
          apiserver_endpoints: list[str]) -> RestorePlan:
    """The plan that follows ``rec``."""
    a = diag.assessment
    if not rec.restores:
        raise AbortedError(f"no restore: {rec.reason}")
    if rec.survivor is not None:
        s = rec.survivor
        source = PlanSource(kind="survivor", revision=s.revision, survivor=s.name, survivor_endpoint=s.endpoint,
                            survivor_db=str(s.db_path) if s.db_path else None)
    elif manifest is not None and rec.backup is not None:
        source = PlanSource(kind="backup", revision=manifest.hashkv.revision, backup_id=manifest.backup_id,
                            snapshot_sha256=manifest.snapshot.sha256, snapshot_bytes=manifest.snapshot.size)
    else:
        raise AbortedError("nothing to restore from: no trusted backup in the store and no surviving member data")
    kubernetes = (manifest is not None and is_kubernetes(manifest)) or a.apiserver is not None or (
        a.newest_backup is not None and a.newest_backup.kubernetes)
    bump = 0 if choice.no_bump_revision or not kubernetes else bump_amount(source.revision, a.newest_seen_revision)
    cluster_id = (manifest.cluster.cluster_id if manifest is not None else None) or (
        f"{a.health.cluster_id:x}" if a.health and a.health.cluster_id else "") or (
        f"{a.local_data.cluster_id:x}" if a.local_data and a.local_data.cluster_id else "unknown")
    return build_plan(cluster_name=a.cluster_name, old_cluster_id=cluster_id, path=rec.path.value,
                      source=source, members=_plan_members(diag, rec.single_member, manifest), bump_revision=bump,
                      kubernetes=kubernetes, old_members=_old_members(diag, manifest),
                      apiserver_endpoints=apiserver_endpoints)


def state_dir(settings: Settings) -> Path:
    """The node's restore state dir (journals, staged snapshots, the lock), created private."""
    return ensure_private_dir(settings.restore.state_dir_or_default())


def job_params(diag: Diagnosis, plan: RestorePlan, member_name: str, settings: Settings, *,
               force: bool) -> JobParams:
    """This node's part of ``plan``."""
    local = diag.local
    if local is None:
        raise ConfigError("no local etcd member found (no etcd.yaml, no restore.member)")
    if local.name != member_name:
        raise ConfigError(f"this node's member is {local.name!r} ({local.source}), not {member_name!r}")
    plan.member(member_name)
    if local.owner:  # an unknown user or group: refused now, not after the old data was moved aside
        try:
            parse_owner(local.owner)
        except ConfigError:
            raise ConfigError(f"the data dir owner {local.owner!r} ({local.source}) is no user or group on this "
                              "host") from None
    if diag.tool is None:
        raise SandboxUnavailableError(diag.tool_problem or "no etcdutl/etcdctl found: pass --etcdutl PATH")
    root = state_dir(settings)
    work = ensure_private_dir(root / plan.restore_id)
    a = diag.assessment
    answering = [m.endpoint for m in a.answering if m.endpoint]
    api = a.apiserver
    enc = settings.restore.encryption_provider_config or (api.encryption_provider_config if api else None)
    tls = TLSFiles(cacert=diag.etcd.cacert, cert=diag.etcd.cert, key=diag.etcd.key)
    peer = local.client_tls()
    server_version = local.image_version or next((m.version for m in a.answering if m.version), None)
    emergency = settings.service.emergency_local_store or root / "emergency"
    return JobParams(
        plan=plan, member_name=member_name, stamp=new_stamp(), work_dir=str(work), run_mode=diag.run_mode,
        manifests_dir=str(diag.manifests_dir), local=MemberParams.of(local),
        apiserver=ApiServerParams.of(api) if api else None, etcdutl=str(diag.tool.path),
        etcdutl_version=str(diag.tool.version), etcdutl_is_etcdutl=diag.tool.is_etcdutl,
        server_version=server_version, client_tls=TLSParams.of(tls), peer_tls=TLSParams.of(peer),
        answering=answering, force=force, encryption_config=str(enc) if enc else None,
        memory_factor=settings.restore.min_free_memory_factor, start_timeout=settings.restore.start_timeout,
        stop_timeout=settings.restore.stop_timeout, emergency_store=str(emergency))


# -- running -----------------------------------------------------------------------------------------

def _lock(settings: Settings) -> RunLock:
    return RunLock(state_dir(settings) / "restore.lock", "another etcdguard restore")


def journal_dir(settings: Settings) -> Path:
    """Where restore journals live."""
    return state_dir(settings) / "journal"


def unfinished(settings: Settings) -> Journal | None:
    """The newest restore journal that is neither done nor rolled back."""
    for path in Journal.find(journal_dir(settings), JOURNAL_KIND):
        journal = Journal.load(path)
        if journal.outcome not in (RunOutcome.done, RunOutcome.rolled_back):
            return journal
    return None


def changed_anything(journal: Journal) -> bool:
    """True when a step that changes the node started (then the run must be resumed or rolled back)."""
    return any(r.name in CHANGING_STEPS and r.state is not StepState.pending for r in journal.steps)


def refuse_if_interrupted(settings: Settings) -> Journal | None:
    """AbortedError when an interrupted restore changed something (it must be resumed or rolled
    back first); returns an unfinished journal that changed nothing (a new run supersedes it)."""
    previous = unfinished(settings)
    if previous is not None and changed_anything(previous):
        last = next((r.name for r in reversed(previous.steps) if r.state is not StepState.pending), "?")
        raise AbortedError(f"restore {previous.run_id} was interrupted after step {last} "
                           f"({previous.outcome.value}): run 'etcdguard restore --resume' to finish it or "
                           "'--rollback' to undo it")
    return previous


def _discard_outputs(journal: Journal, services: Services) -> None:
    """What a superseded run (it changed nothing) made itself: its staged snapshot and its restored
    dirs that were never swapped in. Never the member's data."""
    with contextlib.suppress(EtcdGuardError, OSError, ValueError):
        params = JobParams.model_validate(journal.params)
        RestoreJob(params, services).discard_new()
        params.snapshot_path.unlink(missing_ok=True)


def run(params: JobParams, services: Services, on_change: StepListener | None = None) -> Journal:
    """Run this node's part of a restore under the lock, journaled."""
    with _lock(services.settings):
        previous = refuse_if_interrupted(services.settings)
        if previous is not None:
            _discard_outputs(previous, services)
            previous.finish(RunOutcome.rolled_back, "superseded: nothing had been changed")
        journal = Journal.create(journal_dir(services.settings), JOURNAL_KIND, params.plan.restore_id,
                                 params=params.model_dump(mode="json"))
        with _no_plain_copy_on_failure(params, journal):
            StepRunner(journal, on_change).run(RestoreJob(params, services).steps())
        return journal


@contextlib.contextmanager
def _no_plain_copy_on_failure(params: JobParams, journal: Journal) -> Iterator[None]:
    """A run that stops (signal, error) takes its decrypted snapshot with it: a resumed run that
    still needs it fetches it again (``SourceSteps.ensure_staged``). A signal after the node was
    changed says how to go on."""
    try:
        yield
    except BaseException as exc:
        with interrupts.deferred():
            params.snapshot_path.unlink(missing_ok=True)
        if isinstance(exc, interrupts.Interrupted) and changed_anything(journal):
            last = next((r.name for r in reversed(journal.steps) if r.state is not StepState.pending), "?")
            exc.outcome = (f"restore {journal.run_id} stopped in step {last}, after changing this node: run "
                           "'etcdguard restore --resume' to finish it or '--rollback' to undo it")
        raise


def _load(services: Services) -> tuple[Journal, JobParams]:
    journal = unfinished(services.settings)
    if journal is None:
        raise AbortedError(f"no unfinished restore in {journal_dir(services.settings)}")
    return journal, JobParams.model_validate(journal.params)


def resume(services: Services, on_change: StepListener | None = None,
           before: Callable[[JobParams], None] | None = None) -> Journal:
    """Finish the interrupted restore where it stopped."""
    with _lock(services.settings):
        journal, params = _load(services)
        if before is not None:
            before(params)
        with _no_plain_copy_on_failure(params, journal):
            StepRunner(journal, on_change).run(RestoreJob(params, services).steps())
        return journal


def rollback(services: Services, on_change: StepListener | None = None) -> Journal:
    """Undo the interrupted restore: old data and manifests back, the old member started again."""
    with _lock(services.settings):
        journal, params = _load(services)
        try:
            StepRunner(journal, on_change).rollback(RestoreJob(params, services).steps())
        finally:
            with interrupts.deferred():
                params.snapshot_path.unlink(missing_ok=True)  # no decrypted copy outlives the restore
        return journal


def now_utc() -> datetime:
    """The current time (UTC)."""
    return datetime.now(timezone.utc)


__all__ = ["Choice", "Diagnosis", "RestorePath", "build", "decide", "diagnose", "job_params", "resume",
           "rollback", "run", "select_backup"]
