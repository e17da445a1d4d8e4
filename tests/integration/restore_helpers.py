"""Restore a plain snapshot with etcd's own tools and serve it, to check what a backup holds."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from etcdguard.etcd.binaries import EtcdInstallation
from etcdguard.etcd.client import MemberClient
from etcdguard.etcd.local import LocalEtcd


def restore_command(install: EtcdInstallation, snapshot: Path, etcd: LocalEtcd) -> tuple[list[str], dict[str, str]]:
    """``etcdutl snapshot restore`` (3.5+) or ``etcdctl snapshot restore`` (3.4) for ``etcd``."""
    tool = install.etcdutl or install.etcdctl
    assert tool is not None
    args = [str(tool), "snapshot", "restore", str(snapshot), "--data-dir", str(etcd.data_dir),
            "--name", etcd.name, "--initial-cluster", f"{etcd.name}={etcd.peer_url}",
            "--initial-advertise-peer-urls", etcd.peer_url]
    return args, {**os.environ, "ETCDCTL_API": "3"}


@contextmanager
def served_snapshot(install: EtcdInstallation, snapshot: Path, workdir: Path) -> Iterator[MemberClient]:
    """Restore ``snapshot`` with the installation's own tool, start etcd on it, yield a client."""
    workdir.mkdir(parents=True, exist_ok=True)
    etcd = LocalEtcd(install, workdir / "restored", name="restored", log_path=workdir / "restored.log")
    args, env = restore_command(install, snapshot, etcd)
    subprocess.run(args, check=True, capture_output=True, env=env, timeout=120)
    with etcd, MemberClient(etcd.endpoint, timeout=10) as client:
        yield client
