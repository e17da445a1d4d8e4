"""``member replace``: swap a dead member for a new one, as journaled, idempotent steps.

identify -> preflight -> confirm-down -> remove-old -> add-learner (settings out, wait until it
starts) -> catch-up -> promote -> verify. Each step checks the cluster for its effect, and the
journal records what ran, so running the same command again after an interruption (even
SIGKILL) continues where it stopped; a learner left by an earlier attempt is recognised by its
peer URL. ``remove_only`` stops after the removal (kubeadm's learner-mode join adds the learner).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from etcdguard.errors import AbortedError
from etcdguard.etcd.client import MemberInfo
from etcdguard.etcd.quorum import QuorumVerdict, assess_quorum
from etcdguard.members.access import MembershipPort
from etcdguard.members.certs import check_member_certificates, require_good
from etcdguard.members.guardrails import guard_add, guard_promote
from etcdguard.members.newmember import (
    NewMemberSettings,
    client_endpoints,
    find_member,
    member_with_peer_url,
    require_member,
    url_host,
)
from etcdguard.members.operations import (
    check_new_member,
    confirm_voter,
    label,
    remove_member,
    report_change,
    settings_for,
)
from etcdguard.members.waits import (
    LearnerNeverStartedError,
    Reporter,
    Waits,
    retry_refusals,
    wait_caught_up,
    wait_started,
)
from etcdguard.steps import (
    Journal,
    RunLock,
    Step,
    StepContext,
    StepListener,
    StepRunner,
    StepState,
    ensure_private_dir,
)

JOURNAL_KIND = "member-replace"
STEPS = ("identify", "preflight", "confirm-down", "remove-old", "add-learner", "catch-up", "promote", "verify")


@dataclass(frozen=True)
class ReplaceRequest:
    """What the operator asked for."""

    dead: str
    name: str
    peer_url: str
    force: bool = False
    remove_only: bool = False
    cacert: Path | None = None
    peer_cert: Path | None = None
    server_cert: Path | None = None
    client_hosts: tuple[str, ...] = ()

    @property
    def run_id(self) -> str:
        """Stable per (dead member, new name): the same command finds its journal again."""
        digest = hashlib.sha256(f"{self.dead}\0{self.name}".encode()).hexdigest()[:10]
        return f"{self.name}-{digest}"


@dataclass
class ReplaceOutcome:
    """What the replacement ended with."""

    journal: Journal
    settings: NewMemberSettings | None = None
    new_member: MemberInfo | None = None
    verdict: QuorumVerdict | None = None
    client_endpoints: list[str] = field(default_factory=list)


def open_journal(directory: Path, request: ReplaceRequest) -> Journal:
    """The unfinished journal of this replacement, or a new one."""
    ensure_private_dir(directory)
    path = directory / f"{JOURNAL_KIND}-{request.run_id}.json"
    params = {"dead": request.dead, "name": request.name, "peer_url": request.peer_url,
              "remove_only": request.remove_only}
    if path.exists():
        journal = Journal.load(path)
        if journal.outcome.value != "done" and [r.name for r in journal.steps] == list(_names(request)):
            if journal.params.get("peer_url") != request.peer_url:
                _reset_from(journal, "preflight")
                journal.params["peer_url"] = request.peer_url
            return journal
    return Journal(JOURNAL_KIND, request.run_id, path=path, params=params)


def _names(request: ReplaceRequest) -> tuple[str, ...]:
    return STEPS[:4] if request.remove_only else STEPS


def _reset_from(journal: Journal, name: str) -> None:
    """Run ``name`` and every later step again (the new member's settings changed)."""
    names = [r.name for r in journal.steps]
    for record in journal.steps[names.index(name):]:
        if record.state is not StepState.pending:
            record.state = StepState.pending
            record.detail = "to run again: the peer URL changed"


class Replacement:
    """The steps of one replacement, bound to a cluster, an operator and a settings sink."""

    def __init__(self, port: MembershipPort, request: ReplaceRequest, reporter: Reporter, waits: Waits,
                 emit: Callable[[NewMemberSettings], None]) -> None:
        self.port = port
        self.request = request
        self.reporter = reporter
        self.waits = waits
        self.emit = emit
        self.outcome: ReplaceOutcome | None = None

    # -- helpers ------------------------------------------------------------------------------
    def _dead(self, ctx: StepContext) -> MemberInfo | None:
        """The dead member, while it is still in the member list."""
        record = ctx.journal.record("identify")
        dead_id = record.result.get("dead_id") if record is not None else None
        return next((m for m in self.port.members() if m.id == dead_id), None) if dead_id else None

    @staticmethod
    def _result(ctx: StepContext, step: str, key: str) -> int:
        record = ctx.journal.record(step)
        return int((record.result.get(key) if record is not None else 0) or 0)

    def _ours(self, ctx: StepContext, members: list[MemberInfo]) -> MemberInfo | None:
        """The new member: it has the new peer URL, is not the dead one, and is a learner or named so."""
        dead_id = self._result(ctx, "identify", "dead_id")
        found = member_with_peer_url([m for m in members if m.id != dead_id], self.request.peer_url)
        if found is None:
            return None
        mine = found.is_learner or found.name == self.request.name
        return found if mine or found.id == self._result(ctx, "add-learner", "learner_id") else None

    def _new(self, ctx: StepContext) -> MemberInfo:
        found = self._ours(ctx, self.port.members())
        if found is None:
            raise AbortedError(f"no member has the peer URL {self.request.peer_url} any more; "
                               "run the command again to add it anew")
        return found

    def _is_voter(self, ctx: StepContext) -> bool:
        new = self._ours(ctx, self.port.members())
        return new is not None and not new.is_learner

    # -- steps --------------------------------------------------------------------------------
    def identify(self, ctx: StepContext) -> str:
        members = self.port.members()
        dead = find_member(members, self.request.dead)
        ours = self._ours(ctx, members)
        if dead is not None and dead.is_learner and ours is not None and dead.id == ours.id:
            dead = None  # the name given is our own learner's, added by an earlier attempt
        if dead is None:
            if ours is None:
                require_member(members, self.request.dead)  # raises: no such member
            ctx.save(dead_id=0)
            return f"{self.request.dead} is no longer a member (removed by an earlier attempt)"
        if dead.is_learner:
            raise AbortedError(f"{label(dead)} is a learner: remove it with `etcdguard member remove` instead")
        ctx.save(dead_id=dead.id, dead_name=dead.name, dead_peer_urls=list(dead.peer_urls))
        return f"replacing {label(dead)} (peer URL {', '.join(dead.peer_urls)}) with {self.request.name}"

    def preflight(self, ctx: StepContext) -> str:
        members = self.port.members()
        dead_id = self._result(ctx, "identify", "dead_id")
        ours = self._ours(ctx, members)
        own = ours.id if ours is not None else None
        prior = self._prior_learner(ctx, members)
        ignore = {dead_id, *(m.id for m in (prior,) if m is not None)}
        check_new_member([m for m in members if m.id not in ignore], self.request.name, self.request.peer_url,
                         own_id=own)
        notes = ["peer URL free"]
        if self.request.cacert is not None:
            checks = check_member_certificates(
                self.request.cacert, peer_cert=self.request.peer_cert, server_cert=self.request.server_cert,
                peer_host=url_host(self.request.peer_url), client_hosts=list(self.request.client_hosts))
            require_good(checks)
            notes += [f"{c.what} signed by the etcd CA, SANs cover the new address" for c in checks]
        return "; ".join(notes)

    def confirm_down(self, ctx: StepContext) -> str:
        dead = self._dead(ctx)
        if dead is None:
            return "already removed"
        status = self.port.status(dead)
        if status is None:
            return f"{label(dead)} does not answer on {', '.join(dead.client_urls) or 'any client URL'}: it is down"
        role = "the leader" if status.leader == status.member_id else "a follower"
        if not self.request.force:
            raise AbortedError(f"{label(dead)} still answers (it is {role}, applied index "
                               f"{status.raft_applied_index}): it is not dead; stop it first, or --force "
                               "replaces a live member")
        self.reporter.warn(f"--force: replacing {label(dead)} although it still answers (it is {role})")
        return f"{label(dead)} answers; replaced anyway (--force)"

    def remove_old(self, ctx: StepContext) -> str:
        dead = self._dead(ctx)
        if dead is None:
            return "already removed"
        remove_member(self.port, f"{dead.id:x}", force=self.request.force, reporter=self.reporter,
                      waits=self.waits, warn=False)
        return f"removed {label(dead)}"

    def _prior_learner(self, ctx: StepContext, members: list[MemberInfo]) -> MemberInfo | None:
        record = ctx.journal.record("add-learner")
        prior_id = record.result.get("learner_id") if record is not None else None
        prior = next((m for m in members if m.id == prior_id), None) if prior_id else None
        return prior if prior is not None and self.request.peer_url not in prior.peer_urls else None

    def add_learner(self, ctx: StepContext) -> str:
        members = self.port.members()
        prior = self._prior_learner(ctx, members)
        if prior is not None and prior.is_learner:
            self.reporter.info(f"learner {label(prior)} was added by an earlier attempt with peer URL "
                               f"{', '.join(prior.peer_urls)}: removing it and adding {self.request.peer_url} anew")
            retry_refusals(lambda: self.port.remove(prior.id), f"removing {label(prior)}", self.reporter, self.waits)
            after = self.port.members()
            report_change(self.reporter, f"removed stale learner {label(prior)}", members, after)
            members = after
        mine = self._ours(ctx, members)
        reused = mine is not None
        if mine is not None:
            self.reporter.info(f"found learner {label(mine)} with peer URL {self.request.peer_url} "
                               "(added by an earlier attempt): continuing with it")
        else:
            check_new_member(members, self.request.name, self.request.peer_url)
            guard_add(self.port.health().members, learner=True, force=self.request.force)
            added = retry_refusals(lambda: self.port.add([self.request.peer_url], learner=True),
                                   f"adding learner {self.request.name}", self.reporter, self.waits)
            ctx.save(learner_id=added.member.id)
            report_change(self.reporter, f"added learner {self.request.name} as {added.member.id:x} "
                          f"(peer URL {self.request.peer_url})", members, added.members)
            mine, members = added.member, list(added.members)
        ctx.save(learner_id=mine.id)
        self.emit(settings_for(members, mine, self.request.name))
        started = wait_started(self.port, mine.id, self.reporter, self.waits)
        if started is None:
            self._remove_unstarted(mine)
        if started.name != self.request.name:
            self.reporter.warn(f"the new member started with the name {started.name!r}, not {self.request.name!r}")
        return f"learner {label(started)} {'was already added' if reused else 'added'} and started"

    def _remove_unstarted(self, learner: MemberInfo) -> NoReturn:
        before = self.port.members()
        retry_refusals(lambda: self.port.remove(learner.id), f"removing unstarted learner {learner.id:x}",
                       self.reporter, self.waits)
        report_change(self.reporter, f"removed learner {learner.id:x}, which never started", before,
                      self.port.members())
        raise LearnerNeverStartedError(
            f"the new member {self.request.name} ({learner.id:x}) never started within {self.waits.start:g}s: "
            f"it has no name and no client URLs, so it never reached the cluster (not merely slow). Usual causes: "
            f"its etcd does not announce exactly {self.request.peer_url} as its peer URL, its peer certificate "
            "lacks its address in the SANs, or it was started on an old data dir instead of an empty one (its log "
            "then says 'member has been permanently removed'). It was removed again so it does not block the "
            "next attempt; fix the cause and run the same command again")

    def catch_up(self, ctx: StepContext) -> str:
        new = self._new(ctx)
        index = wait_caught_up(self.port, new, self.reporter, self.waits)
        return f"{label(new)} applied index {index} reached the leader's"

    def promote(self, ctx: StepContext) -> str:
        new = self._new(ctx)
        before = self.port.members()
        guarded = guard_promote(self.port.health().members, new.id, force=self.request.force)
        for warning in guarded.warnings:
            self.reporter.warn(warning)
        retry_refusals(lambda: self.port.promote(new.id), f"promoting {label(new)}", self.reporter, self.waits)
        report_change(self.reporter, f"promoted {label(new)} to a voting member", before, self.port.members())
        return f"promoted {label(new)}"

    def verify(self, ctx: StepContext) -> str:
        new = self._new(ctx)
        status = confirm_voter(self.port, new, self.reporter, self.waits)
        health = self.port.health()
        verdict = assess_quorum(health.members)
        if self.outcome is not None:
            self.outcome.new_member = new
            self.outcome.verdict = verdict
            self.outcome.client_endpoints = client_endpoints(health.members)
        return (f"{label(new)} reports itself as a voting member (applied index {status.raft_applied_index}); "
                f"cluster {verdict.headline}")

    def steps(self) -> list[Step]:
        """The plan."""
        voter = self._is_voter
        gone = self._gone
        table: dict[str, Step] = {
            "identify": Step("identify", self.identify),
            "preflight": Step("preflight", self.preflight, check=voter),
            "confirm-down": Step("confirm-down", self.confirm_down, check=gone),
            "remove-old": Step("remove-old", self.remove_old, check=gone),
            "add-learner": Step("add-learner", self.add_learner, check=voter),
            "catch-up": Step("catch-up", self.catch_up, check=voter),
            "promote": Step("promote", self.promote, check=voter),
            "verify": Step("verify", self.verify),
        }
        return [table[n] for n in _names(self.request)]

    def _gone(self, ctx: StepContext) -> bool:
        return self._dead(ctx) is None

    def run(self, journal: Journal, on_change: StepListener | None = None) -> ReplaceOutcome:
        """Run (or resume) the plan recorded in ``journal``."""
        self.outcome = ReplaceOutcome(journal)
        runner = StepRunner(journal, on_change)
        lock_dir = journal.path.parent if journal.path is not None else None
        if lock_dir is None:
            runner.run(self.steps())
            return self.outcome
        with RunLock(lock_dir / f"{JOURNAL_KIND}.lock", "another member replace"):
            runner.run(self.steps())
        return self.outcome
