"""The systemd run mode's pure parts: reading the etcd member from ``systemctl cat`` output, and
the ``systemctl`` calls (a stub ``systemctl`` on PATH records what it was given)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from etcdguard.errors import ConfigError
from etcdguard.restore import execute
from etcdguard.restore.discovery import member_with_overrides
from etcdguard.restore.runmode import SystemdRunMode, resolve_run_mode
from etcdguard.restore.settings import RestoreConfig, RestoreMemberConfig
from etcdguard.restore.systemd_unit import (
    etcd_settings,
    expand_command,
    member_from_unit,
    parse_env_file,
    service_spec,
    split_words,
    unit_entries,
)

# Debian's etcd-server unit, an operator's drop-in, as `systemctl cat etcd.service` prints them
DEBIAN = """# /lib/systemd/system/etcd.service
[Unit]
Description=etcd - highly-available key value store
Documentation=man:etcd

[Service]
Environment=DAEMON_ARGS=
Environment=ETCD_NAME=%H
Environment=ETCD_DATA_DIR=/var/lib/etcd/default
EnvironmentFile=-/etc/default/%p
Type=notify
User=etcd
ExecStart=/usr/bin/etcd $DAEMON_ARGS
Restart=on-abnormal

[Install]
WantedBy=multi-user.target

# /etc/systemd/system/etcd.service.d/override.conf
[Service]
Restart=always
# a comment between continued lines is skipped
Environment="ETCD_QUOTA_BACKEND_BYTES=8589934592" \\
  ETCD_LISTEN_PEER_URLS=https://10.0.0.1:2380
"""

DEFAULT_ETCD = """# ETCD_NAME="hostname"
ETCD_NAME=node1
ETCD_DATA_DIR="/var/lib/etcd/node1"
ETCD_LISTEN_CLIENT_URLS=https://10.0.0.1:2379,https://127.0.0.1:2379
ETCD_ADVERTISE_CLIENT_URLS='https://10.0.0.1:2379'
ETCD_INITIAL_ADVERTISE_PEER_URLS=https://10.0.0.1:2380
ETCD_INITIAL_CLUSTER=node1=https://10.0.0.1:2380,node2=https://10.0.0.2:2380
; another comment
DAEMON_ARGS="--name node1-flag --cert-file=/etc/etcd/pki/server.crt --key-file /etc/etcd/pki/server.key \\
--trusted-ca-file=/etc/etcd/pki/ca.crt"
"""


def _files(mapping: dict[str, str]) -> object:
    def reader(path: Path) -> str:
        if str(path) not in mapping:
            raise FileNotFoundError(2, "No such file or directory")
        return mapping[str(path)]
    return reader


def test_debian_unit_with_environment_file_and_drop_in() -> None:
    spec = service_spec(DEBIAN, "etcd.service", _files({"/etc/default/etcd": DEFAULT_ETCD}))  # type: ignore[arg-type]
    assert spec.files == ["/lib/systemd/system/etcd.service", "/etc/systemd/system/etcd.service.d/override.conf"]
    assert spec.argv == ["/usr/bin/etcd", "--name", "node1-flag", "--cert-file=/etc/etcd/pki/server.crt",
                         "--key-file", "/etc/etcd/pki/server.key", "--trusted-ca-file=/etc/etcd/pki/ca.crt"]
    assert spec.env["ETCD_QUOTA_BACKEND_BYTES"] == "8589934592"  # the drop-in's continued line
    m = member_from_unit(spec)
    assert m.name == "node1-flag"  # a flag wins over ETCD_NAME
    assert m.data_dir == Path("/var/lib/etcd/node1")  # the EnvironmentFile wins over Environment=
    assert m.client_urls == ("https://10.0.0.1:2379",)
    assert m.listen_client_urls == ("https://10.0.0.1:2379", "https://127.0.0.1:2379")
    assert m.peer_urls == ("https://10.0.0.1:2380",) and m.listen_peer_urls == ("https://10.0.0.1:2380",)
    assert m.initial_cluster == "node1=https://10.0.0.1:2380,node2=https://10.0.0.2:2380"
    assert m.quota_backend_bytes == 8 * 1024**3 and m.owner == "etcd"
    assert m.cert_file == Path("/etc/etcd/pki/server.crt") and m.trusted_ca_file == Path("/etc/etcd/pki/ca.crt")
    assert m.source == "systemd unit etcd.service"


def test_without_the_optional_file_the_unit_defaults_apply() -> None:
    spec = service_spec(DEBIAN, "etcd.service", _files({}))  # type: ignore[arg-type]
    m = member_from_unit(spec)
    assert m.data_dir == Path("/var/lib/etcd/default") and m.name == socket.gethostname()  # %H
    assert m.client_urls == ("http://localhost:2379",)  # etcd's defaults
    assert spec.argv == ["/usr/bin/etcd"]  # $DAEMON_ARGS empty: no argument at all


def test_quoting_escapes_specifiers_and_later_assignments() -> None:
    assert split_words(r'''a "b c" 'd e' f\ g "h\"i" \x''') == ["a", "b c", "d e", "f g", 'h"i', "x"]
    with pytest.raises(ValueError):
        split_words('"open')
    env = {"A": "1 2", "B": "x"}
    assert expand_command(["e", "$A", "--b=${B}", "$$A", "${MISSING}", "$MISSING"], env) == [
        "e", "1", "2", "--b=x", "$A", ""]
    text = """# /etc/systemd/system/etcd-a@x.service
