"""``etcdguard serve`` refuses to start (exit 3, one line) without what its jobs need; a later loss of
the store or etcd shows in /readyz and the metrics; leftovers of killed backups are removed."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from etcdguard.backup.keys import GeneratedKeys, generate_keys
from tests.e2e.serve_helpers import Serve, wait_for
from tests.e2e.test_serve import VERSION, base_config, s3_config
from tests.integration.snapshot_fixtures import require_etcd
from tests.support.etcd_cluster import etcd_cluster, free_port
from tests.support.seaweed import SeaweedS3
from tests.support.tls import make_tls_bundle

pytestmark = [pytest.mark.integration]


@pytest.fixture
def keys(tmp_path: Path) -> GeneratedKeys:
    return generate_keys(tmp_path / "keys")


def run_serve(tmp_path: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``etcdguard serve`` in the foreground; it must exit by itself."""
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({**config, "service": {**config["service"], "listen": f"127.0.0.1:{free_port()}"}}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDGUARD_", "AWS_"))}
    exe = shutil.which("etcdguard")
    assert exe is not None
    return subprocess.run([exe, "--config", str(path), "serve"], capture_output=True, text=True, timeout=120,
                          env=env, check=False)


def _missing_recipients(c: dict[str, Any], tmp: Path) -> None:
    c["encryption"]["recipients_file"] = str(tmp / "no-such-recipients.txt")


def _missing_signing_key(c: dict[str, Any], tmp: Path) -> None:
    c["signing"]["key_file"] = str(tmp / "no-such-signing.key")


def _missing_identity(c: dict[str, Any], tmp: Path) -> None:
    c["encryption"]["identity_file"] = str(tmp / "no-such-identity.age")
    c["service"]["verify_after_snapshot"] = True


def _tls_key_of_another_cert(c: dict[str, Any], tmp: Path) -> None:
    tls = make_tls_bundle(tmp / "tls")
    c["etcd"].update(cacert=str(tls.ca), cert=str(tls.client_cert), key=str(tls.server_key))


def _bad_cron(c: dict[str, Any], tmp: Path) -> None:
    c["service"]["snapshot_cron"] = "every hour"


def _store_refuses(c: dict[str, Any], tmp: Path) -> None:
    blocker = tmp / "a-file"
    blocker.write_text("not a directory")
    c["store"] = str(blocker)


def _store_unreachable(c: dict[str, Any], tmp: Path) -> None:
    c["store"] = {"type": "s3", "bucket": "b", "endpoint_url": f"http://127.0.0.1:{free_port()}",
                  "access_key_id": "k", "secret_access_key": "s", "max_attempts": 1, "connect_timeout": 1}
    c["service"]["startup_timeout_seconds"] = 3


@pytest.mark.parametrize(("breaks", "reason"), [
    (_missing_recipients, "no-such-recipients.txt"),
    (_missing_signing_key, "no-such-signing.key"),
    (_missing_identity, "no-such-identity.age"),
    (_tls_key_of_another_cert, "does not belong to the certificate"),
    (_bad_cron, "every hour"),
    (_store_refuses, "not a directory"),
    (_store_unreachable, "still unreachable after 3s"),
], ids=lambda v: v.__name__.strip("_") if callable(v) else "")
def test_serve_refuses_to_start_without_what_it_needs(tmp_path: Path, keys: GeneratedKeys,
                                                       breaks: Callable[[dict[str, Any], Path], None],
                                                       reason: str) -> None:
    """etcd is not even running: these are found before the service contacts it."""
    config = base_config([f"http://127.0.0.1:{free_port()}"], str(tmp_path / "store"), keys)
    breaks(config, tmp_path)
    result = run_serve(tmp_path, config)
    assert result.returncode == 3, (result.returncode, result.stderr[-3000:])
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and reason in errors[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr


def readyz(serve: Serve) -> dict[str, Any]:
    status, body = serve.get("/readyz")
    return {"status": status, **(body or {})}


def test_a_lost_store_and_a_lost_etcd_show_in_readyz_and_metrics(tmp_path: Path, keys: GeneratedKeys) -> None:
    require_etcd(VERSION)
    with SeaweedS3(tmp_path / "weed") as seaweed, etcd_cluster(tmp_path / "etcd", VERSION) as cluster:
        bucket = seaweed.create_bucket("readyz")
        store = {**s3_config(seaweed, bucket), "max_attempts": 1, "connect_timeout": 1, "read_timeout": 2}
        config = base_config(cluster.endpoints, store, keys, snapshot_cron="0 0 1 1 *")
        config["monitor"] = {"probe_timeout": 1}
        serve = Serve(tmp_path, config).start()
        try:
            wait_for(lambda: readyz(serve).get("etcd", {}).get("up") is True, 30, "etcd seen up")
            assert serve.metric('etcdguard_dependency_up{dependency="store"}') == 1

            seaweed.kill()
            body = wait_for(lambda: (r := readyz(serve))["status"] == 503 and r, 30, "readyz 503 (store down)")
            assert body["store"]["up"] is False and body["store"]["error"]
            assert serve.metric('etcdguard_dependency_up{dependency="store"}') == 0
            assert serve.get("/healthz")[0] == 200  # alive: only not ready
            seaweed.start()
            wait_for(lambda: readyz(serve)["status"] == 200, 30, "ready again (store back)")

            cluster.kill(0)
            body = wait_for(lambda: (r := readyz(serve))["status"] == 503 and r, 30, "readyz 503 (etcd down)")
            assert body["etcd"]["up"] is False and body["store"]["up"] is True
            assert serve.metric('etcdguard_dependency_up{dependency="etcd"}') == 0
            cluster.restart(0)
            wait_for(lambda: readyz(serve)["status"] == 200, 60, "ready again (etcd back)")
        finally:
            assert serve.stop() == 0, serve.log()


def test_serve_removes_idle_leftovers_after_a_snapshot(tmp_path: Path, keys: GeneratedKeys) -> None:
    require_etcd(VERSION)
    store = tmp_path / "store"
    stale_dir = store / "default" / "20250101T000000Z-abcdef"
    stale_dir.mkdir(parents=True)
    partial = stale_dir / ".partial-killed"
    partial.write_bytes(b"x" * 1000)
    then = time.time() - 2 * 3600
    for path in (partial, stale_dir):
        os.utime(path, (then, then))
    with etcd_cluster(tmp_path / "etcd", VERSION) as cluster:
        serve = Serve(tmp_path, base_config(cluster.endpoints, str(store), keys)).start()
        try:
            wait_for(lambda: not stale_dir.exists(), 60, "the leftover removed")
            assert "removed 1 leftover(s)" in serve.log()
            assert any((store / "default").glob("*/manifest.json"))
        finally:
            assert serve.stop() == 0, serve.log()
