"""Shared pieces of the restore tests: a kubeadm node run by the kubelet stand-in, keys, a store,
the etcdguard CLI with a config file, and reading what a restored member holds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from etcdguard.backup.keys import GeneratedKeys
from etcdguard.errors import EtcdGuardError
from etcdguard.etcd.client import MemberClient, TLSFiles
from etcdguard.etcd.errors import UnhealthyClusterError
from tests.integration.snapshot_fixtures import CLI
from tests.support.etcd_cluster import TEST_ETCD_DIRS, installation
from tests.support.kubeadm import KubeadmNode, free_low_ports, make_kubeadm_node
from tests.support.kubelet import Kubelet
from tests.support.seaweed import SeaweedS3

REPO = Path(__file__).resolve().parents[2]


def s3_env(seaweed: SeaweedS3) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": seaweed.access_key, "AWS_SECRET_ACCESS_KEY": seaweed.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class Setup:
    """A store, keys and a config file for one test."""

    config: Path
    keys: GeneratedKeys
    cli: CLI
    state_dir: Path

    def run(self, *args: str, timeout: float = 300, **kw: Any) -> Any:
        return self.cli("--config", str(self.config), *args, timeout=timeout, **kw)

    def start(self, *args: str) -> subprocess.Popen[str]:
        """The CLI as a background process (stdout and stderr piped), for runs on several nodes at once."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDGUARD_", "AWS_"))}
        env.update({"HOME": str(self.cli.home), "COLUMNS": "200", **self.cli.extra_env})
        exe = shutil.which("etcdguard")
        base = [exe] if exe else [sys.executable, "-m", "etcdguard.cli.main"]
        return subprocess.Popen([*base, "--config", str(self.config), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)


def write_config(path: Path, *, store: str, seaweed: SeaweedS3 | None, keys: GeneratedKeys, cluster: str,
                 state_dir: Path, etcd: dict[str, Any] | None = None, restore: dict[str, Any] | None = None) -> Path:
    data: dict[str, Any] = {
        "store": store,
        "backup": {"cluster_name": cluster},
        "encryption": {"recipients": [keys.recipient_text], "identity_file": str(keys.identity)},
        "signing": {"key_file": str(keys.signing_key), "public_keys": [str(keys.signing_pub)]},
        "verify": {"etcd_path": [str(d) for d in TEST_ETCD_DIRS]},
        "restore": {"state_dir": str(state_dir), "stop_timeout": 60, "start_timeout": 90, **(restore or {})},
    }
    if seaweed is not None:
        data["store"] = {"type": "s3", "bucket": store, "endpoint_url": seaweed.endpoint_url,
                         "addressing_style": "path"}
    if etcd:
        data["etcd"] = etcd
    path.write_text(yaml.safe_dump(data))
    return path


def cli_env(seaweed: SeaweedS3 | None) -> dict[str, str]:
    env = {"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "")}
    if seaweed is not None:
        env.update(s3_env(seaweed))
    return env


def node_tls(node: KubeadmNode) -> TLSFiles:
    ca, cert, key = node.etcd_client_tls
    return TLSFiles(cacert=ca, cert=cert, key=key)


def wait_serving(endpoint: str, tls: TLSFiles | None, timeout: float = 60.0) -> MemberClient:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            client = MemberClient(endpoint, tls=tls, timeout=2)
            if client.status().leader:
                client.get(b"/ready")
                return client
            client.close()
        except EtcdGuardError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise AssertionError(f"{endpoint} not serving in {timeout}s: {last}")


@contextmanager
def kubeadm_node(root: Path, version: str = "3.5.16", name: str = "cp1", *, wal_dir: bool = False,
                 **kubelet: Any) -> Iterator[tuple[KubeadmNode, Kubelet]]:
    """A single-node kubeadm control plane (etcd + apiserver stand-in) run by the kubelet stand-in
    (``kubelet``: its options, e.g. ``crictl_bin``)."""
    install = installation(version)
    assert install is not None
    client, peer, metrics, api = free_low_ports(4)
    node = make_kubeadm_node(root, name=name, client_port=client, peer_port=peer, metrics_port=metrics,
                             apiserver_port=api, etcd_command=[str(install.etcd)],
                             apiserver_command=[sys.executable, "-m", "tests.support.apiserver"],
                             etcd_image=f"registry.k8s.io/etcd:{version}-0", wal_dir=wal_dir)
    with repo_on_pythonpath(), Kubelet(node.manifests_dir, root / "kubelet-logs", **kubelet) as running:
        wait_serving(node.etcd_endpoint, node_tls(node)).close()
        yield node, running


@contextmanager
def kubeadm_cluster(root: Path, count: int, version: str = "3.5.16",
                    **kubelet: Any) -> Iterator[list[tuple[KubeadmNode, Kubelet]]]:
    """Control-plane nodes as ``kubeadm init`` and ``kubeadm join --control-plane`` make them: shared CAs,
    each etcd.yaml listing the members up to itself (``--initial-cluster-state=existing`` after the
    first), each member added with MemberAdd before its kubelet stand-in starts it."""
    install = installation(version)
    assert install is not None
    ports = free_low_ports(4 * count)
    made: list[tuple[KubeadmNode, Kubelet]] = []
    with repo_on_pythonpath(), ExitStack() as stack:
        for i in range(count):
            client, peer, metrics, api = ports[4 * i:4 * i + 4]
            name = f"cp{i + 1}"
            cluster = ",".join([*(f"{n.name}={n.peer_url}" for n, _ in made), f"{name}=https://127.0.0.1:{peer}"])
            node = make_kubeadm_node(root / name, name=name, client_port=client, peer_port=peer,
                                     metrics_port=metrics, apiserver_port=api, etcd_command=[str(install.etcd)],
                                     apiserver_command=[sys.executable, "-m", "tests.support.apiserver"],
                                     etcd_image=f"registry.k8s.io/etcd:{version}-0",
                                     share_cas_with=made[0][0] if made else None, initial_cluster=cluster,
                                     initial_cluster_state="existing" if made else "new")
            if made:  # as kubeadm join does, retried until the newest member has been up 5s (strict reconfig)
                deadline = time.monotonic() + 60
                with wait_serving(made[0][0].etcd_endpoint, node_tls(made[0][0])) as c:
                    while True:
                        try:
                            c.member_add([node.peer_url])
                            break
                        except UnhealthyClusterError:
                            assert time.monotonic() < deadline, "MemberAdd refused for 60s"
                            time.sleep(0.3)
            running = stack.enter_context(Kubelet(node.manifests_dir, root / name / "kubelet-logs", **kubelet))
            wait_serving(node.etcd_endpoint, node_tls(node)).close()
            made.append((node, running))
        yield made


@contextmanager
def repo_on_pythonpath() -> Iterator[None]:
    """The apiserver stand-in the kubelet stand-in runs is a module of this repo."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(REPO)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def destroy_db(node: KubeadmNode, kubelet: Kubelet, aside: Path) -> None:
    """The disaster: etcd dies and its db is overwritten with zeros (etcd crash-loops under the kubelet)."""
    kubelet.crash("etcd.yaml")
    (node.manifests_dir / "etcd.yaml").rename(aside)
    deadline = time.monotonic() + 30
    while kubelet.running("etcd.yaml") and time.monotonic() < deadline:
        time.sleep(0.1)
    (node.etcd_data_dir / "member" / "snap" / "db").write_bytes(b"\0" * 4096)
    aside.rename(node.manifests_dir / "etcd.yaml")


def keys_with_prefix(client: MemberClient, prefix: bytes) -> list[bytes]:
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    return list(client.keys(prefix, end, 0))
