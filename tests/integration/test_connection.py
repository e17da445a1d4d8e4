"""One etcd connection per command, against real etcd: the channels one backup opens, auth tokens
renewed across idle gaps longer than their TTL, and credentials never sent over plain text."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from etcdguard.backup.pipeline import BackupRequest, take_backup
from etcdguard.config import EtcdConfig
from etcdguard.etcd import channel as channel_module
from etcdguard.etcd.cluster import probe_cluster
from etcdguard.etcd.connect import snapshot_sources
from etcdguard.etcd.connection import open_connection
from etcdguard.service.election import EtcdLeaseElector
from etcdguard.storage.local import LocalStore
from tests.integration.health_fixtures import PRIMARY, need
from tests.support.etcd_cluster import EtcdCluster, etcd_cluster, free_port
from tests.support.tls import make_tls_bundle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
TOKEN_TTL = 2  # seconds: etcd's --auth-token-ttl for the auth cluster
PASSWORD = "s3cret-pw"


@pytest.fixture
def channels(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every gRPC channel opened in this process during the test, by target URL."""
    opened: list[str] = []
    original = channel_module.Link.__init__

    def counting(self: Any, endpoint: str, *args: Any, **kwargs: Any) -> None:
        opened.append(endpoint)
        original(self, endpoint, *args, **kwargs)

    monkeypatch.setattr(channel_module.Link, "__init__", counting)
    return opened


def backup_request(etcd: EtcdConfig) -> BackupRequest:
    return BackupRequest(etcd=etcd, cluster_name="conn", recipients=[], recipient_texts=[], signing_key=None,
                         allow_unencrypted=True, allow_unsigned=True)


def test_one_backup_opens_one_channel_per_member(tmp_path: Path, channels: list[str]) -> None:
    need(PRIMARY)
    with etcd_cluster(tmp_path / "etcd", PRIMARY, 3) as cluster:
        with cluster.client(0) as c:
            for i in range(50):
                c.put(f"/registry/pods/p{i}".encode(), b"x" * 100)
        channels.clear()
        result = take_backup(backup_request(EtcdConfig(endpoints=cluster.endpoints)), LocalStore(tmp_path / "s"))
    assert result.manifest.key_counts is not None and result.manifest.key_counts.total >= 50
    # discovery, Status of each member, HashKV, key count and stream: 3 members, 3 channels
    assert sorted(channels) == sorted(cluster.endpoints), channels


@pytest.fixture(scope="module", name="auth_cluster")
def auth_cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One TLS member with auth enabled (root / PASSWORD), simple tokens of TOKEN_TTL seconds, that
    also listens on plain http and advertises only that plain URL in MemberList."""
    need(PRIMARY)
    base = tmp_path_factory.mktemp("auth")
    plain = f"http://127.0.0.1:{free_port()}"
    tls = make_tls_bundle(base / "tls")
    with etcd_cluster(base / "etcd", PRIMARY, 1, tls=tls,
                      extra_args=["--auth-token", "simple", "--auth-token-ttl", str(TOKEN_TTL)]) as cluster:
        member = cluster.members[0]
        cluster.extra_args += ["--listen-client-urls", f"{member.client_url},{plain}",
                               "--advertise-client-urls", plain]
        cluster.restart(0)
        cluster.wait_healthy()
        etcdctl = cluster.install.etcdctl
        assert etcdctl is not None
        tls_flags = [f"--endpoints={member.client_url}", f"--cacert={tls.ca}", f"--cert={tls.client_cert}",
                     f"--key={tls.client_key}"]
        for args in (["user", "add", "root", f"--new-user-password={PASSWORD}"],
                     ["user", "grant-role", "root", "root"], ["auth", "enable"]):
            subprocess.run([str(etcdctl), *tls_flags, *args], check=True, capture_output=True, timeout=30)
        yield cluster


def auth_config(cluster: EtcdCluster) -> EtcdConfig:
    assert cluster.tls is not None
    return EtcdConfig(endpoints=[cluster.members[0].client_url], cacert=cluster.tls.ca,
                      cert=cluster.tls.client_cert, key=cluster.tls.client_key, username="root",
                      password=PASSWORD)  # type: ignore[arg-type]


def test_a_connection_keeps_working_across_idle_gaps_longer_than_the_token_ttl(auth_cluster: EtcdCluster) -> None:
    with open_connection(auth_config(auth_cluster)) as conn:
        client = conn.client(auth_cluster.members[0].client_url)
        client.put(b"/idle/k", b"v1")
        first_token = client._link.token  # type: ignore[attr-defined]
        assert first_token
        for _ in range(2):
            time.sleep(TOKEN_TTL + 1.5)  # the token expires while the connection is idle
            assert client.get(b"/idle/k") == b"v1"
            client.put(b"/idle/k", b"v1")
        assert client._link.token != first_token  # type: ignore[attr-defined]
        time.sleep(TOKEN_TTL + 1.5)
        chunks = list(client.snapshot())  # a stream call renews its token too
        assert sum(len(c) for c in chunks) > 32


def test_leader_election_keeps_its_lease_across_idle_gaps(auth_cluster: EtcdCluster) -> None:
    with open_connection(auth_config(auth_cluster)) as conn:
        elector = EtcdLeaseElector(lambda: conn, "auth", "replica-a", ttl=15)
        other = EtcdLeaseElector(lambda: conn, "auth", "replica-b", ttl=15)
        assert elector.tick()
        for _ in range(2):
            time.sleep(TOKEN_TTL + 1.5)
            assert elector.tick() and elector.is_leader()   # lease renewed with a fresh token
            assert not other.tick() and other.leader_id() == "replica-a"
        elector.resign()
        assert other.tick()
        other.resign()


def test_credentials_never_go_to_an_advertised_plain_url(auth_cluster: EtcdCluster, channels: list[str],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    member = auth_cluster.members[0]
    with open_connection(auth_config(auth_cluster)) as conn:
        _, members = conn.discover()
        (advertised,) = members[0].client_urls
        assert advertised.startswith("http://")  # what MemberList offers
        (source,) = snapshot_sources(conn)
        health = probe_cluster(conn, timeout=3.0)
    assert source.endpoint == member.client_url
    assert health.members[0].reachable and health.members[0].endpoint == member.client_url
    assert channels == [member.client_url]
    assert f"skipping advertised client URL {advertised}" in caplog.text
