"""Diagnosis: what is left of the cluster, of the local member's data, and of the backups.

Pure functions over what was probed; nothing here changes anything. :func:`assess` combines the
cluster health probe, the local member's data dir and the catalog into one :class:`Assessment`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from etcdguard.backup.catalog import BackupEntry
from etcdguard.backup.manifest import Manifest
from etcdguard.etcd.cluster import ClusterHealth, MemberHealth
from etcdguard.etcd.datadir import DataDirInfo
from etcdguard.etcd.quorum import QuorumVerdict, assess_quorum
from etcdguard.restore.discovery import ApiServer, LocalMember
from etcdguard.restore.emptiness import EmptyCheck, check_empty

KUBERNETES_PREFIX = "/registry/"


def is_kubernetes(manifest: Manifest) -> bool:
    """True when the backup holds Kubernetes data (keys under /registry/)."""
    counts = manifest.key_counts
    return counts is not None and any(p.startswith(KUBERNETES_PREFIX) for p in counts.by_prefix)


@dataclass(frozen=True)
class BackupRef:
    """A backup as the diagnosis shows it."""

    backup_id: str
    revision: int
    created_at: datetime
    verified: bool
    kubernetes: bool
    cluster_id: str
    snapshot_size: int
    etcd_version: str
    members_hint: str

    @classmethod
    def from_manifest(cls, manifest: Manifest, verified: bool) -> BackupRef:
        """Summarize one backup's manifest."""
        return cls(manifest.backup_id, manifest.hashkv.revision, manifest.created_at, verified,
                   is_kubernetes(manifest), manifest.cluster.cluster_id, manifest.snapshot.size,
                   manifest.source.etcd_version, manifest.source.name)

    def age_seconds(self, now: datetime) -> float:
        """How old the backup is at ``now``."""
        return max(0.0, (now - self.created_at).total_seconds())

    def to_dict(self, now: datetime) -> dict[str, Any]:
        """JSON-ready view."""
        return {"backup_id": self.backup_id, "revision": self.revision,
                "created_at": self.created_at.isoformat(), "age_seconds": round(self.age_seconds(now)),
                "verified": self.verified, "kubernetes": self.kubernetes, "cluster_id": self.cluster_id,
                "snapshot_bytes": self.snapshot_size, "etcd_version": self.etcd_version}


def describe_data_dir(info: DataDirInfo) -> str:
    """One line for the diagnosis: what the local member's data dir holds."""
    if not info.path.exists():
        return f"{info.path}: missing"
    if info.db is None:
        return f"{info.path}: no etcd data (no member/snap/db)" + (f" ({info.problem})" if info.problem else "")
    try:
        size = f"db {info.db.stat().st_size:,} bytes"
    except OSError:
        size = "db unreadable"
    rev = f", revision {info.status.revision:,}" if info.status else ""
    ids = f", member {info.member_id:x} of cluster {info.cluster_id:x}" if info.member_id and info.cluster_id else ""
    return f"{info.path}: {size}{rev}{ids}" + (f" ({info.problem})" if info.problem else "")


def data_dir_dict(info: DataDirInfo) -> dict[str, Any]:
    """JSON-ready view of a data dir."""
    return {"path": str(info.path), "exists": info.path.exists(), "has_db": info.db is not None,
            "revision": info.status.revision if info.status else None,
            "member_id": f"{info.member_id:x}" if info.member_id else None,
            "cluster_id": f"{info.cluster_id:x}" if info.cluster_id else None, "problem": info.problem}


@dataclass(frozen=True)
class Survivor:
    """A member that still holds data: answering (online) or a stopped local data dir (offline)."""

    name: str
    revision: int
    online: bool
    endpoint: str | None = None
    db_path: Path | None = None
    raft_index: int | None = None

    def describe(self) -> str:
        """One line for the diagnosis."""
        how = f"answering at {self.endpoint}" if self.online else f"stopped, db {self.db_path}"
        return f"{self.name}: revision {self.revision:,} ({how})"


