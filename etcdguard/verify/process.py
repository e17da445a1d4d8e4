"""ProcessSandbox: the restored etcd runs as a local subprocess on free loopback ports.

For hosts without Docker (the in-cluster CronJob pod). Everything lives in one private (0700)
temp dir that is removed on stop, together with the process group, even on Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from etcdguard.errors import SandboxUnavailableError
from etcdguard.verify.hosttools import HostEtcd, host_snapshot_status, pick_host_etcd, run_tool
from etcdguard.verify.sandbox import (
    RestoreError,
    RunningEtcd,
    Sandbox,
    SnapshotStatus,
    etcd_command,
    private_tempdir,
    quota_for,
    remove_tree,
    restore_command,
    tail,
    wait_until_serving,
)

_BIND_ATTEMPTS = 3


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProcessSandbox(Sandbox):
    """A local etcd subprocess restored from the snapshot (see the port's contract)."""

    kind = "process"

    def __init__(self, start_timeout: float = 60.0, etcd_path: Iterable[Path] = (),
                 workdir: Path | None = None) -> None:
        super().__init__(start_timeout)
        self.etcd_path = list(etcd_path)
        self.parent_dir = workdir
        self.workdir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._hosts: dict[str, HostEtcd] = {}

    def _host(self, etcd_version: str) -> HostEtcd:
        if etcd_version not in self._hosts:
            self._hosts[etcd_version] = pick_host_etcd(etcd_version or None, self.etcd_path)
            self._hosts[etcd_version].snapshot_tool  # noqa: B018 - raises without a restore tool
        return self._hosts[etcd_version]

    def check(self) -> None:
        """etcd binaries must exist on this host."""
        self._host("")

    def prepare(self, etcd_version: str) -> None:
        """Find the etcd installation of (or nearest to) ``etcd_version``."""
        self._host(etcd_version)

    def snapshot_status(self, snapshot_path: Path, etcd_version: str) -> SnapshotStatus:
        """``snapshot status`` with the host tool of the nearest version."""
        return host_snapshot_status(self._host(etcd_version), snapshot_path)

    def start(self, snapshot_path: Path, etcd_version: str) -> RunningEtcd:
        """Restore into a private temp dir and start etcd on free 127.0.0.1 ports."""
        if self.process is not None:
            raise RuntimeError("sandbox already started")
        host = self._host(etcd_version)
        tool, use_etcdutl = host.snapshot_tool
        self.workdir = private_tempdir("etcdguard-sandbox-", self.parent_dir)
        timings: dict[str, float] = {}
        for attempt in range(_BIND_ATTEMPTS):
            client_port, peer_port = free_port(), free_port()
            peer_url = f"http://127.0.0.1:{peer_port}"
            endpoint = f"http://127.0.0.1:{client_port}"
            data_dir = self.workdir / f"data-{attempt}"
            began = time.monotonic()
            run_tool(restore_command(str(tool), str(snapshot_path), str(data_dir), peer_url, use_etcdutl,
                                     skip_hash_check=True),
                     timeout=max(self.start_timeout, 600.0), what="snapshot restore")
            os.chmod(data_dir, 0o700)
            timings["restore"] = time.monotonic() - began
            began = time.monotonic()
            log_path = self.workdir / "etcd.log"
            command = etcd_command(str(host.install.etcd), str(data_dir), endpoint, endpoint, peer_url,
                                   quota_for(snapshot_path.stat().st_size))
            with log_path.open("ab") as log:
                try:
                    self.process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                                    start_new_session=True, cwd=self.workdir)
                except OSError as exc:
                    raise SandboxUnavailableError(
                        f"cannot start {host.install.etcd}: {exc.strerror or exc}") from None
            try:
                version = wait_until_serving(endpoint, self.start_timeout, self._exited)
            except RestoreError:
                log_text = log_path.read_text(errors="replace")
                if "address already in use" in log_text and attempt + 1 < _BIND_ATTEMPTS:
                    self._kill()
                    remove_tree(data_dir)
                    log_path.unlink(missing_ok=True)
                    continue
                raise
            timings["start"] = time.monotonic() - began
            return RunningEtcd(endpoint=endpoint, version=version,
                               exact=version == etcd_version,
                               sandbox=f"process:{host.install.etcd}", timings=timings)
        raise RestoreError("could not bind free loopback ports for the restored etcd")

    def _exited(self) -> str | None:
        proc = self.process
        if proc is None or proc.poll() is None:
            return None
        log = self.workdir / "etcd.log" if self.workdir else None
        text = log.read_text(errors="replace") if log and log.exists() else ""
        return f"exit code {proc.returncode}: {tail(text)}"

    def _kill(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)

    def stop(self) -> None:
        """Kill the etcd process group and remove the temp dir."""
        try:
            self._kill()
        finally:
            remove_tree(self.workdir)
            self.workdir = None
