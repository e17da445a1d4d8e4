"""The generated kubeadm etcd manifest runs as-is: real etcd, mutual TLS, metrics on 127.0.0.1."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from etcdguard.errors import EtcdGuardError
from etcdguard.etcd.client import MemberClient, TLSFiles
from tests.integration.snapshot_fixtures import require_etcd
from tests.support.etcd_cluster import installation
from tests.support.kubeadm import free_low_ports, make_kubeadm_node

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("version", ["3.5.16", "3.4.23"])
def test_etcd_runs_from_the_manifest_command(tmp_path: Path, version: str) -> None:
    require_etcd(version)
    install = installation(version)
    assert install is not None
    client_port, peer_port, metrics_port, api_port = free_low_ports(4)
    node = make_kubeadm_node(tmp_path / "root", name="cp1", client_port=client_port, peer_port=peer_port,
                             metrics_port=metrics_port, apiserver_port=api_port,
                             etcd_command=[str(install.etcd)])
    log = (tmp_path / "etcd.log").open("wb")
    proc = subprocess.Popen(node.etcd_argv(), stdout=log, stderr=log, start_new_session=True)
    try:
        cacert, cert, key = node.etcd_client_tls
        deadline = time.monotonic() + 30
        while True:
            try:
                with MemberClient(node.etcd_endpoint, tls=TLSFiles(cacert=cacert, cert=cert, key=key)) as client:
                    client.put(b"/registry/k", b"v")
                    assert client.get(b"/registry/k") == b"v"
                    assert client.member_list()[0].name == "cp1"
                break
            except Exception:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError((tmp_path / "etcd.log").read_text()[-3000:]) from None
                time.sleep(0.3)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/health", timeout=5) as resp:
            assert b'"health":"true"' in resp.read()
        # a client without a certificate is refused (client-cert-auth)
        with MemberClient(node.etcd_endpoint, tls=TLSFiles(cacert=cacert), timeout=2) as anonymous, \
                pytest.raises(EtcdGuardError):
            anonymous.get(b"/registry/k")
        assert any(node.etcd_data_dir.iterdir())
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
