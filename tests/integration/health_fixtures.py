"""Fixtures and helpers for the health integration tests (real etcd clusters, the real CLI)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from etcdguard.config import EtcdConfig, MonitorConfig
from etcdguard.etcd.cluster import ClusterHealth, probe_cluster
from etcdguard.etcd.connect import SourceCandidate, snapshot_sources
from etcdguard.etcd.connection import open_connection
from tests.support.etcd_cluster import EtcdCluster, etcd_cluster, installation
from tests.support.require import missing

PRIMARY = "3.5.16"
OLD = "3.4.23"
TIMEOUT = 2.0  # probe timeout used by these tests, seconds


def need(version: str) -> None:
    """Skip unless etcd ``version`` is installed."""
    if installation(version) is None:
        missing(f"etcd {version} is not installed (scripts/install-test-deps.sh)")


def etcd_config(cluster: EtcdCluster, extra: list[str] | None = None) -> EtcdConfig:
    """EtcdConfig for ``cluster`` (plus ``extra`` endpoints first), TLS files included."""
    data: dict[str, object] = {"endpoints": [*(extra or []), *cluster.endpoints]}
    if cluster.tls is not None:
        data.update(cacert=cluster.tls.ca, cert=cluster.tls.client_cert, key=cluster.tls.client_key)
    return EtcdConfig.model_validate(data)


def probe(cluster: EtcdCluster, extra: list[str] | None = None, **monitor: object) -> ClusterHealth:
    """probe_cluster with the test timeout."""
    with open_connection(etcd_config(cluster, extra)) as conn:
        return probe_cluster(conn, MonitorConfig.model_validate(monitor), timeout=TIMEOUT)


def sources(cluster: EtcdCluster) -> list[SourceCandidate]:
    """The snapshot sources the backup pipeline would pick, best first."""
    with open_connection(etcd_config(cluster), timeout=TIMEOUT) as conn:
        return snapshot_sources(conn)


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the installed ``etcdguard`` console script (or the same entry point through python)."""
    exe = shutil.which("etcdguard")
    cmd = [exe] if exe else [sys.executable, "-c", "from etcdguard.cli.main import run; run()"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "COLUMNS": "200"})


def cli_endpoint_args(cluster: EtcdCluster, extra: list[str] | None = None) -> list[str]:
    """``--endpoints ... --timeout ...`` (and TLS flags) for ``cluster``."""
    args = ["--endpoints", ",".join([*(extra or []), *cluster.endpoints]), "--timeout", str(TIMEOUT)]
    if cluster.tls is not None:
        args += ["--cacert", str(cluster.tls.ca), "--cert", str(cluster.tls.client_cert),
                 "--key", str(cluster.tls.client_key)]
    return args


def wait_for(predicate: Callable[[], ClusterHealth | None], timeout: float = 15.0) -> ClusterHealth:
    """Probe until ``predicate`` returns a ClusterHealth (not None); bounded."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.3)


@contextmanager
def paused(cluster: EtcdCluster, *indexes: int) -> Iterator[None]:
    """SIGSTOP members for the duration of the block; always SIGCONT and wait for recovery."""
    done: list[int] = []
    try:
        for i in indexes:
            cluster.pause(i)
            done.append(i)
        yield
    finally:
        for i in done:
            cluster.resume(i)
        cluster.wait_healthy(timeout=30)


def follower_indexes(cluster: EtcdCluster) -> list[int]:
    """Indexes (into cluster.members) of the members that are not the leader right now."""
    health = probe(cluster)
    leader = health.leader
    assert leader is not None, health.to_dict()
    return [i for i, m in enumerate(cluster.members) if m.client_url != leader.endpoint]


def _start(base: Path, version: str, size: int, extra_args: list[str] | None = None) -> Iterator[EtcdCluster]:
    need(version)
    with etcd_cluster(base, version, size, extra_args=extra_args) as cluster:
        yield cluster


@pytest.fixture(scope="module", name="cluster3")
def cluster3_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A 3-member etcd 3.5.16 cluster shared by a module (tests leave it healthy)."""
    yield from _start(tmp_path_factory.mktemp("health3"), PRIMARY, 3)


@pytest.fixture(scope="module", params=[PRIMARY, OLD], name="cluster3_any")
def cluster3_any_fixture(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """A 3-member cluster of each tested etcd version."""
    yield from _start(tmp_path_factory.mktemp(f"health3-{request.param}"), request.param, 3)
