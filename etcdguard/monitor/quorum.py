"""Quorum math: pure functions over members (anything with name / is_learner / healthy / reachable).

Only voting members (not learners) count. Quorum is ``n // 2 + 1`` of the voting members; the
cluster can lose ``healthy - quorum`` more members before writes stop.
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


class QuorumState(str, Enum):
    """The cluster verdict."""

    HEALTHY = "HEALTHY"
    DEGRADED = "DEGRADED"
    QUORUM_LOST = "QUORUM LOST"


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
        """True unless quorum is lost."""
        return self.state is not QuorumState.QUORUM_LOST

    @property
    def headline(self) -> str:
        """``HEALTHY (can lose 1 more)``, ``DEGRADED (can lose 0 more)`` or ``QUORUM LOST``."""
        if self.state is QuorumState.QUORUM_LOST:
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
            reason += "; single member: no fault tolerance"
        elif tolerated == 0 and state is QuorumState.HEALTHY:
            reason += f"; {n} voting members cannot survive any failure"
        reason += tail
    return QuorumVerdict(state, len(members), n, h, learners, quorum, tolerated, margin, reason, down)
