"""The systemd unit: what it runs, how it stops and reloads, and how it is hardened."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.helm_chart import CERT_DIR, UNIT, cli_has, parse_cli
from tests.support.require import missing

KIT_SERVICE = UNIT.with_name("etcdguard-kit.service")
KIT_TIMER = UNIT.with_name("etcdguard-kit.timer")


def _unit(path: Path = UNIT) -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; keys may repeat, as systemd allows."""
    section = ""
    out: list[tuple[str, str, str]] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def _unit_values(key: str, section: str = "Service", path: Path = UNIT) -> list[str]:
    return [v for s, k, v in _unit(path) if s == section and k == key]


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


@pytest.mark.parametrize("path", [UNIT, KIT_SERVICE, KIT_TIMER], ids=lambda p: p.name)
def test_systemd_analyze_verify(tmp_path: Path, path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        missing("systemd-analyze not installed")
    exe = shutil.which("etcdguard")
    if exe is None:
        missing("etcdguard is not on PATH")
    # verify insists that ExecStart exists: point it at this machine's etcdguard.
    for unit in (UNIT, KIT_SERVICE, KIT_TIMER):
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/etcdguard/bin/etcdguard", exe))
    result = subprocess.run([analyze, "verify", str(tmp_path / path.name)], capture_output=True, text=True,
                            timeout=60, check=False, cwd=tmp_path)
    about_unit = [ln for ln in (result.stdout + result.stderr).splitlines() if path.name in ln]
    assert result.returncode == 0 and not about_unit, result.stdout + result.stderr


def test_kit_unit_saves_the_kit_as_root_read_only() -> None:
    """The kit reads kubeadm's root-only CA keys: root, but with no capabilities, a read-only
    file system and no way to gain privileges; run hourly by its timer."""
    (start,) = _unit_values("ExecStart", path=KIT_SERVICE)
    argv = shlex.split(start)
    assert Path(argv[0]).name == "etcdguard"
    assert argv[1:] == ["--config", "/etc/etcdguard/etcdguard.yaml", "kit", "save", "--pki-dir",
                        "/etc/kubernetes/pki", "--manifests-dir", "/etc/kubernetes/manifests"]
    if cli_has("kit"):
        assert parse_cli(argv[1:]).command.name == "save"
    expected = {"Type": "oneshot", "User": "root", "ProtectSystem": "strict", "NoNewPrivileges": "yes",
                "CapabilityBoundingSet": "", "PrivateTmp": "yes", "KillSignal": "SIGTERM"}
    for key, value in expected.items():
        assert _unit_values(key, path=KIT_SERVICE) == [value], key
    assert not _unit_values("ReadWritePaths", path=KIT_SERVICE)
    assert _unit_values("OnCalendar", "Timer", KIT_TIMER) == ["hourly"]
    assert _unit_values("Persistent", "Timer", KIT_TIMER) == ["yes"] or \
        _unit_values("Persistent", "Timer", KIT_TIMER) == ["true"]
    assert _unit_values("WantedBy", "Install", KIT_TIMER) == ["timers.target"]
