"""Open MemberClients from configuration, and find which members can serve a snapshot."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from etcdguard.config import EtcdConfig
from etcdguard.errors import EtcdGuardError, EtcdUnavailableError, PermanentError
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


def snapshot_sources(cfg: EtcdConfig, member_name: str | None = None) -> list[SourceCandidate]:
    """Members to stream from, best first: the leader, then the most caught-up voting members.

    With ``member_name`` only that member is returned (a ConfigError-like EtcdUnavailableError if
    it does not answer). Learners are never chosen automatically.
    """
    with first_reachable(cfg) as (client, members):
        fallback = client.endpoint
    if member_name is not None:
        chosen = [m for m in members if m.name == member_name]
        if not chosen:
            names = ", ".join(m.name for m in members)
            raise EtcdUnavailableError(f"no member named {member_name!r} (members: {names})")
        members = chosen
    with ThreadPoolExecutor(max_workers=max(1, len(members))) as pool:
        probed = list(pool.map(lambda m: _probe(cfg, m, fallback), members))
    candidates = [c for c in probed if c is not None and (member_name or not c.status.is_learner)]
    if not candidates:
        raise EtcdUnavailableError("no etcd member that can serve a snapshot answered Status")
    return sorted(candidates, key=lambda c: (not c.is_leader, -c.status.raft_applied_index))