@dataclass(frozen=True)
class Assessment:
    """Everything the recommendation needs, as probed at ``taken_at``."""

    cluster_name: str
    taken_at: datetime
    health: ClusterHealth | None
    quorum: QuorumVerdict
    local: LocalMember | None
    local_data: DataDirInfo | None
    apiserver: ApiServer | None
    newest_backup: BackupRef | None
    newest_verified: BackupRef | None
    newest_seen_revision: int
    survivors: tuple[Survivor, ...]
    key_count: int | None = None

    @property
    def answering(self) -> tuple[MemberHealth, ...]:
        """Members that answered the probe."""
        return self.health.reachable_members if self.health else ()

    @property
    def best_survivor(self) -> Survivor | None:
        """The survivor holding the newest data."""
        return max(self.survivors, key=lambda s: (s.revision, s.online), default=None)

    @property
    def empty_check(self) -> EmptyCheck:
        """Whether the answering etcd is a new, empty one, measured against the newest backup
        (the rule is in ``etcdguard.restore.emptiness``)."""
        b = self.newest_backup
        cid = f"{self.health.cluster_id:x}" if self.health is not None and self.health.cluster_id else None
        return check_empty([m.revision for m in self.answering], cid, self.key_count,
                           b.revision if b else None, b.cluster_id if b else None)

    @property
    def empty_cluster(self) -> bool:
        """The answering etcd was started fresh (e.g. by the kubelet from a restored manifest)."""
        return self.empty_check.empty

    @property
    def known_members(self) -> int:
        """How many members the old cluster had (as far as anything tells)."""
        listed = len(self.health.members) if self.health and self.health.discovered else 0
        return max(listed, 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        now = self.taken_at
        return {
            "cluster_name": self.cluster_name, "taken_at": now.isoformat(),
            "quorum": self.quorum.to_dict(), "empty_cluster": self.empty_cluster,
            "empty_check": self.empty_check.to_dict(), "key_count": self.key_count,
            "members": [m.to_dict() for m in self.health.members] if self.health else [],
            "local_member": self.local.to_dict() if self.local else None,
            "local_data_dir": data_dir_dict(self.local_data) if self.local_data else None,
            "apiserver": self.apiserver.to_dict() if self.apiserver else None,
            "newest_backup": self.newest_backup.to_dict(now) if self.newest_backup else None,
            "newest_verified_backup": self.newest_verified.to_dict(now) if self.newest_verified else None,
            "newest_seen_revision": self.newest_seen_revision,
            "survivors": [{"name": s.name, "revision": s.revision, "online": s.online,
                           "endpoint": s.endpoint, "db_path": str(s.db_path) if s.db_path else None}
                          for s in self.survivors],
        }


def survivors_of(health: ClusterHealth | None, local: LocalMember | None,
                 local_data: DataDirInfo | None) -> list[Survivor]:
    """Answering members with a revision, plus the local data dir when its member is stopped."""
    out: list[Survivor] = []
    for m in health.reachable_members if health else ():
        if m.revision is not None and m.endpoint:
            out.append(Survivor(m.display_name, m.revision, True, endpoint=m.endpoint, raft_index=m.raft_index))
    online_names = {s.name for s in out}
    if (local is not None and local_data is not None and local_data.status is not None
            and local_data.db is not None and local.name not in online_names):
        out.append(Survivor(local.name, local_data.status.revision, False, db_path=local_data.db))
    return out


def newest_backups(entries: list[BackupEntry], cluster_name: str) -> tuple[BackupRef | None, BackupRef | None]:
    """(newest backup, newest verified backup) among readable entries of ``cluster_name``."""
    refs = [BackupRef.from_manifest(e.manifest, e.verified) for e in entries
            if e.manifest is not None and e.trusted and e.manifest.cluster.name == cluster_name]
    refs.sort(key=lambda r: r.created_at, reverse=True)
    return (refs[0] if refs else None), next((r for r in refs if r.verified), None)


def assess(cluster_name: str, health: ClusterHealth | None, local: LocalMember | None,
           local_data: DataDirInfo | None, apiserver: ApiServer | None, entries: list[BackupEntry],
           now: datetime | None = None, key_count: int | None = None) -> Assessment:
    """Combine the probes into an Assessment (pure); ``key_count``: keys in the whole keyspace, if asked."""
    newest, verified = newest_backups(entries, cluster_name)
    survivors = tuple(survivors_of(health, local, local_data))
    seen = [s.revision for s in survivors]
    seen += [e.manifest.hashkv.revision for e in entries if e.manifest is not None and e.trusted]
    members = list(health.members) if health else []
    return Assessment(cluster_name, now or datetime.now(timezone.utc), health, assess_quorum(members), local,
                      local_data, apiserver, newest, verified, max(seen, default=0), survivors, key_count)
