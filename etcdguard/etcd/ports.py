"""Ports of the etcd access layer: one member's client, and one connection to a whole cluster.

Everything that talks to etcd (the backup pipeline, leader election, service jobs, health probes,
restore and member workflows) depends on :class:`EtcdConnection` and :class:`EtcdMember`, never on
gRPC: production uses :class:`etcdguard.etcd.connection.GrpcConnection`, unit tests a fake.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Generator, Iterable
from typing import Protocol

from etcdguard.errors import ConfigError, EtcdGuardError, EtcdUnavailableError, PermanentError
from etcdguard.etcd.channel import CallGroup
from etcdguard.etcd.client import (
    AlarmInfo,
    HashKV,
    MemberAddResult,
    MemberInfo,
    MemberStatus,
    parse_endpoint,
)

log = logging.getLogger(__name__)


class EtcdMember(Protocol):
    """Port: the calls etcdguard makes to one member (``MemberClient`` is the gRPC adapter).

    Contract: every unary call is bounded by the client's timeout (longer for HashKV, counts and
    MoveLeader) and raises an :class:`~etcdguard.errors.EtcdGuardError` (transient when a retry may
    help, see ``etcd/errors.py``), never a gRPC error. With credentials, an expired auth token is
    renewed once and the call retried. Instances are thread-safe; views from :meth:`with_timeout`
    and :meth:`in_group` share the channel and token.
    """

    endpoint: str

    def with_timeout(self, timeout: float) -> EtcdMember:
        """The same member with another unary-call timeout."""
        ...

    def in_group(self, group: CallGroup) -> EtcdMember:
        """The same member whose unary calls ``group.cancel()`` aborts."""
        ...

    def status(self) -> MemberStatus:
        """Status of this member (answers without quorum)."""
        ...

    def hash_kv(self, revision: int = 0) -> HashKV:
        """HashKV at ``revision`` (0 = current)."""
        ...

    def alarms(self) -> list[AlarmInfo]:
        """Active alarms of the cluster, as this member sees them."""
        ...

    def disarm_alarm(self, member_id: int, alarm: str) -> None:
        """Deactivate one alarm."""
        ...

    def snapshot(self, idle_timeout: float = 30.0) -> Generator[bytes, None, None]:
        """This member's backend snapshot as raw chunks, etcd's sha256 trailer last.

        No overall deadline; fails when no chunk arrives for ``idle_timeout`` seconds. Closing the
        generator early cancels the stream.
        """
        ...

    def member_list(self) -> list[MemberInfo]:
        """Members of the cluster (needs quorum on etcd < 3.5's linearizable MemberList)."""
        ...

    def member_add(self, peer_urls: list[str], *, learner: bool = False) -> MemberAddResult:
        """Add a member; returns it and the member list including it (its initial cluster)."""
        ...

    def member_update(self, member_id: int, peer_urls: list[str]) -> list[MemberInfo]:
        """Change a member's peer URLs; returns the member list after the change."""
        ...

    def member_remove(self, member_id: int) -> None:
        """Remove a member by id."""
        ...

    def member_promote(self, member_id: int) -> None:
        """Promote a caught-up learner (LearnerNotReadyError until it is)."""
        ...

    def move_leader(self, target_id: int) -> None:
        """Hand leadership to ``target_id``; only the current leader accepts it (NotLeaderError)."""
        ...

    def get(self, key: bytes, revision: int = 0) -> bytes | None:
        """Value of one key, or None."""
        ...

    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        """Put a key; returns the new revision."""
        ...

    def delete(self, key: bytes, range_end: bytes = b"") -> int:
        """Delete a key or range; returns how many were deleted."""
        ...

    def count(self, key: bytes, range_end: bytes, revision: int = 0, *,
              serializable: bool = False) -> tuple[int, int]:
        """Number of keys in [key, range_end) at ``revision``, and the revision read."""
        ...

    def first_key(self, key: bytes, range_end: bytes, revision: int = 0, *,
                  serializable: bool = False) -> bytes | None:
        """The smallest key in [key, range_end) at ``revision``, or None."""
        ...

    def lease_grant(self, ttl: int) -> int:
        """Grant a lease of ``ttl`` seconds; returns its id."""
        ...

    def lease_keepalive_once(self, lease_id: int) -> int:
        """Refresh a lease once; returns its remaining TTL (0 or less: expired)."""
        ...

    def lease_revoke(self, lease_id: int) -> None:
        """Revoke a lease and the keys attached to it."""
        ...

    def put_if_absent(self, key: bytes, value: bytes, lease: int) -> bool:
        """Create ``key`` only if it does not exist; True when created."""
        ...


class EtcdConnection(abc.ABC):
    """Port: one connection to one etcd cluster, for the length of a command or of the service.

    Contract: :meth:`client` opens a member client on first use and returns the same one for the
    same URL afterwards (one channel per member URL), until :meth:`close`; users never close what
    it returns. Clients are thread-safe. A URL whose channel would be plain text is never used
    when every configured endpoint is encrypted: credentials and data are not sent over a weaker
    scheme than configured (:meth:`usable_urls` skips such advertised URLs with a warning,
    :meth:`client` refuses them). The discovery helpers below are built on :meth:`client` only.
    """

    @property
    @abc.abstractmethod
    def endpoints(self) -> tuple[str, ...]:
        """The configured endpoints, in order."""

    @abc.abstractmethod
    def client(self, url: str) -> EtcdMember:
        """The cached client of the member at ``url`` (ConfigError for an unusable URL)."""

    @abc.abstractmethod
    def metrics(self, url: str, timeout: float) -> dict[str, float]:
        """Selected samples of the member's ``/metrics`` (quota, leader changes); OSError on failure."""

    @abc.abstractmethod
    def close(self) -> None:
        """Close every channel; the connection is unusable afterwards."""

    def __init__(self) -> None:
        self._warned: set[str] = set()

    def encrypted(self, url: str) -> bool:
        """Whether the channel to ``url`` is encrypted (by default: an https/unixs URL)."""
        return parse_endpoint(url)[1]

    @property
    def secure_only(self) -> bool:
        """True when every configured endpoint is encrypted: plain-text URLs are then refused."""
        return all(self.encrypted(e) for e in self.endpoints)

    def allowed(self, url: str) -> bool:
        """False for a URL that would downgrade this connection to plain text."""
        try:
            return not self.secure_only or self.encrypted(url)
        except ConfigError:
            return False

    def usable_urls(self, urls: Iterable[str]) -> list[str]:
        """``urls`` without the ones that would downgrade the connection (each logged once)."""
        usable = []
        for url in urls:
            if self.allowed(url):
                usable.append(url)
            elif url not in self._warned:
                self._warned.add(url)
                log.warning("skipping advertised client URL %s: the configured endpoints use TLS and "
                            "credentials are never sent in plain text", url)
        return usable

    def __enter__(self) -> EtcdConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- discovery, built on client() --------------------------------------------------------
    def discover(self) -> tuple[EtcdMember, list[MemberInfo]]:
        """The first configured endpoint that answers MemberList, with the member list.

        Raises the first permanent error (TLS, auth) if one occurred, else EtcdUnavailableError.
        """
        errors: list[str] = []
        permanent: EtcdGuardError | None = None
        for endpoint in self.endpoints:
            try:
                client = self.client(endpoint)
                return client, client.member_list()
            except EtcdGuardError as exc:
                errors.append(str(exc))
                if isinstance(exc, PermanentError) and permanent is None:
                    permanent = exc
        if permanent is not None:
            raise permanent
        raise EtcdUnavailableError(f"no etcd endpoint answered ({', '.join(self.endpoints)}): "
                                   f"{errors[-1] if errors else 'no endpoints'}")

    def locate(self, member: MemberInfo, fallback: str | None = None) -> tuple[EtcdMember, MemberStatus] | None:
        """The client and Status of ``member``: its usable client URLs first, then ``fallback``;
        only an answer from that very member counts. None when it did not answer."""
        for url in dict.fromkeys([*self.usable_urls(member.client_urls), *([fallback] if fallback else [])]):
            try:
                client = self.client(url)
                status = client.status()
            except EtcdGuardError:
                continue
            if status.member_id == member.id:
                return client, status
        return None

    def leader(self) -> tuple[MemberInfo, EtcdMember]:
        """The raft leader and its client (EtcdUnavailableError without a reachable leader)."""
        client, members = self.discover()
        leader_id = client.status().leader
        if not leader_id:
            raise EtcdUnavailableError("etcd has no leader (an election is in progress or quorum is lost)")
        info = next((m for m in members if m.id == leader_id), None)
        if info is None:
            raise EtcdUnavailableError(f"etcd leader {leader_id:x} is not in the member list")
        found = self.locate(info, fallback=client.endpoint)
        if found is None:
            raise EtcdUnavailableError(f"etcd leader {info.name or f'{info.id:x}'} did not answer")
        return info, found[0]

    def move_leader(self, target_id: int) -> None:
        """Make ``target_id`` the leader (nothing to do when it already is)."""
        info, leader = self.leader()
        if info.id != target_id:
            leader.move_leader(target_id)

