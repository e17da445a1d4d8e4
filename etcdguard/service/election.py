"""Leader election among etcdguard replicas through an etcd lease.

Only the leader takes scheduled backups. The leader holds ``/etcdguard/leader/<cluster>``
attached to a lease it keeps alive; when it dies the lease expires within its TTL and another
replica creates the key.
"""

from __future__ import annotations

import abc
import logging
import time
from dataclasses import dataclass

from etcdguard.config import EtcdConfig
from etcdguard.errors import EtcdGuardError
from etcdguard.etcd.client import MemberClient
from etcdguard.etcd.connect import client_for

log = logging.getLogger(__name__)
LEADER_KEY_PREFIX = "/etcdguard/leader/"


class LeaderElector(abc.ABC):
    """Port: decides whether this replica may run scheduled work.

    Contract: :meth:`tick` is called from the daemon loop at least every TTL/3 seconds and must
    return within a bounded time (it never blocks on an unreachable etcd for longer than the
    client timeout). :meth:`is_leader` is cheap and thread-safe. :meth:`resign` gives up
    leadership promptly (used on shutdown) and never raises.
    """

    @abc.abstractmethod
    def tick(self) -> bool:
        """Campaign or renew; returns whether this replica is the leader now."""

    @abc.abstractmethod
    def is_leader(self) -> bool:
        """Whether this replica was the leader at the last successful tick (and it is still valid)."""

    @abc.abstractmethod
    def resign(self) -> None:
        """Give up leadership (revoke the lease)."""

    def leader_id(self) -> str | None:
        """The current leader's replica id, if known."""
        return None


class AlwaysLeader(LeaderElector):
    """No election: a single replica (leader_election: false)."""

    def tick(self) -> bool:
        return True

    def is_leader(self) -> bool:
        return True

    def resign(self) -> None:
        return None


@dataclass
class _Lease:
    lease_id: int
    valid_until: float


class EtcdLeaseElector(LeaderElector):
    """Election with an etcd lease and a create-if-absent transaction."""

    def __init__(self, etcd: EtcdConfig, cluster_name: str, replica_id: str, ttl: int) -> None:
        self._etcd = etcd
        self._key = (LEADER_KEY_PREFIX + cluster_name).encode()
        self.replica_id = replica_id
        self._ttl = ttl
        self._lease: _Lease | None = None
        self._leader = False
        self._known_leader: str | None = None

    def _client(self) -> MemberClient:
        timeout = max(1.0, min(self._etcd.dial_timeout, self._ttl / 3))
        return client_for(self._etcd, self._etcd.endpoints[0], timeout=timeout)

    def _try_endpoints(self) -> bool:
        last: EtcdGuardError | None = None
        for endpoint in self._etcd.endpoints:
            timeout = max(1.0, min(self._etcd.dial_timeout, self._ttl / 3))
            with client_for(self._etcd, endpoint, timeout=timeout) as client:
                try:
                    return self._tick_with(client)
                except EtcdGuardError as exc:
                    last = exc
        if last is not None:
            raise last
        return False

    def _tick_with(self, client: MemberClient) -> bool:
        now = time.monotonic()
        if self._lease is not None and self._leader:
            remaining = client.lease_keepalive_once(self._lease.lease_id)
            if remaining > 0:
                self._lease.valid_until = now + remaining
                return True
            log.warning("leader lease expired; stepping down")
            self._lease = None
            self._leader = False
        if self._lease is None or client.lease_keepalive_once(self._lease.lease_id) <= 0:
            self._lease = _Lease(client.lease_grant(self._ttl), now + self._ttl)
        else:
            self._lease.valid_until = now + self._ttl
        if client.put_if_absent(self._key, self.replica_id.encode(), self._lease.lease_id):
            log.info("replica %s became the leader", self.replica_id)
            self._leader = True
        else:
            current = client.get(self._key)
            self._known_leader = current.decode(errors="replace") if current else None
            self._leader = current == self.replica_id.encode()
        return self._leader

    def tick(self) -> bool:
        try:
            return self._try_endpoints()
        except EtcdGuardError as exc:
            if self._leader:
                log.warning("cannot renew leadership: %s", exc)
            return self.is_leader()

    def is_leader(self) -> bool:
        return self._leader and self._lease is not None and time.monotonic() < self._lease.valid_until

    def leader_id(self) -> str | None:
        return self.replica_id if self.is_leader() else self._known_leader

    def resign(self) -> None:
        lease, self._lease, self._leader = self._lease, None, False
        if lease is None:
            return
        try:
            with self._client() as client:
                client.lease_revoke(lease.lease_id)
        except EtcdGuardError as exc:
            log.info("could not revoke the leader lease (it will expire): %s", exc)
