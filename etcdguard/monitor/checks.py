"""Cluster checks: small named functions, ClusterHealth (+ thresholds) in, CheckResult out."""

from __future__ import annotations

from collections import Counter

from etcdguard.config import EtcdConfig, MonitorConfig
from etcdguard.etcd.binaries import EtcdVersion
from etcdguard.etcd.cluster import ClusterHealth, MemberHealth
from etcdguard.etcd.quorum import QuorumState
from etcdguard.monitor.model import CheckResult, Severity

OK, WARNING, CRITICAL, UNKNOWN = Severity.OK, Severity.WARNING, Severity.CRITICAL, Severity.UNKNOWN


def format_bytes(n: float | None) -> str:
    """``1.5 GiB`` style sizes."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"  # pragma: no cover


def etcdctl_flags(etcd: EtcdConfig) -> str:
    """The TLS flags an operator must add to the etcdctl commands in the advice."""
    flags = [f"--{name}={path}" for name, path in (("cacert", etcd.cacert), ("cert", etcd.cert),
                                                    ("key", etcd.key)) if path]
    if etcd.username:
        flags.append(f"--user={etcd.username}")
    return " ".join(flags)


def _etcdctl(endpoints: list[str], flags: str, command: str) -> str:
    parts = ["etcdctl", f"--endpoints={','.join(endpoints)}"] + ([flags] if flags else []) + [command]
    return "`" + " ".join(parts) + "`"


def _names(members: list[MemberHealth]) -> str:
    return ", ".join(m.display_name for m in members)


def check_quorum(health: ClusterHealth, config: MonitorConfig | None = None) -> CheckResult:
    """CRITICAL when quorum is lost, unknown (nothing answered) or one more failure would lose it.

    A healthy single member is OK (no fault tolerance, by design); ``monitor.min_fault_tolerance``
    makes any fault tolerance below it a WARNING.
    """
    v = health.verdict()
    minimum = config.min_fault_tolerance if config is not None else 0
    summary = f"{v.headline}: {v.reason}"
    if v.state is QuorumState.UNREACHABLE:
        return CheckResult("quorum", CRITICAL, summary,
                           "Check that etcd runs and that --endpoints and the TLS files are right "
                           "(`etcdctl endpoint health`); restart the stopped members.")
    if v.state is QuorumState.QUORUM_LOST:
        return CheckResult("quorum", CRITICAL, summary,
                           "Bring the stopped members back first (process, disk, network, logs). If they "
                           "cannot return, take a snapshot of the most caught-up survivor and rebuild the "
                           "cluster from it (`etcdguard snapshot --member NAME`, then restore).")
    below = (f"; fault tolerance {v.failures_tolerated} is below monitor.min_fault_tolerance {minimum}"
             if v.failures_tolerated < minimum else "")
    grow = f"Add voting members until {minimum} may fail (3 members tolerate 1, 5 tolerate 2)."
    if v.voting == 1 and v.state is QuorumState.HEALTHY:
        if below:
            return CheckResult("quorum", WARNING, f"{v.headline}: single member: no fault tolerance{below}",
                               grow)
        return CheckResult("quorum", OK, f"{v.headline}: single member: no fault tolerance, by design")
    if v.failures_tolerated == 0:
        if v.unhealthy:
            advice = (f"One more failure stops all writes: bring back {', '.join(v.unhealthy)} now and "
                      "postpone maintenance on the others.")
        else:
            advice = f"{v.voting} voting members cannot survive any failure: add one to reach an odd count."
        return CheckResult("quorum", CRITICAL, summary, advice)
    if v.state is QuorumState.DEGRADED:
        return CheckResult("quorum", WARNING, summary + below, "Bring back " + ", ".join(v.unhealthy) + ".")
    if below:
        return CheckResult("quorum", WARNING, summary + below, grow)
    return CheckResult("quorum", OK, summary)


def check_leader(health: ClusterHealth) -> CheckResult:
    """CRITICAL without a leader; WARNING when members disagree on who leads."""
    reachable = health.reachable_members
    if not reachable:
        return CheckResult("leader", CRITICAL, "no leader: no member reachable",
                           "Start or reach the etcd members.")
    if health.leader_id is None:
        return CheckResult("leader", CRITICAL,
                           f"no leader: {len(reachable)} reachable member(s) see no leader",
                           "An election is in progress or quorum is lost; see the quorum check.")
    views = {m.leader_id for m in reachable if m.leader_id}
    leader = health.leader
    if len(views) > 1:
        return CheckResult("leader", WARNING, f"members disagree on the leader ({len(views)} views)",
                           "Usually a momentary election; if it persists, look for a network partition.")
    if leader is None:
        return CheckResult("leader", WARNING, f"leader {health.leader_id:x} is not in the member list",
                           "Check `etcdctl member list`.")
    return CheckResult("leader", OK, f"leader is {leader.display_name}")


def check_voting_parity(health: ClusterHealth) -> CheckResult:
    """WARNING on an even number of voting members (it tolerates no more failures than n-1)."""
    n = sum(1 for m in health.members if not m.is_learner)
    if n and n % 2 == 0:
        return CheckResult("voting_members", WARNING,
                           f"{n} voting members: tolerates {(n - 1) // 2} failure(s), no more than {n - 1}",
                           "Run an odd number of voting members (3 or 5): add or remove one.")
    return CheckResult("voting_members", OK, f"{n} voting member(s)")


def check_learners(health: ClusterHealth, flags: str = "") -> CheckResult:
    """WARNING while a learner exists (it does not vote; promote it once caught up)."""
    learners = [m for m in health.members if m.is_learner]
    if not learners:
        return CheckResult("learners", OK, "no learners")
    eps = [m.endpoint for m in health.reachable_members if m.endpoint and not m.is_learner][:1]
    lags = ", ".join(f"{m.display_name} (lag {m.lag if m.lag is not None else 'unknown'})" for m in learners)
    cmds = "; ".join(_etcdctl(eps or ["URL"], flags, f"member promote {m.id_hex}") for m in learners)
    return CheckResult("learners", WARNING, f"learner present: {lags}",
                       f"Promote once it has caught up: {cmds} (etcd refuses while the learner is behind); "
                       "remove it with `member remove` if it was abandoned.")


def check_raft_lag(health: ClusterHealth, config: MonitorConfig) -> CheckResult:
    """WARNING when a member's applied index is more than ``max_raft_lag`` behind the leader."""
    known = [m for m in health.reachable_members if m.lag is not None]
    if not known:
        return CheckResult("raft_lag", UNKNOWN, "raft lag unknown: no member answered")
    behind = [m for m in known if (m.lag or 0) > config.max_raft_lag]
    worst = max(known, key=lambda m: m.lag or 0)
    if behind:
        return CheckResult("raft_lag", WARNING,
                           "lagging: " + ", ".join(f"{m.display_name} {m.lag} entries behind" for m in behind)
                           + f" (threshold {config.max_raft_lag})",
                           "Check the member's disk latency (etcd_disk_wal_fsync_duration_seconds), CPU and "
                           "network; a member that never catches up should be replaced.")
    return CheckResult("raft_lag", OK, f"max lag {worst.lag} entries ({worst.display_name})")


