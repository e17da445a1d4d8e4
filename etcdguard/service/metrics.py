"""Metrics of the service itself: job runs, loop liveness, leadership."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge


class ServiceMetrics:
    """Service metric families, registered on the shared registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.job_runs = Counter("etcdguard_job_runs_total", "Scheduled job runs by job and result.",
                                ("job", "result"), registry=registry)
        self.loop_heartbeat = Gauge("etcdguard_service_loop_last_run_timestamp_seconds",
                                    "When the service's main loop last ran (liveness).", registry=registry)
        self.is_leader = Gauge("etcdguard_service_is_leader",
                               "1 when this replica is the elected leader that takes scheduled backups.",
                               registry=registry)
        self.dependency_up = Gauge("etcdguard_dependency_up",
                                   "1 when the last probe found the dependency (store, etcd) usable, else 0.",
                                   ("dependency",), registry=registry)
        self.config_reloads = Counter("etcdguard_config_reloads_total", "SIGHUP config reloads by result.",
                                      ("result",), registry=registry)

    def job_run(self, job: str, result: str) -> None:
        """Count one run of ``job``."""
        self.job_runs.labels(job=job, result=result).inc()

    def dependency(self, name: str, up: bool) -> None:
        """Record the last probe of ``name`` (``store`` or ``etcd``)."""
        self.dependency_up.labels(dependency=name).set(1 if up else 0)

    def heartbeat(self, leader: bool) -> None:
        """The loop ran now."""
        self.loop_heartbeat.set(time.time())
        self.is_leader.set(1 if leader else 0)
