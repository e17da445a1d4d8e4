"""Pre-flight checks: everything that can refuse a restore runs before anything is changed.

Each check is named in the output. A failed check refuses the restore (exit 10) while the
cluster, its data and its manifests are still untouched. ``--force`` overrides only the checks
marked overridable (memory, the tool's minor version, an encryption-key verdict the exact reader
could not confirm); never disk space, the quota, encryption keys that current values use but the
apiserver lacks, or a bad backup (that fails earlier, in the fetch, with exit 6).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from etcdguard.etcd.binaries import EtcdVersion
from etcdguard.etcd.tools import SnapshotStatus, SnapshotTool
from etcdguard.restore.encryption import check_encryption_keys

DEFAULT_QUOTA_BYTES = 2 * 1024**3
WAL_HEADROOM = 128 * 1024**2


@dataclass(frozen=True)
class Check:
    """One named pre-flight check."""

    name: str
    ok: bool
    detail: str
    overridable: bool = True

    def line(self) -> str:
        """``ok    disk space  12 GiB free ...``."""
        return f"{'ok' if self.ok else 'FAILED':<6} {self.name:<18} {self.detail}"


def _gib(n: int) -> str:
    return f"{n / 1024**3:.2f} GiB" if n >= 1024**3 else f"{n / 1024**2:.1f} MiB"


def existing_parent(path: Path) -> Path:
    """The nearest existing directory at or above ``path``."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_disk(data_dir: Path, db_bytes: int) -> Check:
    """Free space where the restored data dir goes: the db plus WAL headroom."""
    where = existing_parent(data_dir.parent)
    free = shutil.disk_usage(where).free
    need = db_bytes + WAL_HEADROOM
    return Check("disk space", free >= need, f"{_gib(free)} free on {where}, the restored member needs {_gib(need)}",
                 overridable=False)


def available_memory(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    """MemAvailable in bytes (None when unknown)."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(db_bytes: int, factor: float) -> Check:
    """etcd maps its whole db into memory: enough must be available."""
    avail = available_memory()
    if avail is None:
        return Check("memory", True, "MemAvailable unknown; not checked")
    need = int(db_bytes * factor)
    return Check("memory", avail >= need, f"{_gib(avail)} available, the db needs about {_gib(need)}")


def check_quota(db_bytes: int, quota: int | None) -> Check:
    """The restored db must fit the member's --quota-backend-bytes (else NOSPACE at once)."""
    limit = quota or DEFAULT_QUOTA_BYTES
    source = "--quota-backend-bytes" if quota else "etcd's default quota"
    return Check("db size vs quota", db_bytes < limit,
                 f"db {_gib(db_bytes)} vs {source} {_gib(limit)}" + ("" if db_bytes < limit else
                 ": etcd would raise a NOSPACE alarm and refuse writes at once; raise the quota first"),
                 overridable=False)


def check_tool_version(tool: SnapshotTool, server_version: str | None) -> Check:
    """The restore tool's minor version must match the etcd that will run the data."""
    if not server_version:
        return Check("etcdutl version", True, f"{tool.path} {tool.version}; the server's version is unknown")
    server = EtcdVersion.parse(server_version)
    same = (server.major, server.minor) == (tool.version.major, tool.version.minor)
    detail = f"{tool.path.name} {tool.version} for etcd {server}"
    return Check("etcdutl version", same, detail + ("" if same else
                 ": a different minor version writes data the server may not read; pass --etcdutl"))


def check_bump_support(tool: SnapshotTool, bump: int) -> Check:
    """A planned revision bump needs etcdutl 3.5.10+ or etcdctl 3.4.27+."""
    if not bump:
        return Check("revision bump", True, "no bump (--no-bump-revision, or not Kubernetes data)")
    ok = tool.supports_bump_revision
    return Check("revision bump", ok, f"+{bump:,} with {tool.path.name} {tool.version}" + ("" if ok else
                 ": this tool cannot bump revisions (needs etcdutl 3.5.10+ or etcdctl 3.4.27+); watches and "
                 "informers would miss every change and keep stale caches; use --no-bump-revision only if "
                 "every controller and kubelet is restarted after the restore"), overridable=False)


def check_encryption(snapshot: Path, config: Path | None, kubernetes: bool) -> Check:
    """Key names used by encrypted values in the snapshot must be in the apiserver's config."""
    if not kubernetes and config is None:
        return Check("encryption keys", True, "not Kubernetes data")
    result = check_encryption_keys(snapshot, config)
    return Check("encryption keys", result.ok, result.summary(), overridable=not result.confirmed)


def run_checks(*, snapshot: Path, status: SnapshotStatus, data_dir: Path, quota: int | None,
               tool: SnapshotTool, server_version: str | None, bump: int, memory_factor: float) -> list[Check]:
    """The pre-flight checks that need the fetched snapshot's size and status, not its content
    (:func:`check_encryption` reads the content: it runs beside ``snapshot restore``)."""
    size = max(status.total_size, snapshot.stat().st_size)
    return [check_disk(data_dir, size), check_memory(size, memory_factor), check_quota(size, quota),
            check_tool_version(tool, server_version), check_bump_support(tool, bump)]


def owner_of(path: Path) -> tuple[int, int] | None:
    """(uid, gid) of ``path`` (None when it does not exist)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_uid, st.st_gid


def parse_owner(text: str) -> tuple[int, int]:
    """``user[:group]`` (names or numbers) -> (uid, gid)."""
    import grp
    import pwd

    user, _, group = text.partition(":")
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        gid = (int(group) if group.isdigit() else grp.getgrnam(group).gr_gid) if group else pw.pw_gid
    except (KeyError, ValueError):
        from etcdguard.errors import ConfigError

        raise ConfigError(f"restore.member.owner {text!r}: no such user or group") from None
    return pw.pw_uid, gid


def selinux_enabled() -> bool:
    """True when SELinux is enforcing or permissive on this host."""
    return os.path.exists("/sys/fs/selinux/enforce")
