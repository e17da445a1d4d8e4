"""The service's jobs: snapshot, verify, prune, health. Each run is logged and counted.

Jobs read the current Settings from the runtime at the start of each run (so a SIGHUP reload
applies to the next run), never overlap themselves, and only the elected leader takes
scheduled snapshots, verifications and prunes.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from etcdguard.backup.catalog import Catalog, safe_entries, to_verify, trust_from_settings
from etcdguard.backup.keys import trusted_verify_keys
from etcdguard.backup.pipeline import BackupResult, request_from_settings, take_backup
from etcdguard.config import EtcdConfig, LocalStoreConfig, Settings
from etcdguard.errors import EtcdGuardError, OperationInterruptedError
from etcdguard.etcd.cluster import ClusterHealth, probe_cluster
from etcdguard.etcd.connection import open_connection
from etcdguard.etcd.ports import EtcdConnection
from etcdguard.etcd.quorum import QuorumState
from etcdguard.kit.expiry import certificates_for
from etcdguard.kit.save import save_beside_snapshot
from etcdguard.monitor.freshness import freshness_from_entries
from etcdguard.monitor.history import LeaderChangeTracker
from etcdguard.monitor.metrics import EtcdGuardMetrics
from etcdguard.monitor.model import BackupFreshness
from etcdguard.monitor.report import CheckReport, run_checks
from etcdguard.service.election import LeaderElector
from etcdguard.service.metrics import ServiceMetrics
from etcdguard.storage import open_store

log = logging.getLogger("etcdguard.service")


@dataclass
class JobState:
    """Last outcome of one job (served on /api/v1/status)."""

    runs: int = 0
    last_started: datetime | None = None
    last_finished: datetime | None = None
    last_result: str = "never"
    last_error: str | None = None
    skipped: int = 0


@dataclass
class Runtime:
    """Shared state of a running service: settings, metrics, election, cancellation, etcd.

    :meth:`etcd` is the one etcd connection every job and the election use; it is opened from
    the current settings and replaced when a reload changes them.
    """

    settings: Settings
    metrics: EtcdGuardMetrics
    service_metrics: ServiceMetrics
    elector: LeaderElector
    cancel: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    jobs: dict[str, JobState] = field(default_factory=dict)
    health: ClusterHealth | None = None
    report: CheckReport | None = None
    leader_history: LeaderChangeTracker = field(default_factory=lambda: LeaderChangeTracker(timedelta(hours=1)))
    connect: Callable[[EtcdConfig], EtcdConnection] = open_connection
    _connection: tuple[EtcdConfig, EtcdConnection] | None = field(default=None, repr=False)
    _retired: list[EtcdConnection] = field(default_factory=list, repr=False)

    def etcd(self) -> EtcdConnection:
        """The etcd connection for the current settings (opened on first use)."""
        with self.lock:
            config = self.settings.etcd
            if self._connection is None or self._connection[0] != config:
                if self._connection is not None:  # a job may still use it: closed at shutdown
                    self._retired.append(self._connection[1])
                self._connection = (config, self.connect(config))
            return self._connection[1]

    def close(self) -> None:
        """Close the etcd connections (at shutdown, once the jobs have stopped)."""
        with self.lock:
            current = [self._connection[1]] if self._connection else []
            closing, self._retired, self._connection = [*self._retired, *current], [], None
        for conn in closing:
            conn.close()

    def catalog(self) -> Catalog:
        """The catalog of the configured store and cluster."""
        config, _ = self.settings.store_or_default()
        cluster_id = self.health.cluster_id if self.health is not None else None
        return Catalog(open_store(config), self.settings.backup.cluster_name,
                       trust_from_settings(self.settings, cluster_id=cluster_id))

    def state(self, job: str) -> JobState:
        """The JobState of ``job``."""
        with self.lock:
            return self.jobs.setdefault(job, JobState())


def _run(runtime: Runtime, job: str, fn: Any, *args: Any) -> Any:
    state = runtime.state(job)
    state.runs += 1
    state.last_started = datetime.now(timezone.utc)
    started = time.monotonic()
    try:
        result = fn(*args)
    except OperationInterruptedError as exc:
        state.last_result, state.last_error = "interrupted", str(exc)
        runtime.service_metrics.job_run(job, "interrupted")
        log.warning("%s interrupted: %s", job, exc)
        return None
    except EtcdGuardError as exc:
        state.last_result, state.last_error = "failed", str(exc)
        runtime.service_metrics.job_run(job, "failed")
        log.error("%s failed: %s", job, exc)
        return None
    except Exception as exc:  # a job must never kill the scheduler thread
        state.last_result, state.last_error = "failed", f"{type(exc).__name__}: {exc}"
        runtime.service_metrics.job_run(job, "failed")
        log.exception("%s failed unexpectedly", job)
        return None
    finally:
        state.last_finished = datetime.now(timezone.utc)
    state.last_result, state.last_error = ("skipped" if result is False else "ok"), None
    runtime.service_metrics.job_run(job, state.last_result)
    log.log(logging.DEBUG if job == "health" else logging.INFO, "%s finished in %.1fs", job,
            time.monotonic() - started)
    return result


def _not_leader(runtime: Runtime, job: str) -> bool:
    if runtime.elector.is_leader():
        return False
    runtime.state(job).skipped += 1
    log.debug("%s skipped: this replica is not the leader", job)
    return True


def _quorum_lost(runtime: Runtime) -> bool:
    health = runtime.health
    return health is not None and health.verdict().state is QuorumState.QUORUM_LOST


def _quorum_lost_now(runtime: Runtime) -> bool:
    try:
        runtime.health = probe_cluster(runtime.etcd(), runtime.settings.monitor)
    except EtcdGuardError:
        return False
    return _quorum_lost(runtime)


def _take_snapshot(runtime: Runtime, emergency: bool) -> BackupResult:
    settings = runtime.settings
    store_config = settings.store_or_default()[0]
    request = request_from_settings(settings)
    if emergency:
        path = settings.service.emergency_local_store
        assert path is not None
        store_config = LocalStoreConfig(path=path)
        request = dataclasses.replace(request, local_endpoint=settings.etcd.endpoints[0], member=None)
    started = time.monotonic()
    try:
        result = take_backup(request, open_store(store_config), connection=runtime.etcd(), cancel=runtime.cancel)
    except EtcdGuardError:
        runtime.metrics.record_backup(False, time.monotonic() - started)
        raise
    m = result.manifest
    runtime.metrics.record_backup(True, m.duration_seconds, plain_size_bytes=m.snapshot.size,
                                  stored_size_bytes=m.stored.size, finished_at=m.finished_at)
    log.info("%sbackup %s: revision %d, %d bytes -> %d stored, from %s", "EMERGENCY " if emergency else "",
             m.backup_id, m.hashkv.revision, m.snapshot.size, m.stored.size, m.source.name)
    return result


def snapshot_job(runtime: Runtime) -> None:
    """Scheduled snapshot; then verify and prune when configured."""
    settings = runtime.settings
    emergency = bool(settings.service.emergency_local_store) and _quorum_lost(runtime)
    if not emergency and _not_leader(runtime, "snapshot"):
        return
    result = _run(runtime, "snapshot", _take_snapshot, runtime, emergency)
    if result is None and not emergency and settings.service.emergency_local_store and _quorum_lost_now(runtime):
        log.warning("the cluster has lost quorum: taking an emergency snapshot of the local member")
        _run(runtime, "snapshot", _take_snapshot, runtime, True)
        return
    if result is None or emergency:
        return
    if settings.kit.enabled:
        _run(runtime, "kit", save_beside_snapshot, settings, result.manifest.cluster.cluster_id)
    if settings.service.verify_after_snapshot:
        _run(runtime, "verify", _verify, runtime, [result.manifest.backup_id])
    if settings.service.prune_after_snapshot:
        _run(runtime, "prune", _prune, runtime)
    _run(runtime, "leftovers", _remove_leftovers, runtime)


def _verify(runtime: Runtime, backup_ids: list[str] | None) -> bool:
    from etcdguard.verify import Verifier, options_from_settings, sandbox_factory

    settings = runtime.settings
    identity = settings.encryption.identity_file
    if identity is None:
        log.warning("verification skipped: no encryption.identity_file configured for this service")
        return False
    trusted = trusted_verify_keys(list(settings.signing.public_keys), settings.signing.key_file, identity)
    options = options_from_settings(settings, trusted)
    catalog = runtime.catalog()
    verifier = Verifier(catalog, sandbox_factory(settings.verify), options)
    targets = backup_ids if backup_ids is not None else to_verify(safe_entries(catalog))[:1]
    for backup_id in targets:
        if runtime.cancel.is_set():
            raise OperationInterruptedError("verification cancelled")
        try:
            report = verifier.verify(backup_id)
        except EtcdGuardError as exc:
            runtime.metrics.record_verification(False)
            log.error("verification of %s failed: %s", backup_id, exc)
            continue
        runtime.metrics.record_verification(report.passed, at=report.verification.finished_at)
        log.info("verification of %s: %s %s", backup_id, report.verification.result, report.verification.reason)
    return True


def verify_job(runtime: Runtime) -> None:
    """Scheduled verification of the newest unverified backup."""
    if _not_leader(runtime, "verify"):
        return
    _run(runtime, "verify", _verify, runtime, None)


def _prune(runtime: Runtime) -> bool:
    from etcdguard.backup.retention import apply_retention

    decision = apply_retention(runtime.catalog(), runtime.settings.retention, datetime.now(timezone.utc),
                               dry_run=False)
    if decision.delete:
        log.info("pruned %d backup(s): %s", len(decision.delete), ", ".join(decision.delete))
    return True


def prune_job(runtime: Runtime) -> None:
    """Apply retention and remove idle leftovers of killed backups (leader only)."""
    if _not_leader(runtime, "prune"):
        return
    _run(runtime, "prune", _prune, runtime)
    _run(runtime, "leftovers", _remove_leftovers, runtime)


def _remove_leftovers(runtime: Runtime) -> bool:
    from etcdguard.backup.leftovers import remove_leftovers

    grace = timedelta(minutes=runtime.settings.retention.incomplete_grace_minutes)
    removed = remove_leftovers(runtime.catalog(), grace)
    if removed:
        log.info("removed %d leftover(s) of interrupted backups: %s", len(removed),
                 ", ".join(f"{lo.kind} {lo.key}" for lo in removed))
    return True


def freshness(runtime: Runtime) -> BackupFreshness | None:
    """Newest backup / verification of the catalog, or None when it cannot be read."""
    try:
        return freshness_from_entries(safe_entries(runtime.catalog()))
    except EtcdGuardError as exc:
        log.warning("cannot read the backup catalog: %s", exc)
        return None


def _health(runtime: Runtime) -> bool:
    settings = runtime.settings
    health = probe_cluster(runtime.etcd(), settings.monitor)
    now = health.timestamp
    runtime.leader_history.window = timedelta(seconds=settings.monitor.leader_changes_window_seconds)
    runtime.leader_history.observe(health)
    changes = runtime.leader_history.changes(now)
    fresh = freshness(runtime)
    certs = certificates_for(settings)  # this host's (the chart mounts the PKI dir when the kit is on)
    report = run_checks(health, settings.monitor, freshness=fresh, leader_changes=changes, now=now,
                        certificates=certs)
    runtime.health, runtime.report = health, report
    runtime.metrics.update_from_cluster(health)
    runtime.metrics.update_from_checks(report.results)
    runtime.metrics.set_certificates(certs, now)
    if fresh is not None:
        runtime.metrics.set_freshness(fresh)
    return True


def health_job(runtime: Runtime) -> None:
    """Probe the cluster, run the checks, update the metrics (every replica)."""
    _run(runtime, "health", _health, runtime)
