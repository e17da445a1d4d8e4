"""Is the etcd that answers a new, empty one (started fresh after a disaster), or the live cluster?

After a control-plane kit restore the kubelet starts etcd on an empty data dir, and a real
kube-apiserver writes to it within seconds: its revision is soon above 1, so "revision 1" alone
misses it. The rule, with the newest backup as the yardstick (revision ``B``, cluster id):

1. No member answers, or a revision is unknown: not empty (nothing to decide on).
2. Revision ``R`` (the highest answering) <= 1: empty: nothing was ever written.
3. Same cluster id as the backup and ``R >= B``: never empty; that is the cluster the backup came
   from, still running (a revision never goes back within one cluster's life).
4. Otherwise empty only when both hold: ``R`` is far below ``B`` (below ``revision_limit(B)``:
   1% of it, but at least a tenth of it up to 10,000 for small backups) and the whole keyspace
   holds at most :data:`KEY_LIMIT` keys (a fresh kube-apiserver writes a few hundred). Either the
   cluster id differs from the backup's (a new cluster), or it is the same but ``R < B``: its data
   was reset since the backup (an etcd started fresh from the same manifest gets the same id:
   kubeadm leaves ``--initial-cluster-token`` at its default).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KEY_LIMIT = 2_000
SMALL_BACKUP_REVISIONS = 10_000


def revision_limit(backup_revision: int) -> int:
    """Revisions below this are "far below" a backup at ``backup_revision``."""
    return max(backup_revision // 100, min(SMALL_BACKUP_REVISIONS, backup_revision // 10))


def _short(cluster_id: str) -> str:
    return cluster_id[:4] + "…" if len(cluster_id) > 4 else cluster_id


@dataclass(frozen=True)
class EmptyCheck:
    """The verdict on the answering etcd, with the numbers it rests on and one line saying why."""

    empty: bool
    reason: str
    revision: int | None = None
    key_count: int | None = None
    cluster_id: str | None = None
    backup_revision: int | None = None
    backup_cluster_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (the limits included, so scripts see the rule's inputs)."""
        return {"empty": self.empty, "reason": self.reason, "revision": self.revision,
                "key_count": self.key_count, "cluster_id": self.cluster_id,
                "backup_revision": self.backup_revision, "backup_cluster_id": self.backup_cluster_id,
                "revision_limit": revision_limit(self.backup_revision) if self.backup_revision else None,
                "key_limit": KEY_LIMIT}


def check_empty(revisions: list[int | None], cluster_id: str | None, key_count: int | None,
                backup_revision: int | None, backup_cluster_id: str | None) -> EmptyCheck:
    """Apply the rule in this module's docstring (pure). Cluster ids in hex; '' or None: unknown."""
    if not revisions:
        return EmptyCheck(False, "no member answers")
    if any(r is None for r in revisions):
        return EmptyCheck(False, "a member's revision is unknown")
    rev = max(r for r in revisions if r is not None)
    cid, bid = cluster_id or None, backup_cluster_id or None

    def verdict(empty: bool, reason: str) -> EmptyCheck:
        return EmptyCheck(empty, reason, rev, key_count, cid, backup_revision, bid)

    if rev <= 1:
        return verdict(True, f"etcd answers but is empty (revision {rev}): nothing was ever written")
    if backup_revision is None:
        return verdict(False, f"revision {rev:,} and no backup to compare with")
    same = cid is not None and cid == bid
    if same and rev >= backup_revision:
        return verdict(False, f"cluster id {cid} is the backup's and revision {rev:,} is at or past the "
                       f"backup's {backup_revision:,}: the cluster the backup came from")
    limit = revision_limit(backup_revision)
    holds = f"holds {key_count:,} keys" if key_count is not None else "holds an unknown number of keys"
    if cid is None or bid is None:
        return verdict(False, f"etcd answers at revision {rev:,} but a cluster id is unknown: not known to be new")
    if same:
        ids = (f"cluster id {_short(cid)} is the backup's but its revision is below the backup's "
               f"{backup_revision:,} (revisions never go back in one cluster): its data was reset")
    else:
        ids = f"cluster id {_short(cid)} differs from the backup's {_short(bid)}"
    head = f"etcd answers but {holds} at revision {rev:,}, {ids}"
    if rev >= limit:
        return verdict(False, f"{head}; revision {rev:,} is not far below the backup's {backup_revision:,} "
                       f"(limit {limit:,}): not a new, empty etcd")
    if key_count is None or key_count > KEY_LIMIT:
        return verdict(False, f"{head}; more than {KEY_LIMIT:,} keys or unknown: not a new, empty etcd")
    return verdict(True, f"{head}: a new, empty etcd")
