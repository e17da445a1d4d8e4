"""Which members can serve a snapshot: the one source-selection rule, over an EtcdConnection."""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from etcdguard.errors import ConfigError, EtcdUnavailableError
from etcdguard.etcd.client import MemberInfo, MemberStatus
from etcdguard.etcd.ports import EtcdConnection


@dataclass(frozen=True)
class SourceCandidate:
    """A member that can stream a snapshot, with what we know of it."""

    name: str
    member_id: int
    endpoint: str
    status: MemberStatus

    @property
    def is_leader(self) -> bool:
        """True when this member is the raft leader."""
        return self.status.leader == self.member_id


def local_source(conn: EtcdConnection, endpoint: str) -> SourceCandidate:
    """The member at ``endpoint`` itself, without asking the cluster (works without quorum)."""
    status = conn.client(endpoint).status()
    return SourceCandidate(name=f"{status.member_id:x}", member_id=status.member_id, endpoint=endpoint,
                           status=status)


def names_member(key: str, name: str, member_id: int, client_urls: Iterable[str]) -> bool:
    """True when ``key`` (what a user typed for ``--member``) is this member's name, hex id or URL."""
    return key in (name, f"{member_id:x}") or key in client_urls


def source_rank(is_leader: bool, raft_applied_index: int | None, name: str) -> tuple[bool, int, str]:
    """Sort key of snapshot sources: the leader first, then the most caught-up, then by name."""
    return (not is_leader, -(raft_applied_index or 0), name)


def find_member(members: list[MemberInfo], key: str) -> MemberInfo:
    """The member a user named (name, hex id or client URL); ConfigError listing the members if none."""
    for m in members:
        if names_member(key, m.name, m.id, m.client_urls):
            return m
    names = ", ".join(sorted(m.name or f"{m.id:x}" for m in members))
    raise ConfigError(f"no etcd member {key!r} (members: {names})")


def _probe(conn: EtcdConnection, member: MemberInfo, fallback: str) -> SourceCandidate | None:
    found = conn.locate(member, fallback)
    if found is None:
        return None
    client, status = found
    return SourceCandidate(member.name, member.id, client.endpoint, status)


def snapshot_sources(conn: EtcdConnection, member: str | None = None) -> list[SourceCandidate]:
    """Members to stream from, best first: the leader, then the most caught-up voting members.

    With ``member`` (a name, hex id or client URL) only that member is returned: ConfigError when
    the cluster has no such member, EtcdUnavailableError when it does not answer. Learners are
    never chosen automatically. Works without quorum as long as one member answers MemberList.
    """
    client, members = conn.discover()
    if member is not None:
        members = [find_member(members, member)]
    with ThreadPoolExecutor(max_workers=max(1, len(members))) as pool:
        probed = list(pool.map(lambda m: _probe(conn, m, client.endpoint), members))
    if member is not None and probed[0] is None:
        raise EtcdUnavailableError(f"etcd member {members[0].name or member} did not answer Status")
    candidates = [c for c in probed if c is not None and (member or not c.status.is_learner)]
    if not candidates:
        raise EtcdUnavailableError("no etcd member that can serve a snapshot answered Status")
    return sorted(candidates, key=lambda c: source_rank(c.is_leader, c.status.raft_applied_index, c.name))
