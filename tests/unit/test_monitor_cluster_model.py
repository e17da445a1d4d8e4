"""The immutable cluster model and pick_snapshot_source (no etcd needed)."""

from __future__ import annotations

import json

import pytest

from etcdguard.config import EtcdConfig
from etcdguard.errors import ConfigError, EtcdUnavailableError
from etcdguard.etcd.cluster import pick_snapshot_source, probe_cluster
from tests.unit.test_monitor_fakes import MIB, cluster, healthy3, mem


def test_member_properties() -> None:
    m = mem("m0", leader=True, db_size=50 * MIB, quota_bytes=200 * MIB)
    assert m.quota_percent == 25.0
    assert m.id_hex == f"{m.id:x}" and m.healthy
    assert mem("", up=False).display_name.startswith("(unstarted ")
    assert mem("m1", up=False).quota_percent is None


def test_lookup_by_name_id_endpoint() -> None:
    h = healthy3()
    m1 = h.member("m1")
    assert m1 is not None and m1.endpoint is not None
    assert h.member(m1.id_hex) is m1 and h.member(m1.endpoint) is m1 and h.member("nope") is None


def test_to_dict_is_json() -> None:
    data = json.loads(json.dumps(healthy3().to_dict()))
    assert data["cluster_id"] == "c1" and len(data["members"]) == 3
    keys = {"reachable", "is_leader", "is_learner", "quota_percent", "lag", "alarms"}
    assert keys <= set(data["members"][0])


def test_pick_leader_first_then_most_caught_up() -> None:
    h = cluster(mem("m0", raft_applied_index=900), mem("m1", leader=True, raft_applied_index=1000),
                mem("m2", raft_applied_index=990), mem("m3", up=False), mem("l1", learner=True,
                                                                             raft_applied_index=2000))
    assert [m.name for m in pick_snapshot_source(h)] == ["m1", "m2", "m0"]


def test_pick_without_quorum_still_offers_survivors() -> None:
    h = cluster(mem("m0", sees_leader=False, raft_applied_index=5), mem("m1", up=False),
                mem("m2", sees_leader=False, raft_applied_index=9))
    assert [m.name for m in pick_snapshot_source(h)] == ["m2", "m0"]


def test_pick_nothing_reachable_is_empty() -> None:
    assert pick_snapshot_source(cluster(mem("m0", up=False))) == []


def test_pick_named_member() -> None:
    h = cluster(mem("m0", leader=True), mem("m1"), mem("m2", up=False))
    assert [m.name for m in pick_snapshot_source(h, "m1")] == ["m1"]
    with pytest.raises(ConfigError, match="no etcd member 'mx'"):
        pick_snapshot_source(h, "mx")
    with pytest.raises(EtcdUnavailableError, match="m2 is unreachable"):
        pick_snapshot_source(h, "m2")


def test_probe_bad_endpoint_is_config_error() -> None:
    with pytest.raises(ConfigError):
        probe_cluster(EtcdConfig.model_construct(endpoints=["ftp://x:1"]))  # the model itself refuses it


def test_probe_missing_tls_file_is_config_error(tmp_path: object) -> None:
    cfg = EtcdConfig.model_validate({"endpoints": ["https://127.0.0.1:1"], "cacert": "/nonexistent/ca.crt"})
    with pytest.raises(ConfigError, match="CA certificate"):
        probe_cluster(cfg)


def test_probe_nothing_listening_reports_placeholders() -> None:
    from etcdguard.etcd.tools import free_port
    from tests.support.waits import finishes

    eps = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    h = finishes(lambda: probe_cluster(EtcdConfig.model_validate({"endpoints": eps}), timeout=1.0))
    assert not h.discovered and not h.reachable_members and len(h.members) == 2
    assert all(m.error and "Connection refused" in m.error for m in h.members)
    assert h.errors[0] == "no configured endpoint answered MemberList"
