"""The Sandbox port: a throwaway single-member etcd restored from a snapshot.

Contracts every adapter keeps:

* The snapshot given to :meth:`Sandbox.snapshot_status` and :meth:`Sandbox.start` has had its
  sha256 and etcd trailer checked by the caller (the verifier, via ``recover_snapshot``), so
  the restore skips etcd's own hash check instead of hashing the file a second time.
* :meth:`Sandbox.start` restores the snapshot into a fresh private data dir **without** a
  revision bump (the restored keyspace keeps the source's revisions, so HashKV at the manifest's
  revision is comparable), starts etcd, and returns once it answers a linearizable read, or
  raises within ``start_timeout`` seconds.
* The restored etcd serves only etcdguard: TLS with this run's CA (:mod:`etcdguard.verify.pki`),
  client-cert auth on; :attr:`RunningEtcd.tls` is the only way in and the only server it trusts.
  It gets a minimal environment and dies with the verifying process.
* :meth:`Sandbox.stop` (and leaving the ``with`` block, even on an exception, SIGINT or SIGTERM)
  removes everything the sandbox created: processes or containers, data dirs, keys, volumes,
  networks. It is idempotent and never raises. :meth:`Sandbox.check` removes what killed runs left.
* Infrastructure problems (no etcd binaries, Docker down) raise ``SandboxUnavailableError``;
  a snapshot that cannot be restored, or a restored etcd that does not serve, raises
  :class:`SandboxRestoreError` (a verification failure of the backup, not of the host).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from etcdguard import interrupts
from etcdguard.errors import VerificationFailedError
from etcdguard.etcd.client import TLSFiles
from etcdguard.etcd.tools import SnapshotStatus

__all__ = [
    "DEFAULT_QUOTA_BYTES",
    "SANDBOX_CLUSTER",
    "SANDBOX_MEMBER",
    "RunningEtcd",
    "Sandbox",
    "SandboxRestoreError",
    "SnapshotStatus",
    "etcd_command",
    "quota_for",
]

SANDBOX_MEMBER = "etcdguard-sandbox"
SANDBOX_CLUSTER = "etcdguard-verify"
DEFAULT_QUOTA_BYTES = 8 * 1024**3
# a lone loopback member: elect itself quickly
FAST_ELECTION = ["--heartbeat-interval", "10", "--election-timeout", "100"]


class SandboxRestoreError(VerificationFailedError):
    """The snapshot could not be restored in the sandbox, or the restored etcd did not serve."""


@dataclass(frozen=True)
class RunningEtcd:
    """A restored etcd that serves: where, how to reach it, which version, how long it took."""

    endpoint: str
    version: str
    exact: bool
    sandbox: str
    tls: TLSFiles | None = None
    timings: dict[str, float] = field(default_factory=dict)


class Sandbox(abc.ABC):
    """Restores a snapshot into a throwaway etcd (see the module contract)."""

    #: short name recorded in verdicts ("docker", "process")
    kind: str = ""

    def __init__(self, start_timeout: float = 60.0) -> None:
        self.start_timeout = start_timeout

    @abc.abstractmethod
    def check(self) -> None:
        """Raise SandboxUnavailableError unless this sandbox can run here; removes leftovers of
        killed runs (starts nothing)."""

    def prepare(self, etcd_version: str) -> None:  # noqa: B027 - an optional hook
        """Optional warm-up that needs no snapshot (resolve images, create networks); the verifier
        runs it beside the download. Errors are those of :meth:`start`."""

    @abc.abstractmethod
    def snapshot_status(self, snapshot_path: Path, etcd_version: str) -> SnapshotStatus:
        """``snapshot status`` of ``snapshot_path`` with the tools the sandbox would restore with.

        Raises SandboxRestoreError when the file is not a readable etcd snapshot.
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
        with interrupts.deferred():
            self.stop()


def etcd_command(binary: str, data_dir: str, listen_client: str, advertise_client: str, peer_url: str,
                 quota_bytes: int = DEFAULT_QUOTA_BYTES, tls_args: list[str] | None = None) -> list[str]:
    """The etcd command line of a restored single member (TLS flags from ``tls_args``)."""
    return [binary, "--name", SANDBOX_MEMBER, "--data-dir", data_dir,
            "--listen-client-urls", listen_client, "--advertise-client-urls", advertise_client,
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"{SANDBOX_MEMBER}={peer_url}", "--initial-cluster-token", SANDBOX_CLUSTER,
            "--quota-backend-bytes", str(quota_bytes), "--log-level", "warn", *FAST_ELECTION,
            *(tls_args or [])]


def quota_for(snapshot_size: int) -> int:
    """A backend quota that lets the smoke test write into a restored db of this size."""
    return max(DEFAULT_QUOTA_BYTES, snapshot_size * 2)
