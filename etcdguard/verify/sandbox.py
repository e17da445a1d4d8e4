"""The Sandbox port: a throwaway single-member etcd restored from a snapshot.

Contracts every adapter keeps:

* The snapshot given to :meth:`Sandbox.snapshot_status` and :meth:`Sandbox.start` has had its
  sha256 and etcd trailer checked by the caller (the verifier, via ``recover_snapshot``), so
  the restore skips etcd's own hash check instead of hashing the file a second time.
* :meth:`Sandbox.start` restores the snapshot into a fresh data dir **without** a revision bump
  (the restored keyspace keeps the source's revisions, so HashKV at the manifest's revision is
  comparable), starts etcd serving on a loopback client URL only, and returns once it answers a
  linearizable read, or raises within ``start_timeout`` seconds.
* :meth:`Sandbox.stop` (and leaving the ``with`` block, even on an exception or Ctrl-C) removes
  everything the sandbox created: processes or containers, data dirs, volumes, networks. It is
  idempotent and never raises.
* Infrastructure problems (no etcd binaries, Docker down) raise ``SandboxUnavailableError``;
  a snapshot that cannot be restored, or a restored etcd that does not serve, raises
  :class:`RestoreError` (a verification failure of the backup, not of the host).
"""

from __future__ import annotations

import abc
import json
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

from etcdguard.errors import EtcdGuardError, VerificationFailedError
from etcdguard.etcd.binaries import EtcdVersion
from etcdguard.etcd.client import MemberClient

SANDBOX_MEMBER = "etcdguard-sandbox"
DEFAULT_QUOTA_BYTES = 8 * 1024**3


class RestoreError(VerificationFailedError):
    """The snapshot could not be restored, or the restored etcd did not serve."""


@dataclass(frozen=True)
class SnapshotStatus:
    """``etcdutl snapshot status`` of a plain snapshot file."""

    hash: int
    revision: int
    total_keys: int
    total_size: int

    @classmethod
    def parse(cls, text: str) -> SnapshotStatus:
        """Parse the ``-w json`` output (the last JSON object line; logs may precede it)."""
        for line in reversed(text.strip().splitlines()):
            line = line.strip()
            if line.startswith("{") and '"revision"' in line:
                data = json.loads(line)
                return cls(int(data["hash"]), int(data["revision"]), int(data["totalKey"]),
                           int(data["totalSize"]))
        raise ValueError(f"no snapshot status in output: {text[-200:]!r}")


@dataclass(frozen=True)
class RunningEtcd:
    """A restored etcd that serves: where, which version, and how long it took."""

    endpoint: str
    version: str
    exact: bool
    sandbox: str
    timings: dict[str, float] = field(default_factory=dict)


class Sandbox(abc.ABC):
    """Restores a snapshot into a throwaway etcd (see the module contract)."""

    #: short name recorded in verdicts ("docker", "process")
    kind: str = ""

    def __init__(self, start_timeout: float = 60.0) -> None:
        self.start_timeout = start_timeout

    @abc.abstractmethod
    def check(self) -> None:
        """Raise SandboxUnavailableError unless this sandbox can run here (cheap, starts nothing)."""

    def prepare(self, etcd_version: str) -> None:  # noqa: B027 - an optional hook
        """Optional warm-up that needs no snapshot (resolve images, create networks); the verifier
        runs it beside the download. Errors are those of :meth:`start`."""

    @abc.abstractmethod
    def snapshot_status(self, snapshot_path: Path, etcd_version: str) -> SnapshotStatus:
        """``snapshot status`` of ``snapshot_path`` with the tools the sandbox would restore with.

        Raises RestoreError when the file is not a readable etcd snapshot.
        """

    @abc.abstractmethod
    def start(self, snapshot_path: Path, etcd_version: str) -> RunningEtcd:
        """Restore ``snapshot_path`` (no revision bump) and start etcd ``etcd_version``
        (or the nearest available: ``RunningEtcd.exact`` says which); returns once it serves."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Tear everything down; idempotent, never raises."""

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        with deferred_interrupts():
            self.stop()


