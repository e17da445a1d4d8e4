"""The new member's settings: initial cluster, environment file, endpoints, naming members."""

from __future__ import annotations

import pytest

from etcdguard.errors import ConfigError
from etcdguard.etcd.client import MemberInfo
from etcdguard.members.newmember import (
    NewMemberSettings,
    client_endpoints,
    find_member,
    initial_cluster,
    validate_name,
    validate_peer_url,
)

MEMBERS = [
    MemberInfo(0x1A, "m0", ("https://10.0.0.1:2380",), ("https://10.0.0.1:2379",), False),
    MemberInfo(0x2B, "m1", ("https://10.0.0.2:2380",), ("https://10.0.0.2:2379",), False),
    MemberInfo(0x3C, "", ("https://10.0.0.3:2380",), (), True),
]


def test_initial_cluster_names_the_new_member_and_skips_unstarted_others() -> None:
    new = MemberInfo(0x4D, "", ("https://10.0.0.4:2380",), (), True)
    text = initial_cluster([*MEMBERS, new], 0x4D, "m3", new.peer_urls)
    assert text == "m0=https://10.0.0.1:2380,m1=https://10.0.0.2:2380,m3=https://10.0.0.4:2380"
    assert initial_cluster(MEMBERS[:2], 0x99, "m3", ("https://10.0.0.4:2380",)).endswith(",m3=https://10.0.0.4:2380")


def test_env_file_holds_exactly_the_four_variables_unquoted() -> None:
    s = NewMemberSettings("m3", "m0=https://10.0.0.1:2380,m3=https://10.0.0.4:2380", ("https://10.0.0.4:2380",))
    assert s.env_file_text() == (
        "ETCD_NAME=m3\n"
        "ETCD_INITIAL_CLUSTER=m0=https://10.0.0.1:2380,m3=https://10.0.0.4:2380\n"
        "ETCD_INITIAL_CLUSTER_STATE=existing\n"
        "ETCD_INITIAL_ADVERTISE_PEER_URLS=https://10.0.0.4:2380\n")
    assert s.flags()[2] == "--initial-cluster-state=existing"


def test_learners_never_appear_in_client_endpoints() -> None:
    learner = MemberInfo(0x5E, "l", ("https://10.0.0.5:2380",), ("https://10.0.0.5:2379",), True)
    assert client_endpoints([*MEMBERS, learner]) == ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]


@pytest.mark.parametrize("key", ["m1", "2b", "https://10.0.0.2:2380", "https://10.0.0.2:2379/"])
def test_members_are_named_by_name_hex_id_peer_or_client_url(key: str) -> None:
    found = find_member(MEMBERS, key)
    assert found is not None and found.id == 0x2B


def test_bad_names_and_peer_urls_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        validate_name("a,b=c")
    for bad in ("10.0.0.4:2380", "https://10.0.0.4", "ftp://x:1", "https://10.0.0.4:2380/path"):
        with pytest.raises(ConfigError):
            validate_peer_url(bad)
    assert validate_peer_url("https://10.0.0.4:2380/") == "https://10.0.0.4:2380"
