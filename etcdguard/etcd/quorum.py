"""Quorum math beside the cluster model: pure functions over members.

Only voting members (not learners) count. Quorum is ``n // 2 + 1`` of the voting members; the
cluster can lose ``healthy - quorum`` more members before writes stop.

:func:`assess_quorum` judges the cluster as it is; the "what if" functions
(:func:`what_if_remove`, :func:`what_if_add`, :func:`what_if_promote`) judge a membership change
before it is made, with the numbers before and after and the reason in words. Membership
guardrails and restore planning use them; they never talk to etcd.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol


class QuorumMember(Protocol):
    """What the quorum math needs to know about a member."""

    @property
    def display_name(self) -> str: ...
    @property
    def is_learner(self) -> bool: ...
    @property
    def reachable(self) -> bool: ...
    @property
    def healthy(self) -> bool: ...


class QuorumMemberWithId(QuorumMember, Protocol):
    """A member the "what if" functions can name and find (MemberHealth qualifies)."""

    @property
    def id(self) -> int: ...


class QuorumState(str, Enum):
    """The cluster verdict."""

    HEALTHY = "HEALTHY"
    DEGRADED = "DEGRADED"
    QUORUM_LOST = "QUORUM LOST"
    UNREACHABLE = "UNREACHABLE"  # no endpoint answered: whether quorum holds is unknown


def voting_members(members: Sequence[QuorumMember]) -> list[QuorumMember]:
    """Members that vote (learners excluded)."""
    return [m for m in members if not m.is_learner]


def healthy_voting_members(members: Sequence[QuorumMember]) -> list[QuorumMember]:
    """Voting members that answered and take part in consensus."""
    return [m for m in voting_members(members) if m.healthy]


def quorum_size(voting: int) -> int:
    """Votes needed for a majority of ``voting`` members (``n // 2 + 1``; 0 members -> 1)."""
    return voting // 2 + 1


def quorum_margin(voting: int, healthy: int) -> int:
    """``healthy - quorum``: how many more can fail; negative = that many short of quorum."""
    return healthy - quorum_size(voting)


def failures_tolerated(voting: int, healthy: int) -> int:
    """How many more voting members can fail before quorum is lost (0 once it is lost)."""
    return max(0, quorum_margin(voting, healthy))


@dataclass(frozen=True)
class QuorumVerdict:
    """The quorum verdict with the numbers behind it and the reason in words."""

    state: QuorumState
    members: int
    voting: int
    healthy_voting: int
    learners: int
    quorum: int
    failures_tolerated: int
    margin: int
    reason: str
    unhealthy: tuple[str, ...] = ()

    @property
    def has_quorum(self) -> bool:
        """True when quorum is known to hold (HEALTHY or DEGRADED)."""
        return self.state in (QuorumState.HEALTHY, QuorumState.DEGRADED)

    @property
    def headline(self) -> str:
        """``HEALTHY (can lose 1 more)``, ``DEGRADED (can lose 0 more)``, ``QUORUM LOST`` or ``UNREACHABLE``."""
        if not self.has_quorum:
            return str(self.state.value)
        return f"{self.state.value} (can lose {self.failures_tolerated} more)"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "state": self.state.value, "headline": self.headline, "has_quorum": self.has_quorum,
            "members": self.members, "voting_members": self.voting,
            "healthy_voting_members": self.healthy_voting, "learners": self.learners,
            "quorum_size": self.quorum, "failures_tolerated": self.failures_tolerated,
            "margin": self.margin, "reason": self.reason, "unhealthy": list(self.unhealthy),
        }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _why(m: QuorumMember) -> str:
    return f"{m.display_name} ({'unreachable' if not m.reachable else 'sees no leader'})"


def assess_quorum(members: Sequence[QuorumMember]) -> QuorumVerdict:
    """HEALTHY (every voting member healthy), DEGRADED (some not, quorum held) or QUORUM LOST."""
    voting = voting_members(members)
    healthy = healthy_voting_members(members)
    n, h = len(voting), len(healthy)
    quorum = quorum_size(n)
    margin = quorum_margin(n, h)
    tolerated = max(0, margin)
    down = tuple(_why(m) for m in voting if not m.healthy)
    learners = len(members) - n
    tail = f"; {_plural(learners, 'learner')} (not voting)" if learners else ""
    if n == 0:
        state = QuorumState.QUORUM_LOST
        reason = "no voting members known" + tail
    elif margin < 0:
        state = QuorumState.QUORUM_LOST
        reason = (f"only {h} of {n} voting members healthy, quorum needs {quorum}: writes and "
                  f"linearizable reads are blocked; not healthy: {', '.join(down)}{tail}")
    else:
        state = QuorumState.HEALTHY if h == n else QuorumState.DEGRADED
        reason = f"{h} of {n} voting members healthy, quorum is {quorum}, can lose {tolerated} more"
        if down:
            reason += f"; not healthy: {', '.join(down)}"
        if n == 1:
            reason += "; single member: no fault tolerance, by design"
        elif tolerated == 0 and state is QuorumState.HEALTHY:
            reason += f"; {n} voting members cannot survive any failure"
        reason += tail
    return QuorumVerdict(state, len(members), n, h, learners, quorum, tolerated, margin, reason, down)


def unreachable_verdict(endpoints: Sequence[str]) -> QuorumVerdict:
    """The verdict when no endpoint answered: nothing is known about quorum (a typo, a firewall,
    or every member down all look the same from here)."""
    tried = ", ".join(endpoints) or "none"
    return QuorumVerdict(QuorumState.UNREACHABLE, 0, 0, 0, 0, 0, 0, 0,
                         f"no etcd endpoint answered (tried {tried}): cannot tell whether the cluster has "
                         "quorum; check --endpoints, the TLS files and that etcd runs")


