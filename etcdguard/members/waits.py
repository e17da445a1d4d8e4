"""Bounded waits for the member workflows: etcd's brief refusals, a new member starting, catch-up.

Right after a membership change or a start, etcd refuses reconfiguration for a while ("unhealthy
cluster" until the leader has been connected to every voter for 5 s, "learner not in sync"
until a learner has caught up). These helpers retry such refusals up to a deadline, telling the
operator what they wait for, and tell a learner that never started from a slow one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from etcdguard.errors import EtcdGuardError, EtcdUnavailableError, PermanentError, TransientError
from etcdguard.etcd.client import MemberInfo
from etcdguard.etcd.errors import LearnerNotReadyError, NotEnoughStartedError, NotLeaderError, UnhealthyClusterError
from etcdguard.members.access import MembershipPort

T = TypeVar("T")

RETRYABLE: tuple[type[EtcdGuardError], ...] = (UnhealthyClusterError, NotEnoughStartedError, LearnerNotReadyError,
                                               NotLeaderError)


class Reporter(Protocol):
    """Where the workflows tell the operator what happens (the CLI renders it)."""

    def info(self, message: str) -> None:
        """A step or a finding."""
        ...

    def warn(self, message: str) -> None:
        """Something the operator should know (guardrail warnings, waiting)."""
        ...

    def change(self, message: str) -> None:
        """A change made to the cluster, with member ids before and after (always shown and logged)."""
        ...

    def progress(self, what: str, done: int, total: int) -> None:
        """Progress of a wait (e.g. a learner's applied index against the leader's)."""
        ...


@dataclass
class Waits:
    """Bounds of every wait (seconds) and the clock they run on (replaceable in tests)."""

    refusal: float = 60.0
    start: float = 120.0
    catch_up: float = 600.0
    poll: float = 1.0
    clock: Callable[[], float] = field(default=time.monotonic)
    sleep: Callable[[float], None] = field(default=time.sleep)


class WaitTimeoutError(TransientError):
    """A bounded wait ran out; running the command again continues where it stopped."""

    exit_code = EtcdUnavailableError.exit_code


class LearnerNeverStartedError(PermanentError):
    """The new member was added but never started; it was removed again."""

    exit_code = EtcdUnavailableError.exit_code


def hint_of(exc: EtcdGuardError) -> str:
    """The plain-words reason of an etcd refusal (or the message)."""
    return str(getattr(exc, "hint", "") or exc)


def retry_refusals(action: Callable[[], T], what: str, reporter: Reporter, waits: Waits,
                   retry_on: Sequence[type[EtcdGuardError]] = RETRYABLE) -> T:
    """Run ``action``; while etcd refuses it for a passing reason, wait and retry up to ``waits.refusal``."""
    deadline = waits.clock() + waits.refusal
    told = ""
    while True:
        try:
            return action()
        except tuple(retry_on) as exc:
            left = deadline - waits.clock()
            if left <= 0:
                raise WaitTimeoutError(f"{what}: etcd still refuses after {waits.refusal:g}s: {exc}") from None
            why = hint_of(exc)
            if why != told:
                reporter.warn(f"{what}: waiting ({why}); retrying for up to {left:.0f}s more")
                told = why
            waits.sleep(min(waits.poll, max(0.05, left)))


def wait_started(port: MembershipPort, member_id: int, reporter: Reporter, waits: Waits) -> MemberInfo | None:
    """Wait until member ``member_id`` has started (it published its name); None after ``waits.start``."""
    deadline = waits.clock() + waits.start
    announced = False
    while True:
        try:
            found = next((m for m in port.members() if m.id == member_id), None)
        except EtcdUnavailableError:
            found = None
        if found is not None and found.name:
            return found
        if waits.clock() >= deadline:
            return None
        if not announced:
            reporter.info(f"waiting up to {waits.start:g}s for member {member_id:x} to start and join "
                          "(start it now with the settings above)")
            announced = True
        waits.sleep(waits.poll)


def wait_caught_up(port: MembershipPort, learner: MemberInfo, reporter: Reporter, waits: Waits) -> int:
    """Wait until the learner's applied index reaches the leader's; reports progress. Returns the index."""
    deadline = waits.clock() + waits.catch_up
    last = (0, 0)
    while True:
        mine = port.status(learner)
        leader_applied = _leader_applied(port, mine.leader if mine is not None else 0)
        if mine is not None and leader_applied is not None:
            last = (mine.raft_applied_index, leader_applied)
            reporter.progress(f"{learner.name or f'{learner.id:x}'} catching up", *last)
            if mine.raft_applied_index >= leader_applied:
                return mine.raft_applied_index
        if waits.clock() >= deadline:
            state = (f"applied index {last[0]} of the leader's {last[1]}" if last[1]
                     else "it does not answer Status")
            raise WaitTimeoutError(f"member {learner.name or f'{learner.id:x}'} is slow to catch up: {state} "
                                   f"after {waits.catch_up:g}s; run the command again to keep waiting")
        waits.sleep(waits.poll)


def _leader_applied(port: MembershipPort, leader_id: int) -> int | None:
    """The applied index of the leader the learner follows (None: unknown or not answering)."""
    if not leader_id:
        return None
    try:
        leader = next((m for m in port.members() if m.id == leader_id), None)
    except EtcdUnavailableError:
        return None
    status = port.status(leader) if leader is not None else None
    return status.raft_applied_index if status is not None else None
