"""The daemon loop of ``etcdguard serve``.

Signal handlers only set flags; the loop notices them. The loop keeps the leader election
alive and marks liveness ("the loop ran recently", /healthz), which is separate from backup
freshness (the checks and metrics). Jobs run on APScheduler's thread pool.

Before anything runs, every file and setting the jobs will need is checked and the store must
answer (see :mod:`etcdguard.service.preflight`); afterwards the store and etcd are probed every
health interval, and /readyz and ``etcdguard_dependency_up`` say when either is down.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from etcdguard.backup.catalog import BackupEntry, safe_entries
from etcdguard.config import Settings, load_settings
from etcdguard.errors import EtcdGuardError
from etcdguard.etcd.ports import EtcdConnection
from etcdguard.monitor.metrics import EtcdGuardMetrics
from etcdguard.service import jobs
from etcdguard.service.election import AlwaysLeader, EtcdLeaseElector, LeaderElector
from etcdguard.service.http import CachedValue, Endpoints, HttpServer, load_token, loop_health
from etcdguard.service.metrics import ServiceMetrics
from etcdguard.service.preflight import validate_settings, wait_for_store
from etcdguard.service.schedule import cron_trigger

log = logging.getLogger("etcdguard.service")
LOOP_INTERVAL = 0.2
SHUTDOWN_GRACE_SECONDS = 20.0


def replica_id() -> str:
    """A replica identity: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass
class Dependency:
    """What the last probe of the store or etcd found (None: not probed yet)."""

    up: bool | None = None
    error: str | None = None

    def as_dict(self, detail: bool) -> dict[str, Any]:
        """JSON form for /readyz; without ``detail`` the error text (hosts, paths) is left out."""
        hidden = "down: the service log (or /readyz with the API token) says why"
        error = self.error if detail or self.error is None else hidden
        return {"up": self.up, "error": error}


def make_elector(settings: Settings, replica: str, connection: Callable[[], EtcdConnection]) -> LeaderElector:
    """The configured leader election, over the service's etcd connection."""
    if not settings.service.leader_election:
        return AlwaysLeader()
    return EtcdLeaseElector(connection, settings.backup.cluster_name, replica, settings.service.lease_ttl_seconds,
                            settings.etcd.dial_timeout)