def check_db_size(health: ClusterHealth, config: MonitorConfig, flags: str = "") -> CheckResult:
    """WARNING / CRITICAL when a member's db size reaches the configured percentage of its quota."""
    sized = [m for m in health.reachable_members if m.quota_percent is not None]
    if not sized:
        return CheckResult("db_size", UNKNOWN, "db size unknown: no member answered")
    top = max(sized, key=lambda m: m.quota_percent or 0.0)
    pct = top.quota_percent or 0.0
    assumed = " (quota assumed: set monitor.quota_backend_bytes)" if top.quota_source == "assumed" else ""
    summary = (f"{top.display_name} db {format_bytes(top.db_size)} = {pct:.1f}% of "
               f"{format_bytes(top.quota_bytes)} quota{assumed}")
    if pct < config.db_quota_warning_percent:
        return CheckResult("db_size", OK, summary)
    severity = CRITICAL if pct >= config.db_quota_critical_percent else WARNING
    free = (top.db_size or 0) - (top.db_size_in_use or 0)
    compact, defrag = _compact_defrag(health, flags)
    advice = (f"Compact old revisions, then defragment to return the space ({format_bytes(free)} is "
              f"already free inside the file): {compact}; then {defrag}. If the data really needs the "
              "space, raise --quota-backend-bytes on every member (8 GiB at most is recommended).")
    return CheckResult("db_size", severity, summary, advice)


