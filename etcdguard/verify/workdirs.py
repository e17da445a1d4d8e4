"""Private work dirs of a verification run, and sweeping those of runs that were killed.

A run's dirs hold the decrypted snapshot, the restored data dir and the sandbox's TLS keys. Each
is created 0700 with an ``.owner`` file naming the process (``host:pid:start-time``); a run that
is killed (SIGKILL, OOM, power loss) cannot remove them, so the next run removes every dir whose
owner on this host is no longer alive. Its sandbox etcd died with it (parent-death signal).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path

from etcdguard.errors import ConfigError

log = logging.getLogger(__name__)

OWNER_FILE = ".owner"
PREFIXES = ("etcdguard-verify-", "etcdguard-sandbox-")


def _proc_start(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[-1].split()[19]


def owner_token() -> str:
    """``host:pid:start-time`` of this process (start time guards against pid reuse)."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_proc_start(pid)}"


def owner_alive(token: str) -> bool | None:
    """True/False for an owner on this host; None when the owner lives on another host."""
    host, _, rest = token.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not start or _proc_start(pid) in ("", start)


def private_tempdir(prefix: str = "etcdguard-verify-", parent: Path | None = None) -> Path:
    """A fresh private (0700) temp directory under ``parent`` (default the system temp dir),
    marked with this process as its owner."""
    try:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise ConfigError(f"work directory {parent or tempfile.gettempdir()} does not exist or is not a "
                          f"directory (verify.workdir, TMPDIR): {exc.strerror}") from None
    os.chmod(path, 0o700)
    fd = os.open(path / OWNER_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(owner_token())
    return path


def remove_tree(path: Path | None) -> None:
    """Remove a directory tree, ignoring errors (best effort, used in teardown)."""
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def sweep_stale_workdirs(parent: Path | None = None) -> list[Path]:
    """Remove work dirs under ``parent`` (default the system temp dir) whose owner on this host is
    gone; dirs of live runs, of other hosts and of other users are left alone. Returns those removed."""
    base = Path(parent or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        candidates = [p for p in base.iterdir() if p.name.startswith(PREFIXES)]
    except OSError:
        return removed
    uid = os.geteuid()
    for path in candidates:
        try:
            if path.is_symlink() or not path.is_dir() or path.stat().st_uid != uid:
                continue
            token = (path / OWNER_FILE).read_text().strip()
        except OSError:
            continue
        if owner_alive(token) is False:
            remove_tree(path)
            removed.append(path)
    if removed:
        log.warning("removed %d work dir(s) left by killed verification runs", len(removed))
    return removed
