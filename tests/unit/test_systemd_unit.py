"""The systemd unit: what it runs, how it stops and reloads, and how it is hardened."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.helm_chart import CERT_DIR, UNIT, parse_cli


def _unit() -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; keys may repeat, as systemd allows."""
    section = ""
    out: list[tuple[str, str, str]] = []
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def _unit_values(key: str, section: str = "Service") -> list[str]:
    return [v for s, k, v in _unit() if s == section and k == key]


def test_systemd_unit_runs_and_reloads_the_service() -> None:
    (start,) = _unit_values("ExecStart")
    argv = shlex.split(start)
    assert Path(argv[0]).name == "etcdguard" and argv[0].startswith("/")
    assert argv[1:] == ["--config", "/etc/etcdguard/etcdguard.yaml", "serve"]
    (reload_,) = _unit_values("ExecReload")
    assert shlex.split(reload_) == ["/bin/kill", "-HUP", "$MAINPID"]
    assert _unit_values("Type")[0] in ("simple", "exec")
    assert _unit_values("Restart") == ["on-failure"]
    assert _unit_values("KillSignal") == ["SIGTERM"]
    assert _unit_values("TimeoutStopSec") == ["60"]
    assert _unit_values("EnvironmentFile") == ["-/etc/etcdguard/env"]
    assert _unit_values("WantedBy", "Install") == ["multi-user.target"]
    # The command line is one the CLI accepts.
    assert parse_cli(argv[1:]).command.name == "serve"
    # SIGTERM goes to etcdguard only (it stops its own sandbox children), and the stop timeout
    # leaves time to abort an upload.
    assert _unit_values("KillMode") == ["mixed"]


def test_systemd_unit_is_hardened() -> None:
    expected = {
        "DynamicUser": "yes", "StateDirectory": "etcdguard", "ProtectSystem": "strict",
        "PrivateTmp": "yes", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
        "ProtectHome": "yes", "RestrictSUIDSGID": "yes", "UMask": "0077",
    }
    for key, value in expected.items():
        assert _unit_values(key) == [value], key
    assert "-/etc/kubernetes/pki/etcd" in _unit_values("ReadOnlyPaths")
    # Root-only files reach the unprivileged service as credentials, and etcdguard is pointed at
    # exactly those: every ETCDGUARD_* %d/NAME has a LoadCredential=NAME:..., and back.
    creds = {v.split(":", 1)[0]: v.split(":", 1)[1] for v in _unit_values("LoadCredential")}
    assert creds["etcd-client.key"] == f"{CERT_DIR}/healthcheck-client.key"
    env = dict(v.split("=", 1) for v in _unit_values("Environment"))
    used = {v[len("%d/"):] for k, v in env.items() if k.startswith("ETCDGUARD_") and v.startswith("%d/")}
    assert used == set(creds)
    assert {"ETCDGUARD_CACERT", "ETCDGUARD_CERT", "ETCDGUARD_KEY", "ETCDGUARD_SIGNING_KEY"} <= set(env)
    assert not any("identity" in c for c in creds), "the age identity does not belong on the node"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    exe = shutil.which("etcdguard")
    if exe is None:
        pytest.skip("etcdguard is not on PATH")
    # verify insists that ExecStart exists: point it at this machine's etcdguard.
    unit = tmp_path / "etcdguard.service"
    unit.write_text(UNIT.read_text().replace("/opt/etcdguard/bin/etcdguard", exe))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60,
                            check=False, cwd=tmp_path)
    about_unit = [ln for ln in (result.stdout + result.stderr).splitlines() if "etcdguard.service" in ln]
    assert result.returncode == 0 and not about_unit, result.stdout + result.stderr