def _first_endpoint(health: ClusterHealth) -> list[str]:
    leader = health.leader
    if leader and leader.reachable and leader.endpoint:
        return [leader.endpoint]
    eps = [m.endpoint for m in health.reachable_members if m.endpoint] or list(health.endpoints)
    return eps[:1]


def _compact_defrag(health: ClusterHealth, flags: str) -> tuple[str, str]:
    eps = [m.endpoint for m in health.reachable_members if m.endpoint] or list(health.endpoints)
    rev = max((m.revision or 0 for m in health.reachable_members), default=0)
    compact = f"{_etcdctl(_first_endpoint(health), flags, f'compact {rev}')} (current revision {rev})"
    defrags = "; ".join(_etcdctl([e], flags, "defrag") for e in eps)
    defrag = f"defragment each member, one at a time: {defrags}"
    return compact, defrag


def nospace_advice(health: ClusterHealth, flags: str = "") -> str:
    """Compact, defrag (each member), disarm: the exact etcdctl commands, in that order."""
    compact, defrag = _compact_defrag(health, flags)
    return (f"1) compact: {compact}; 2) {defrag}; "
            f"3) disarm: {_etcdctl(_first_endpoint(health), flags, 'alarm disarm')}. "
            "Then find what filled the keyspace, or raise --quota-backend-bytes on every member.")


def check_alarms(health: ClusterHealth, flags: str = "") -> CheckResult:
    """CRITICAL on NOSPACE or CORRUPT (or any other) alarm, with the recovery commands."""
    raised = [(m, a) for m in health.members for a in m.alarms]
    if not raised:
        return CheckResult("alarms", OK, "no alarms")
    summary = ", ".join(f"{a} alarm on {m.display_name}" for m, a in raised)
    kinds = {a for _, a in raised}
    advice = []
    if "NOSPACE" in kinds:
        advice.append("NOSPACE (cluster is read-only): " + nospace_advice(health, flags))
    if "CORRUPT" in kinds:
        bad = sorted({m.id_hex for m, a in raised if a == "CORRUPT"})
        eps = [m.endpoint for m in health.reachable_members if m.endpoint][:1] or ["URL"]
        advice.append("CORRUPT (a member's data diverged): do not just disarm. Snapshot a healthy member, "
                      f"then replace the corrupt member(s) {', '.join(bad)}: "
                      f"{_etcdctl(eps, flags, 'member remove ID')}, wipe its data dir, "
                      f"{_etcdctl(eps, flags, 'member add NAME --peer-urls=PEER')} and start it with "
                      f"--initial-cluster-state=existing; then {_etcdctl(eps, flags, 'alarm disarm')}.")
    return CheckResult("alarms", CRITICAL, summary, " ".join(advice))


def check_version_skew(health: ClusterHealth) -> CheckResult:
    """WARNING when members run different minor versions (OK, but noted, for patch differences)."""
    versions: Counter[str] = Counter(m.version for m in health.reachable_members if m.version)
    if not versions:
        return CheckResult("version_skew", UNKNOWN, "versions unknown: no member answered")
    parsed = set()
    for v in versions:
        try:
            parsed.add(EtcdVersion.parse(v))
        except ValueError:
            continue
    listing = ", ".join(f"{v} x{n}" for v, n in sorted(versions.items()))
    if len({(p.major, p.minor) for p in parsed}) > 1:
        return CheckResult("version_skew", WARNING, f"mixed minor versions: {listing}",
                           "Finish the rolling upgrade (one minor version at a time); the cluster runs at "
                           "the lowest version's feature level until then.")
    if len(versions) > 1:
        return CheckResult("version_skew", OK, f"patch versions differ: {listing}")
    return CheckResult("version_skew", OK, f"all members run {next(iter(versions))}")


def check_endpoints(health: ClusterHealth) -> CheckResult:
    """WARNING when a configured endpoint is not a reachable member of this cluster."""
    if not health.endpoint_errors:
        return CheckResult("endpoints", OK, f"{len(health.endpoints)} configured endpoint(s) fine")
    return CheckResult("endpoints", WARNING, "; ".join(health.endpoint_errors),
                       "Fix the endpoint list (etcd.endpoints / --endpoints): it names something that is "
                       "not a member of this cluster, and failover to it will not work.")
