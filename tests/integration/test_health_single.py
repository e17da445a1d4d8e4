"""A healthy single-member cluster is OK by design; monitor.min_fault_tolerance makes it a WARNING."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.health_fixtures import PRIMARY, cli, cli_endpoint_args, need
from tests.support.etcd_cluster import etcd_cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_single_member_is_ok_unless_more_tolerance_is_wanted(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    need(PRIMARY)
    with etcd_cluster(tmp_path / "etcd", PRIMARY, 1) as cluster:
        r = cli("check", *cli_endpoint_args(cluster))
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.startswith("ETCDGUARD OK - HEALTHY (can lose 0 more) | ")
        r = cli("status", "-o", "json", *cli_endpoint_args(cluster))
        assert r.returncode == 0, r.stderr
        data = json.loads(r.stdout)
        assert data["status"] == "OK" and data["verdict"]["state"] == "HEALTHY"
        assert "no fault tolerance, by design" in data["verdict"]["reason"]
        r = cli("status", *cli_endpoint_args(cluster))
        assert r.returncode == 0 and "by design" in r.stdout

        monkeypatch.setenv("ETCDGUARD_MONITOR__MIN_FAULT_TOLERANCE", "1")
        assert os.environ["ETCDGUARD_MONITOR__MIN_FAULT_TOLERANCE"] == "1"
        r = cli("check", *cli_endpoint_args(cluster))
        assert r.returncode == 1, r.stdout + r.stderr
        assert "WARNING quorum:" in r.stdout and "below monitor.min_fault_tolerance 1" in r.stdout
