"""A simulated etcd membership for the member workflows' unit tests (not collected as tests).

Members are started or down; a started learner catches up by ``catch_up_rate`` per tick; a
process "started" for a new member announces ``process_peer_url`` and joins only if that is the
peer URL the member was added with. Time is simulated: ``FakeClock.sleep`` advances it and ticks
the cluster. Refusals can be queued per operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from etcdguard.errors import EtcdGuardError
from etcdguard.etcd.client import MemberAddResult, MemberInfo, MemberStatus
from etcdguard.etcd.cluster import ClusterHealth, MemberHealth
from etcdguard.etcd.errors import LearnerNotReadyError, PeerURLExistsError, TooManyLearnersError
from etcdguard.members.waits import Waits


@dataclass
class FakeMember:
    info: MemberInfo
    up: bool = True
    applied: int = 100


@dataclass
class FakeCluster:
    members_: list[FakeMember] = field(default_factory=list)
    leader_id: int = 0
    leader_applied: int = 100
    catch_up_rate: int = 40
    next_id: int = 0xA0
    refusals: dict[str, list[EtcdGuardError]] = field(default_factory=dict)
    # what happens to a member added next: start it after ``start_after`` ticks, announcing this URL
    start_after: int | None = 2
    process_peer_url: str | None = None
    pending_start: dict[int, int] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, size: int, **kw: object) -> FakeCluster:
        c = cls(**kw)  # type: ignore[arg-type]
        for i in range(size):
            c.members_.append(FakeMember(MemberInfo(i + 1, f"m{i}", (f"http://10.0.0.{i + 1}:2380",),
                                                    (f"http://10.0.0.{i + 1}:2379",), False)))
        c.leader_id = 1
        return c

    def member(self, key: int | str) -> FakeMember:
        return next(m for m in self.members_ if key in (m.info.id, m.info.name))

    def _refuse(self, op: str) -> None:
        queue = self.refusals.get(op) or []
        if queue:
            raise queue.pop(0)

    def tick(self) -> None:
        self.leader_applied += 1
        for mid in list(self.pending_start):
            self.pending_start[mid] -= 1
            if self.pending_start[mid] <= 0:
                del self.pending_start[mid]
                self.start_new(mid)
        for m in self.members_:
            if m.up and m.info.id != self.leader_id:
                m.applied = min(self.leader_applied, m.applied + self.catch_up_rate)
            elif m.info.id == self.leader_id:
                m.applied = self.leader_applied

    def start_new(self, member_id: int, name: str | None = None) -> None:
        m = next((x for x in self.members_ if x.info.id == member_id), None)
        if m is None:
            return
        announced = self.process_peer_url or m.info.peer_urls[0]
        if announced not in m.info.peer_urls:
            return  # etcd refuses to start: its peer URL does not match the member list
        host = m.info.peer_urls[0].rsplit(":", 1)[0]
        m.info = replace(m.info, name=name or f"new{member_id:x}", client_urls=(f"{host}:2379",))
        m.up = True
        m.applied = 0

    # -- MembershipPort -------------------------------------------------------------------------
    def members(self) -> list[MemberInfo]:
        self._refuse("members")
        return [m.info for m in self.members_]

    def health(self) -> ClusterHealth:
        out = []
        for m in self.members_:
            i = m.info
            out.append(MemberHealth(
                name=i.name, id=i.id, endpoint=(i.client_urls or (None,))[0], reachable=m.up,
                client_urls=i.client_urls, peer_urls=i.peer_urls, is_leader=i.id == self.leader_id and m.up,
                is_learner=i.is_learner, leader_id=self.leader_id if m.up else 0,
                raft_applied_index=m.applied if m.up else None))
        return ClusterHealth(tuple(out), self.leader_id, 0xC1, datetime.now(timezone.utc))

    def status(self, member: MemberInfo) -> MemberStatus | None:
        m = next((x for x in self.members_ if x.info.id == member.id), None)
        if m is None or not m.up or not m.info.client_urls:
            return None
        return MemberStatus(m.info.id, 0xC1, "3.5.16", 1, 1, self.leader_id, m.applied, 2, m.applied,
                            m.info.is_learner, (), m.applied)

    def add(self, peer_urls: Sequence[str], *, learner: bool) -> MemberAddResult:
        self.calls.append(f"add {','.join(peer_urls)}")
        self._refuse("add")
        if any(u in m.info.peer_urls for m in self.members_ for u in peer_urls):
            raise PeerURLExistsError("etcdserver: Peer URLs already exists")
        if learner and any(m.info.is_learner for m in self.members_):
            raise TooManyLearnersError("etcdserver: too many learner members in cluster")
        self.next_id += 1
        new = FakeMember(MemberInfo(self.next_id, "", tuple(peer_urls), (), learner), up=False, applied=0)
        self.members_.append(new)
        if self.start_after is not None:
            self.pending_start[new.info.id] = self.start_after
        return MemberAddResult(new.info, tuple(m.info for m in self.members_))

    def remove(self, member_id: int) -> None:
        self.calls.append(f"remove {member_id:x}")
        self._refuse("remove")
        self.members_ = [m for m in self.members_ if m.info.id != member_id]

    def promote(self, member_id: int) -> None:
        self.calls.append(f"promote {member_id:x}")
        self._refuse("promote")
        m = self.member(member_id)
        if m.applied < self.leader_applied * 0.9:
            raise LearnerNotReadyError("etcdserver: can only promote a learner member which is in sync with leader")
        m.info = replace(m.info, is_learner=False)

    def move_leader(self, target_id: int) -> None:
        self.calls.append(f"move-leader {target_id:x}")
        self.leader_id = target_id


class FakeClock:
    def __init__(self, cluster: FakeCluster | None = None) -> None:
        self.now = 0.0
        self.cluster = cluster

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.cluster is not None:
            self.cluster.tick()

    def waits(self, **kw: float) -> Waits:
        base = {"refusal": 10.0, "start": 10.0, "catch_up": 60.0, "poll": 1.0}
        base.update(kw)
        return Waits(clock=lambda: self.now, sleep=self.sleep, **base)  # type: ignore[arg-type]


@dataclass
class Recorder:
    infos: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    progress_seen: list[tuple[int, int]] = field(default_factory=list)

    def info(self, message: str) -> None:
        self.infos.append(message)

    def warn(self, message: str) -> None:
        self.warnings.append(message)

    def change(self, message: str) -> None:
        self.changes.append(message)

    def progress(self, what: str, done: int, total: int) -> None:
        self.progress_seen.append((done, total))
