"""Single membership changes: add, remove, promote, each behind its guardrail and logged with ids.

Every change goes through :class:`MembershipPort`; the member ids before and after are reported
through :meth:`Reporter.change`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from etcdguard.errors import AbortedError, ConfigError
from etcdguard.etcd.client import MemberInfo, MemberStatus
from etcdguard.etcd.cluster import ClusterHealth, MemberHealth
from etcdguard.etcd.errors import LearnerNotReadyError, TooManyLearnersError
from etcdguard.members.access import MembershipPort
from etcdguard.members.guardrails import guard_add, guard_promote, guard_remove
from etcdguard.members.newmember import (
    ListedMember,
    NewMemberSettings,
    client_endpoints,
    initial_cluster,
    member_with_peer_url,
    require_member,
)
from etcdguard.members.waits import Reporter, Waits, WaitTimeoutError, retry_refusals, wait_caught_up, wait_started

log = logging.getLogger("etcdguard.members")


def label(m: ListedMember) -> str:
    """``m1 (8e9e05c52164694d)``, ``(unstarted 8e9e...)``, with ``learner`` when it is one."""
    name = m.name or "(unstarted)"
    return f"{name} {m.id:x}" + (" learner" if m.is_learner else "")


def describe_ids(members: Iterable[ListedMember]) -> str:
    """Every member's name and id, as one line."""
    return ", ".join(label(m) for m in members) or "none"


def report_change(reporter: Reporter, what: str, before: Sequence[MemberInfo], after: Sequence[MemberInfo]) -> None:
    """Report (and log) a change with the member ids before and after."""
    message = f"{what}; members before: [{describe_ids(before)}]; after: [{describe_ids(after)}]"
    log.info("%s", message)
    reporter.change(message)


def check_new_member(members: Sequence[MemberInfo], name: str, peer_url: str, *,
                     own_id: int | None = None, learner: bool = True) -> None:
    """Before adding: the name and peer URL are not taken, and no other learner blocks a learner."""
    holder = member_with_peer_url(members, peer_url)
    if holder is not None and holder.id != own_id:
        raise ConfigError(f"peer URL {peer_url} is already used by member {label(holder)}: "
                          "give the new member its own address (or remove that member first)")
    named = next((m for m in members if m.name == name and m.id != own_id), None)
    if named is not None:
        raise ConfigError(f"member name {name!r} is already used by member {label(named)}")
    others = [m for m in members if m.is_learner and m.id != own_id] if learner else []
    if others:
        other = others[0]
        why = ("was added but never started" if not other.name else "is still a learner")
        raise TooManyLearnersError(
            f"{label(other)} (peer URL {', '.join(other.peer_urls)}) {why}; etcd allows one learner "
            f"at a time: promote it or remove it first (etcdguard member remove {other.id:x})")


def settings_for(members: Sequence[MemberInfo], new: MemberInfo, name: str) -> NewMemberSettings:
    """The new member's settings from the member list that includes it."""
    return NewMemberSettings(name=name, initial_cluster=initial_cluster(members, new.id, name, new.peer_urls),
                             peer_urls=new.peer_urls, client_endpoints=tuple(client_endpoints(members)))


@dataclass(frozen=True)
class Added:
    """A member that was added (or found added by an earlier attempt) and its settings."""

    member: MemberInfo
    members: tuple[MemberInfo, ...]
    settings: NewMemberSettings
    reused: bool = False


def add_member(port: MembershipPort, name: str, peer_url: str, *, learner: bool, force: bool,
               reporter: Reporter, waits: Waits) -> Added:
    """Add ``name`` at ``peer_url`` after the checks and the guardrail."""
    before = port.members()
    check_new_member(before, name, peer_url, learner=learner)
    health = port.health()
    guarded = guard_add(health.members, learner=learner, force=force)
    for warning in guarded.warnings:
        reporter.warn(warning)
    kind = "learner" if learner else "voting member"
    result = retry_refusals(lambda: port.add([peer_url], learner=learner), f"adding {kind} {name}", reporter, waits)
    report_change(reporter, f"added {kind} {name} as {result.member.id:x} (peer URL {peer_url})",
                  before, result.members)
    return Added(result.member, result.members, settings_for(result.members, result.member, name))


