"""Helpers for the member workflow tests: run the real CLI, start a member from its env file.

The new member is started the way an operator would: its etcd reads ETCD_NAME,
ETCD_INITIAL_CLUSTER, ETCD_INITIAL_CLUSTER_STATE and ETCD_INITIAL_ADVERTISE_PEER_URLS from the
environment file etcdguard wrote, and only its own addresses and data dir as flags.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from etcdguard.etcd.client import MemberClient, MemberInfo
from etcdguard.etcd.tools import child_env, free_port
from tests.support.etcd_cluster import EtcdCluster, Member

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from etcdguard.cli.main import run; run()"]


def cli_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDGUARD_", "ETCD_", "ETCDCTL_"))}
    return {**env, "PYTHONPATH": str(REPO), "COLUMNS": "200", "ETCDGUARD_REQUIRE_ALL": "0"}


def etcdguard(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the etcdguard CLI to the end."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=cli_env(), cwd=REPO)


@dataclass
class Running:
    """An etcdguard command running in the background, its stderr read line by line."""

    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    stdout: str = ""
    reader: threading.Thread | None = None

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                seen += 1
                if predicate(line):
                    return line
            if self.proc.poll() is not None and seen >= len(self.lines):
                raise AssertionError(f"etcdguard exited {self.proc.returncode} first: {''.join(self.lines)[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no matching line in {timeout}s: {''.join(self.lines)[-3000:]}")

    def finish(self, timeout: float = 180) -> int:
        """Wait for the command to end; its stdout and every stderr line are then in ``output``."""
        assert self.proc.stdout is not None
        self.stdout += self.proc.stdout.read()  # stderr belongs to the reader thread alone
        self.proc.wait(timeout)
        if self.reader is not None:
            self.reader.join(timeout)
        return self.proc.returncode

    @property
    def output(self) -> str:
        return self.stdout + "".join(self.lines)


@contextmanager
def etcdguard_background(*args: str) -> Iterator[Running]:
    """Start etcdguard; stderr lines are collected as they come. Killed (SIGKILL) if still running at exit."""
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(), cwd=REPO, start_new_session=True)
    running = Running(proc)

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            running.lines.append(line)

    reader = threading.Thread(target=pump, daemon=True)
    running.reader = reader
    reader.start()
    try:
        yield running
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        reader.join(10)


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines (the format systemd's EnvironmentFile and docker --env-file read)."""
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def wait_for_file(path: Path, running: Running | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if running is not None and running.proc.poll() is not None:
            raise AssertionError(f"etcdguard exited {running.proc.returncode}: {running.output[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} not written in {timeout}s")
        time.sleep(0.05)


def start_from_env_file(cluster: EtcdCluster, env_file: Path, *, peer_url: str | None = None,
                        data_dir: Path | None = None) -> Member:
    """Start the new member from ``env_file``.

    ``peer_url``: the node's real peer URL when etcdguard was given a wrong one; its etcd then
    finds its peer URL missing from the cluster and exits: the learner never starts.
    ``data_dir``: reuse a data dir (the removed member's: it then never joins either).
    """
    settings = read_env_file(env_file)
    if peer_url is not None:  # the node's real address, where etcdguard was given another one
        wrong = settings["ETCD_INITIAL_ADVERTISE_PEER_URLS"]
        settings["ETCD_INITIAL_ADVERTISE_PEER_URLS"] = peer_url
        settings["ETCD_INITIAL_CLUSTER"] = settings["ETCD_INITIAL_CLUSTER"].replace(wrong, peer_url)
    listen_peer = settings["ETCD_INITIAL_ADVERTISE_PEER_URLS"]
    name = settings["ETCD_NAME"]
    m = Member(name, free_port(), urlsplit(listen_peer).port or 2380,
               data_dir or cluster.base_dir / f"{name}-{time.monotonic_ns()}", "http")
    m.log_path = cluster.base_dir / f"{m.data_dir.name}-{time.monotonic_ns()}.log"
    args = [str(cluster.install.etcd), "--data-dir", str(m.data_dir),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", listen_peer, "--log-level", "warn",
            "--heartbeat-interval", "50", "--election-timeout", "500"]
    with m.log_path.open("ab") as log:
        m.process = subprocess.Popen(args, stdout=log, stderr=log, env=child_env(settings), start_new_session=True)
    cluster.members.append(m)
    return m


def new_peer_url() -> str:
    """A peer URL on a free port below the ephemeral range (nothing listens there yet)."""
    return f"http://127.0.0.1:{free_port()}"


def live_endpoints(cluster: EtcdCluster) -> str:
    """Client URLs of the members still running."""
    return ",".join(m.client_url for m in cluster.members if m.process is not None and m.process.poll() is None
                    and not m.stopped)


def member_list(cluster: EtcdCluster) -> list[MemberInfo]:
    for m in cluster.members:
        if m.process is None or m.process.poll() is not None or m.stopped:
            continue
        try:
            with MemberClient(m.client_url, timeout=3) as c:
                return c.member_list()
        except Exception:
            continue
    raise AssertionError("no member answered MemberList")


def voters(cluster: EtcdCluster) -> list[str]:
    return sorted(m.name for m in member_list(cluster) if not m.is_learner)


def drop_dead(cluster: EtcdCluster) -> None:
    """Forget members that are no longer in the cluster (and free their data dirs' disk space)."""
    ids = {m.name for m in member_list(cluster)}
    for m in cluster.members:
        if m.name not in ids:
            if m.process is not None and m.process.poll() is None:
                m.process.kill()
                m.process.wait(10)
            free_etcd_data(m.data_dir)
    cluster.members[:] = [m for m in cluster.members if m.name in ids]


def free_etcd_data(path: Path) -> None:
    """Remove every etcd ``member`` dir (its 64 MiB preallocated WAL files) below ``path``; logs stay."""
    for member_dir in [p for p in Path(path).rglob("member") if p.is_dir() and (p / "wal").exists()]:
        shutil.rmtree(member_dir, ignore_errors=True)
