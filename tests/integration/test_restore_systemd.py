"""`etcdguard restore` on a node whose etcd runs under systemd (the systemd stand-in), end to end:
the member's settings are read from the unit, not from the config."""

from __future__ import annotations

import grp
import os
import pwd
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from etcdguard.backup.keys import generate_keys
from etcdguard.restore.runmode import SystemdRunMode
from etcdguard.restore.settings import RestoreConfig
from tests.integration.restore_fixtures import Setup, cli_env, keys_with_prefix, wait_serving, write_config
from tests.integration.snapshot_fixtures import CLI, assert_one_line_error, require_etcd
from tests.support.etcd_cluster import installation
from tests.support.fake_systemd import FakeSystemd
from tests.support.kubeadm import free_low_ports
from tests.support.seaweed import SeaweedS3
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration

UNIT = "etcd.service"
# Debian's etcd-server unit (etcd from its own path, the environment file in the test's /etc)
DEBIAN_UNIT = """[Unit]
Description=etcd - highly-available key value store
Documentation=man:etcd
After=network.target

[Service]
Environment=DAEMON_ARGS=
Environment=ETCD_NAME=%H
Environment=ETCD_DATA_DIR=/var/lib/etcd/default
EnvironmentFile=-{etc}/default/%p
Type=notify
User={user}
Group={group}
PermissionsStartOnly=true
ExecStart={etcd} $DAEMON_ARGS
Restart=on-abnormal
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
"""
# etcd crash-loops on a destroyed data dir: the operator's drop-in restarts it on every exit
DROP_IN = "[Service]\nRestart=always\nRestartSec=0.2\n"


def _owner() -> tuple[str, str]:
    """The unit's User/Group: an unprivileged account when root (the data dir is chowned to it)."""
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        return nobody.pw_name, grp.getgrgid(nobody.pw_gid).gr_name
    me = pwd.getpwuid(os.getuid())
    return me.pw_name, grp.getgrgid(me.pw_gid).gr_name


@dataclass
class SystemdNode:
    """One etcd member run by the systemd stand-in, configured like Debian's package."""

    systemd: FakeSystemd
    root: Path
    client_url: str

    @property
    def data_dir(self) -> Path:
        return self.root / "var" / "lib" / "etcd"

    @property
    def kept(self) -> list[Path]:
        return sorted(self.data_dir.parent.glob("etcd.etcdguard-old-*"))

    @property
    def env(self) -> dict[str, str]:
        return {"PATH": self.systemd.path}


@contextmanager
def systemd_node(root: Path, version: str) -> Iterator[SystemdNode]:
    install = installation(version)
    assert install is not None
    client, peer = free_low_ports(2)
    c, p = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    etc = root / "etc"
    (etc / "default").mkdir(parents=True)
    (etc / "default" / "etcd").write_text(
        f"# ETCD_NAME=\"hostname\"\nETCD_NAME=node1\nETCD_DATA_DIR={root}/var/lib/etcd\n"
        f"ETCD_LISTEN_CLIENT_URLS={c}\nETCD_ADVERTISE_CLIENT_URLS={c}\n"
        f"ETCD_LISTEN_PEER_URLS={p}\nETCD_INITIAL_ADVERTISE_PEER_URLS={p}\n"
        f"ETCD_INITIAL_CLUSTER=node1={p}\nETCD_INITIAL_CLUSTER_TOKEN=debian\nETCD_INITIAL_CLUSTER_STATE=new\n"
        'DAEMON_ARGS="--heartbeat-interval=50 --election-timeout=500 --log-level=warn"\n')
    user, group = _owner()
    with FakeSystemd(root / "systemd") as systemd:
        systemd.install(UNIT, DEBIAN_UNIT.format(etc=etc, etcd=install.etcd, user=user, group=group),
                        {"override.conf": DROP_IN})
        node = SystemdNode(systemd, root, c)
        assert systemd.systemctl("start", UNIT).returncode == 0
        wait_serving(c, None).close()
        yield node


def _setup(tmp_path: Path, seaweed: SeaweedS3, bucket: str, node: SystemdNode, run_mode: str) -> Setup:
    keys = generate_keys(tmp_path / "keys")
    home = tmp_path / "home"
    home.mkdir()
    empty = tmp_path / "no-manifests"  # no kubeadm here: auto must find the unit
    empty.mkdir()
    config = write_config(tmp_path / "etcdguard.yaml", store=bucket, seaweed=seaweed, keys=keys, cluster="sd",
                          state_dir=tmp_path / "state", etcd={"endpoints": [node.client_url]},
                          restore={"run_mode": run_mode, "etcd_unit": UNIT, "manifests_dir": str(empty)})
    return Setup(config, keys, CLI(home, cli_env(seaweed)), tmp_path / "state")


