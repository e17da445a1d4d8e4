"""The sandbox serves the restored keyspace to etcdguard only, with a minimal environment."""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

from etcdguard.errors import EtcdGuardError
from etcdguard.etcd.client import MemberClient, TLSFiles
from etcdguard.etcd.local import LocalEtcd, wait_until_serving
from etcdguard.steps import StepRecord, StepState
from etcdguard.verify.pki import create_pki
from etcdguard.verify.sandbox import Sandbox
from tests.integration.verify_fixtures import (  # noqa: F401 - fixtures
    Backups,
    backups,
    make_backup,
    no_leftovers,
    source_cluster,
    workdir,
)
from tests.support.etcd_cluster import installation

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftovers")]

SECRET = b"s3cr3t-token-value"


def _raw(port: int, request: bytes, tls: ssl.SSLContext | None = None) -> bytes:
    """Send ``request`` to 127.0.0.1:port (plain or TLS) and return what comes back (or b'')."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            conn: Any = tls.wrap_socket(sock, server_hostname="127.0.0.1") if tls else sock
            conn.sendall(request)
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            return data
        except (OSError, ssl.SSLError):
            return b""


def _range_request(port: int) -> bytes:
    body = b'{"key":"L3JlZ2lzdHJ5L3NlY3JldHMv","range_end":"L3JlZ2lzdHJ5L3NlY3JldHMw"}'  # /registry/secrets/
    return (f"POST /v3/kv/range HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


@pytest.mark.parametrize("kind", ["process", "docker"])
def test_another_local_process_cannot_read_the_sandbox(tmp_path: Path, backups: Backups, workdir: Path,
                                                       kind: str) -> None:
    if kind == "docker":
        from tests.integration.verify_fixtures import docker_or_skip

        docker_or_skip()
    with source_cluster(tmp_path / "src", "3.5.16") as cluster, cluster.client() as client:
        client.put(b"/registry/secrets/kube-system/bootstrap-token-abc", SECRET)
        manifest = make_backup(backups, client)
    attempts: dict[str, object] = {}

    def on_step(record: StepRecord) -> None:
        if (record.name, record.state) != ("hashkv", StepState.running):
            return
        endpoint = re.search(r"https://127\.0\.0\.1:\d+", seen["restore"])
        assert endpoint is not None, seen
        port = int(endpoint.group(0).rsplit(":", 1)[1])
        attempts["plain http"] = _raw(port, _range_request(port))
        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
        attempts["tls without client cert"] = _raw(port, _range_request(port), insecure)
        try:
            with MemberClient(endpoint.group(0), tls=TLSFiles(cacert=tmp_path / "none.crt"), timeout=3) as c:
                attempts["grpc without client cert"] = c.get(b"/registry/secrets/kube-system/bootstrap-token-abc")
        except EtcdGuardError as exc:
            attempts["grpc without client cert"] = str(exc)

    seen: dict[str, str] = {}

    def listener(record: StepRecord) -> None:
        seen[record.name] = record.detail
        on_step(record)

    verifier = backups.verifier(kind, workdir, on_step=listener)
    (tmp_path / "none.crt").write_bytes(b"")
    report = verifier.verify(manifest.backup_id)
    assert report.passed, report.verification.reason
    assert set(attempts) == {"plain http", "tls without client cert", "grpc without client cert"}
    for how, answer in attempts.items():
        assert SECRET not in repr(answer).encode() and b"bootstrap-token" not in repr(answer).encode(), how
    assert b"200 OK" not in attempts["plain http"]  # type: ignore[operator]
    assert attempts["tls without client cert"] == b""  # the handshake is refused
    assert isinstance(attempts["grpc without client cert"], str)


def test_the_client_refuses_a_server_of_another_ca(tmp_path: Path) -> None:
    """A process answering in the sandbox's place cannot pass for it: only this run's CA counts."""
    install = installation("3.5.16")
    assert install is not None
    (tmp_path / "impostor").mkdir(mode=0o700)
    (tmp_path / "run").mkdir(mode=0o700)
    impostor, run = create_pki(tmp_path / "impostor"), create_pki(tmp_path / "run")
    with LocalEtcd(install, tmp_path / "data", tls=impostor.server, client_tls=impostor.client,
                   log_path=tmp_path / "etcd.log") as etcd:
        with pytest.raises(EtcdGuardError):
            wait_until_serving(etcd.endpoint, 3, lambda: None, tls=run.client)
        assert wait_until_serving(etcd.endpoint, 10, lambda: None, tls=impostor.client)


def test_sandbox_etcd_gets_a_minimal_environment(tmp_path: Path, backups: Backups, workdir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with source_cluster(tmp_path / "src", "3.5.16") as cluster, cluster.client() as client:
        manifest = make_backup(backups, client)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret-value")
    monkeypatch.setenv("ETCDGUARD_ETCD__PASSWORD", "etcd-password-value")
    monkeypatch.setenv("ETCD_NAME", "bogus")
    monkeypatch.setenv("ETCDCTL_API", "2")
    sandboxes: list[Sandbox] = []
    environ: dict[str, str] = {}

    def on_step(record: StepRecord) -> None:
        if (record.name, record.state) == ("hashkv", StepState.running):
            pid = sandboxes[0].pid  # type: ignore[attr-defined]
            raw = Path(f"/proc/{pid}/environ").read_bytes()
            environ.update(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)

    verifier = backups.verifier("process", workdir, on_step=on_step)
    make = verifier.sandbox_factory

    def capture(backup_id: str) -> Sandbox:
        sandboxes.append(make(backup_id))
        return sandboxes[-1]

    verifier.sandbox_factory = capture
    report = verifier.verify(manifest.backup_id)
    assert report.passed, report.verification.reason  # ETCD_NAME=bogus did not reconfigure it
    assert set(environ) == {"PATH", "LANG"}, environ
    assert "aws-secret-value" not in str(environ) and "etcd-password-value" not in str(environ)