# -- helpers shared by the adapters ----------------------------------------------------------

def restore_command(tool: str, snapshot: str, data_dir: str, peer_url: str, use_etcdutl: bool,
                    name: str = SANDBOX_MEMBER, skip_hash_check: bool = False) -> list[str]:
    """``etcdutl snapshot restore`` (or 3.4's ``etcdctl snapshot restore``) into ``data_dir``,
    single member, original revisions kept (no ``--bump-revision``).

    ``skip_hash_check`` skips etcd's check of the snapshot's sha256 trailer; only for a file
    whose trailer was already checked (the sandboxes get such files from the verifier).
    """
    return [tool, "snapshot", "restore", snapshot, "--name", name, "--data-dir", data_dir,
            "--initial-cluster", f"{name}={peer_url}", "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster-token", "etcdguard-verify", *(["--skip-hash-check"] if skip_hash_check else [])]


def etcd_command(binary: str, data_dir: str, listen_client: str, advertise_client: str, peer_url: str,
                 quota_bytes: int = DEFAULT_QUOTA_BYTES, name: str = SANDBOX_MEMBER) -> list[str]:
    """The etcd command line of a restored single member."""
    return [binary, "--name", name, "--data-dir", data_dir,
            "--listen-client-urls", listen_client, "--advertise-client-urls", advertise_client,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"{name}={peer_url}", "--initial-cluster-token", "etcdguard-verify",
            "--quota-backend-bytes", str(quota_bytes), "--log-level", "warn",
            # a lone loopback member: elect itself quickly
            "--heartbeat-interval", "10", "--election-timeout", "100"]


def quota_for(snapshot_size: int) -> int:
    """A backend quota that lets the smoke test write into a restored db of this size."""
    return max(DEFAULT_QUOTA_BYTES, snapshot_size * 2)


def snapshot_env(use_etcdutl: bool) -> dict[str, str]:
    """Environment for the restore/status tool (3.4's etcdctl needs ETCDCTL_API=3)."""
    return {} if use_etcdutl else {"ETCDCTL_API": "3"}


def has_etcdutl(version: str) -> bool:
    """etcdutl exists from etcd 3.5 on; older releases restore with etcdctl."""
    return EtcdVersion.parse(version) >= EtcdVersion(3, 5, 0)


def wait_until_serving(endpoint: str, timeout: float, alive: Callable[[], str | None]) -> str:
    """Poll until ``endpoint`` has a leader and answers a linearizable read; returns its version.

    ``alive()`` returns None while the server may still come up, or a reason why it never will
    (process exited); either that or the deadline raises RestoreError.
    """
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        dead = alive()
        if dead is not None:
            raise RestoreError(f"restored etcd exited before serving: {dead}")
        try:
            with MemberClient(endpoint, timeout=2.0) as client:
                status = client.status()
                if status.leader:
                    client.get(b"/__etcdguard/ready")
                    return status.version
                last = "no leader yet"
        except EtcdGuardError as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            raise RestoreError(f"restored etcd did not serve within {timeout:g}s ({last})")
        time.sleep(0.1)


def private_tempdir(prefix: str = "etcdguard-verify-", parent: Path | None = None) -> Path:
    """A fresh private (0700) temp directory (under ``parent``, default the system temp dir)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, 0o700)
    return path


def remove_tree(path: Path | None) -> None:
    """Remove a directory tree, ignoring errors (best effort, used in teardown)."""
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def tail(text: str, lines: int = 5) -> str:
    """The last lines of a log, joined on one line."""
    return " | ".join(ln.strip() for ln in text.strip().splitlines()[-lines:] if ln.strip())


@contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold back SIGINT while cleanup runs (main thread only), then re-raise it.

    A second Ctrl-C during teardown must not leave a container or temp dir behind.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def _hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    try:
        previous = signal.signal(signal.SIGINT, _hold)
    except ValueError:  # not in the main interpreter
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt
