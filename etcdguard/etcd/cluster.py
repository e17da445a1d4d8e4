"""Cluster discovery and an immutable health snapshot of every member.

:func:`probe_cluster` asks every configured endpoint (in parallel) for Status and MemberList, then
probes each listed member by its advertised client URL, also in parallel. Every probe is bounded
by one timeout, so an unreachable member costs that timeout once, not once per member.
The result is a frozen :class:`ClusterHealth`; the quorum verdict is in ``etcdguard.etcd.quorum``.
"""

from __future__ import annotations

import http.client
import re
import ssl
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial
from typing import Any, Literal

from etcdguard.config import MonitorConfig
from etcdguard.errors import ConfigError, EtcdGuardError
from etcdguard.etcd.client import AlarmInfo, MemberInfo, MemberStatus
from etcdguard.etcd.client import parse_endpoint as _parse_endpoint
from etcdguard.etcd.connect import names_member
from etcdguard.etcd.ports import EtcdConnection
from etcdguard.etcd.quorum import QuorumVerdict, assess_quorum, unreachable_verdict

DEFAULT_QUOTA_BYTES = 2 * 1024**3
QuotaSource = Literal["config", "metrics", "assumed"]
_ALARM_IN_ERROR = re.compile(r"memberID:(\d+)\s+alarm:([A-Z]+)")
_CONNECT_FAILED = re.compile(r"failed to connect to all addresses; last error: .*: (?P<why>[^:]+)$")


def _short_error(err: Exception) -> str:
    """gRPC's connection errors, cut down to the part a human needs ('Connection refused')."""
    return _CONNECT_FAILED.sub(lambda m: m["why"].strip(), str(err))


