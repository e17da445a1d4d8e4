"""Verification: restore each backup into a throwaway etcd and prove it is the recorded keyspace.

Public API: :class:`Verifier` (the pipeline), :class:`VerifyOptions`, :class:`VerificationReport`,
the :class:`Sandbox` port with :class:`DockerSandbox` and :class:`ProcessSandbox`, and
:func:`sandbox_factory` that builds either from ``VerifyConfig``.
"""

from __future__ import annotations

from collections.abc import Callable

from etcdguard.config import VerifyConfig
from etcdguard.verify.docker import DockerSandbox
from etcdguard.verify.process import ProcessSandbox
from etcdguard.verify.sandbox import RestoreError, RunningEtcd, Sandbox, SnapshotStatus
from etcdguard.verify.steps import StepCallback
from etcdguard.verify.verifier import VerificationReport, Verifier, VerifyOptions

__all__ = [
    "DockerSandbox",
    "ProcessSandbox",
    "RestoreError",
    "RunningEtcd",
    "Sandbox",
    "SnapshotStatus",
    "StepCallback",
    "VerificationReport",
    "Verifier",
    "VerifyOptions",
    "sandbox_factory",
]


def sandbox_factory(config: VerifyConfig, kind: str | None = None) -> Callable[[str], Sandbox]:
    """A ``backup_id -> Sandbox`` factory for ``kind`` (default ``config.sandbox``)."""
    chosen = kind or config.sandbox

    def make(backup_id: str) -> Sandbox:
        if chosen == "process":
            return ProcessSandbox(start_timeout=config.start_timeout, etcd_path=config.etcd_path,
                                  workdir=config.workdir)
        return DockerSandbox(backup_id=backup_id, image=config.image, memory_limit=config.memory_limit,
                             start_timeout=config.start_timeout, pull=config.pull,
                             pull_timeout=config.pull_timeout, stale_after=config.stale_sandbox_seconds,
                             etcd_path=config.etcd_path, data_mode=config.docker_data_mode,
                             workdir=config.workdir)

    if chosen not in ("docker", "process"):
        raise ValueError(f"unknown sandbox {chosen!r}: use docker or process")
    return make