[Service]
Environment=ETCD_DATA_DIR=/d/%i ETCD_NAME=first
ExecStart=/bin/false
WorkingDirectory=/srv
User=etcd
Group=etcd
# /etc/systemd/system/etcd-a@x.service.d/10.conf
[Service]
Environment=
Environment=ETCD_DATA_DIR=/e/%N %%
ExecStart=
ExecStart=-/usr/local/bin/etcd --wal-dir wal --data-dir=rel
"""
    spec = service_spec(text, "etcd-a@x.service")
    assert "ETCD_NAME" not in spec.env and spec.env["ETCD_DATA_DIR"] == "/e/etcd-a@x"  # reset, then set again
    assert spec.argv[0] == "/usr/local/bin/etcd"
    m = member_from_unit(spec)
    assert m.data_dir == Path("/srv/rel") and m.wal_dir == Path("/srv/wal") and m.owner == "etcd:etcd"
    assert [e[1] for e in unit_entries("[Service]\nA=1 \\\n  2\n")] == ["A"]


def test_shell_wrapped_exec_start_and_env_file_syntax() -> None:
    text = """[Service]
Environment=DAEMON_ARGS="--data-dir /var/lib/etcd/x --name x"
ExecStart=/bin/sh -c "GOMAXPROCS=$(nproc) /usr/bin/etcd $DAEMON_ARGS"
"""
    spec = service_spec(text, "etcd.service")
    assert etcd_settings(spec)["data-dir"] == "/var/lib/etcd/x" and etcd_settings(spec)["name"] == "x"
    assert parse_env_file('export A="x \\"y\\""\nB = \'z\'\n#C=1\nbad line\nD=a\\\nb\n') == {
        "A": 'x "y"', "B": "z", "D": "ab"}


def test_clear_errors_for_a_unit_etcdguard_cannot_use() -> None:
    with pytest.raises(ConfigError, match="no ExecStart"):
        service_spec("[Service]\nUser=etcd\n", "etcd.service")
    with pytest.raises(ConfigError, match="names no data dir"):
        member_from_unit(service_spec("[Service]\nExecStart=/usr/bin/etcd --name a\n", "etcd.service"))
    with pytest.raises(ConfigError, match="--config-file"):
        member_from_unit(service_spec("[Service]\nExecStart=/usr/bin/etcd --config-file /etc/etcd.yml\n", "e"))
    with pytest.raises(ConfigError, match="cannot read EnvironmentFile /etc/missing"):
        service_spec("[Service]\nEnvironmentFile=/etc/missing\nExecStart=/usr/bin/etcd\n", "e", _files({}))  # type: ignore[arg-type]


def test_restore_member_fields_override_the_unit() -> None:
    spec = service_spec(DEBIAN, "etcd.service", _files({"/etc/default/etcd": DEFAULT_ETCD}))  # type: ignore[arg-type]
    m = member_with_overrides(member_from_unit(spec), RestoreMemberConfig(data_dir=Path("/srv/etcd"),
                                                                          client_urls="https://a:2379", owner="0:0"))
    assert m.data_dir == Path("/srv/etcd") and m.client_urls == ("https://a:2379",) and m.owner == "0:0"
    assert m.name == "node1-flag" and "restore.member (client_urls, data_dir, owner)" in m.source


def _stub_systemctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stdout: str, code: int = 0) -> Path:
    """A ``systemctl`` on PATH that records its arguments and environment and prints ``stdout``."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "calls.jsonl"
    script = bindir / "systemctl"
    script.write_text(f"""#!/usr/bin/env python3
import json, os, sys
with open({str(record)!r}, "a") as f:
    f.write(json.dumps({{"args": sys.argv[1:], "env": dict(os.environ)}}) + "\\n")
sys.stdout.write({stdout!r})
sys.exit({code})
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("ETCDGUARD_ETCD_PASSWORD", "hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    return record


def _calls(record: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_restarts_come_from_nrestarts_and_systemctl_gets_no_secrets(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    record = _stub_systemctl(tmp_path, monkeypatch, "7\n")
    mode = SystemdRunMode(RestoreConfig(etcd_unit="etcd-x.service"))
    assert mode.etcd_restarts() == 7
    assert mode.start_etcd(tmp_path, {}, {}) == "systemctl start etcd-x.service"
    assert mode.stop_etcd(tmp_path) == "systemctl stop etcd-x.service"
    calls = _calls(record)
    assert [c["args"] for c in calls] == [["show", "-p", "NRestarts", "--value", "etcd-x.service"],
                                          ["reset-failed", "etcd-x.service"], ["start", "etcd-x.service"],
                                          ["stop", "etcd-x.service"]]
    for call in calls:
        env = call["env"]
        assert isinstance(env, dict) and "hunter2" not in env.values() and "s3cr3t" not in env.values()


def test_restarts_unknown_never_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stub_systemctl(tmp_path, monkeypatch, "\n")  # systemd before 235 prints nothing
    assert SystemdRunMode(RestoreConfig()).etcd_restarts() is None
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert SystemdRunMode(RestoreConfig()).etcd_restarts() is None


def test_auto_run_mode_finds_a_unit_only_without_a_manifest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stub_systemctl(tmp_path, monkeypatch, "[Service]\nExecStart=/usr/bin/etcd\n")
    cfg = RestoreConfig()
    assert resolve_run_mode(cfg, tmp_path) == ("systemd", "[Service]\nExecStart=/usr/bin/etcd\n")
    (tmp_path / "etcd.yaml").write_text("x")
    assert resolve_run_mode(cfg, tmp_path) == ("kubeadm", None)


def test_auto_run_mode_without_a_unit_stays_kubeadm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stub_systemctl(tmp_path, monkeypatch, "", code=1)
    assert resolve_run_mode(RestoreConfig(), tmp_path) == ("kubeadm", None)


def test_restorecon_gets_no_secret_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    seen = tmp_path / "restorecon.env"
    (bindir / "restorecon").write_text(f"#!/bin/sh\nenv > {seen}\necho \"$@\" >> {seen}\n")
    (bindir / "restorecon").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("ETCDGUARD_ETCD_PASSWORD", "hunter2")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setattr(execute, "selinux_enabled", lambda: True)
    data = tmp_path / "data"
    data.mkdir()
    job = SimpleNamespace(local=SimpleNamespace(owner=None, data_dir=tmp_path / "gone"), aside_data=tmp_path / "none")
    execute.RestoreJob._own(job, data)  # type: ignore[arg-type]
    text = seen.read_text()
    assert f"-R {data}" in text  # it ran, on the restored dir
    assert "hunter2" not in text and "s3cr3t" not in text and "ETCDGUARD_" not in text


def test_complete_restore_member_needs_no_unit_a_partial_one_overrides_it(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from etcdguard.config import load_settings
    from etcdguard.restore.session import _local

    record = _stub_systemctl(tmp_path, monkeypatch, "[Service]\nEnvironment=ETCD_DATA_DIR=/var/lib/etcd ETCD_NAME=u\n"
                                                    "ExecStart=/usr/bin/etcd\n")
    member = {"name": "cfg", "data_dir": "/srv/etcd", "peer_urls": "http://10.0.0.1:2380",
              "client_urls": "http://10.0.0.1:2379"}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"restore": {"run_mode": "systemd", "member": member}}))
    local, _ = _local(load_settings(cfg, {}, environ={}), "systemd", tmp_path, None)
    assert local is not None and local.name == "cfg" and local.source == "restore.member configuration"
    assert not record.exists()  # the unit was not read
    cfg.write_text(json.dumps({"restore": {"run_mode": "systemd", "member": {"data_dir": "/srv/etcd"}}}))
    local, _ = _local(load_settings(cfg, {}, environ={}), "systemd", tmp_path, None)
    assert local is not None and (local.name, local.data_dir) == ("u", Path("/srv/etcd"))
    assert [c["args"] for c in _calls(record)] == [["cat", "--no-pager", "etcd.service"]]
