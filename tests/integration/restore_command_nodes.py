"""etcd members run by shell commands (the ``command`` run mode), one "node" directory each."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from etcdguard.backup.keys import generate_keys
from etcdguard.etcd.binaries import EtcdInstallation
from etcdguard.etcd.client import MemberClient
from tests.integration.restore_fixtures import Setup, cli_env, wait_serving, write_config
from tests.integration.snapshot_fixtures import CLI
from tests.support.kubeadm import free_low_ports


@dataclass
class CmdNode:
    """One member: its dir, ports, and the start/stop commands etcdguard runs for it."""

    name: str
    base: Path
    install: EtcdInstallation
    client_port: int
    peer_port: int
    initial_cluster: str = ""

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def pidfile(self) -> Path:
        return self.base / "etcd.pid"

    def start_command(self) -> str:
        args = [str(self.install.etcd), "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.client_url, "--advertise-client-urls", self.client_url,
                "--listen-peer-urls", self.peer_url, "--initial-advertise-peer-urls", self.peer_url,
                "--initial-cluster", self.initial_cluster, "--initial-cluster-token", "original",
                "--initial-cluster-state", "new", "--heartbeat-interval", "50", "--election-timeout", "500",
                "--log-level", "warn"]
        return f"{shlex.join(args)} >>{self.base / 'etcd.log'} 2>&1 </dev/null & echo $! > {self.pidfile}"

    def stop_command(self) -> str:
        pid = self.pidfile
        return (f"[ -f {pid} ] || exit 0; p=$(cat {pid}); kill $p 2>/dev/null; for i in $(seq 1 300); do "
                f"kill -0 $p 2>/dev/null || break; grep -q '^State:.*Z' /proc/$p/status 2>/dev/null && break; "
                "sleep 0.1; done")

    def start(self) -> None:
        subprocess.run(["/bin/sh", "-c", self.start_command()], check=True, timeout=30)

    def kill(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(self.pidfile.read_text()), signal.SIGKILL)

    def client(self, timeout: float = 5) -> MemberClient:
        return MemberClient(self.client_url, timeout=timeout)

    def restore_config(self) -> dict[str, Any]:
        return {"run_mode": "command", "start_etcd": self.start_command(), "stop_etcd": self.stop_command(),
                "member": {"name": self.name, "data_dir": str(self.data_dir), "peer_urls": [self.peer_url],
                           "client_urls": [self.client_url], "initial_cluster": self.initial_cluster}}


def make_nodes(base: Path, install: EtcdInstallation, count: int, prefix: str = "m") -> list[CmdNode]:
    ports = free_low_ports(2 * count)
    nodes = [CmdNode(f"{prefix}{i}", base / f"{prefix}{i}", install, ports[2 * i], ports[2 * i + 1])
             for i in range(count)]
    cluster = ",".join(f"{n.name}={n.peer_url}" for n in nodes)
    for n in nodes:
        n.base.mkdir(parents=True, exist_ok=True)
        n.initial_cluster = cluster
    return nodes


@pytest.fixture
def cmd_nodes(tmp_path: Path) -> Iterator[list[CmdNode]]:
    made: list[CmdNode] = []
    yield made
    for n in made:
        n.kill()


def node_setups(tmp_path: Path, nodes: list[CmdNode], endpoints: list[str], cluster: str) -> dict[str, Setup]:
    keys = generate_keys(tmp_path / "keys")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    out = {}
    for n in nodes:
        config = write_config(n.base / "etcdguard.yaml", store=str(tmp_path / "store"), seaweed=None, keys=keys,
                              cluster=cluster, state_dir=n.base / "state", etcd={"endpoints": endpoints},
                              restore=n.restore_config())
        out[n.name] = Setup(config, keys, CLI(home, cli_env(None)), n.base / "state")
    return out


def start_all(nodes: list[CmdNode]) -> None:
    for n in nodes:
        n.start()
    for n in nodes:
        wait_serving(n.client_url, None).close()
