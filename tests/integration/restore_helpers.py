"""Restore a plain snapshot with etcd's own tools and serve it, to check what a backup holds."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from etcdguard.etcd.binaries import EtcdInstallation
from etcdguard.etcd.client import MemberClient
from etcdguard.etcd.local import LocalEtcd
from etcdguard.etcd.tools import SnapshotTool, restore


@contextmanager
def served_snapshot(install: EtcdInstallation, snapshot: Path, workdir: Path) -> Iterator[MemberClient]:
    """Restore ``snapshot`` with the installation's own tool (its hash check on), start etcd on it,
    yield a client."""
    workdir.mkdir(parents=True, exist_ok=True)
    tool = SnapshotTool.of(install)
    etcd = LocalEtcd(install, workdir / "restored", name="restored", log_path=workdir / "restored.log",
                     before_start=lambda e: restore(tool, e.restore_spec(snapshot)))
    with etcd, MemberClient(etcd.endpoint, timeout=10) as client:
        yield client
