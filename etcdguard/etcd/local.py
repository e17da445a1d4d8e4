"""Running etcd processes: a child that dies with its parent, waiting until it serves, and a
throwaway single member on loopback ports (demo, tests, the process sandbox, restore's checks).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from etcdguard.errors import EtcdGuardError, SandboxUnavailableError
from etcdguard.etcd.binaries import EtcdInstallation
from etcdguard.etcd.client import MemberClient, TLSFiles
from etcdguard.etcd.tools import RestoreSpec, child_env, free_port, tail

_PR_SET_PDEATHSIG = 1
_BIND_ATTEMPTS = 3


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: SIGKILL this child when the thread that started it dies (prctl)."""
    def preexec() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
    return preexec


class EtcdProcess:
    """One child process (etcd or a tool) in its own process group, with a minimal environment,
    killed by the kernel when its parent dies (parent-death signal)."""

    def __init__(self, command: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.command = list(command)
        self.log_path = log_path
        self.env = dict(env) if env is not None else child_env()
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """The process id while started."""
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Start the process (output appended to ``log_path``, created 0600)."""
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "ab") as log:
            try:
                self.process = subprocess.Popen(
                    self.command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=self.env,
                    cwd=self.cwd, start_new_session=True, preexec_fn=_die_with_parent(os.getpid()))
            except OSError as exc:
                raise SandboxUnavailableError(f"cannot start {self.command[0]}: {exc.strerror or exc}") from None

    def exited(self) -> str | None:
        """None while running (or not started); else the exit code and the log's last lines."""
        proc = self.process
        if proc is None or proc.poll() is None:
            return None
        return f"exit code {proc.returncode}: {self.log_tail()}"

    def log_tail(self, lines: int = 5) -> str:
        """The last lines of the log, on one line."""
        try:
            return tail(self.log_path.read_text(errors="replace"), lines)
        except OSError:
            return ""

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, SIGKILL after ``grace`` seconds; idempotent."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
            try:
                proc.wait(grace if grace > 0 else 10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        with contextlib.suppress(ProcessLookupError):  # anything it left in its group
            os.killpg(proc.pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL the process group at once."""
        self.stop(grace=0)


def wait_until_serving(endpoint: str, timeout: float, exited: Callable[[], str | None], *,
                       tls: TLSFiles | None = None,
                       error: type[EtcdGuardError] = SandboxUnavailableError) -> str:
    """Poll until ``endpoint`` has a leader and answers a linearizable read; returns its version.

    ``exited()`` returns None while the server may still come up, or why it never will; either
    that or the deadline raises ``error``.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        dead = exited()
        if dead is not None:
            raise error(f"etcd exited before serving: {dead}")
        try:
            with MemberClient(endpoint, tls=tls, timeout=2.0) as client:
                status = client.status()
                if status.leader:
                    client.get(b"/__etcdguard/ready")
                    return status.version
                last = "no leader yet"
        except EtcdGuardError as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            raise error(f"etcd did not serve within {timeout:g}s ({last})")
        time.sleep(0.1)


@dataclass(frozen=True)
class ServerTLS:
    """Server side TLS of a local etcd: its certificate (server and client auth, for the peer
    port too) and the CA whose client certificates it accepts (client-cert auth on)."""

    cert: Path
    key: Path
    ca: Path

    def args(self) -> list[str]:
        """etcd flags for TLS with client-cert auth on the client and the peer port."""
        return ["--cert-file", str(self.cert), "--key-file", str(self.key), "--trusted-ca-file", str(self.ca),
                "--client-cert-auth", "--peer-cert-file", str(self.cert), "--peer-key-file", str(self.key),
                "--peer-trusted-ca-file", str(self.ca), "--peer-client-cert-auth"]


class LocalEtcd:
    """One etcd member in ``data_dir`` listening on 127.0.0.1 only (ports below the ephemeral
    range); it dies with this process and is stopped on exit.

    ``client_tls`` is what a client uses to reach it (with ``tls``: https, client-cert auth).
    ``before_start(self)`` runs before each start attempt, after the ports are chosen (e.g. a
    ``snapshot restore`` built with :meth:`restore_spec`); when a port was taken meanwhile, the
    data dir is removed and the attempt repeated on new ports.
    """

    def __init__(self, install: EtcdInstallation, data_dir: Path, *, name: str = "etcdguard-local",
                 cluster_token: str = "etcdguard-local",  # noqa: S107 - a cluster token, no secret
                 log_path: Path | None = None,
                 extra_args: Sequence[str] = (), tls: ServerTLS | None = None,
                 client_tls: TLSFiles | None = None,
                 before_start: Callable[[LocalEtcd], None] | None = None) -> None:
        self.install = install
        self.data_dir = data_dir
        self.name = name
        self.token = cluster_token
        self.log_path = log_path or data_dir.parent / f"{name}.log"
        self.extra_args = list(extra_args)
        self.tls = tls
        self.client_tls = client_tls
        self.before_start = before_start
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc: EtcdProcess | None = None

    @property
    def scheme(self) -> str:
        """https with TLS, else http."""
        return "https" if self.tls else "http"

    @property
    def endpoint(self) -> str:
        """The client URL."""
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        """The peer URL."""
        return f"{self.scheme}://127.0.0.1:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        """The etcd process id while running."""
        return self.proc.pid if self.proc is not None else None

    def restore_spec(self, snapshot: Path, **options: object) -> RestoreSpec:
        """A :class:`RestoreSpec` that restores ``snapshot`` as this member (``options`` as in it)."""
        return RestoreSpec(snapshot=snapshot, data_dir=self.data_dir, name=self.name,
                           initial_cluster={self.name: [self.peer_url]}, token=self.token,
                           **options)  # type: ignore[arg-type]

    def command(self) -> list[str]:
        """The etcd command line."""
        return [
            str(self.install.etcd), "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", f"{self.name}={self.peer_url}", "--initial-cluster-token", self.token,
            "--log-level", "warn", *(self.tls.args() if self.tls else []), *self.extra_args,
        ]

    def start(self, timeout: float = 30.0, error: type[EtcdGuardError] = SandboxUnavailableError) -> str:
        """Start etcd and wait until it serves linearizable reads; returns its version."""
        for attempt in range(_BIND_ATTEMPTS):
            if attempt:
                self.client_port, self.peer_port = free_port(), free_port()
            if self.before_start is not None:
                self.before_start(self)
            self.proc = EtcdProcess(self.command(), log_path=self.log_path, cwd=self.data_dir.parent)
            self.proc.start()
            try:
                return wait_until_serving(self.endpoint, timeout, self.proc.exited, tls=self.client_tls,
                                          error=error)
            except EtcdGuardError:
                in_use = "address already in use" in self.proc.log_tail(20)
                self.stop()
                if not in_use or attempt + 1 == _BIND_ATTEMPTS:
                    raise
                if self.before_start is not None:
                    shutil.rmtree(self.data_dir, ignore_errors=True)
                with contextlib.suppress(OSError):
                    self.log_path.unlink()
        raise AssertionError("unreachable")

    def log_tail(self, lines: int = 5) -> str:
        """Last lines of the etcd log, joined on one line."""
        return self.proc.log_tail(lines) if self.proc is not None else ""

    def stop(self) -> None:
        """Terminate etcd (SIGTERM, then SIGKILL); idempotent."""
        if self.proc is not None:
            self.proc.stop()

    def kill(self) -> None:
        """SIGKILL etcd at once; idempotent."""
        if self.proc is not None:
            self.proc.kill()

    def __enter__(self) -> LocalEtcd:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
