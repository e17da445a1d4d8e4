"""Leader election among etcdguard replicas through an etcd lease.

Only the leader takes scheduled backups. The leader holds ``/etcdguard/leader/<cluster>``
attached to a lease it keeps alive; when it dies the lease expires within its TTL and another
replica creates the key.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from etcdguard.errors import EtcdGuardError
from etcdguard.etcd.ports import EtcdConnection, EtcdMember

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
    """Election with an etcd lease and a create-if-absent transaction.

    ``connection`` returns the service's etcd connection (the current one after a reload); each
    call is bounded by a third of the lease TTL (at least 1 s, at most the dial timeout).
    """

    def __init__(self, connection: Callable[[], EtcdConnection], cluster_name: str, replica_id: str,
                 ttl: int, timeout: float = 5.0) -> None:
        self._connection = connection
        self._timeout = max(1.0, min(timeout, ttl / 3))
        self._key = (LEADER_KEY_PREFIX + cluster_name).encode()
        self.replica_id = replica_id
        self._ttl = ttl
        self._lease: _Lease | None = None
        self._leader = False
        self._known_leader: str | None = None

    def _clients(self) -> list[EtcdMember]:
        conn = self._connection()
        return [conn.client(endpoint).with_timeout(self._timeout) for endpoint in conn.endpoints]

    def _try_endpoints(self) -> bool:
        last: EtcdGuardError | None = None
        for client in self._clients():
            try:
                return self._tick_with(client)
            except EtcdGuardError as exc:
                last = exc
        if last is not None:
            raise last
        return False

    def _tick_with(self, client: EtcdMember) -> bool:
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
            self._clients()[0].lease_revoke(lease.lease_id)
        except EtcdGuardError as exc:
            log.info("could not revoke the leader lease (it will expire): %s", exc)