def _pick_new_leader(health: ClusterHealth, leaving: int) -> MemberHealth | None:
    candidates = [m for m in health.members if m.id != leaving and not m.is_learner and m.healthy]
    candidates.sort(key=lambda m: -(m.raft_applied_index or 0))
    return candidates[0] if candidates else None


def remove_member(port: MembershipPort, key: str, *, force: bool, reporter: Reporter, waits: Waits,
                  warn: bool = True) -> MemberInfo:
    """Remove the member named ``key`` behind the guardrail, moving leadership away first.

    ``warn=False`` keeps the guardrail's warnings (an even voter count) to itself: for a
    replacement, whose member count is back where it was once it is done.
    """
    before = port.members()
    target = require_member(before, key)
    health = port.health()
    guarded = guard_remove(health.members, target.id, force=force)
    for warning in guarded.warnings if warn or guarded.forced else ():
        reporter.warn(warning)
    state = next((m for m in health.members if m.id == target.id), None)
    if state is not None and state.is_leader and state.reachable:
        successor = _pick_new_leader(health, target.id)
        if successor is not None:
            reporter.info(f"{label(target)} is the leader: moving leadership to {label(successor)} first")
            retry_refusals(lambda: port.move_leader(successor.id), "moving leadership", reporter, waits)
            report_change(reporter, f"moved leadership from {target.id:x} to {successor.id:x}", before, before)
    retry_refusals(lambda: port.remove(target.id), f"removing {label(target)}", reporter, waits)
    after = port.members()
    report_change(reporter, f"removed member {label(target)}", before, after)
    return target


def confirm_voter(port: MembershipPort, member: MemberInfo, reporter: Reporter, waits: Waits) -> MemberStatus:
    """Wait until the member's own Status says it votes (it applies its promotion a moment later)."""
    deadline = waits.clock() + waits.refusal
    while True:
        status = port.status(member)
        if status is not None and not status.is_learner:
            return status
        if waits.clock() >= deadline:
            seen = "does not answer" if status is None else "still reports itself as a learner"
            raise WaitTimeoutError(f"member {label(member)} was promoted but {seen} after {waits.refusal:g}s")
        waits.sleep(waits.poll)


def promote_member(port: MembershipPort, key: str, *, wait: bool, force: bool, reporter: Reporter,
                   waits: Waits) -> MemberStatus:
    """Promote the learner named ``key``; with ``wait``, first wait until it started and caught up."""
    before = port.members()
    target = require_member(before, key)
    if not target.is_learner:
        raise AbortedError(f"member {label(target)} is already a voting member")
    if wait and not target.name:
        started = wait_started(port, target.id, reporter, waits)
        if started is None:
            raise WaitTimeoutError(f"learner {label(target)} has not started after {waits.start:g}s "
                                   "(no name, no client URLs): check its peer URL, certificates and data dir")
        target = started
    health = port.health()
    guarded = guard_promote(health.members, target.id, force=force)
    for warning in guarded.warnings:
        reporter.warn(warning)
    if wait:
        wait_caught_up(port, target, reporter, waits)
        retry_refusals(lambda: port.promote(target.id), f"promoting {label(target)}", reporter, waits)
    else:
        try:
            port.promote(target.id)
        except LearnerNotReadyError as exc:
            raise LearnerNotReadyError(f"{label(target)} has not caught up with the leader yet; promote it with "
                                       f"--wait to wait for it ({exc})") from None
    after = port.members()
    report_change(reporter, f"promoted {label(target)} to a voting member", before, after)
    return confirm_voter(port, target, reporter, waits)
