"""A real etcd cluster whose members are Docker containers on their own network (own IPs, like nodes).

The image is built locally with ``docker import`` from this host's etcd binaries (no registry is
reachable; see :func:`etcdguard.verify.images.resolve_image`). The network is an ``--internal``
bridge with a free 172.31.x.0/24 subnet: the containers reach each other and this host reaches
them through the bridge, nothing reaches out. Every container and the network carry a label with
the owner's pid; leftovers of killed test runs are removed by the next one.

    with docker_etcd_cluster(tmp_path, "3.5.16", size=3) as cluster:
        cluster.kill("m2")
        cluster.run_member("m3", cluster.ip(14), env_file=path)   # docker run --env-file
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etcdguard.etcd.client import MemberClient
from etcdguard.verify.images import resolve_image
from tests.support.etcd_cluster import TEST_ETCD_DIRS

LABEL = "etcdguard.test-cluster"
DATA_DIR = "/var/lib/etcd/data"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_leftovers(client: Any) -> None:
    """Containers and networks of test clusters whose owner process is gone."""
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        if not _alive(int(container.labels.get(LABEL, "0") or 0)):
            container.remove(force=True)
    for network in client.networks.list(filters={"label": LABEL}):
        if not _alive(int((network.attrs.get("Labels") or {}).get(LABEL, "0") or 0)):
            with contextlib.suppress(Exception):
                network.remove()


@dataclass
class DockerMember:
    """One etcd container."""

    name: str
    ip: str
    container_name: str

    @property
    def client_url(self) -> str:
        return f"http://{self.ip}:2379"

    @property
    def peer_url(self) -> str:
        return f"http://{self.ip}:2380"


@dataclass
class DockerEtcdCluster:
    """The running cluster: its image, network and members."""

    client: Any
    image: str
    network: Any
    subnet: ipaddress.IPv4Network
    run_id: str
    members: list[DockerMember] = field(default_factory=list)

    def ip(self, host: int) -> str:
        """The address ``host`` (e.g. 14) in the cluster's subnet."""
        return str(self.subnet.network_address + host)

    @property
    def endpoints(self) -> list[str]:
        return [m.client_url for m in self.members]

    def member(self, name: str) -> DockerMember:
        return next(m for m in self.members if m.name == name)

    def etcd_flags(self, m: DockerMember) -> list[str]:
        """The member's own flags (addresses, data dir); cluster settings come from flags or env."""
        return ["--data-dir", DATA_DIR, "--listen-client-urls", "http://0.0.0.0:2379",
                "--advertise-client-urls", m.client_url, "--listen-peer-urls", "http://0.0.0.0:2380",
                "--heartbeat-interval", "100", "--election-timeout", "1000", "--log-level", "warn"]

    def run_member(self, name: str, ip: str, *, env_file: Path | None = None,
                   cluster_flags: list[str] | None = None) -> DockerMember:
        """``docker run`` one member at ``ip`` (with ``--env-file``, as an operator would)."""
        m = DockerMember(name, ip, f"etcdguard-test-{self.run_id}-{name}")
        args = ["docker", "run", "-d", "--name", m.container_name, "--network", self.network.name, "--ip", ip,
                "--label", f"{LABEL}={os.getpid()}", "--memory", "512m"]
        if env_file is not None:
            args += ["--env-file", str(env_file)]
        args += [self.image, *self.etcd_flags(m), *(cluster_flags or [])]
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"docker run {name} failed: {done.stderr.strip()}")
        self.members.append(m)
        return m

    def start(self, size: int) -> None:
        planned = [DockerMember(f"m{i}", self.ip(11 + i), "") for i in range(size)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in planned)
        for m in planned:
            self.run_member(m.name, m.ip, cluster_flags=[
                "--name", m.name, "--initial-advertise-peer-urls", m.peer_url, "--initial-cluster", initial,
                "--initial-cluster-state", "new", "--initial-cluster-token", f"t-{self.run_id}"])
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for m in self.members:
            while True:
                try:
                    with MemberClient(m.client_url, timeout=1.0) as c:
                        if c.status().leader:
                            c.get(b"health")
                            break
                except Exception:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd container {m.name} not healthy in {timeout}s: {self.logs(m.name)}")
                time.sleep(0.2)

    def kill(self, name: str) -> None:
        """SIGKILL the member's container (it stays, stopped, until close)."""
        self.client.containers.get(self.member(name).container_name).kill()

    def logs(self, name: str, lines: int = 20) -> str:
        try:
            out = self.client.containers.get(self.member(name).container_name).logs(tail=lines)
            return str(out.decode(errors="replace"))
        except Exception as exc:
            return f"(no logs: {exc})"

    def close(self) -> None:
        for container in self.client.containers.list(all=True, filters={"label": LABEL}):
            if container.name.startswith(f"etcdguard-test-{self.run_id}-"):
                container.remove(force=True)
        with contextlib.suppress(Exception):
            self.network.remove()


def _free_subnet(client: Any) -> ipaddress.IPv4Network:
    used = []
    for network in client.networks.list():
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
            with contextlib.suppress(KeyError, ValueError):
                used.append(ipaddress.ip_network(config["Subnet"]))
    for third in random.sample(range(100, 250), 150):
        candidate = ipaddress.ip_network(f"172.31.{third}.0/24")
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise RuntimeError("no free 172.31.x.0/24 subnet for a test network")


@contextmanager
def docker_etcd_cluster(client: Any, version: str = "3.5.16", size: int = 3) -> Iterator[DockerEtcdCluster]:
    """Build (or reuse) the etcd image, create the network, start ``size`` members; remove all at exit."""
    import docker.types

    remove_leftovers(client)
    image = resolve_image(client, version, configured=None, pull=False, pull_timeout=1.0, etcd_path=TEST_ETCD_DIRS)
    run_id = os.urandom(3).hex()
    subnet = _free_subnet(client)
    ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=str(subnet))])
    network = client.networks.create(f"etcdguard-test-{run_id}", driver="bridge", internal=True, ipam=ipam,
                                     labels={LABEL: str(os.getpid())})
    cluster = DockerEtcdCluster(client, image.ref, network, subnet, run_id)
    try:
        cluster.start(size)
        yield cluster
    finally:
        cluster.close()
