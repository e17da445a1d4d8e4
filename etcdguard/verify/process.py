"""ProcessSandbox: the restored etcd runs as a local subprocess on loopback ports.

For hosts without Docker (the in-cluster CronJob pod). Everything lives in one private (0700)
work dir: the restored data, the etcd log and this run's TLS keys. etcd serves TLS with
client-cert auth (:mod:`etcdguard.verify.pki`) on ports below the kernel's ephemeral range, with
a minimal environment, in its own process group, and dies with the verifying process
(parent-death signal). Stop kills it and removes the dir, even on SIGINT/SIGTERM.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from etcdguard.etcd.local import LocalEtcd
from etcdguard.etcd.tools import TOOL_TIMEOUT, RestoreSpec, restore
from etcdguard.verify.hosttools import HostEtcd, host_snapshot_status, pick_host_etcd
from etcdguard.verify.pki import create_pki
from etcdguard.verify.sandbox import (
    FAST_ELECTION,
    SANDBOX_CLUSTER,
    SANDBOX_MEMBER,
    RunningEtcd,
    Sandbox,
    SandboxRestoreError,
    SnapshotStatus,
    quota_for,
)
from etcdguard.verify.workdirs import private_tempdir, remove_tree, sweep_stale_workdirs


class ProcessSandbox(Sandbox):
    """A local etcd subprocess restored from the snapshot (see the port's contract)."""

    kind = "process"

    def __init__(self, start_timeout: float = 60.0, etcd_path: Iterable[Path] = (),
                 workdir: Path | None = None) -> None:
        super().__init__(start_timeout)
        self.etcd_path = list(etcd_path)
        self.parent_dir = workdir
        self.workdir: Path | None = None
        self.etcd: LocalEtcd | None = None
        self._hosts: dict[str, HostEtcd] = {}

    def _host(self, etcd_version: str) -> HostEtcd:
        if etcd_version not in self._hosts:
            host = pick_host_etcd(etcd_version or None, self.etcd_path)
            host.tool  # noqa: B018 - raises without a restore tool
            self._hosts[etcd_version] = host
        return self._hosts[etcd_version]

    def check(self) -> None:
        """etcd binaries must exist on this host; work dirs of killed runs are removed."""
        sweep_stale_workdirs(self.parent_dir)
        self._host("")

    def prepare(self, etcd_version: str) -> None:
        """Find the etcd installation of (or nearest to) ``etcd_version``."""
        self._host(etcd_version)

    def snapshot_status(self, snapshot_path: Path, etcd_version: str) -> SnapshotStatus:
        """``snapshot status`` with the host tool of the nearest version."""
        return host_snapshot_status(self._host(etcd_version), snapshot_path)

    @property
    def pid(self) -> int | None:
        """The sandbox etcd's process id while it runs."""
        return self.etcd.pid if self.etcd is not None else None

    def start(self, snapshot_path: Path, etcd_version: str) -> RunningEtcd:
        """Restore into the private work dir and serve it over TLS on 127.0.0.1."""
        if self.etcd is not None:
            raise RuntimeError("sandbox already started")
        host = self._host(etcd_version)
        tool = host.tool
        self.workdir = private_tempdir("etcdguard-sandbox-", self.parent_dir)
        pki = create_pki(self.workdir)
        timings: dict[str, float] = {}

        def restore_data(etcd: LocalEtcd) -> None:
            began = time.monotonic()
            restore(tool, RestoreSpec(snapshot_path, etcd.data_dir, SANDBOX_MEMBER, {SANDBOX_MEMBER: [etcd.peer_url]},
                                      SANDBOX_CLUSTER, skip_hash_check=True),
                    timeout=max(self.start_timeout, TOOL_TIMEOUT), error=SandboxRestoreError)
            timings["restore"] = time.monotonic() - began

        self.etcd = LocalEtcd(
            host.install, self.workdir / "data", name=SANDBOX_MEMBER, cluster_token=SANDBOX_CLUSTER,
            log_path=self.workdir / "etcd.log", tls=pki.server, client_tls=pki.client,
            extra_args=["--quota-backend-bytes", str(quota_for(snapshot_path.stat().st_size)), *FAST_ELECTION],
            before_start=restore_data)
        began = time.monotonic()
        version = self.etcd.start(self.start_timeout, error=SandboxRestoreError)
        timings["start"] = time.monotonic() - began - timings.get("restore", 0.0)
        return RunningEtcd(endpoint=self.etcd.endpoint, version=version, exact=version == etcd_version,
                           sandbox=f"process:{host.install.etcd}", tls=pki.client, timings=timings)

    def stop(self) -> None:
        """Kill the etcd process group and remove the work dir."""
        try:
            if self.etcd is not None:
                self.etcd.kill()
        finally:
            self.etcd = None
            remove_tree(self.workdir)
            self.workdir = None
