"""Run real etcd clusters (any installed version, 1..N members, optional TLS) for tests.

Everything listens on 127.0.0.1 with free ports below the kernel's ephemeral range, lives in a temp
dir, and is killed on close.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from etcdguard.etcd.binaries import EtcdInstallation, EtcdVersion, find_installations
from etcdguard.etcd.client import MemberClient, TLSFiles
from etcdguard.etcd.tools import free_port
from tests.support.tls import TLSBundle

# Where the test setup script puts etcd releases that are not on PATH.
TEST_ETCD_DIRS = [
    Path(p) for p in os.environ.get(
        "ETCDGUARD_TEST_ETCD_DIRS", "/opt/etcdguard-test/etcd-trixie/usr/bin"
    ).split(os.pathsep) if p
]


def installations() -> list[EtcdInstallation]:
    """Every etcd version the tests can use, newest first."""
    return find_installations(TEST_ETCD_DIRS)


def installation(version: str) -> EtcdInstallation | None:
    """The installation of exactly ``version`` (e.g. '3.4.23'), or None."""
    want = EtcdVersion.parse(version)
    return next((i for i in installations() if i.version == want), None)


@dataclass
class Member:
    """One etcd member process."""

    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    scheme: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    stopped: bool = False

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


@dataclass
class EtcdCluster:
    """A running etcd cluster started by the tests."""

    install: EtcdInstallation
    base_dir: Path
    members: list[Member]
    tls: TLSBundle | None = None
    extra_args: list[str] = field(default_factory=list)
    token: str = "etcdguard-test"

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    @property
    def tls_files(self) -> TLSFiles | None:
        if self.tls is None:
            return None
        return TLSFiles(cacert=self.tls.ca, cert=self.tls.client_cert, key=self.tls.client_key)

    def client(self, index: int = 0, timeout: float = 5.0) -> MemberClient:
        return MemberClient(self.members[index].client_url, tls=self.tls_files, timeout=timeout)

    def _args(self, m: Member, initial: str, state: str) -> list[str]:
        args = [
            str(self.install.etcd), "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", m.peer_url, "--initial-advertise-peer-urls", m.peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", state,
            "--initial-cluster-token", self.token, "--log-level", "warn",
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ]
        if self.tls is not None:
            args += ["--cert-file", str(self.tls.server_cert), "--key-file", str(self.tls.server_key),
                     "--trusted-ca-file", str(self.tls.ca), "--client-cert-auth"]
        return args + self.extra_args

    def _spawn(self, m: Member, initial: str, state: str) -> None:
        m.log_path = self.base_dir / f"{m.name}.log"
        log = m.log_path.open("ab")
        m.process = subprocess.Popen(self._args(m, initial, state), stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()

    def start(self) -> None:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        for m in self.members:
            self._spawn(m, initial, "new")
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 30.0, members: list[Member] | None = None) -> None:
        deadline = time.monotonic() + timeout
        pending = list(members or [m for m in self.members if not m.stopped])
        while pending and time.monotonic() < deadline:
            m = pending[0]
            if m.process is not None and m.process.poll() is not None:
                raise RuntimeError(f"etcd {m.name} exited: {self.log_tail(m)}")
            try:
                with MemberClient(m.client_url, tls=self.tls_files, timeout=1.0) as c:
                    st = c.status()
                    if st.leader:
                        c.get(b"health")  # linearizable read: the member is serving
                        pending.pop(0)
                        continue
            except Exception:
                pass
            time.sleep(0.1)
        if pending:
            raise RuntimeError(f"etcd members not healthy in {timeout}s: {[m.name for m in pending]}; "
                               f"{self.log_tail(pending[0])}")

    def log_tail(self, m: Member, lines: int = 15) -> str:
        if m.log_path is None or not m.log_path.exists():
            return ""
        return "\n".join(m.log_path.read_text(errors="replace").splitlines()[-lines:])

    def pause(self, index: int) -> None:
        """SIGSTOP one member (it stays 'up' to the OS but stops answering)."""
        proc = self.members[index].process
        assert proc is not None
        os.kill(proc.pid, signal.SIGSTOP)

    def resume(self, index: int) -> None:
        proc = self.members[index].process
        assert proc is not None
        os.kill(proc.pid, signal.SIGCONT)

    def kill(self, index: int) -> None:
        m = self.members[index]
        if m.process is not None and m.process.poll() is None:
            os.kill(m.process.pid, signal.SIGCONT)
            m.process.kill()
            m.process.wait(10)
        m.stopped = True

    def restart(self, index: int) -> None:
        m = self.members[index]
        self.kill(index)
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        self._spawn(m, initial, "existing")
        m.stopped = False

    def add_learner(self, name: str | None = None) -> Member:
        """MemberAdd a learner and start its process (etcd >= 3.4)."""
        m = Member(name or f"m{len(self.members)}", free_port(), free_port(),
                   self.base_dir / (name or f"m{len(self.members)}"), "https" if self.tls else "http")
        with self.client(0) as c:
            c.member_add([m.peer_url], learner=True)
        self.members.append(m)
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        self._spawn(m, initial, "existing")
        return m

    def close(self) -> None:
        for m in self.members:
            if m.process is not None and m.process.poll() is None:
                try:
                    os.kill(m.process.pid, signal.SIGCONT)
                    m.process.kill()
                    m.process.wait(10)
                except ProcessLookupError:
                    pass


@contextmanager
def etcd_cluster(base_dir: Path, version: str | None = None, size: int = 1, tls: TLSBundle | None = None,
                 extra_args: list[str] | None = None) -> Iterator[EtcdCluster]:
    """Start a cluster of ``size`` members of etcd ``version`` (newest installed if None)."""
    found = installations()
    install = installation(version) if version else (found[0] if found else None)
    if install is None:
        raise RuntimeError(f"etcd {version or '(any)'} is not installed; run scripts/install-test-deps.sh")
    base_dir.mkdir(parents=True, exist_ok=True)
    members = [Member(f"m{i}", free_port(), free_port(), base_dir / f"m{i}", "https" if tls else "http")
               for i in range(size)]
    cluster = EtcdCluster(install, base_dir, members, tls, list(extra_args or []))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
