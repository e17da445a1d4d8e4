"""The environment of every child process etcdguard starts (etcd, its tools, helpers)."""

from __future__ import annotations

import os
from collections.abc import Mapping

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: ``PATH``, ``LANG`` and ``extra``, nothing inherited.

    etcd reads any ``ETCD_*`` variable as a flag and etcdctl any ``ETCDCTL_*``; cloud and
    etcdguard credentials have no business in a child's ``/proc/PID/environ``.
    """
    env = {"PATH": os.environ.get("PATH") or DEFAULT_PATH, "LANG": "C.UTF-8"}
    env.update(extra or {})
    return env
