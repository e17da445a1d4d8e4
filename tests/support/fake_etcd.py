"""An in-memory etcd cluster behind the EtcdConnection port, for fast unit tests of the domain.

``FakeCluster`` holds members (each up, down or "sees no leader"), a key space with revisions,
leases and a snapshot image; ``FakeConnection`` hands out one ``FakeMember`` per client URL and
records which URLs it opened. Down members raise EtcdUnavailableError like the real client.
Nothing here opens a socket.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Generator
from dataclasses import dataclass, field

from etcdguard.errors import ConfigError, EtcdUnavailableError
from etcdguard.etcd.channel import CallGroup
from etcdguard.etcd.client import (
    AlarmInfo,
    HashKV,
    MemberAddResult,
    MemberInfo,
    MemberStatus,
    parse_endpoint,
)
from etcdguard.etcd.errors import NotLeaderError
from etcdguard.etcd.ports import EtcdConnection

CLUSTER_ID = 0xC1


@dataclass
class FakeNode:
    """One member of the fake cluster and what it reports."""

    id: int
    name: str
    url: str
    learner: bool = False
    up: bool = True
    sees_leader: bool = True
    applied: int = 1000
    version: str = "3.5.16"
    snapshot_fails_after: int | None = None  # chunks streamed before the stream breaks

    @property
    def info(self) -> MemberInfo:
        return MemberInfo(self.id, self.name, (f"http://{self.name}:2380",), (self.url,) if self.name else (),
                          self.learner)


@dataclass
class FakeCluster:
    """Membership, data and leadership of an in-memory cluster."""

    nodes: list[FakeNode] = field(default_factory=list)
    leader_id: int = 0
    data: dict[bytes, bytes] = field(default_factory=dict)
    revision: int = 1
    leases: dict[int, int] = field(default_factory=dict)  # id -> remaining ttl
    lease_keys: dict[int, set[bytes]] = field(default_factory=dict)
    snapshot_image: bytes = b"fake etcd backend " * 4096
    calls: list[tuple[str, str]] = field(default_factory=list)  # (url, call)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def of(cls, size: int = 3, leader: int = 0) -> FakeCluster:
        """``size`` voting members m0..m(size-1) at http://mN:2379, ``mLEADER`` leading."""
        nodes = [FakeNode(0x100 + i, f"m{i}", f"http://m{i}:2379") for i in range(size)]
        return cls(nodes, leader_id=nodes[leader].id if nodes else 0)

    def node(self, name: str) -> FakeNode:
        return next(n for n in self.nodes if n.name == name)

    def expire_lease(self, lease_id: int) -> None:
        """The lease runs out: its keys go away."""
        self.leases.pop(lease_id, None)
        for key in self.lease_keys.pop(lease_id, set()):
            self.data.pop(key, None)

    def snapshot_bytes(self) -> bytes:
        """The snapshot etcd would stream: the image plus its sha256 trailer."""
        return self.snapshot_image + hashlib.sha256(self.snapshot_image).digest()


