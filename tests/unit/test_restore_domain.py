"""The restore's pure parts: manifest discovery, encryption keys, recommendation, bump, plan."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from etcdguard.backup.keys import generate_keys, load_signing_key, load_verify_key
from etcdguard.errors import ConfigError, IntegrityError
from etcdguard.etcd.cluster import ClusterHealth, MemberHealth
from etcdguard.etcd.quorum import assess_quorum
from etcdguard.restore.assess import Assessment, BackupRef, Survivor
from etcdguard.restore.discovery import (
    apiserver_from_manifest,
    member_from_manifest,
    parse_flags,
    parse_initial_cluster,
    rewrite_manifest_flags,
)
from etcdguard.restore.encryption import KeyRef, check_encryption_keys, configured_keys, scan_snapshot_keys
from etcdguard.restore.plan import PlanMember, PlanSource, build_plan, cluster_id, member_id, read_plan, write_plan
from etcdguard.restore.recommend import BUMP_MINIMUM, RestorePath, bump_amount, recommend
from tests.support.kubeadm import make_kubeadm_node

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def test_kubeadm_manifests_are_read_through_host_paths(tmp_path: Path) -> None:
    node = make_kubeadm_node(tmp_path / "n", name="cp1", client_port=22379, peer_port=22380, metrics_port=22381,
                             apiserver_port=26443, extra_etcd_flags=["--quota-backend-bytes=4294967296",
                                                                     f"--wal-dir={tmp_path}/n/var/lib/etcd/wal"])
    m = member_from_manifest(node.etcd_manifest)
    assert m.name == "cp1" and m.data_dir == node.etcd_data_dir
    assert m.peer_urls == ("https://127.0.0.1:22380",) and m.client_urls == ("https://127.0.0.1:22379",)
    assert m.initial_cluster == "cp1=https://127.0.0.1:22380" and m.quota_backend_bytes == 4 * 1024**3
    assert m.trusted_ca_file == node.etcd_pki_dir / "ca.crt" and m.image_version == "3.5.16"
    assert m.wal_dir == node.etcd_data_dir / "wal"
    tls = m.client_tls()
    assert tls is not None and tls.cert == node.etcd_pki_dir / "healthcheck-client.crt"
    api = apiserver_from_manifest(node.apiserver_manifest)
    assert api.secure_port == 26443 and api.encryption_provider_config == node.encryption_config
    assert api.etcd_servers == ("https://127.0.0.1:22379",)


def test_flags_and_rewriting_keep_the_rest_of_the_manifest() -> None:
    assert parse_flags(["etcd", "--name=a", "--data-dir", "/d", "--client-cert-auth"]) == {
        "name": "a", "data-dir": "/d", "client-cert-auth": "true"}
    text = "spec:\n  containers:\n  - command:\n    - etcd\n    - --initial-cluster=a=u1,b=u2\n    - --name=a\n"
    out = rewrite_manifest_flags(text, {"initial-cluster": "a=u1", "initial-cluster-state": "new"})
    assert "    - --initial-cluster=a=u1\n" in out and "    - --initial-cluster-state=new\n" in out
    assert out.count("--name=a") == 1 and out.startswith("spec:\n")
    assert parse_initial_cluster("a=u1,a=u3,b=u2") == {"a": ("u1", "u3"), "b": ("u2",)}
    with pytest.raises(ConfigError):
        parse_initial_cluster("nonsense")


def test_encryption_keys_found_in_a_snapshot_must_be_configured(tmp_path: Path) -> None:
    node = make_kubeadm_node(tmp_path / "n", client_port=22379, peer_port=22380, metrics_port=22381,
                             apiserver_port=26443)
    assert configured_keys(node.encryption_config) == {KeyRef("aescbc", "key1")}
    snap = tmp_path / "snap.db"
    # a value straddling the scanner's chunk boundary is still found once
    filler = b"x" * ((4 << 20) - 10)
    snap.write_bytes(filler + b"k8s:enc:aescbc:v1:key1:" + b"\0" * 100 + b"k8s:enc:aescbc:v1:old-key:zz")
    assert scan_snapshot_keys(snap) == {KeyRef("aescbc", "key1"): 1, KeyRef("aescbc", "old-key"): 1}
    check = check_encryption_keys(snap, node.encryption_config)
    assert not check.ok and check.missing == [KeyRef("aescbc", "old-key")]
    assert "old-key" in check.summary()
    assert not check_encryption_keys(snap, None).ok
    plain = tmp_path / "plain.db"
    plain.write_bytes(b"no encrypted values here")
    assert check_encryption_keys(plain, None).ok


def test_bump_is_at_least_a_billion_above_the_newest_revision_seen() -> None:
    assert bump_amount(100, 50) == BUMP_MINIMUM
    bump = bump_amount(1_000, 5_500_123)
    assert bump >= BUMP_MINIMUM + 5_499_123 and bump % 1_000_000 == 0
    assert 1_000 + bump >= 5_500_123 + BUMP_MINIMUM


def _member(name: str, reachable: bool, revision: int | None = None, leader: int = 0) -> MemberHealth:
    return MemberHealth(name=name, id=hash(name) & 0xFFFF, endpoint=f"http://{name}:2379", reachable=reachable,
                        revision=revision, leader_id=leader, raft_index=revision)


def _assessment(members: list[MemberHealth], backup_rev: int | None, seen: int) -> Assessment:
    health = ClusterHealth(tuple(members), None, 1, NOW)
    ref = BackupRef("20261129T110000Z-aaaaaa", backup_rev, NOW - timedelta(hours=2), True, True, "1", 10, "3.5.16",
                    "m0") if backup_rev is not None else None
    survivors = tuple(Survivor(m.name, m.revision, True, endpoint=m.endpoint) for m in members
                      if m.reachable and m.revision is not None)
    return Assessment("c", NOW, health, assess_quorum(members), None, None, None, ref, ref, seen, survivors)


def test_recommendation_paths_with_data_loss_in_numbers() -> None:
    healthy = _assessment([_member("a", True, 10, 1), _member("b", True, 10, 1), _member("c", False)], 5, 10)
    rec = recommend(healthy, backup=healthy.newest_backup)
    assert rec.path is RestorePath.NONE and "quorum" in rec.reason
    assert recommend(healthy, backup=healthy.newest_backup, force=True).path is RestorePath.SINGLE

    newer = _assessment([_member("a", True, 900), _member("b", False), _member("c", False)], 500, 900)
    rec = recommend(newer, backup=newer.newest_backup)
    assert rec.path is RestorePath.SURVIVOR and rec.survivor is not None and rec.survivor.name == "a"
    assert "400 revisions" in rec.reason and rec.single_member

    older = _assessment([_member("a", True, 400), _member("b", False), _member("c", False)], 500, 700)
    rec = recommend(older, backup=older.newest_backup)
    assert rec.path is RestorePath.SINGLE and rec.lost_revisions == 200
    assert "200 revisions" in rec.data_loss and "2h 0m" in rec.data_loss
    plan_rec = recommend(older, backup=older.newest_backup, multi_member_plan=True)
    assert plan_rec.path is RestorePath.BACKUP and not plan_rec.single_member


def test_ids_match_etcd_and_plans_are_signed_and_bound(tmp_path: Path) -> None:
    # etcd 3.5.16 reported these for peers http://127.0.0.1:23802/23803 and token tok-123
    members = [PlanMember(name="x", peer_urls=["http://127.0.0.1:23802"], client_urls=[]),
               PlanMember(name="y", peer_urls=["http://127.0.0.1:23803"], client_urls=[])]
    assert member_id(["http://127.0.0.1:23802"], "tok-123") == 13547740920306659607
    assert f"{cluster_id(members, 'tok-123'):x}" == "5006d7118374d6e0"

    keys = generate_keys(tmp_path / "keys")
    plan = build_plan(cluster_name="prod", old_cluster_id="abc", path="c",
                      source=PlanSource(kind="backup", revision=5, backup_id="b"), members=members,
                      bump_revision=0, kubernetes=False, old_members=[], apiserver_endpoints=[])
    assert plan.token.startswith("prod-restore-") and plan.initial_cluster.count("=") == 2
    path = tmp_path / "plan.json"
    write_plan(path, plan, load_signing_key(keys.signing_key))
    trusted = [load_verify_key(keys.signing_pub)]
    assert read_plan(path, trusted, "prod").token == plan.token
    with pytest.raises(ConfigError, match="for cluster 'prod'"):
        read_plan(path, trusted, "staging")
    path.write_text(path.read_text().replace('"initial_cluster": "x=', '"initial_cluster": "z='))
    with pytest.raises(IntegrityError):
        read_plan(path, trusted, "prod")


def test_an_empty_fresh_cluster_is_restored_without_force_a_non_empty_one_is_refused() -> None:
    fresh = _assessment([_member("cp1", True, 1, 1)], 5_000, 5_000)
    assert fresh.quorum.has_quorum and fresh.empty_cluster
    rec = recommend(fresh, backup=fresh.newest_backup)
    assert rec.path is RestorePath.BACKUP and rec.backup is fresh.newest_backup
    assert "empty (revision 1)" in rec.reason and "replaces nothing" in rec.reason
    assert not any("--force" in n for n in rec.notes) and rec.lost_revisions == 0
    assert fresh.to_dict()["empty_cluster"] is True

    written = _assessment([_member("cp1", True, 2, 1)], 5_000, 5_000)
    assert not written.empty_cluster
    assert recommend(written, backup=written.newest_backup).path is RestorePath.NONE
    empty_backup = _assessment([_member("cp1", True, 1, 1)], 1, 1)
    assert recommend(empty_backup, backup=empty_backup.newest_backup).path is RestorePath.NONE
    assert recommend(fresh, backup=None).path is RestorePath.NONE
    one_empty = _assessment([_member("a", True, 1, 1), _member("b", True, 800, 1), _member("c", False)], 500, 800)
    assert recommend(one_empty, backup=one_empty.newest_backup).path is RestorePath.NONE


def test_old_members_include_the_backups_recorded_members_and_name_configured_endpoints() -> None:
    from types import SimpleNamespace
    from typing import cast

    from etcdguard.backup.manifest import ClusterMember, Manifest
    from etcdguard.config import EtcdConfig
    from etcdguard.restore.session import Diagnosis, _old_members

    down = _assessment([_member("m0", False), _member("m1", False)], 5, 10)
    endpoints = ["http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.9:2379"]
    diag = Diagnosis(down, "command", Path("/nonexistent"), EtcdConfig(endpoints=endpoints), None)
    recorded = cast(Manifest, SimpleNamespace(members=[
        ClusterMember(name="m0", peer_urls=["http://10.0.0.1:2380"], client_urls=["http://10.0.0.1:2379"]),
        ClusterMember(name="m1", peer_urls=["http://10.0.0.2:2380"], client_urls=["http://10.0.0.2:2379"])]))
    old = {m.name: (m.peer_urls, m.client_urls) for m in _old_members(diag, recorded)}
    assert old == {"m0": (["http://10.0.0.1:2380"], ["http://10.0.0.1:2379"]),
                   "m1": (["http://10.0.0.2:2380"], ["http://10.0.0.2:2379"]),
                   "(configured endpoints)": ([], ["http://10.0.0.9:2379"])}
    unnamed = next(m for m in _old_members(diag, None) if m.name == "(configured endpoints)")
    assert unnamed.client_urls == endpoints  # without the recorded members, none is known


def test_each_part_compares_hashkv_with_the_next_member_in_the_plan() -> None:
    from etcdguard.etcd.client import MemberInfo
    from etcdguard.restore.execute import hash_partners

    def member(name: str, published: bool = True) -> MemberInfo:
        return MemberInfo(hash(name) & 0xFFFF, name, (f"http://{name}:2380",),
                          (f"http://{name}:2379",) if published else (), False)

    three = [member("m2"), member("m0"), member("m1")]
    order = ["m0", "m1", "m2"]
    pairs = {own: [n for n, _ in hash_partners(own, order, three)] for own in order}
    assert pairs == {"m0": ["m0", "m1"], "m1": ["m1", "m2"], "m2": ["m2", "m0"]}  # the ring covers every member
    # the next member has not published its client URLs yet: the one after it
    assert [n for n, _ in hash_partners("m0", order, [member("m0"), member("m1", False), member("m2")])] == ["m0", "m2"]
    assert hash_partners("m0", order, [member("m0")]) == []  # one member: nothing to compare
    assert [n for n, _ in hash_partners("m9", order, three)] == ["m2", "m0", "m1"]  # own not listed: all
