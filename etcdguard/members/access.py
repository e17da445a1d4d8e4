"""What the member workflows need from etcd (a port), and its implementation over the client.

The workflows depend only on :class:`MembershipPort`, so their logic has unit tests against a
fake cluster. :class:`LiveMembership` talks to the real cluster through one ``EtcdConnection``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from etcdguard.config import EtcdConfig, MonitorConfig
from etcdguard.errors import EtcdGuardError, EtcdUnavailableError, PermanentError
from etcdguard.etcd.client import MemberAddResult, MemberInfo, MemberStatus
from etcdguard.etcd.cluster import ClusterHealth, probe_cluster
from etcdguard.etcd.connection import open_connection
from etcdguard.etcd.ports import EtcdConnection


class MembershipPort(Protocol):
    """The cluster as the member workflows see it.

    ``members`` and the changes go to any member that answers (etcd forwards them to the
    leader); ``status`` asks one member itself, by its own client URLs, and returns None when
    it does not answer (or another member answers there); ``health`` probes every member.
    Errors are etcdguard errors: etcd's refusals as the distinct classes of
    :mod:`etcdguard.etcd.errors`.
    """

    def members(self) -> list[MemberInfo]:
        """The member list."""
        ...

    def health(self) -> ClusterHealth:
        """A probe of every member (reachability, role, raft indexes)."""
        ...

    def status(self, member: MemberInfo) -> MemberStatus | None:
        """The member's own Status, or None when it does not answer."""
        ...

    def add(self, peer_urls: Sequence[str], *, learner: bool) -> MemberAddResult:
        """MemberAdd."""
        ...

    def remove(self, member_id: int) -> None:
        """MemberRemove."""
        ...

    def promote(self, member_id: int) -> None:
        """MemberPromote."""
        ...

    def move_leader(self, target_id: int) -> None:
        """Hand leadership to ``target_id`` (sent to the current leader)."""
        ...


class LiveMembership:
    """:class:`MembershipPort` over the configured endpoints, plus the members' own client URLs."""

    def __init__(self, etcd: EtcdConfig, monitor: MonitorConfig | None = None,
                 connection: EtcdConnection | None = None) -> None:
        self.etcd = etcd
        self.conn = connection or open_connection(etcd)
        self.monitor = monitor or MonitorConfig.model_validate({})
        self._known: list[str] = list(etcd.endpoints)
        self._last_good: str | None = None

    def _endpoints(self) -> list[str]:
        first = [self._last_good] if self._last_good else []
        return list(dict.fromkeys([*first, *self._known]))

    def _call(self, fn_name: str, *args: object, **kwargs: object) -> object:
        errors: list[str] = []
        for endpoint in self._endpoints():
            try:
                result = getattr(self.conn.client(endpoint), fn_name)(*args, **kwargs)
            except EtcdGuardError as exc:
                if isinstance(exc, PermanentError) or type(exc) is not EtcdUnavailableError:
                    raise  # etcd answered: a refusal, not a dead endpoint
                errors.append(str(exc))
                continue
            self._last_good = endpoint
            return result
        raise EtcdUnavailableError(f"no etcd endpoint answered ({', '.join(self._endpoints())}): "
                                   f"{errors[-1] if errors else 'no endpoints'}")

    def members(self) -> list[MemberInfo]:
        """The member list from the first endpoint that answers; learns the members' URLs."""
        found: list[MemberInfo] = self._call("member_list")  # type: ignore[assignment]
        voters = [u for m in found if not m.is_learner for u in self.conn.usable_urls(m.client_urls)]
        self._known = list(dict.fromkeys([*self._known, *voters]))
        return found

    def health(self) -> ClusterHealth:
        """Probe every member."""
        return probe_cluster(self.conn, self.monitor,
                             timeout=min(self.etcd.dial_timeout, self.monitor.probe_timeout))

    def status(self, member: MemberInfo) -> MemberStatus | None:
        """Status from the member itself (None: it does not answer)."""
        for url in self.conn.usable_urls(member.client_urls):
            try:
                status = self.conn.client(url).with_timeout(min(self.etcd.dial_timeout, 3.0)).status()
            except EtcdGuardError:
                continue
            if status.member_id == member.id:
                return status
        return None

    def add(self, peer_urls: Sequence[str], *, learner: bool) -> MemberAddResult:
        """MemberAdd."""
        return self._call("member_add", list(peer_urls), learner=learner)  # type: ignore[return-value]

    def remove(self, member_id: int) -> None:
        """MemberRemove."""
        self._call("member_remove", member_id)

    def promote(self, member_id: int) -> None:
        """MemberPromote."""
        self._call("member_promote", member_id)

    def move_leader(self, target_id: int) -> None:
        """MoveLeader, sent to the member that is the leader now."""
        self.conn.move_leader(target_id)
