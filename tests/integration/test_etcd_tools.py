"""etcd's tools as etcdguard runs them, against every installed etcd: restore commands, revision
bump detection, a stopped member's data dir, ports, the child environment."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from etcdguard.errors import ConfigError
from etcdguard.etcd.client import MemberClient
from etcdguard.etcd.datadir import read_data_dir
from etcdguard.etcd.local import LocalEtcd
from etcdguard.etcd.tools import (
    EtcdToolError,
    RestoreSpec,
    SnapshotTool,
    child_env,
    ephemeral_port_range,
    free_port,
    restore,
    restore_args,
    snapshot_status,
)
from tests.support.etcd_cluster import etcd_cluster, installation
from tests.support.require import missing

VERSIONS = {"3.4.23": False, "3.5.1": False, "3.5.16": True}  # version -> restore takes --bump-revision


def _install(version: str):  # type: ignore[no-untyped-def]
    found = installation(version)
    if found is None:
        missing(f"etcd {version} not installed (scripts/install-test-deps.sh)")
    return found


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_bump_detection_restore_and_data_dir(tmp_path: Path, version: str) -> None:
    install = _install(version)
    tool = SnapshotTool.of(install)
    assert tool.is_etcdutl == (version != "3.4.23")
    assert tool.supports_bump_revision is VERSIONS[version]

    with etcd_cluster(tmp_path / "src", version) as cluster, cluster.client() as c:
        for i in range(20):
            c.put(f"/registry/pods/default/p{i}".encode(), b"x" * 100)
        source_rev = c.status().revision
        (tmp_path / "snap.db").write_bytes(b"".join(c.snapshot()))
        live = c.status()
    # a stopped member's data dir: ids from the WAL, snapshot status of its db
    cluster.close()
    info = read_data_dir(cluster.members[0].data_dir, tool)
    assert info.problem == "" and info.exists
    assert info.member_id == live.member_id and info.cluster_id == live.cluster_id
    assert info.status is not None and info.status.revision == source_rev

    target = LocalEtcd(install, tmp_path / "restored", name="r1", cluster_token="tok-1",
                       log_path=tmp_path / "r1.log")
    bump = 1_000_000 if VERSIONS[version] else None
    spec = target.restore_spec(tmp_path / "snap.db", bump_revision=bump, mark_compacted=bump is not None)
    args = restore_args(tool, spec)
    joined = " ".join(args)
    assert f"--initial-cluster r1={target.peer_url}" in joined and "--initial-cluster-token tok-1" in joined
    assert ("--bump-revision 1000000 --mark-compacted" in joined) is VERSIONS[version]
    target.before_start = lambda etcd: restore(tool, etcd.restore_spec(tmp_path / "snap.db", bump_revision=bump,
                                                                        mark_compacted=bump is not None))
    with target, MemberClient(target.endpoint, timeout=10) as client:
        assert client.get(b"/registry/pods/default/p7") == b"x" * 100
        assert client.status().revision == source_rev + (bump or 0)
    assert snapshot_status(tool, tmp_path / "snap.db").revision == source_rev


def test_bump_refused_by_a_tool_without_it(tmp_path: Path) -> None:
    tool = SnapshotTool.of(_install("3.5.1"))
    spec = RestoreSpec(tmp_path / "s.db", tmp_path / "d", "a", {"a": ["http://127.0.0.1:2"]}, "t",
                       bump_revision=10)
    with pytest.raises(ConfigError, match="cannot bump revisions"):
        restore_args(tool, spec)


def test_wal_dir_and_multi_member_initial_cluster(tmp_path: Path) -> None:
    tool = SnapshotTool.of(_install("3.5.16"))
    spec = RestoreSpec(tmp_path / "s.db", tmp_path / "d", "b",
                       {"a": ["https://10.0.0.1:2380"], "b": ["https://10.0.0.2:2380"]}, "t",
                       wal_dir=tmp_path / "wal", skip_hash_check=True)
    args = restore_args(tool, spec)
    assert args[args.index("--initial-cluster") + 1] == "a=https://10.0.0.1:2380,b=https://10.0.0.2:2380"
    assert args[args.index("--initial-advertise-peer-urls") + 1] == "https://10.0.0.2:2380"
    assert args[args.index("--wal-dir") + 1] == str(tmp_path / "wal") and "--skip-hash-check" in args


def test_broken_snapshot_names_the_tool_failure(tmp_path: Path) -> None:
    tool = SnapshotTool.of(_install("3.5.16"))
    (tmp_path / "bad.db").write_bytes(b"not a snapshot" * 100)
    with pytest.raises(EtcdToolError, match="snapshot status failed"):
        snapshot_status(tool, tmp_path / "bad.db")
    empty = read_data_dir(tmp_path / "nothing", tool)
    assert not empty.exists and empty.member_id is None and empty.problem == ""


def test_free_ports_are_below_the_ephemeral_range_and_bindable() -> None:
    low, _ = ephemeral_port_range()
    ports = {free_port() for _ in range(50)}
    assert len(ports) == 50 and all(1024 <= p < low for p in ports)
    for port in list(ports)[:5]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_child_env_carries_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("ETCDGUARD_ETCD__PASSWORD", "pw")
    monkeypatch.setenv("ETCD_NAME", "bogus")
    env = child_env({"ETCDCTL_API": "3"})
    assert set(env) == {"PATH", "LANG", "ETCDCTL_API"} and env["PATH"] == os.environ["PATH"]