def _destroy_and_restore(node: SystemdNode, s: Setup, data: dict[bytes, bytes], prefix: bytes,
                         *extra: str) -> str:
    """Back up ``data``, write more, destroy the db (etcd crash-loops), restore from the backup."""
    with wait_serving(node.client_url, None) as c:
        for k, v in data.items():
            c.put(k, v)
    snap = s.run("snapshot")
    assert snap.returncode == 0, snap.stderr
    with wait_serving(node.client_url, None) as c:
        c.put(prefix + b"after-backup", b"lost")
    assert node.systemd.systemctl("stop", UNIT).returncode == 0
    (node.data_dir / "member" / "snap" / "db").write_bytes(b"\0" * 4096)
    assert node.systemd.systemctl("start", UNIT).returncode == 0
    wait_until(lambda: node.systemd.restarts(UNIT) >= 2, 60, "etcd crash-looping under systemd")

    result = s.run("restore", "--yes", "--backup", "latest", *extra, env=node.env)
    assert result.returncode == 0, result.stderr + node.systemd.log(UNIT)[-2000:]
    assert "systemd run mode" in result.stderr and f"systemd unit {UNIT}" in result.stderr
    assert f"systemctl stop {UNIT}" in result.stderr and f"systemctl start {UNIT}" in result.stderr
    assert node.systemd.active(UNIT)
    with wait_serving(node.client_url, None) as c:
        assert c.get(prefix + b"after-backup") is None
        for k, v in data.items():
            if not k.startswith(b"/registry/masterleases/"):
                assert c.get(k) == v, k
    assert len(node.kept) == 1 and (node.kept[0] / "member" / "snap" / "db").read_bytes() == b"\0" * 4096
    assert re.fullmatch(r"etcd\.etcdguard-old-\d{8}T\d{6}Z", node.kept[0].name)
    return result.stderr


def test_systemd_node_restored_from_s3_with_settings_read_from_the_unit(
        tmp_path: Path, s3_bucket: tuple[SeaweedS3, str], monkeypatch: pytest.MonkeyPatch) -> None:
    require_etcd("3.5.16")
    seaweed, bucket = s3_bucket
    with systemd_node(tmp_path / "node", "3.5.16") as node:
        s = _setup(tmp_path, seaweed, bucket, node, "systemd")
        data = {b"/registry/secrets/default/db-password": b"k8s:enc:identity",
                b"/registry/pods/default/web": b"pod", b"/registry/masterleases/10.0.0.9": b"stale"}
        with wait_serving(node.client_url, None) as c:
            c.put(b"/registry/pods/default/web", b"old")
            before_rev = c.status().revision + len(data)
        monkeypatch.setenv("PATH", node.systemd.path)
        assert SystemdRunMode(RestoreConfig(etcd_unit=UNIT)).etcd_restarts() == 0

        stderr = _destroy_and_restore(node, s, data, b"/registry/pods/default/")
        assert "(c) restore from the backup" in stderr and "revisions bumped by" in stderr
        with wait_serving(node.client_url, None) as c:
            assert c.status().revision >= before_rev + 1_000_000_000
            assert keys_with_prefix(c, b"/registry/") == sorted(k for k in data if b"masterleases" not in k)
        user, group = _owner()
        st = node.data_dir.stat()
        assert (st.st_mode & 0o777) == 0o700
        if os.geteuid() == 0:  # chown needs root: the restored data belongs to the unit's User/Group
            assert (st.st_uid, st.st_gid) == (pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid)

        # killed after the restored member started, then --rollback: the previous data and member are back
        with wait_serving(node.client_url, None) as c:
            c.put(b"/registry/pods/default/before-rollback", b"old")
            old_rev = c.status().revision
        crashed = s.run("restore", "--yes", "--force", "--backup", "latest",
                        env={**node.env, "ETCDGUARD_TEST_CRASH_AFTER_STEP": "start-etcd"})
        assert crashed.returncode == -9, crashed.stderr
        rolled = s.run("restore", "--rollback", env=node.env)
        assert rolled.returncode == 0, rolled.stderr
        assert "rolled back" in rolled.stderr
        assert node.systemd.active(UNIT)
        with wait_serving(node.client_url, None) as c:
            assert c.get(b"/registry/pods/default/before-rollback") == b"old"
            assert c.status().revision == old_rev
        assert len(list(node.data_dir.parent.glob("etcd.etcdguard-restored-*"))) == 1  # kept, never deleted


def test_etcd_34_unit_found_in_auto_mode(tmp_path: Path, s3_bucket: tuple[SeaweedS3, str]) -> None:
    require_etcd("3.4.23")
    seaweed, bucket = s3_bucket
    with systemd_node(tmp_path / "node", "3.4.23") as node:
        s = _setup(tmp_path, seaweed, bucket, node, "auto")
        data = {b"/app/config/a": b"1", b"/app/config/b": b"2"}
        stderr = _destroy_and_restore(node, s, data, b"/app/config/")
        assert "revisions kept" in stderr  # not Kubernetes data: no bump
        # the unit's etcd binary says 3.4.23: the restore tool chosen matches its minor version
        assert re.search(r"restore tool +\S+ \(3\.4\.\d+\)", stderr), stderr
        with wait_serving(node.client_url, None) as c:
            assert keys_with_prefix(c, b"/app/") == sorted(data)


def test_a_unit_etcdguard_cannot_use_is_one_line_exit_3(tmp_path: Path) -> None:
    keys = generate_keys(tmp_path / "keys")
    home = tmp_path / "home"
    home.mkdir()
    with FakeSystemd(tmp_path / "systemd") as systemd:
        config = write_config(tmp_path / "etcdguard.yaml", store=str(tmp_path / "store"), seaweed=None, keys=keys,
                              cluster="sd", state_dir=tmp_path / "state", restore={"run_mode": "systemd"})
        s = Setup(config, keys, CLI(home, cli_env(None)), tmp_path / "state")
        missing_unit = s.run("restore", "--yes", env={"PATH": systemd.path})
        assert_one_line_error(missing_unit, 3, "cannot read systemd unit etcd.service", "No files found")
        systemd.install(UNIT, "[Service]\nEnvironmentFile=-/nonexistent\nExecStart=/usr/bin/etcd --name a\n")
        no_data_dir = s.run("restore", "--yes", env={"PATH": systemd.path})
        assert_one_line_error(no_data_dir, 3, "etcd.service", "names no data dir")
