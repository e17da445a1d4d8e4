"""Verification: restore each backup into a throwaway etcd and prove it is the recorded keyspace.

Public API: :class:`Verifier` (the pipeline), :class:`VerifyOptions`, :class:`VerificationReport`,
the :class:`Sandbox` port with :class:`DockerSandbox` and :class:`ProcessSandbox`, and
:func:`sandbox_factory` that builds either from ``VerifyConfig``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from etcdguard.verify.docker import DockerSandbox as DockerSandbox
    from etcdguard.verify.factory import options_from_settings as options_from_settings
    from etcdguard.verify.factory import sandbox_factory as sandbox_factory
    from etcdguard.verify.process import ProcessSandbox as ProcessSandbox
    from etcdguard.verify.sandbox import RunningEtcd as RunningEtcd
    from etcdguard.verify.sandbox import Sandbox as Sandbox
    from etcdguard.verify.sandbox import SandboxRestoreError as SandboxRestoreError
    from etcdguard.verify.sandbox import SnapshotStatus as SnapshotStatus
    from etcdguard.verify.verifier import VerificationReport as VerificationReport
    from etcdguard.verify.verifier import Verifier as Verifier
    from etcdguard.verify.verifier import VerifyOptions as VerifyOptions

# imported on first use: a command that needs one submodule (restore picks its etcdutl through
# hosttools) does not load Docker, PKI and the verifier
_WHERE = {
    "DockerSandbox": "docker", "ProcessSandbox": "process", "RunningEtcd": "sandbox", "Sandbox": "sandbox",
    "SandboxRestoreError": "sandbox", "SnapshotStatus": "sandbox", "VerificationReport": "verifier",
    "Verifier": "verifier", "VerifyOptions": "verifier", "options_from_settings": "factory",
    "sandbox_factory": "factory",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
