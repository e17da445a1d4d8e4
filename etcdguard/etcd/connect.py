"""Open MemberClients from configuration, and find which members can serve a snapshot."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from etcdguard.config import EtcdConfig
from etcdguard.errors import ConfigError, EtcdGuardError, EtcdUnavailableError, PermanentError
from etcdguard.etcd.client import Credentials, MemberClient, MemberInfo, MemberStatus, TLSFiles


def tls_from_config(cfg: EtcdConfig) -> TLSFiles:
    """TLS files named in the config."""
    return TLSFiles(cacert=cfg.cacert, cert=cfg.cert, key=cfg.key, server_name=cfg.server_name)


def credentials_from_config(cfg: EtcdConfig) -> Credentials | None:
    """etcd username/password from the config, if any."""
    if not cfg.username:
        return None
    return Credentials(cfg.username, cfg.password.get_secret_value() if cfg.password else "")


def client_for(cfg: EtcdConfig, endpoint: str, timeout: float | None = None) -> MemberClient:
    """A MemberClient for ``endpoint`` using the config's TLS and credentials."""
    return MemberClient(endpoint, tls=tls_from_config(cfg), credentials=credentials_from_config(cfg),
                        timeout=timeout or cfg.dial_timeout)


@contextmanager
def first_reachable(cfg: EtcdConfig) -> Iterator[tuple[MemberClient, list[MemberInfo]]]:
    """The first configured endpoint that answers MemberList, with the member list."""
    errors: list[str] = []
    permanent: EtcdGuardError | None = None
    for endpoint in cfg.endpoints:
        client = client_for(cfg, endpoint)
        try:
            members = client.member_list()
        except EtcdGuardError as exc:
            client.close()
            errors.append(str(exc))
            if isinstance(exc, PermanentError) and permanent is None:
                permanent = exc
            continue
        try:
            yield client, members
        finally:
            client.close()
        return
    if permanent is not None:
        raise permanent
    raise EtcdUnavailableError(
        f"no etcd endpoint answered ({', '.join(cfg.endpoints)}): {errors[-1] if errors else 'no endpoints'}")


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


def _probe(cfg: EtcdConfig, member: MemberInfo, fallback: str) -> SourceCandidate | None:
    endpoints = list(dict.fromkeys([*member.client_urls, fallback]))
    for endpoint in endpoints:
        try:
            with client_for(cfg, endpoint) as client:
                status = client.status()
        except EtcdGuardError:
            continue
        if status.member_id == member.id:
            return SourceCandidate(member.name, member.id, endpoint, status)
    return None


def local_source(cfg: EtcdConfig, endpoint: str) -> SourceCandidate:
    """The member at ``endpoint`` itself, without asking the cluster (works without quorum)."""
    with client_for(cfg, endpoint) as client:
        status = client.status()
    return SourceCandidate(name=f"{status.member_id:x}", member_id=status.member_id, endpoint=endpoint,
                           status=status)


def names_member(key: str, name: str, member_id: int, client_urls: Iterable[str]) -> bool:
    """True when ``key`` (what a user typed for ``--member``) is this member's name, hex id or URL."""
    return key in (name, f"{member_id:x}") or key in client_urls


def source_rank(is_leader: bool, raft_applied_index: int | None, name: str) -> tuple[bool, int, str]:
    """Sort key of snapshot sources: the leader first, then the most caught-up, then by name."""
    return (not is_leader, -(raft_applied_index or 0), name)


def snapshot_sources(cfg: EtcdConfig, member: str | None = None) -> list[SourceCandidate]:
    """Members to stream from, best first: the leader, then the most caught-up voting members.

    With ``member`` (a name, hex id or client URL) only that member is returned: ConfigError when
    the cluster has no such member, EtcdUnavailableError when it does not answer. Learners are
    never chosen automatically.
    """
    with first_reachable(cfg) as (client, members):
        fallback = client.endpoint
    if member is not None:
        chosen = [m for m in members if names_member(member, m.name, m.id, m.client_urls)]
        if not chosen:
            names = ", ".join(sorted(m.name or f"{m.id:x}" for m in members))
            raise ConfigError(f"no etcd member {member!r} (members: {names})")
        members = chosen[:1]
    with ThreadPoolExecutor(max_workers=max(1, len(members))) as pool:
        probed = list(pool.map(lambda m: _probe(cfg, m, fallback), members))
    if member is not None and probed[0] is None:
        raise EtcdUnavailableError(f"etcd member {members[0].name or member} did not answer Status")
    candidates = [c for c in probed if c is not None and (member or not c.status.is_learner)]
    if not candidates:
        raise EtcdUnavailableError("no etcd member that can serve a snapshot answered Status")
    return sorted(candidates, key=lambda c: source_rank(c.is_leader, c.status.raft_applied_index, c.name))
