"""Docker plumbing of the sandbox: the client, resource labels, and removal of leftovers.

Every container, volume and network the Docker sandbox creates carries ``etcdguard.sandbox=1``,
the backup id, the run id, the owning process (``host:pid:start-time``) and the creation time.
A run removes everything with its run id on teardown; each start removes leftovers of crashed
runs: the owner is on this host and no longer running, or on another host and older than
``stale_after`` seconds.
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from etcdguard.errors import SandboxUnavailableError
from etcdguard.verify.sandbox import SandboxRestoreError
from etcdguard.verify.workdirs import owner_alive

log = logging.getLogger(__name__)

SANDBOX_LABEL = "etcdguard.sandbox"
BACKUP_LABEL = "etcdguard.backup-id"
RUN_LABEL = "etcdguard.run"
OWNER_LABEL = "etcdguard.owner"
CREATED_LABEL = "etcdguard.created"
_CHUNK = 1 << 20


def docker_client(timeout: float = 120.0) -> Any:
    """A connected Docker client, or SandboxUnavailableError suggesting ``--sandbox process``."""
    try:
        import docker
        import docker.errors
    except ImportError:  # pragma: no cover - docker is a hard dependency
        raise SandboxUnavailableError("the docker Python package is not installed; "
                                      "use --sandbox process") from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as exc:  # docker raises DockerException, requests and OS errors here
        where = os.environ.get("DOCKER_HOST") or "the default socket"
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise SandboxUnavailableError(
            f"Docker is not available at {where} ({first}); "
            "run with --sandbox process to verify with a local etcd process instead") from None
    return client


def _is_leftover(labels: dict[str, str], stale_after: float, now: float) -> bool:
    alive = owner_alive(labels.get(OWNER_LABEL, ""))
    if alive is not None:
        return not alive
    try:
        created = float(labels.get(CREATED_LABEL, "0"))
    except ValueError:
        created = 0.0
    return now - created > stale_after


def remove_labelled(client: Any, label: str, keep: Any = None) -> int:
    """Remove containers, then networks, then volumes matching ``label`` (``key=value`` or
    ``key``) for which ``keep(labels)`` is not true; returns how many were removed."""
    removed = 0
    groups = (("container", client.containers.list(all=True, filters={"label": label})),
              ("network", client.networks.list(filters={"label": label})),
              ("volume", client.volumes.list(filters={"label": label})))
    for kind, items in groups:
        for item in items:
            labels = (item.attrs.get("Config", {}).get("Labels") if kind == "container"
                      else item.attrs.get("Labels")) or {}
            if keep is not None and keep(labels):
                continue
            try:
                if kind == "container":
                    item.remove(force=True, v=True)
                else:
                    item.remove()
                removed += 1
            except Exception as exc:  # already gone, or still in use by a racing run
                log.debug("cannot remove %s %s: %s", kind, getattr(item, "name", "?"), exc)
    return removed


def cleanup_leftovers(client: Any, stale_after: float) -> int:
    """Remove sandbox resources of crashed runs; returns how many were removed."""
    now = time.time()
    return remove_labelled(client, SANDBOX_LABEL,
                           keep=lambda labels: not _is_leftover(labels, stale_after, now))


def snapshot_tar(snapshot_path: Path, name: str = "snapshot.db") -> Iterator[bytes]:
    """Stream a one-file tar archive of ``snapshot_path`` (root-owned, 0600) without a temp copy."""
    size = snapshot_path.stat().st_size
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(time.time())
    yield info.tobuf(format=tarfile.GNU_FORMAT)
    sent = 0
    with snapshot_path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            sent += len(chunk)
            yield chunk
    if sent != size:
        raise SandboxRestoreError(f"{snapshot_path} changed size while it was copied into the sandbox")
    padding = (-size) % tarfile.BLOCKSIZE
    yield b"\0" * (padding + 2 * tarfile.BLOCKSIZE)


def files_tar(directory: str, files: dict[str, bytes]) -> bytes:
    """A tar archive of ``directory/`` (0700) holding ``files`` (0600), all owned by root."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo(directory)
        info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o700, int(time.time())
        tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(f"{directory}/{name}")
            info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def daemon_traits(client: Any) -> tuple[bool, bool]:
    """(local, rootless) for the daemon: ``local`` when it runs on this host behind a unix
    socket without user-namespace remapping, so a private host dir can be bind-mounted."""
    base_url = str(getattr(client.api, "base_url", ""))
    try:
        security = [str(s) for s in (client.info().get("SecurityOptions") or [])]
    except Exception:  # an old daemon without the field: assume the plain case
        security = []
    rootless = any("name=rootless" in s for s in security)
    userns = any("name=userns" in s for s in security)
    return base_url == "http+docker://localhost" and not userns, rootless


@contextmanager
def docker_errors(what: str = "a sandbox operation") -> Iterator[None]:
    """Turn Docker SDK and transport errors (daemon gone mid-run, refusals) into
    SandboxUnavailableError: a host problem, not a verdict on the backup."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except docker.errors.APIError as exc:
        raise SandboxUnavailableError(f"Docker refused {what}: {exc.explanation or exc}") from None
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise SandboxUnavailableError(f"Docker failed during {what}: {first}") from None
