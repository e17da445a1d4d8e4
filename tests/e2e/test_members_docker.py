"""Replace a dead member of a 3-member etcd cluster running as Docker containers on their own network.

The members have their own IPs, like nodes. One container is killed; `etcdguard member replace`
removes it, adds the new member as a learner and writes its env file; the new container is
started with `docker run --env-file` (only its own addresses as flags); etcdguard waits for it,
promotes it, and the cluster ends HEALTHY with 3 voting members holding all the data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from etcdguard.etcd.client import MemberClient
from tests.integration.members_helpers import etcdguard, etcdguard_background, read_env_file, wait_for_file
from tests.support.docker_cluster import DockerEtcdCluster, docker_etcd_cluster
from tests.support.require import missing

pytestmark = [pytest.mark.integration, pytest.mark.docker]
KEYS = 200


@pytest.fixture
def docker_client() -> Iterator[Any]:
    try:
        import docker

        client = docker.from_env(timeout=60)
        client.ping()
    except Exception as exc:
        missing(f"Docker unavailable: {exc}")
    yield client
    client.close()


def test_replace_a_killed_container_member(docker_client: Any, tmp_path: Path) -> None:
    with docker_etcd_cluster(docker_client, "3.5.16", size=3) as cluster:
        with MemberClient(cluster.endpoints[0], timeout=5) as c:
            for i in range(KEYS):
                c.put(f"/data/{i:05d}".encode(), os.urandom(256))
        cluster.kill("m2")
        survivors = ",".join(cluster.member(n).client_url for n in ("m0", "m1"))
        new_ip = cluster.ip(14)
        env_file = tmp_path / "m3.env"
        with etcdguard_background(
                "member", "replace", "m2", "--name", "m3", "--peer-url", f"http://{new_ip}:2380",
                "--env-file", str(env_file), "--yes", "--journal-dir", str(tmp_path / "journal"),
                "--endpoints", survivors, "--timeout", "2", "--start-timeout", "60") as run:
            wait_for_file(env_file, run)
            assert set(read_env_file(env_file)) == {"ETCD_NAME", "ETCD_INITIAL_CLUSTER", "ETCD_INITIAL_CLUSTER_STATE",
                                                    "ETCD_INITIAL_ADVERTISE_PEER_URLS"}
            new = cluster.run_member("m3", new_ip, env_file=env_file)
            code = run.finish()
        assert code == 0, run.output + cluster.logs("m3")
        assert "changed: removed member m2" in run.output and "HEALTHY" in run.output
        final = [ln for ln in run.stdout.splitlines() if ln.startswith("client endpoints")][-1]
        assert set(final.split(": ", 1)[1].split(",")) == {*survivors.split(","), new.client_url}
        _assert_healthy_three(cluster, survivors, new.client_url)


def _assert_healthy_three(cluster: DockerEtcdCluster, survivors: str, new_url: str) -> None:
    listed = etcdguard("member", "list", "-o", "json", "--endpoints", f"{survivors},{new_url}")
    assert listed.returncode == 0, listed.stderr
    doc = json.loads(listed.stdout)
    assert doc["quorum"]["state"] == "HEALTHY", doc["quorum"]
    names = sorted((m["name"], m["is_learner"]) for m in doc["members"])
    assert names == [("m0", False), ("m1", False), ("m3", False)]
    assert new_url in doc["client_endpoints"] and len(doc["client_endpoints"]) == 3
    with MemberClient(new_url, timeout=5) as c:
        assert c.count(b"/data/", b"/data0", serializable=True)[0] == KEYS
        assert not c.status().is_learner
