"""``etcdguard serve`` against planted records and hostile local clients (real etcd, SeaweedFS)."""

from __future__ import annotations

import json
import math
import os
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from etcdguard.backup.keys import GeneratedKeys, generate_keys
from tests.e2e.serve_helpers import Serve, wait_for
from tests.integration.snapshot_fixtures import require_etcd
from tests.integration.trust_fixtures import FAR_FUTURE_ID, Bucket, bucket  # noqa: F401 - fixture
from tests.support.etcd_cluster import etcd_cluster

pytestmark = [pytest.mark.integration, pytest.mark.slow]
VERSION = "3.5.16"
HALF_OPEN = 300


def service_config(endpoints: list[str], store: Any, keys: GeneratedKeys, **service: Any) -> dict[str, Any]:
    return {
        "etcd": {"endpoints": endpoints},
        "store": store,
        "encryption": {"recipients_file": str(keys.recipient)},
        "signing": {"key_file": str(keys.signing_key)},
        "retention": {"keep_last": 2, "hourly": 0, "daily": 0, "weekly": 0, "monthly": 0, "min_count": 2},
        "service": {"snapshot_cron": "*/3 * * * * *", "health_interval_seconds": 1, "lease_ttl_seconds": 3,
                    "verify_after_snapshot": False, "prune_after_snapshot": True, **service},
    }


def test_serve_counts_only_signed_records(tmp_path: Path, bucket: Bucket) -> None:
    """Decoys and a copied verdict: never pruned, no freshness or verification credit, untrusted in the API."""
    decoys = bucket.plant_decoys()
    older, newer = bucket.real
    bucket.sign_verdict(older)
    bucket.copy_verdict(older, newer, edit_id=True)
    store = {"type": "s3", "bucket": bucket.bucket, "prefix": "etcd", "endpoint_url": bucket.seaweed.endpoint_url}
    config = service_config(bucket.cluster.endpoints, store, bucket.keys)
    env = {"AWS_ACCESS_KEY_ID": bucket.seaweed.access_key, "AWS_SECRET_ACCESS_KEY": bucket.seaweed.secret_key}
    serve = Serve(tmp_path, config, env=env).start()
    try:
        wait_for(lambda: serve.metric('etcdguard_job_runs_total{job="prune",result="ok"}') >= 2, 60,
                 "two prunes after scheduled snapshots")
        ids = bucket.ids()
        assert set(decoys) <= set(ids), "retention deleted a planted record"
        trusted = [e for e in bucket.catalog().entries() if e.trusted]
        assert 2 <= len(trusted) <= 3 and older not in ids  # real retention still works on the real ones
        status, listed = serve.get("/api/v1/backups")
        assert status == 200
        by_id = {b["backup_id"]: b for b in listed}
        assert {by_id[d]["trust"] for d in decoys if d in by_id} == {"untrusted"}
        assert by_id[FAR_FUTURE_ID]["manifest"] is not None and "source" not in by_id[FAR_FUTURE_ID]["manifest"]
        last_backup = serve.metric("etcdguard_backup_last_success_timestamp_seconds")
        assert last_backup < time.time() + 60, "a decoy dated 2099 counted as the newest backup"
        assert math.isnan(serve.metric("etcdguard_verification_last_success")), "a copied verdict counted"
        status, body = serve.get("/api/v1/status")
        checks = body["health"]["checks"]
        assert checks["verification"] == "WARNING" and checks["backup_age"] == "OK"
    finally:
        assert serve.stop() == 0, serve.log()


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_300_half_open_connections_leave_healthz_answering(tmp_path: Path) -> None:
    require_etcd(VERSION)
    keys = generate_keys(tmp_path / "keys")
    token_file = tmp_path / "api-token"
    token_file.write_text("t" * 32 + "\n")
    with etcd_cluster(tmp_path / "etcd", VERSION) as cluster:
        config = service_config(cluster.endpoints, str(tmp_path / "store"), keys, snapshot_cron="0 0 1 1 *",
                                api_token_file=str(token_file), health_interval_seconds=3600)
        serve = Serve(tmp_path, config).start()
        assert serve.proc is not None
        sockets: list[socket.socket] = []
        try:
            wait_for(lambda: serve.get("/api/v1/status")[1]["jobs"].get("health", {}).get("runs"), 30,
                     "the first health run (its scheduler threads exist from then on)")
            baseline = _threads(serve.proc.pid)
            for _ in range(HALF_OPEN):
                s = socket.create_connection(("127.0.0.1", serve.port), timeout=5)
                s.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")  # never finished
                sockets.append(s)
            started = time.monotonic()
            assert serve.get("/healthz")[0] == 200
            healthz_seconds = time.monotonic() - started
            assert serve.get("/metrics")[0] == 200
            peak = _threads(serve.proc.pid)
            # one thread per connection would be 300 more; gRPC and the scheduler vary by a few
            assert peak <= baseline + 20, (baseline, peak)
            # the server hangs up on clients that never finish their request
            for s in sockets[:5]:
                s.settimeout(30)
                assert s.recv(1) == b""
            print(f"healthz answered in {healthz_seconds:.3f}s behind {HALF_OPEN} half-open connections; "
                  f"threads {baseline} -> {peak}")
        finally:
            for s in sockets:
                s.close()
            assert serve.stop() == 0, serve.log()


