"""Sandbox helpers: command lines, snapshot status parsing, temp dirs, interrupt deferral."""

from __future__ import annotations

import os
import signal
import stat

import pytest

from etcdguard.verify.sandbox import (
    DEFAULT_QUOTA_BYTES,
    SnapshotStatus,
    deferred_interrupts,
    etcd_command,
    has_etcdutl,
    private_tempdir,
    quota_for,
    remove_tree,
    restore_command,
    snapshot_env,
    tail,
)


def test_snapshot_status_parse_skips_log_lines() -> None:
    text = ('{"level":"info","msg":"something"}\n'
            '{"hash":1379352499,"revision":2,"totalKey":7,"totalSize":20480}\n')
    assert SnapshotStatus.parse(text) == SnapshotStatus(1379352499, 2, 7, 20480)
    with pytest.raises(ValueError):
        SnapshotStatus.parse("Error: snapshot file is corrupt")


def test_restore_command_keeps_revisions_single_member() -> None:
    cmd = restore_command("etcdutl", "/s.db", "/d", "http://127.0.0.1:9", True)
    assert cmd[:4] == ["etcdutl", "snapshot", "restore", "/s.db"]
    assert "--bump-revision" not in cmd and "--mark-compacted" not in cmd
    joined = " ".join(cmd)
    assert "--initial-cluster etcdguard-sandbox=http://127.0.0.1:9" in joined
    assert "--initial-advertise-peer-urls http://127.0.0.1:9" in joined and "--data-dir /d" in joined


def test_etcd_command_listens_where_told() -> None:
    cmd = etcd_command("etcd", "/d", "http://127.0.0.1:1", "http://127.0.0.1:1", "http://127.0.0.1:2")
    joined = " ".join(cmd)
    assert "--listen-client-urls http://127.0.0.1:1" in joined
    assert "--listen-peer-urls http://127.0.0.1:2" in joined
    assert f"--quota-backend-bytes {DEFAULT_QUOTA_BYTES}" in joined


def test_versions_and_env() -> None:
    assert not has_etcdutl("3.4.23") and has_etcdutl("3.5.1") and has_etcdutl("v3.6.0")
    assert snapshot_env(False) == {"ETCDCTL_API": "3"} and snapshot_env(True) == {}
    assert quota_for(1) == DEFAULT_QUOTA_BYTES and quota_for(6 * 1024**3) == 12 * 1024**3


def test_private_tempdir_is_0700(tmp_path: object) -> None:
    path = private_tempdir()
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    finally:
        remove_tree(path)
    assert not path.exists()


def test_tail_joins_last_lines() -> None:
    assert tail("a\n\nb\nc\n", lines=2) == "b | c"


def test_deferred_interrupts_hold_ctrl_c_until_cleanup_is_done() -> None:
    done = []
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the test run was started in the background
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("cleanup finished")
    assert done == ["cleanup finished"]
    assert signal.getsignal(signal.SIGINT) is before
