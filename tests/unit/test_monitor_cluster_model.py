"""The immutable cluster model and probing over a connection (no etcd needed)."""

from __future__ import annotations

import json

import pytest

from etcdguard.config import EtcdConfig
from etcdguard.errors import ConfigError
from etcdguard.etcd.cluster import probe_cluster
from etcdguard.etcd.connection import open_connection
from etcdguard.etcd.quorum import QuorumState
from tests.support.fake_etcd import FakeCluster, FakeConnection
from tests.unit.test_monitor_fakes import MIB, healthy3, mem


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


def test_probe_bad_endpoint_is_config_error() -> None:
    with pytest.raises(ConfigError):
        open_connection(EtcdConfig.model_construct(endpoints=["ftp://x:1"]))  # the model itself refuses it


def test_probe_missing_tls_file_is_config_error(tmp_path: object) -> None:
    cfg = EtcdConfig.model_validate({"endpoints": ["https://127.0.0.1:1"], "cacert": "/nonexistent/ca.crt"})
    with pytest.raises(ConfigError, match="CA certificate"):
        open_connection(cfg)


def test_probe_nothing_listening_reports_placeholders() -> None:
    from etcdguard.etcd.tools import free_port
    from tests.support.waits import finishes

    eps = [f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"]
    with open_connection(EtcdConfig.model_validate({"endpoints": eps})) as conn:
        h = finishes(lambda: probe_cluster(conn, timeout=1.0))
    assert not h.discovered and not h.reachable_members and len(h.members) == 2
    assert all(m.error and "Connection refused" in m.error for m in h.members)
    assert h.errors[0] == "no configured endpoint answered MemberList"
    assert h.verdict().state is QuorumState.UNREACHABLE and "cannot tell" in h.verdict().reason


def test_probe_over_the_fake_connection() -> None:
    fake = FakeCluster.of(3, leader=1)
    fake.node("m2").up = False
    h = probe_cluster(FakeConnection(fake, ["http://m0:2379"]), timeout=1.0)
    assert h.discovered and [m.name for m in h.reachable_members] == ["m0", "m1"]
    assert h.leader is not None and h.leader.name == "m1"
    assert h.verdict().state is QuorumState.DEGRADED
    assert all(m.quota_source == "metrics" for m in h.reachable_members)
