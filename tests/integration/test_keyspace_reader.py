"""The exact bbolt/MVCC reader on db files written by real etcd 3.5.16 and 3.4.23, and the
encryption-key pre-flight that uses it to overrule stale bytes."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from etcdguard.etcd.bbolt import BoltError, BoltFile
from etcdguard.etcd.client import MemberClient
from etcdguard.etcd.keyspace import current_keyspace
from etcdguard.etcd.pb import rpc_pb2, rpc_pb2_grpc
from etcdguard.restore.encryption import KeyRef, check_encryption_keys, scan_snapshot_keys
from etcdguard.restore.preflight import check_encryption
from tests.support.etcd_cluster import EtcdCluster, etcd_cluster, installation
from tests.support.require import missing

pytestmark = pytest.mark.integration

Entry = tuple[bytes, int, int, int, int]
OLD, NEW = KeyRef("aescbc", "old"), KeyRef("aescbc", "new")


def _require(version: str) -> None:
    if installation(version) is None:
        missing(f"etcd {version} not installed (scripts/install-test-deps.sh)")


def _live(cluster: EtcdCluster) -> dict[bytes, Entry]:
    """``get --prefix ""`` of the live etcd: every key with value, revisions, version and lease."""
    with grpc.insecure_channel(cluster.members[0].client_url.split("//", 1)[1]) as channel:
        r = rpc_pb2_grpc.KVStub(channel).Range(rpc_pb2.RangeRequest(key=b"\0", range_end=b"\0"), timeout=30)
    return {kv.key: (kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease) for kv in r.kvs}


def _read(path: Path) -> dict[bytes, Entry]:
    out: dict[bytes, Entry] = {}
    for kv in current_keyspace(path):
        assert kv.key not in out
        out[kv.key] = (kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)
    return out


def _snapshot(c: MemberClient, path: Path) -> Path:
    path.write_bytes(b"".join(c.snapshot()))
    return path


@pytest.mark.parametrize("version", ["3.5.16", "3.4.23"])
def test_current_keyspace_equals_the_live_etcd(tmp_path: Path, version: str) -> None:
    _require(version)
    with etcd_cluster(tmp_path / "etcd", version) as cluster, cluster.client() as c:
        for i in range(1_200):  # enough for branch pages
            c.put(f"/registry/configmaps/ns{i % 7}/cm{i:05d}".encode(), b"v" * (i % 300))
        c.put(b"/registry/secrets/default/big", b"B" * 70_000)  # an overflow page
        lease = c.lease_grant(600)
        c.put(b"/registry/leases/kube-system/holder", b"me", lease=lease)
        for i in range(0, 1_200, 3):
            c.put(f"/registry/configmaps/ns{i % 7}/cm{i:05d}".encode(), b"overwritten %d" % i)
        for i in range(0, 1_200, 5):
            c.delete(f"/registry/configmaps/ns{i % 7}/cm{i:05d}".encode())
        c.compact(c.status().revision - 200)
        c.put(b"/registry/configmaps/ns0/cm00000", b"back after a delete")
        c.delete(b"/registry/configmaps/ns1/cm00001")
        live = _live(cluster)
        snap = _snapshot(c, tmp_path / "snap.db")
    assert len(live) == 1_200 - 240 + 1 + 1 and live[b"/registry/leases/kube-system/holder"][4] == lease
    assert _read(snap) == live
    assert _read(cluster.members[0].data_dir / "member" / "snap" / "db") == live  # the stopped member's own db
    with BoltFile(snap) as db:
        keys = [k for k, _ in db.bucket(b"key").items()]
    assert keys == sorted(keys) and len(keys) > len(live)  # every revision kept since the compaction


def _encryption_config(path: Path, *names: str) -> Path:
    keys = "".join(f"      - name: {n}\n        secret: c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTMyYg==\n"
                   for n in names)
    path.write_text("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n"
                    "- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n" + keys + "  - identity: {}\n")
    return path


def _secret(key: str, i: int) -> bytes:
    return f"k8s:enc:aescbc:v1:{key}:".encode() + bytes([i % 251]) * 600


def test_rotated_away_key_in_old_revisions_is_ignored_a_current_one_is_refused(tmp_path: Path) -> None:
    _require("3.5.16")
    only_new = _encryption_config(tmp_path / "enc-new.yaml", "new")
    names = [f"/registry/secrets/ns{i % 4}/s{i}".encode() for i in range(40)]
    with etcd_cluster(tmp_path / "etcd", "3.5.16") as cluster, cluster.client() as c:
        for i, name in enumerate(names):
            c.put(name, _secret("old", i))
        c.put(b"/registry/configmaps/default/plain", b"not encrypted")
        for i, name in enumerate(names):  # what 'kubectl replace' of every Secret does after a key rotation
            c.put(name, _secret("new", i))
        c.compact(c.status().revision)  # no defrag: the old values stay in free pages
        rotated = _snapshot(c, tmp_path / "rotated.db")
        c.put(names[7], _secret("old", 7))  # one Secret still under the old key
        stale = _snapshot(c, tmp_path / "stale.db")

    assert scan_snapshot_keys(rotated)[OLD] > 0  # the byte scan alone would refuse
    check = check_encryption_keys(rotated, only_new)
    assert check.ok and check.exact is not None and check.stale == [OLD]
    assert check.exact.by_key == {NEW: 40} and check.exact.by_resource == {"secrets": 40, "configmaps": 1}
    assert ("aescbc key 'new' (40 current values); aescbc key 'old' appears only in old revisions/free pages: "
            "ignored; 41 current /registry/ keys: 40 secrets, 1 configmaps") in check.summary()
    assert check_encryption(rotated, only_new, kubernetes=True).ok

    refused = check_encryption_keys(stale, only_new)
    assert not refused.ok and refused.confirmed and refused.missing == [OLD]
    assert refused.exact is not None and refused.exact.by_key == {NEW: 39, OLD: 1}
    assert "missing from" in refused.summary() and "aescbc key 'old' (1 current values)" in refused.summary()
    pre = check_encryption(stale, only_new, kubernetes=True)
    assert not pre.ok and not pre.overridable  # --force does not get past a key current values need
    assert check_encryption_keys(stale, _encryption_config(tmp_path / "enc-both.yaml", "new", "old")).ok

    # a damaged db: the byte scan still sees 'old', the exact reader cannot confirm: refused, --force may pass
    with BoltFile(stale) as db:
        root_at, page = db.meta.root * db.page_size, db.page_size
    for damage, why in ((lambda b: b[: len(b) // 2], "truncated"),
                        (lambda b: bytes(16 << 10) + b[16 << 10:], "no valid bbolt meta page"),
                        (lambda b: b[:root_at] + b"\xff" * page + b[root_at + page:], "not a tree page")):
        broken = tmp_path / "broken.db"
        broken.write_bytes(damage(stale.read_bytes()))
        with pytest.raises(BoltError, match=why):
            list(current_keyspace(broken))
        result = check_encryption_keys(broken, only_new)
        assert not result.ok and not result.confirmed and why in (result.exact_error or "")
        pre = check_encryption(broken, only_new, kubernetes=True)
        assert not pre.ok and pre.overridable and "the exact check could not read the snapshot" in pre.detail