class FakeMember:
    """The EtcdMember port over one FakeNode of a FakeCluster."""

    def __init__(self, cluster: FakeCluster, url: str, timeout: float = 5.0) -> None:
        self.cluster = cluster
        self.endpoint = url
        self.timeout = timeout
        self.group: CallGroup | None = None

    # -- plumbing ----------------------------------------------------------------------------
    def _node(self, call: str) -> FakeNode:
        self.cluster.calls.append((self.endpoint, call))
        if self.group is not None and self.group.cancelled:
            raise EtcdUnavailableError(f"etcd {self.endpoint}: {call} cancelled")
        target = parse_endpoint(self.endpoint)[0]
        node = next((n for n in self.cluster.nodes if parse_endpoint(n.url)[0] == target), None)
        if node is None or not node.up:
            raise EtcdUnavailableError(f"etcd {self.endpoint}: {call} failed: UNAVAILABLE: Connection refused")
        return node

    def _quorum(self, call: str) -> FakeNode:
        node = self._node(call)
        voters = [n for n in self.cluster.nodes if not n.learner]
        healthy = [n for n in voters if n.up and n.sees_leader]
        if not node.sees_leader or len(healthy) < len(voters) // 2 + 1:
            raise EtcdUnavailableError(f"etcd {self.endpoint}: {call} failed: DEADLINE_EXCEEDED: "
                                       "context deadline exceeded")
        return node

    def with_timeout(self, timeout: float) -> FakeMember:
        view = FakeMember(self.cluster, self.endpoint, timeout)
        view.group = self.group
        return view

    def in_group(self, group: CallGroup) -> FakeMember:
        view = FakeMember(self.cluster, self.endpoint, self.timeout)
        view.group = group
        return view

    # -- maintenance -------------------------------------------------------------------------
    def status(self) -> MemberStatus:
        node = self._node("Status")
        leader = self.cluster.leader_id if node.sees_leader else 0
        return MemberStatus(node.id, CLUSTER_ID, node.version, len(self.cluster.snapshot_image),
                            len(self.cluster.snapshot_image), leader, node.applied, 2, node.applied,
                            node.learner, (), self.cluster.revision)

    def hash_kv(self, revision: int = 0) -> HashKV:
        node = self._node("HashKV")
        digest = hashlib.sha256(repr(sorted(self.cluster.data.items())).encode()).digest()
        return HashKV(revision or self.cluster.revision, int.from_bytes(digest[:4], "big"), 0, node.id)

    def alarms(self) -> list[AlarmInfo]:
        self._node("Alarm")
        return []

    def disarm_alarm(self, member_id: int, alarm: str) -> None:
        self._node("Alarm")

    def snapshot(self, idle_timeout: float = 30.0) -> Generator[bytes, None, None]:
        node = self._node("Snapshot")
        data = self.cluster.snapshot_bytes()
        for index, start in enumerate(range(0, len(data), 4096)):
            if node.snapshot_fails_after is not None and index >= node.snapshot_fails_after:
                raise EtcdUnavailableError(f"etcd {self.endpoint}: Snapshot failed: UNAVAILABLE: member went away")
            yield data[start:start + 4096]

    # -- cluster -----------------------------------------------------------------------------
    def member_list(self) -> list[MemberInfo]:
        self._node("MemberList")
        return [n.info for n in self.cluster.nodes]

    def member_add(self, peer_urls: list[str], *, learner: bool = False) -> MemberAddResult:
        self._quorum("MemberAdd")
        node = FakeNode(0x100 + len(self.cluster.nodes) + 50, "", "", learner=learner)
        self.cluster.nodes.append(node)
        info = MemberInfo(node.id, "", tuple(peer_urls), (), learner)
        return MemberAddResult(info, tuple(n.info if n is not node else info for n in self.cluster.nodes))

    def member_update(self, member_id: int, peer_urls: list[str]) -> list[MemberInfo]:
        self._quorum("MemberUpdate")
        return [n.info for n in self.cluster.nodes]

    def member_remove(self, member_id: int) -> None:
        self._quorum("MemberRemove")
        self.cluster.nodes = [n for n in self.cluster.nodes if n.id != member_id]

    def member_promote(self, member_id: int) -> None:
        self._quorum("MemberPromote")
        next(n for n in self.cluster.nodes if n.id == member_id).learner = False

    def move_leader(self, target_id: int) -> None:
        node = self._quorum("MoveLeader")
        if node.id != self.cluster.leader_id:
            raise NotLeaderError(f"etcd {self.endpoint}: MoveLeader failed: etcdserver: not leader")
        self.cluster.leader_id = target_id

    # -- kv and leases -----------------------------------------------------------------------
    def get(self, key: bytes, revision: int = 0) -> bytes | None:
        self._quorum("Range")
        return self.cluster.data.get(key)

    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        self._quorum("Put")
        with self.cluster.lock:
            self.cluster.data[key] = value
            if lease:
                self.cluster.lease_keys.setdefault(lease, set()).add(key)
            self.cluster.revision += 1
            return self.cluster.revision

    def delete(self, key: bytes, range_end: bytes = b"") -> int:
        self._quorum("DeleteRange")
        return 1 if self.cluster.data.pop(key, None) is not None else 0

    def _range(self, key: bytes, range_end: bytes) -> list[bytes]:
        if range_end == b"":
            return [key] if key in self.cluster.data else []
        return sorted(k for k in self.cluster.data if key <= k and (range_end == b"\x00" or k < range_end))

    def count(self, key: bytes, range_end: bytes, revision: int = 0, *,
              serializable: bool = False) -> tuple[int, int]:
        (self._node if serializable else self._quorum)("Range")
        return len(self._range(key, range_end)), revision or self.cluster.revision

    def first_key(self, key: bytes, range_end: bytes, revision: int = 0, *,
                  serializable: bool = False) -> bytes | None:
        (self._node if serializable else self._quorum)("Range")
        keys = self._range(key, range_end)
        return keys[0] if keys else None

    def lease_grant(self, ttl: int) -> int:
        self._quorum("LeaseGrant")
        lease_id = 0x7000 + len(self.cluster.leases) + len(self.cluster.lease_keys) + 1
        self.cluster.leases[lease_id] = ttl
        return lease_id

    def lease_keepalive_once(self, lease_id: int) -> int:
        self._quorum("LeaseKeepAlive")
        return self.cluster.leases.get(lease_id, 0)

    def lease_revoke(self, lease_id: int) -> None:
        self._quorum("LeaseRevoke")
        self.cluster.expire_lease(lease_id)

    def put_if_absent(self, key: bytes, value: bytes, lease: int) -> bool:
        self._quorum("Txn")
        if key in self.cluster.data:
            return False
        self.put(key, value, lease)
        return True


class FakeConnection(EtcdConnection):
    """The EtcdConnection port over a FakeCluster; ``opened`` lists the URLs it opened clients for."""

    def __init__(self, cluster: FakeCluster, endpoints: list[str] | None = None) -> None:
        super().__init__()
        self.cluster = cluster
        self._endpoints = tuple(endpoints or [n.url for n in cluster.nodes])
        self._clients: dict[str, FakeMember] = {}
        self.opened: list[str] = []
        self.closed = False

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self._endpoints

    def client(self, url: str) -> FakeMember:  # type: ignore[override]
        if not self.allowed(url):
            raise ConfigError(f"refusing plain-text etcd URL {url}: the configured endpoints use TLS")
        key = parse_endpoint(url)[0]
        if key not in self._clients:
            self._clients[key] = FakeMember(self.cluster, url)
            self.opened.append(url)
        return self._clients[key]

    def metrics(self, url: str, timeout: float) -> dict[str, float]:
        return {"etcd_server_quota_backend_bytes": float(2 * 1024**3)}

    def close(self) -> None:
        self.closed = True