# -- "what if": membership changes judged before they are made ----------------------------------
@dataclass(frozen=True)
class QuorumSide:
    """The quorum arithmetic of one membership (before or after a change)."""

    members: int
    voters: int
    healthy_voters: int
    quorum: int

    @property
    def has_quorum(self) -> bool:
        """Enough healthy voters to commit (and at least one voter)."""
        return self.voters > 0 and self.healthy_voters >= self.quorum

    @property
    def fault_tolerance(self) -> int:
        """How many more voters can fail before quorum is lost (0 without quorum)."""
        return failures_tolerated(self.voters, self.healthy_voters) if self.voters else 0

    def describe(self) -> str:
        """``3 voters (2 healthy), quorum 2, can lose 0 more``."""
        tail = f"can lose {self.fault_tolerance} more" if self.has_quorum else "NO QUORUM"
        return f"{_plural(self.voters, 'voter')} ({self.healthy_voters} healthy), quorum {self.quorum}, {tail}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"members": self.members, "voters": self.voters, "healthy_voters": self.healthy_voters,
                "quorum": self.quorum, "has_quorum": self.has_quorum,
                "fault_tolerance": self.fault_tolerance}


@dataclass(frozen=True)
class QuorumChange:
    """A membership change judged before it is made.

    ``safe`` is False when etcd could not commit the change (no quorum now) or the cluster would
    be left without quorum (or without members); ``explanation`` says why in words, with the
    numbers. ``warnings`` are concerns that do not make the change unsafe (an even voter count,
    no fault tolerance left).
    """

    action: str
    before: QuorumSide
    after: QuorumSide
    safe: bool
    explanation: str
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"action": self.action, "safe": self.safe, "explanation": self.explanation,
                "warnings": list(self.warnings), "before": self.before.to_dict(),
                "after": self.after.to_dict()}


def _side(members: int, voters: int, healthy: int) -> QuorumSide:
    return QuorumSide(members, voters, healthy, quorum_size(voters))


def _current(members: Sequence[QuorumMember]) -> QuorumSide:
    return _side(len(members), len(voting_members(members)), len(healthy_voting_members(members)))


def _judge(action: str, before: QuorumSide, after: QuorumSide, *, learner_change: bool = False) -> QuorumChange:
    arithmetic = f"before: {before.describe()}; after: {after.describe()}"
    warnings: list[str] = []
    if not before.has_quorum:
        return QuorumChange(action, before, after, False,
                            f"{action}: the cluster has no quorum now ({before.healthy_voters} of "
                            f"{before.voters} voters healthy, {before.quorum} needed), so etcd cannot "
                            f"commit a membership change; {arithmetic}")
    if after.members == 0:
        return QuorumChange(action, before, after, False,
                            f"{action}: it is the last member; removing it would leave no cluster; {arithmetic}")
    if not after.has_quorum:
        why = (f"only {after.healthy_voters} of {after.voters} voters would be healthy and quorum "
               f"would need {after.quorum}: writes would stop")
        if after.voters > before.voters:
            why += " until the new member has started and caught up (add it as a learner instead)"
        return QuorumChange(action, before, after, False, f"{action}: unsafe, {why}; {arithmetic}")
    if after.voters % 2 == 0 and not learner_change:
        warnings.append(f"{after.voters} voters is an even number: it tolerates no more failures than "
                        f"{after.voters - 1}")
    if after.fault_tolerance == 0 and after.voters > 1:
        warnings.append("afterwards one more voter failure stops all writes")
    return QuorumChange(action, before, after, True, f"{action}: safe; {arithmetic}", tuple(warnings))


def _find(members: Sequence[QuorumMemberWithId], member_id: int) -> QuorumMemberWithId:
    for m in members:
        if m.id == member_id:
            return m
    raise ValueError(f"no member {member_id:x} in the member list")


def what_if_remove(members: Sequence[QuorumMemberWithId], member_id: int) -> QuorumChange:
    """Would removing ``member_id`` keep quorum? (A learner's removal never changes the voters.)

    Safe when the cluster has quorum now (to commit the change) and the remaining healthy voters
    reach the new, smaller quorum; never safe for the last member.
    """
    target = _find(members, member_id)
    before = _current(members)
    voter = not target.is_learner
    after = _side(before.members - 1, before.voters - (1 if voter else 0),
                  before.healthy_voters - (1 if voter and target.healthy else 0))
    state = "healthy" if target.healthy else ("unreachable" if not target.reachable else "sees no leader")
    role = "voter" if voter else "learner"
    return _judge(f"remove {target.display_name} ({role}, {state})", before, after,
                  learner_change=not voter)


def what_if_add(members: Sequence[QuorumMember], *, learner: bool = False) -> QuorumChange:
    """Would adding a member keep quorum while the new member is still down?

    A new voter counts towards quorum at once but cannot vote until it has started and caught
    up, so it is counted as unhealthy. A learner never changes the voters.
    """
    before = _current(members)
    after = _side(before.members + 1, before.voters + (0 if learner else 1), before.healthy_voters)
    return _judge("add a learner" if learner else "add a voting member", before, after,
                  learner_change=learner)


def what_if_promote(members: Sequence[QuorumMemberWithId], member_id: int) -> QuorumChange:
    """Would promoting the learner ``member_id`` keep quorum? (It votes at once; healthy if it is.)"""
    target = _find(members, member_id)
    if not target.is_learner:
        raise ValueError(f"member {target.display_name} is not a learner")
    before = _current(members)
    after = _side(before.members, before.voters + 1, before.healthy_voters + (1 if target.healthy else 0))
    return _judge(f"promote {target.display_name}", before, after)
