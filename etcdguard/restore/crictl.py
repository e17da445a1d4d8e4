"""What the container runtime of a kubeadm node says through ``crictl``, when it is installed.

Used to wait until a static pod's container is really gone (its ports can close before the
runtime has torn it down) and to count how often the kubelet restarted etcd. crictl is optional:
without it, or when it fails or hangs, the answers are None and etcdguard relies on the ports.
Every call gets the minimal child environment and a timeout.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from dataclasses import dataclass

from etcdguard.etcd.tools import child_env

CRICTL_TIMEOUT = 15.0


@dataclass(frozen=True)
class Container:
    """One container as ``crictl ps -a -o json`` lists it."""

    id: str
    name: str
    attempt: int
    state: str
    created_at: int


def _crictl(*args: str) -> str | None:
    exe = shutil.which("crictl")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True, env=child_env(), timeout=CRICTL_TIMEOUT,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def running_ids(name: str) -> list[str] | None:
    """Ids of the running containers named exactly ``name``; None when crictl cannot tell."""
    out = _crictl("ps", "-q", "--name", f"^{name}$")
    return None if out is None else out.split()


def containers(name: str) -> list[Container] | None:
    """Every container named exactly ``name`` (running and exited); None when crictl cannot tell."""
    out = _crictl("ps", "-a", "--name", f"^{name}$", "-o", "json")
    if out is None:
        return None
    try:
        return [Container(id=str(c["id"]), name=str(c["metadata"]["name"]), attempt=int(c["metadata"]["attempt"]),
                          state=str(c.get("state", "")), created_at=int(c.get("createdAt") or 0))
                for c in json.loads(out).get("containers") or []]
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def wait_gone(name: str, timeout: float, poll: float = 0.5) -> list[str]:
    """Wait until crictl lists no running container ``name``; the ids still running at the deadline
    (empty when gone, or when crictl cannot tell)."""
    deadline = time.monotonic() + timeout
    while True:
        ids = running_ids(name)
        if not ids or time.monotonic() >= deadline:
            return ids or []
        time.sleep(poll)
