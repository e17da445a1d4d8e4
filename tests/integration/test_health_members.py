"""NOSPACE alarm (and following the advice literally), learners, and TLS, against real etcd."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from etcdguard.errors import EtcdGuardError
from etcdguard.etcd.client import MemberClient
from etcdguard.etcd.cluster import ClusterHealth
from etcdguard.etcd.quorum import assess_quorum
from tests.integration.health_fixtures import OLD, PRIMARY, cli, cli_endpoint_args, need, probe, wait_for
from tests.support.etcd_cluster import EtcdCluster, Member, etcd_cluster
from tests.support.tls import make_tls_bundle

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

QUOTA = 2 * 1024 * 1024


def fill_until_nospace(client: MemberClient, limit: int = 2000) -> int:
    """Overwrite one key with 64 KiB values until etcd refuses (old revisions fill the backend)."""
    value = b"x" * 65536
    for i in range(limit):
        try:
            client.put(b"/fill/key", value + str(i).encode())
        except EtcdGuardError as err:
            assert "space exceeded" in str(err), err
            return i
    raise AssertionError("etcd never raised NOSPACE")


@pytest.mark.parametrize("version", [PRIMARY, OLD])
def test_nospace_is_critical_and_the_advice_works(version: str, tmp_path: Path) -> None:
    need(version)
    with etcd_cluster(tmp_path / "etcd", version, 1, extra_args=["--quota-backend-bytes", str(QUOTA)]) as c:
        with c.client(0) as client:
            assert fill_until_nospace(client) > 0
        health = probe(c)
        (member,) = health.members
        assert member.alarms == ("NOSPACE",)
        assert member.quota_bytes == QUOTA and member.quota_source == "metrics"
        assert (member.quota_percent or 0) > 90  # the put that would cross the quota is refused

        r = cli("check", *cli_endpoint_args(c))
        assert r.returncode == 2, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        assert lines[0].startswith("ETCDGUARD CRITICAL - ")
        (alarm_line,) = [line for line in lines if line.startswith("CRITICAL alarms:")]
        assert "NOSPACE alarm on m0" in alarm_line
        commands = re.findall(r"`(etcdctl [^`]+)`", alarm_line.split("-- advice:", 1)[1])
        assert [cmd.split()[-1] for cmd in commands] == [commands[0].split()[-1], "defrag", "disarm"]
        assert commands[0].split()[-2] == "compact"

        # Follow the advice literally, in order, with the real etcdctl.
        assert c.install.etcdctl is not None
        for cmd in commands:
            argv = [str(c.install.etcdctl), *cmd.split()[1:]]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                                  env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"})
            assert done.returncode == 0, (cmd, done.stdout, done.stderr)

        after = probe(c)
        assert after.members[0].alarms == ()
        with c.client(0) as client:
            client.put(b"/after", b"writable again")
        r = cli("check", *cli_endpoint_args(c))
        assert not any(line.startswith("CRITICAL alarms") for line in r.stdout.splitlines()), r.stdout


def add_learner(c: EtcdCluster, name: str) -> Member:
    """add_learner, retried while etcd still calls a just-started cluster 'unhealthy' (bounded)."""
    deadline = time.monotonic() + 20
    while True:
        try:
            return c.add_learner(name)
        except EtcdGuardError as err:
            if "unhealthy cluster" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_learner_is_shown_as_learner(tmp_path: Path) -> None:
    need(PRIMARY)
    with etcd_cluster(tmp_path / "etcd", PRIMARY, 3) as c:
        learner = add_learner(c, "learner1")

        def learner_up() -> ClusterHealth | None:
            h = probe(c)
            m = h.member("learner1")
            return h if m is not None and m.reachable else None

        health = wait_for(learner_up, timeout=30)
        m = health.member("learner1")
        assert m is not None and m.is_learner and not m.is_leader and m.endpoint == learner.client_url
        v = assess_quorum(health.members)
        assert (v.voting, v.learners, v.quorum, v.failures_tolerated) == (3, 1, 2, 1)
        assert [x.name for x in health.members][-1] == "learner1"  # learners listed last

        r = cli("status", *cli_endpoint_args(c))
        assert r.returncode == 0, r.stderr
        (row,) = [line for line in r.stdout.splitlines() if line.startswith("learner1")]
        assert " learner " in row
        r = cli("check", *cli_endpoint_args(c))
        assert r.returncode == 1, r.stdout
        (line,) = [x for x in r.stdout.splitlines() if x.startswith("WARNING learners:")]
        assert f"member promote {m.id_hex}" in line


def test_tls_members_and_metrics(tmp_path: Path) -> None:
    need(PRIMARY)
    tls = make_tls_bundle(tmp_path / "tls")
    with etcd_cluster(tmp_path / "etcd", PRIMARY, 1, tls=tls) as c:
        health = probe(c)
        (member,) = health.members
        assert member.reachable and member.endpoint and member.endpoint.startswith("https://")
        assert member.quota_source == "metrics"  # /metrics fetched over HTTPS with the client cert
        r = cli("status", *cli_endpoint_args(c))
        assert r.returncode == 0, r.stderr

        wrong_ca = ["--endpoints", c.endpoints[0], "--timeout", "2", "--cacert", str(tls.other_ca),
                    "--cert", str(tls.client_cert), "--key", str(tls.client_key)]
        r = cli("status", *wrong_ca)
        assert r.returncode == 4 and "TLS handshake failed" in r.stdout
        assert "Traceback" not in r.stdout + r.stderr