@dataclass(frozen=True)
class MemberHealth:
    """What one member reported (or why it could not be asked)."""

    name: str
    id: int
    endpoint: str | None
    reachable: bool
    error: str | None = None
    client_urls: tuple[str, ...] = ()
    peer_urls: tuple[str, ...] = ()
    is_leader: bool = False
    is_learner: bool = False
    leader_id: int = 0
    version: str | None = None
    db_size: int | None = None
    db_size_in_use: int | None = None
    quota_bytes: int = DEFAULT_QUOTA_BYTES
    quota_source: QuotaSource = "assumed"
    raft_term: int | None = None
    raft_index: int | None = None
    raft_applied_index: int | None = None
    lag: int | None = None
    revision: int | None = None
    alarms: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    leader_changes_seen: int | None = None
    probe_seconds: float = 0.0

    @property
    def id_hex(self) -> str:
        """The member id as etcdctl prints it."""
        return f"{self.id:x}"

    @property
    def display_name(self) -> str:
        """The name, or a placeholder for a member that was added but never started."""
        return self.name or f"(unstarted {self.id_hex})"

    @property
    def healthy(self) -> bool:
        """Answered within the timeout and sees a leader (i.e. takes part in consensus)."""
        return self.reachable and self.leader_id != 0

    @property
    def quota_percent(self) -> float | None:
        """db size as a percentage of the backend quota."""
        if self.db_size is None or self.quota_bytes <= 0:
            return None
        return 100.0 * self.db_size / self.quota_bytes

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (ids in hex, as etcdctl shows them)."""
        return {
            "name": self.name, "id": self.id_hex, "endpoint": self.endpoint, "reachable": self.reachable,
            "healthy": self.healthy, "error": self.error, "client_urls": list(self.client_urls),
            "peer_urls": list(self.peer_urls), "is_leader": self.is_leader, "is_learner": self.is_learner,
            "leader_id": f"{self.leader_id:x}" if self.leader_id else None, "version": self.version,
            "db_size_bytes": self.db_size, "db_size_in_use_bytes": self.db_size_in_use,
            "quota_bytes": self.quota_bytes, "quota_source": self.quota_source,
            "quota_percent": None if self.quota_percent is None else round(self.quota_percent, 2),
            "raft_term": self.raft_term, "raft_index": self.raft_index,
            "raft_applied_index": self.raft_applied_index, "lag": self.lag, "revision": self.revision,
            "alarms": list(self.alarms), "errors": list(self.errors),
            "leader_changes_seen": self.leader_changes_seen, "probe_seconds": round(self.probe_seconds, 3),
        }


@dataclass(frozen=True)
class ClusterHealth:
    """One probe of the whole cluster, taken at ``timestamp``."""

    members: tuple[MemberHealth, ...]
    leader_id: int | None
    cluster_id: int | None
    timestamp: datetime
    endpoints: tuple[str, ...] = ()
    discovered: bool = True
    errors: tuple[str, ...] = ()
    endpoint_errors: tuple[str, ...] = ()
    probe_seconds: float = 0.0

    @property
    def leader(self) -> MemberHealth | None:
        """The leader member, if one is known and listed."""
        return next((m for m in self.members if m.is_leader), None)

    @property
    def reachable_members(self) -> tuple[MemberHealth, ...]:
        """Members that answered."""
        return tuple(m for m in self.members if m.reachable)

    def verdict(self) -> QuorumVerdict:
        """The quorum verdict; UNREACHABLE (unknown) when no member answered at all."""
        if not self.reachable_members:
            return unreachable_verdict(self.endpoints)
        return assess_quorum(self.members)

    def member(self, key: str) -> MemberHealth | None:
        """Find a member by name, hex id or endpoint."""
        for m in self.members:
            if names_member(key, m.name, m.id, m.client_urls) or key == m.endpoint:
                return m
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "cluster_id": f"{self.cluster_id:x}" if self.cluster_id else None,
            "leader_id": f"{self.leader_id:x}" if self.leader_id else None,
            "timestamp": self.timestamp.isoformat(), "endpoints": list(self.endpoints),
            "discovered": self.discovered, "errors": list(self.errors),
            "endpoint_errors": list(self.endpoint_errors),
            "probe_seconds": round(self.probe_seconds, 3),
            "members": [m.to_dict() for m in self.members],
        }


# -- probing ----------------------------------------------------------------------------------
@dataclass
class _Probe:
    url: str
    status: MemberStatus | None = None
    members: list[MemberInfo] | None = None
    quota_bytes: int | None = None
    leader_changes: int | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class _Outcome:
    configured: dict[str, _Probe] = field(default_factory=dict)
    advertised: dict[str, _Probe] = field(default_factory=dict)
    members: list[MemberInfo] | None = None
    alarms: list[AlarmInfo] | None = None
    errors: list[str] = field(default_factory=list)


def _target(url: str) -> str:
    try:
        return _parse_endpoint(url)[0]
    except ConfigError:
        return url


class _Prober:
    def __init__(self, conn: EtcdConnection, monitor: MonitorConfig, timeout: float) -> None:
        self.conn = conn
        self.timeout = timeout
        self.monitor = monitor
        self.endpoints = conn.endpoints

    def probe(self, url: str, want_members: bool) -> _Probe:
        p = _Probe(url)
        start = time.monotonic()
        deadline = start + self.timeout

        def left() -> float:
            return max(0.2, deadline - time.monotonic())

        try:
            c = self.conn.client(url)
            p.status = c.with_timeout(self.timeout).status()
            if want_members:
                try:
                    p.members = c.with_timeout(left()).member_list()
                except EtcdGuardError:
                    p.members = None  # e.g. a learner refusing MemberList; others will answer
        except EtcdGuardError as err:
            p.error = _short_error(err)
        if p.status is not None and (time.monotonic() < deadline):
            try:
                scraped = self.conn.metrics(url, left())
                quota = scraped.get("etcd_server_quota_backend_bytes")
                changes = scraped.get("etcd_server_leader_changes_seen_total")
                p.quota_bytes = int(quota) if quota else None
                p.leader_changes = int(changes) if changes is not None else None
            except (OSError, ValueError, ssl.SSLError, http.client.HTTPException):
                pass  # /metrics is optional: quota falls back to config or the default
        p.seconds = time.monotonic() - start
        return p

    def alarms(self, url: str) -> list[AlarmInfo]:
        return self.conn.client(url).with_timeout(self.timeout).alarms()

    def run(self) -> _Outcome:
        """Probe configured endpoints, fan out to advertised member URLs on the first MemberList."""
        out = _Outcome()
        pool = ThreadPoolExecutor(max_workers=min(32, 2 * len(self.endpoints) + 8),
                                  thread_name_prefix="etcd-probe")
        tasks: dict[Future[Any], tuple[str, str]] = {}

        def submit(kind: str, url: str, fn: Callable[[], Any]) -> Future[Any]:
            fut = pool.submit(fn)
            tasks[fut] = (kind, url)
            return fut

        try:
            pending = {submit("configured", u, partial(self.probe, u, True)) for u in self.endpoints}
            # Discovery takes at most one timeout; probes started then take at most one more.
            hard_deadline = time.monotonic() + 2 * self.timeout + 2.0
            while pending and time.monotonic() < hard_deadline:
                done, pending = wait(pending, timeout=hard_deadline - time.monotonic(),
                                     return_when=FIRST_COMPLETED)
                for fut in done:
                    kind, url = tasks[fut]
                    self._collect(out, kind, url, fut)
                    found = out.configured.get(url) if kind == "configured" else None
                    if out.members is None and found is not None and found.members:
                        out.members = found.members
                        pending |= self._fan_out(found.members, url, submit)
            out.errors += [f"{tasks[f][1]}: {tasks[f][0]} probe did not finish in time" for f in pending]
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return out

    def _fan_out(self, members: list[MemberInfo], source: str,
                 submit: Callable[[str, str, Callable[[], Any]], Future[Any]]) -> set[Future[Any]]:
        futures = {submit("alarms", source, partial(self.alarms, source))}
        configured = {_target(u) for u in self.endpoints}
        for m in members:
            urls = self.conn.usable_urls(m.client_urls)
            if urls and not any(_target(u) in configured for u in m.client_urls):
                url = urls[0]
                futures.add(submit("advertised", url, partial(self.probe, url, False)))
        return futures

    @staticmethod
    def _collect(out: _Outcome, kind: str, url: str, fut: Future[Any]) -> None:
        try:
            result = fut.result()
        except Exception as err:  # one bad probe must not sink the whole report
            if kind == "alarms":
                out.errors.append(f"could not list alarms via {url}: {err}")
            else:
                (out.configured if kind == "configured" else out.advertised)[url] = _Probe(
                    url, error=f"probe failed: {type(err).__name__}: {err}")
            return
        if kind == "alarms":
            out.alarms = result
        else:
            (out.configured if kind == "configured" else out.advertised)[url] = result


def probe_cluster(conn: EtcdConnection, monitor: MonitorConfig | None = None,
                  timeout: float | None = None) -> ClusterHealth:
    """Discover the members through the connection's endpoints and probe each one, in parallel.

    Never raises for unreachable members: they are reported with ``reachable=False``. When no
    endpoint answers, ``discovered`` is False and one placeholder per endpoint is returned.
    (Unusable configuration is refused when the connection is opened.)
    """
    monitor = monitor or MonitorConfig.model_validate({})
    started = time.monotonic()
    timestamp = datetime.now(timezone.utc)
    prober = _Prober(conn, monitor, timeout or monitor.probe_timeout)
    out = prober.run()
    return _assemble(out, prober, timestamp, time.monotonic() - started)


def _assemble(out: _Outcome, prober: _Prober, timestamp: datetime, seconds: float) -> ClusterHealth:
    probes = list(out.configured.values()) + list(out.advertised.values())
    by_id: dict[int, _Probe] = {}
    for p in probes:
        if p.status is not None:
            by_id.setdefault(p.status.member_id, p)
    by_target = {_target(p.url): p for p in probes}
    errors = list(out.errors)
    if out.members is None:
        infos = [MemberInfo(0, _target(u), (), (u,), False) for u in prober.endpoints]
        errors.insert(0, "no configured endpoint answered MemberList")
    else:
        infos = out.members
    statuses = [p.status for p in by_id.values() if p.status is not None]
    leaders = Counter(s.leader for s in statuses if s.leader)
    leader_id = leaders.most_common(1)[0][0] if leaders else None
    clusters = Counter(s.cluster_id for s in statuses)
    cluster_id = clusters.most_common(1)[0][0] if clusters else None
    leader_probe: _Probe | None = by_id.get(leader_id) if leader_id else None
    ref_index = (leader_probe.status.raft_index if leader_probe and leader_probe.status
                 else max((s.raft_index for s in statuses), default=None))
    alarms: dict[int, set[str]] = {}
    for a in out.alarms or []:
        alarms.setdefault(a.member_id, set()).add(a.alarm)
    for s in statuses:
        for mid, alarm in _ALARM_IN_ERROR.findall(" ".join(s.errors)):
            alarms.setdefault(int(mid), set()).add(alarm)

    members = [_member(i, by_id.get(i.id) if out.members is not None else None, by_target, leader_id,
                       ref_index, alarms, prober.monitor) for i in infos]
    endpoint_errors: list[str] = []
    known = {i.id for i in infos}
    member_targets = {_target(u) for i in infos for u in i.client_urls}
    for url in prober.endpoints:
        cp = out.configured.get(url)
        if cp is None or out.members is None:
            continue
        if cp.status is None and _target(url) not in member_targets:
            why = (cp.error or "no answer").removeprefix(f"etcd {url}: ")
            endpoint_errors.append(f"{url} did not answer and is no member's client URL ({why})")
        elif cp.status is not None and cp.status.member_id not in known:
            endpoint_errors.append(f"{url} is member {cp.status.member_id:x} of cluster "
                                   f"{cp.status.cluster_id:x}, not in this member list")
    order = sorted(members, key=lambda m: (m.is_learner, m.name == "", m.name, m.id))
    return ClusterHealth(tuple(order), leader_id,
                         cluster_id, timestamp, prober.endpoints, out.members is not None, tuple(errors),
                         tuple(endpoint_errors), seconds)


def _member(info: MemberInfo, p: _Probe | None, by_target: dict[str, _Probe], leader_id: int | None,
            ref_index: int | None, alarms: dict[int, set[str]], monitor: MonitorConfig) -> MemberHealth:
    base: dict[str, Any] = {"name": info.name, "id": info.id, "client_urls": info.client_urls,
                            "peer_urls": info.peer_urls, "is_learner": info.is_learner,
                            "is_leader": bool(leader_id) and info.id == leader_id,
                            "alarms": tuple(sorted(alarms.get(info.id, ())))}
    if monitor.quota_backend_bytes:
        base.update(quota_bytes=monitor.quota_backend_bytes, quota_source="config")
    if p is None or p.status is None:
        tried = next((by_target[_target(u)] for u in info.client_urls if _target(u) in by_target), None)
        if tried is not None:
            error = tried.error or "answered as a different member"
        elif not info.client_urls:
            error = "not started yet (no client URLs advertised)"
        else:
            error = "not probed (no answer in time)"
        return MemberHealth(endpoint=tried.url if tried else next(iter(info.client_urls), None),
                            reachable=False, error=error, probe_seconds=tried.seconds if tried else 0.0,
                            **base)
    s = p.status
    if not monitor.quota_backend_bytes and p.quota_bytes:
        base.update(quota_bytes=p.quota_bytes, quota_source="metrics")
    lag = max(0, ref_index - s.raft_applied_index) if ref_index is not None else None
    return MemberHealth(endpoint=p.url, reachable=True, leader_id=s.leader, version=s.version,
                        db_size=s.db_size, db_size_in_use=s.db_size_in_use, raft_term=s.raft_term,
                        raft_index=s.raft_index, raft_applied_index=s.raft_applied_index, lag=lag,
                        revision=s.revision, errors=s.errors, leader_changes_seen=p.leader_changes,
                        probe_seconds=p.seconds, **{**base, "is_learner": info.is_learner or s.is_learner})
