"""Quorum guardrails for membership changes: the refusal policy over the quorum "what if" math.

:mod:`etcdguard.etcd.quorum` judges a change (the numbers before and after, safe or not);
here a refusal becomes an :class:`~etcdguard.errors.AbortedError` (exit 10) with the arithmetic
in its message, unless the operator forces it. Removing the last member is never forced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from etcdguard.errors import AbortedError
from etcdguard.etcd.quorum import QuorumChange, QuorumMemberWithId, what_if_add, what_if_promote, what_if_remove


@dataclass(frozen=True)
class Guarded:
    """A change that may go ahead, and what to warn the operator about."""

    change: QuorumChange
    warnings: tuple[str, ...]
    forced: bool = False


def arithmetic(change: QuorumChange) -> str:
    """``members 3, voters 3, reachable 2, quorum 2 -> members 2, voters 2, reachable 2, quorum 2``."""
    b, a = change.before, change.after
    return (f"members {b.members}, voters {b.voters}, reachable voters {b.healthy_voters}, quorum {b.quorum}"
            f" -> members {a.members}, voters {a.voters}, reachable voters {a.healthy_voters}, quorum {a.quorum}")


def _risk(change: QuorumChange) -> str:
    if not change.before.has_quorum:
        return "etcd itself refuses changes without quorum; the request will most likely fail"
    if change.after.voters > change.before.voters:
        return "writes stop until the new member has started and caught up"
    return "the cluster may lose quorum and stop serving writes until the missing members return"


def enforce(change: QuorumChange, *, force: bool, learner_hint: bool = False) -> Guarded:
    """Let a safe change through; refuse an unsafe one (exit 10) unless ``force`` says otherwise."""
    if change.safe:
        return Guarded(change, change.warnings)
    hint = ""
    if learner_hint and change.after.voters > change.before.voters:
        hint = "; add it with --learner, then promote it once it has caught up"
    if change.after.members == 0 or not force:
        tail = "" if change.after.members == 0 else " (--force overrides)"
        members = f"; members {change.before.members} -> {change.after.members}"
        raise AbortedError(f"refused: {change.explanation}{members}{hint}{tail}")
    warning = f"--force: going ahead although it is unsafe ({arithmetic(change)}): {_risk(change)}"
    return Guarded(change, (warning, *change.warnings), forced=True)


def guard_remove(members: Sequence[QuorumMemberWithId], member_id: int, *, force: bool) -> Guarded:
    """Removing ``member_id`` must leave at least as many reachable voters as the new quorum."""
    return enforce(what_if_remove(members, member_id), force=force)


def guard_add(members: Sequence[QuorumMemberWithId], *, learner: bool, force: bool) -> Guarded:
    """A voter that cannot vote yet must not push quorum out of reach (suggests ``--learner``)."""
    return enforce(what_if_add(members, learner=learner), force=force, learner_hint=not learner)


def guard_promote(members: Sequence[QuorumMemberWithId], member_id: int, *, force: bool) -> Guarded:
    """Promoting a learner must keep enough reachable voters for the new quorum."""
    return enforce(what_if_promote(members, member_id), force=force)
