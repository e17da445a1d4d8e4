"""``status`` / ``check`` CLI paths that need no running etcd (nothing reachable, bad config)."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from etcdguard.cli.main import app
from etcdguard.cli.options import etcd_overrides
from tests.support.etcd_cluster import free_port

runner = CliRunner()


def closed_endpoints() -> str:
    return ",".join(f"http://127.0.0.1:{free_port()}" for _ in range(2))


def test_etcd_overrides_keys() -> None:
    assert etcd_overrides("http://a:2379", Path("/ca"), None, None, 2.0) == {
        "etcd.endpoints": "http://a:2379", "etcd.cacert": Path("/ca"), "etcd.cert": None, "etcd.key": None,
        "etcd.dial_timeout": 2.0}


def test_status_unreachable_exits_4() -> None:
    r = runner.invoke(app, ["status", "--endpoints", closed_endpoints(), "--timeout", "1"])
    assert r.exit_code == 4, r.output
    assert "UNREACHABLE" in r.output and "no etcd endpoint answered" in r.output
    assert "QUORUM LOST" not in r.output


def test_status_with_a_mistyped_endpoint_does_not_claim_quorum_loss() -> None:
    typo = f"http://127.0.0.1:{free_port()}"  # nothing listens there: what a typo in the port looks like
    r = runner.invoke(app, ["status", "--endpoints", typo, "--timeout", "1"], env={"COLUMNS": "200"})
    assert r.exit_code == 4, r.output
    assert "QUORUM LOST" not in r.output
    assert f"no etcd endpoint answered (tried {typo}): cannot tell whether the cluster has quorum" in r.output
    assert "Traceback" not in r.output


def test_status_unreachable_json() -> None:
    r = runner.invoke(app, ["status", "--endpoints", closed_endpoints(), "--timeout", "1", "-o", "json"])
    assert r.exit_code == 4
    data = json.loads(r.stdout)
    assert data["verdict"]["state"] == "UNREACHABLE" and data["cluster"]["discovered"] is False


def test_check_unreachable_is_critical() -> None:
    r = runner.invoke(app, ["check", "--endpoints", closed_endpoints(), "--timeout", "1"])
    assert r.exit_code == 2, r.output
    assert r.stdout.startswith("ETCDGUARD CRITICAL - no etcd endpoint answered")


def test_check_bad_config_is_unknown(tmp_path: Path) -> None:
    missing = str(tmp_path / "no.crt")
    r = runner.invoke(app, ["check", "--endpoints", "https://127.0.0.1:1", "--cacert", missing])
    assert r.exit_code == 3
    assert r.stdout.startswith("ETCDGUARD UNKNOWN - ") and "Traceback" not in r.output
    r = runner.invoke(app, ["check", "-o", "json", "--endpoints", "ftp://x"])
    assert r.exit_code == 3 and json.loads(r.stdout)["status"] == "UNKNOWN"


def test_status_bad_config_exits_3(tmp_path: Path) -> None:
    r = runner.invoke(app, ["status", "--endpoints", "https://127.0.0.1:1", "--cacert", str(tmp_path / "x")])
    assert r.exit_code == 3 and "error:" in r.output and "Traceback" not in r.output


def test_help_documents_exit_codes() -> None:
    r = runner.invoke(app, ["check", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    for text in ("0  OK", "1  WARNING", "2  CRITICAL", "3  UNKNOWN"):
        assert text in r.output
    r = runner.invoke(app, ["status", "--help"], env={"COLUMNS": "200"})
    assert "4  no etcd endpoint answered" in r.output


def test_check_writes_metrics_file(tmp_path: Path) -> None:
    out = tmp_path / "etcd.prom"
    r = runner.invoke(app, ["check", "--endpoints", closed_endpoints(), "--timeout", "1",
                            "--metrics-file", str(out)])
    assert r.exit_code == 2
    assert "etcdguard_cluster_has_quorum 0.0" in out.read_text()