class Daemon:
    """Runs the scheduler, the HTTP endpoints and the election until SIGTERM/SIGINT."""

    def __init__(self, settings: Settings, *, config_file: Path | None = None,
                 overrides: Mapping[str, Any] | None = None, replica: str | None = None) -> None:
        validate_settings(settings)
        self.config_file = config_file
        self.overrides = dict(overrides or {})
        self.replica = replica or replica_id()
        metrics = EtcdGuardMetrics()
        self.runtime = jobs.Runtime(settings, metrics, ServiceMetrics(metrics.registry), AlwaysLeader())
        self.runtime.elector = make_elector(settings, self.replica, self.runtime.etcd)
        self._stop_requested = False
        self._reload_requested = False
        self._last_loop = time.monotonic()
        self._ready = False
        self.dependencies = {"store": Dependency(), "etcd": Dependency()}
        self._scheduler = BackgroundScheduler(timezone=timezone.utc, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": 300})
        self._entries = CachedValue(lambda: safe_entries(self.runtime.catalog()),
                                    settings.service.health_interval_seconds)
        self._http = HttpServer(settings.service.listen, Endpoints(
            healthz=self._healthz, readyz=self._readyz, metrics=metrics.render,
            backups=self._backups, status=self._status), token=load_token(settings.service.api_token_file))

    # -- signals: flags only ---------------------------------------------------------------
    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stop_requested = True

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self._reload_requested = True

    def request_stop(self) -> None:
        """Ask the loop to stop (for embedding and tests)."""
        self._stop_requested = True

    # -- HTTP ------------------------------------------------------------------------------
    def _healthz(self) -> tuple[int, dict[str, Any]]:
        max_age = max(30.0, 3.0 * self.runtime.settings.service.lease_ttl_seconds)
        return loop_health(self._last_loop, max_age)

    def _readyz(self, detail: bool = False) -> tuple[int, dict[str, Any]]:
        """Ready while running, not stopping, and neither the store nor etcd was last seen down."""
        deps = self.dependencies
        ready = self._ready and not self._stop_requested and all(d.up is not False for d in deps.values())
        return (200 if ready else 503), {"ready": ready, "leader": self.runtime.elector.is_leader(),
                                         **{name: dep.as_dict(detail) for name, dep in deps.items()}}

    def _probe_dependencies(self) -> None:
        """Probe the store (a check); read etcd's state from the health job's last probe (an endpoint
        answered, or not); set /readyz and the metrics."""
        store = self.dependencies["store"]
        try:
            self.runtime.catalog().store.check()
            store.up, store.error = True, None
        except EtcdGuardError as exc:
            if store.up is not False:
                log.error("the backup store is unusable: %s", exc)
            store.up, store.error = False, str(exc)
        job, probe = self.runtime.jobs.get("health"), self.runtime.health
        etcd = self.dependencies["etcd"]
        if job is not None and job.last_result == "failed":
            etcd.up, etcd.error = False, job.last_error
        elif probe is not None:
            etcd.up = probe.discovered
            etcd.error = None if probe.discovered else "; ".join(probe.errors) or "no endpoint answered"
        for name, dep in self.dependencies.items():
            if dep.up is not None:
                self.runtime.service_metrics.dependency(name, dep.up)

    def _backups(self, detail: bool) -> tuple[int, Any]:
        try:
            entries: list[BackupEntry] = self._entries.get()
        except EtcdGuardError as exc:
            return 503, {"error": str(exc) if detail else "the backup catalog cannot be read"}
        return 200, [e.to_dict(detail=detail) for e in entries]

    def _status(self, detail: bool) -> tuple[int, Any]:
        rt = self.runtime
        report = rt.report
        jobs_view = {name: vars(state) if detail else {k: v for k, v in vars(state).items() if k != "last_error"}
                     for name, state in sorted(rt.jobs.items())}
        health: Any = None
        if report is not None:
            health = report.to_dict() if detail else {
                "status": report.severity.value, "checks": {r.name: r.severity.value for r in report.results}}
        return 200, {
            "replica": self.replica if detail else None,
            "leader": rt.elector.is_leader(),
            "leader_id": rt.elector.leader_id() if detail else None,
            "cluster": rt.settings.backup.cluster_name,
            "jobs": jobs_view,
            "health": health,
        }

    # -- scheduling ------------------------------------------------------------------------
    def _schedule(self) -> None:
        svc = self.runtime.settings.service
        rt = self.runtime
        add: Callable[..., Any] = self._scheduler.add_job
        add(jobs.snapshot_job, cron_trigger(svc.snapshot_cron, svc.jitter_seconds), args=[rt],
            id="snapshot", name="snapshot", replace_existing=True)
        if svc.verify_cron:
            add(jobs.verify_job, cron_trigger(svc.verify_cron, svc.jitter_seconds), args=[rt],
                id="verify", name="verify", replace_existing=True)
        elif self._scheduler.get_job("verify"):
            self._scheduler.remove_job("verify")
        add(jobs.health_job, IntervalTrigger(seconds=svc.health_interval_seconds, timezone=timezone.utc),
            args=[rt], id="health", name="health", replace_existing=True,
            next_run_time=datetime.now(timezone.utc))
        add(self._probe_dependencies, IntervalTrigger(seconds=svc.health_interval_seconds, timezone=timezone.utc),
            id="dependencies", name="dependencies", replace_existing=True)

    def _reload(self) -> None:
        self._reload_requested = False
        try:
            settings = load_settings(self.config_file, self.overrides)
            validate_settings(settings)
        except EtcdGuardError as exc:
            self.runtime.service_metrics.config_reloads.labels(result="invalid").inc()
            log.error("config reload failed, keeping the running config: %s", exc)
            return
        old = self.runtime.settings
        if settings.service.listen != old.service.listen:
            log.warning("service.listen changed; it takes effect after a restart")
        if settings.service.leader_election != old.service.leader_election:
            self.runtime.elector.resign()
            self.runtime.elector = make_elector(settings, self.replica, self.runtime.etcd)
        self.runtime.settings = settings
        self._schedule()
        self.runtime.service_metrics.config_reloads.labels(result="ok").inc()
        log.info("configuration reloaded")

    # -- main loop -------------------------------------------------------------------------
    def run(self, install_signals: bool = True) -> int:
        """Run until asked to stop; returns the process exit code (0 on a clean stop).

        The HTTP endpoints serve from the start (not ready while the store is awaited); a
        store that refuses, or stays unreachable for ``service.startup_timeout_seconds``,
        raises ConfigError (exit 3).
        """
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_stop)
            signal.signal(signal.SIGINT, self._on_stop)
            signal.signal(signal.SIGHUP, self._on_hup)
        self._http.start()
        log.info("etcdguard serve: replica %s, listening on http://%s", self.replica, self._http.address)
        next_election = 0.0
        try:
            self._await_store()
            if self._stop_requested:
                return 0
            self._schedule()
            self._scheduler.start()
            self._ready = True
            while not self._stop_requested:
                now = time.monotonic()
                self._last_loop = now
                if self._reload_requested:
                    self._reload()
                if now >= next_election:
                    self.runtime.elector.tick()
                    next_election = now + max(1.0, self.runtime.settings.service.lease_ttl_seconds / 3)
                self.runtime.service_metrics.heartbeat(self.runtime.elector.is_leader())
                time.sleep(LOOP_INTERVAL)
        finally:
            self._shutdown()
        return 0

    def _await_store(self) -> None:
        """The store must answer before any job is scheduled (retrying while it is unreachable)."""
        store = self.dependencies["store"]

        def waiting(error: str) -> None:
            self._last_loop = time.monotonic()  # alive, only waiting
            store.up, store.error = False, error
            self.runtime.service_metrics.dependency("store", False)

        settings = self.runtime.settings
        wait_for_store(settings, settings.service.startup_timeout_seconds,
                       stop=lambda: self._stop_requested, on_retry=waiting)
        store.up, store.error = True, None
        self.runtime.service_metrics.dependency("store", True)

    def _shutdown(self) -> None:
        log.info("stopping: no new jobs; cancelling work in flight")
        self._ready = False
        self.runtime.cancel.set()
        if self._scheduler.running:
            stopper = threading.Thread(target=self._scheduler.shutdown, kwargs={"wait": True}, daemon=True)
            stopper.start()
            stopper.join(SHUTDOWN_GRACE_SECONDS)
            if stopper.is_alive():
                log.error("jobs did not stop within %.0fs; exiting anyway", SHUTDOWN_GRACE_SECONDS)
        self.runtime.elector.resign()
        self.runtime.close()
        self._http.stop()
        log.info("stopped")
