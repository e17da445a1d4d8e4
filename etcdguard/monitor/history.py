"""Leader-change history for the service: fed one ClusterHealth per poll, not thread-safe."""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

from etcdguard.etcd.cluster import ClusterHealth


class LeaderChangeTracker:
    """Remembers when the leader changed, from successive probes.

    A change is counted when the leader id differs from the previous poll's, or when a member's
    ``etcd_server_leader_changes_seen_total`` rose (catching elections between polls). Counter
    resets (member restarts) are ignored. Only ``window`` worth of history is kept.
    """

    def __init__(self, window: timedelta) -> None:
        self.window = window
        self._changes: deque[datetime] = deque()
        self._leader: int | None = None
        self._counters: dict[int, int] = {}
        self._primed = False

    def observe(self, health: ClusterHealth) -> int:
        """Record one probe; returns how many leader changes it revealed."""
        now = health.timestamp
        counted = 0
        for m in health.reachable_members:
            if m.leader_changes_seen is None:
                continue
            previous = self._counters.get(m.id)
            if previous is not None and m.leader_changes_seen > previous:
                counted = max(counted, m.leader_changes_seen - previous)
            self._counters[m.id] = m.leader_changes_seen
        if self._primed and health.leader_id and health.leader_id != self._leader:
            counted = max(counted, 1)
        if health.leader_id:
            self._leader = health.leader_id
        if not self._primed:
            counted, self._primed = 0, True
        self._changes.extend([now] * counted)
        self._trim(now)
        return counted

    def changes(self, now: datetime | None = None) -> list[datetime]:
        """When the leader changed within the window (oldest first)."""
        if now is not None:
            self._trim(now)
        return list(self._changes)

    def _trim(self, now: datetime) -> None:
        while self._changes and now - self._changes[0] > self.window:
            self._changes.popleft()
