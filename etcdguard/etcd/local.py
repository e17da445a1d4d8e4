"""A throwaway single-member etcd process on loopback ports (demo, tests, process sandbox)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from etcdguard.errors import EtcdGuardError, SandboxUnavailableError
from etcdguard.etcd.binaries import EtcdInstallation
from etcdguard.etcd.client import MemberClient


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalEtcd:
    """One etcd process in ``data_dir`` listening on 127.0.0.1 only; stopped on exit."""

    def __init__(self, install: EtcdInstallation, data_dir: Path, *, name: str = "etcdguard-local",
                 log_path: Path | None = None, extra_args: list[str] | None = None) -> None:
        self.install = install
        self.data_dir = data_dir
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.log_path = log_path or data_dir.parent / f"{name}.log"
        self.extra_args = list(extra_args or [])
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        """The client URL."""
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        """The peer URL."""
        return f"http://127.0.0.1:{self.peer_port}"

    def command(self) -> list[str]:
        """The etcd command line."""
        return [
            str(self.install.etcd), "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", f"{self.name}={self.peer_url}", "--log-level", "warn",
            *self.extra_args,
        ]

    def start(self, timeout: float = 30.0) -> None:
        """Start etcd and wait until it serves linearizable reads."""
        with self.log_path.open("ab") as log:
            try:
                self.process = subprocess.Popen(self.command(), stdout=log, stderr=log,
                                                start_new_session=True)
            except OSError as exc:
                raise SandboxUnavailableError(f"cannot start {self.install.etcd}: {exc.strerror}") from None
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float) -> None:
        """Poll until the member has a leader and answers a linearizable read."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise SandboxUnavailableError(f"etcd exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with MemberClient(self.endpoint, timeout=1.0) as client:
                    if client.status().leader:
                        client.get(b"etcdguard-ready")
                        return
            except EtcdGuardError:
                pass
            time.sleep(0.1)
        self.stop()
        raise SandboxUnavailableError(f"etcd did not become ready in {timeout:g}s: {self.log_tail()}")

    def log_tail(self, lines: int = 5) -> str:
        """Last lines of the etcd log, joined on one line."""
        try:
            text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return " | ".join(text)

    def stop(self) -> None:
        """Terminate etcd (SIGTERM, then SIGKILL)."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        except ProcessLookupError:
            pass

    def __enter__(self) -> LocalEtcd:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
