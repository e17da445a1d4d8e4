"""The "new, empty etcd" rule: cluster id, revision far below the backup's, a small keyspace."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from etcdguard.etcd.cluster import ClusterHealth, MemberHealth
from etcdguard.etcd.quorum import assess_quorum
from etcdguard.restore.assess import Assessment, BackupRef, Survivor
from etcdguard.restore.emptiness import KEY_LIMIT, check_empty, revision_limit
from etcdguard.restore.recommend import RestorePath, recommend

NOW = datetime(2026, 12, 6, 8, 0, tzinfo=timezone.utc)
BACKUP_CID = "3a1f00c0ffee"
NEW_CID = "8e9e12345678"


def _assessment(revision: int, cluster_id: int, key_count: int | None, backup_rev: int = 5_000_000) -> Assessment:
    member = MemberHealth(name="cp1", id=7, endpoint="https://cp1:2379", reachable=True, revision=revision,
                          leader_id=7, is_leader=True, raft_index=revision)
    health = ClusterHealth((member,), 7, cluster_id, NOW)
    ref = BackupRef("20261206T070000Z-aaaaaa", backup_rev, NOW - timedelta(hours=1), True, True, BACKUP_CID,
                    10, "3.5.16", "cp1")
    return Assessment("prod", NOW, health, assess_quorum([member]), None, None, None, ref, ref, backup_rev,
                      (Survivor("cp1", revision, True, endpoint=member.endpoint),), key_count)


def test_limits_scale_with_the_backup() -> None:
    assert revision_limit(5_000_000) == 50_000  # 1%
    assert revision_limit(1_000_000_000) == 10_000_000
    assert revision_limit(200_000) == 10_000  # small backups: a tenth, up to 10,000
    assert revision_limit(1_000) == 100


def test_a_new_etcd_with_an_apiserver_writing_is_empty_and_says_why() -> None:
    a = _assessment(212, int(NEW_CID, 16), 37)
    check = a.empty_check
    assert check.empty and a.empty_cluster
    assert check.reason == ("etcd answers but holds 37 keys at revision 212, cluster id 8e9e… differs from the "
                            "backup's 3a1f…: a new, empty etcd")
    rec = recommend(a, backup=a.newest_backup)
    assert rec.path is RestorePath.BACKUP and "a new, empty etcd" in rec.reason and not rec.notes
    view = a.to_dict()
    assert view["empty_cluster"] is True and view["key_count"] == 37
    assert view["empty_check"] == {"empty": True, "reason": check.reason, "revision": 212, "key_count": 37,
                                   "cluster_id": NEW_CID, "backup_revision": 5_000_000,
                                   "backup_cluster_id": BACKUP_CID, "revision_limit": 50_000,
                                   "key_limit": KEY_LIMIT}


def test_the_live_cluster_the_backup_came_from_is_never_empty() -> None:
    live = _assessment(5_000_100, int(BACKUP_CID, 16), 10)
    assert not live.empty_cluster and "the cluster the backup came from" in live.empty_check.reason
    assert recommend(live, backup=live.newest_backup).path is RestorePath.NONE


def test_same_cluster_id_but_wiped_counts_as_empty_only_far_below_the_backup() -> None:
    # kubeadm leaves --initial-cluster-token at its default: a fresh etcd from the same manifest keeps the id
    wiped = _assessment(300, int(BACKUP_CID, 16), 120)
    assert wiped.empty_cluster and "its data was reset" in wiped.empty_check.reason
    assert recommend(wiped, backup=wiped.newest_backup).path is RestorePath.BACKUP
    assert not _assessment(4_000_000, int(BACKUP_CID, 16), 120).empty_cluster


def test_too_many_keys_or_too_high_a_revision_or_unknown_facts_are_not_empty() -> None:
    new = int(NEW_CID, 16)
    crowded = _assessment(212, new, KEY_LIMIT + 1)
    assert not crowded.empty_cluster and f"more than {KEY_LIMIT:,} keys" in crowded.empty_check.reason
    busy = _assessment(60_000, new, 37)
    assert not busy.empty_cluster and "not far below the backup's 5,000,000 (limit 50,000)" in busy.empty_check.reason
    assert recommend(busy, backup=busy.newest_backup).path is RestorePath.NONE
    assert not _assessment(212, new, None).empty_cluster  # the count could not be asked
    assert not _assessment(212, 0, 37).empty_cluster  # cluster id unknown
    assert check_empty([1], None, None, None, None).empty  # revision 1: nothing was ever written
    assert not check_empty([], NEW_CID, 0, 10, BACKUP_CID).empty
    assert not check_empty([212, None], NEW_CID, 0, 5_000_000, BACKUP_CID).empty
    assert not check_empty([212], NEW_CID, 37, None, None).empty  # no backup to compare with