def _get(port: int, path: str, token: str | None) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_api_details_only_with_the_bearer_token_and_no_tracebacks(tmp_path: Path) -> None:
    require_etcd(VERSION)
    keys = generate_keys(tmp_path / "keys")
    token = "s3cr3t-" + "x" * 24
    (tmp_path / "api-token").write_text(token + "\n")
    with etcd_cluster(tmp_path / "etcd", VERSION) as cluster:
        config = service_config(cluster.endpoints, str(tmp_path / "store"), keys, snapshot_cron="*/2 * * * * *",
                                api_token_file=str(tmp_path / "api-token"))
        serve = Serve(tmp_path, config).start()
        try:
            wait_for(lambda: _get(serve.port, "/api/v1/backups", None)[1], 30, "a backup")
            wait_for(lambda: _get(serve.port, "/api/v1/status", None)[1]["health"], 30, "a health report")
            status, anonymous = _get(serve.port, "/api/v1/status", None)
            text = json.dumps(anonymous) + json.dumps(_get(serve.port, "/api/v1/backups", None)[1])
            assert status == 200
            for endpoint in cluster.endpoints:
                assert endpoint.split("//")[1] not in text
            assert "member_id" not in text and str(tmp_path) not in text and anonymous["leader_id"] is None
            status, full = _get(serve.port, "/api/v1/status", token)
            assert status == 200 and full["leader_id"] and cluster.endpoints[0].split("//")[1] in json.dumps(full)
            backups = _get(serve.port, "/api/v1/backups", token)[1]
            assert backups[0]["manifest"]["source"]["endpoint"] in cluster.endpoints
            assert _get(serve.port, "/api/v1/status", "wrong-token")[0] == 401
        finally:
            assert serve.stop() == 0, serve.log()
        assert "Traceback" not in serve.log() and token not in serve.log()


def test_serve_refuses_to_start_without_trusted_keys(tmp_path: Path) -> None:
    require_etcd(VERSION)
    keys = generate_keys(tmp_path / "keys")
    with etcd_cluster(tmp_path / "etcd", VERSION) as cluster:
        config = service_config(cluster.endpoints, str(tmp_path / "store"), keys, snapshot_cron="0 0 1 1 *")
        config["signing"] = {}
        serve = Serve(tmp_path, config)
        with pytest.raises(AssertionError):
            serve.start(timeout=15)
        assert serve.proc is not None and serve.proc.wait(10) == 3
        assert "signing key" in serve.log() and "Traceback" not in serve.log()
        config["signing"] = {"allow_unsigned": True}
        unsigned = Serve(tmp_path, config, name="unsigned").start()
        assert unsigned.stop() == 0, unsigned.log()
