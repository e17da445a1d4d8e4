"""DockerSandbox: the restored etcd runs in a throwaway container (Docker SDK for Python).

How the snapshot gets in (``data_mode``):

* ``bind`` (chosen by ``auto`` for a daemon on this host behind a unix socket, without
  user-namespace remapping, when this host has etcd tools of the image's version): the snapshot
  is restored on the host with ``etcdutl``/``etcdctl`` into a private 0700 temp dir, which is
  bind-mounted into the container; the container runs as the calling user (as root for a
  rootless daemon, whose root is the calling user), so etcd owns its 0700 data dir and
  everything it writes can be removed afterwards. No copy of the data is made.
* ``volume`` (every other case: remote, user-namespaced, no host tools): the snapshot is streamed
  with ``put_archive`` into a fresh labelled named volume, restored there by a one-shot,
  network-less container of the same image, and served from that volume by the etcd container,
  as the container's root. Nothing of the host's file system is mounted.

Network: a per-run bridge network without IP masquerading (no route out) and without
inter-container traffic; the only way in is the client port published on 127.0.0.1, and it
serves TLS with client-cert auth against this run's CA (:mod:`etcdguard.verify.pki`): another
local user reaching the port is refused, and etcdguard trusts only this run's server
certificate. (Docker cannot publish ports from an ``internal`` network, nor from
``network_mode=none``.) The keys are made in a private host dir (bind-mounted, or copied into
the volume, root-only).
Labels and leftover cleanup: see :mod:`etcdguard.verify.dockerres`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from etcdguard.errors import SandboxUnavailableError
from etcdguard.etcd.binaries import EtcdVersion
from etcdguard.etcd.local import wait_until_serving
from etcdguard.etcd.tools import TOOL_TIMEOUT, RestoreSpec, SnapshotTool, restore, restore_args, tail
from etcdguard.verify.dockerres import (
    BACKUP_LABEL,
    CREATED_LABEL,
    OWNER_LABEL,
    RUN_LABEL,
    SANDBOX_LABEL,
    cleanup_leftovers,
    daemon_traits,
    docker_client,
    docker_errors,
    files_tar,
    remove_labelled,
    snapshot_tar,
)
from etcdguard.verify.hosttools import HostEtcd, host_snapshot_status, pick_host_etcd
from etcdguard.verify.images import BIN_DIR, EtcdImage, resolve_image
from etcdguard.verify.pki import SandboxPKI, create_pki
from etcdguard.verify.sandbox import (
    SANDBOX_CLUSTER,
    SANDBOX_MEMBER,
    RunningEtcd,
    Sandbox,
    SandboxRestoreError,
    SnapshotStatus,
    etcd_command,
    quota_for,
)
from etcdguard.verify.workdirs import owner_token, private_tempdir, remove_tree, sweep_stale_workdirs

log = logging.getLogger(__name__)

__all__ = ["BACKUP_LABEL", "CREATED_LABEL", "OWNER_LABEL", "RUN_LABEL", "SANDBOX_LABEL", "DockerSandbox"]

MOUNT = "/var/lib/etcdguard"
SNAPSHOT_IN = f"{MOUNT}/snapshot.db"
DATA_IN = f"{MOUNT}/data"
TLS_IN = f"{MOUNT}/tls"
PEER_URL = "http://127.0.0.1:2380"  # the container's own loopback; never published


class DockerSandbox(Sandbox):
    """A throwaway etcd container restored from the snapshot (see the module docstring)."""

    kind = "docker"

    def __init__(self, *, backup_id: str = "", image: str | None = None, memory_limit: str = "1g",
                 start_timeout: float = 60.0, pull: bool = True, pull_timeout: float = 30.0,
                 stale_after: float = 900.0, etcd_path: Iterable[Path] = (), data_mode: str = "auto",
                 workdir: Path | None = None) -> None:
        super().__init__(start_timeout)
        if data_mode not in ("auto", "bind", "volume"):
            raise ValueError(f"data_mode must be auto, bind or volume, not {data_mode!r}")
        self.backup_id = backup_id
        self.image = image
        self.memory_limit = memory_limit
        self.pull = pull
        self.pull_timeout = pull_timeout
        self.stale_after = stale_after
        self.etcd_path = list(etcd_path)
        self.data_mode = data_mode
        self.parent_dir = workdir
        self.run_id = secrets.token_hex(6)
        self._client: Any = None
        self._images: dict[str, EtcdImage] = {}
        self._lock = threading.RLock()  # snapshot_status may run beside start()
        self._volume: Any = None
        self._snapshot_copied: Path | None = None
        self._hostdir: Path | None = None
        self._pki: SandboxPKI | None = None
        self._container: Any = None
        self._net: Any = None

    # -- plumbing ---------------------------------------------------------------------------
    def client(self) -> Any:
        """The Docker client; connects (and cleans leftovers of crashed runs) on first use."""
        with self._lock:
            if self._client is None:
                self._client = docker_client()
                removed = cleanup_leftovers(self._client, self.stale_after)
                if removed:
                    log.warning("removed %d leftover sandbox resource(s) of crashed runs", removed)
            return self._client

    def labels(self) -> dict[str, str]:
        """Labels put on every resource of this run."""
        return {SANDBOX_LABEL: "1", BACKUP_LABEL: self.backup_id, RUN_LABEL: self.run_id,
                OWNER_LABEL: owner_token(), CREATED_LABEL: str(int(time.time()))}

    def _image(self, etcd_version: str) -> EtcdImage:
        with self._lock:
            if etcd_version not in self._images:
                self._images[etcd_version] = resolve_image(
                    self.client(), etcd_version, configured=self.image, pull=self.pull,
                    pull_timeout=self.pull_timeout, etcd_path=self.etcd_path)
            return self._images[etcd_version]

    def _host_tools(self, version: str, exact: bool) -> HostEtcd | None:
        """Host etcd tools of ``version`` (or the nearest unless ``exact``), or None."""
        try:
            host = pick_host_etcd(version or None, self.etcd_path)
            host.tool  # noqa: B018 - raises when the installation has no tool
        except SandboxUnavailableError:
            return None
        return host if not exact or host.version == version else None

    def _bind_host(self, image: EtcdImage) -> tuple[HostEtcd, bool] | None:
        """(host tools, rootless daemon) when the data dir can be bind-mounted, else None."""
        if self.data_mode == "volume" or image.version is None:
            return None
        local, rootless = daemon_traits(self.client())
        host = self._host_tools(image.version, exact=True)
        if self.data_mode == "bind" and (host is None or not local):
            raise SandboxUnavailableError("verify.docker_data_mode=bind needs a local Docker daemon and host "
                                          f"etcd tools of version {image.version}")
        return (host, rootless) if host is not None and local else None

    def _container_kwargs(self, mounts: dict[str, dict[str, str]], user: str = "0:0") -> dict[str, Any]:
        return {"labels": self.labels(), "mem_limit": self.memory_limit, "memswap_limit": self.memory_limit,
                "user": user, "cap_drop": ["ALL"], "security_opt": ["no-new-privileges"],
                "read_only": True, "tmpfs": {"/tmp": "rw,size=64m"}, "pids_limit": 1024, "volumes": mounts}

    def _volume_mounts(self) -> dict[str, dict[str, str]]:
        return {self._volume.name: {"bind": MOUNT, "mode": "rw"}}

    def _ensure_snapshot(self, snapshot_path: Path, image: EtcdImage) -> None:
        """Create the run's volume and stream the snapshot into it (once)."""
        with self._lock:
            client = self.client()
            if self._volume is None:
                self._volume = client.volumes.create(name=f"etcdguard-sandbox-{self.run_id}",
                                                     labels=self.labels())
            if self._snapshot_copied == snapshot_path:
                return
            holder = client.containers.create(
                image.ref, entrypoint=[f"{BIN_DIR}/etcd"], command=["--version"], network_mode="none",
                name=f"etcdguard-copy-{self.run_id}", **self._container_kwargs(self._volume_mounts()))
            try:
                holder.put_archive(MOUNT, snapshot_tar(snapshot_path))
            finally:
                holder.remove(force=True)
            self._snapshot_copied = snapshot_path

    def _run_tool(self, image: EtcdImage, args: list[str], what: str, timeout: float) -> str:
        """Run a snapshot tool in a one-shot, network-less container on the run's volume."""
        import requests.exceptions

        tool = "etcdutl" if image.etcdutl else "etcdctl"
        container = self.client().containers.create(
            image.ref, entrypoint=[f"{BIN_DIR}/{tool}"], command=args, network_mode="none",
            environment={} if image.etcdutl else {"ETCDCTL_API": "3"},
            name=f"etcdguard-{what.split()[-1]}-{self.run_id}",
            **self._container_kwargs(self._volume_mounts()))
        try:
            container.start()
            try:
                code = int(container.wait(timeout=timeout).get("StatusCode", -1))
            except requests.exceptions.RequestException:
                raise SandboxRestoreError(f"{what} did not finish within {timeout:g}s") from None
            out = str(container.logs(stdout=True, stderr=False).decode(errors="replace"))
            if code != 0:
                err = container.logs(stdout=True, stderr=True).decode(errors="replace")
                raise SandboxRestoreError(f"{what} failed in {image.ref} (exit {code}): {tail(err)}")
            return out
        finally:
            container.remove(force=True)

    # -- the port -----------------------------------------------------------------------------
    def check(self) -> None:
        """The Docker daemon must answer (leftovers of crashed runs are removed on the way)."""
        sweep_stale_workdirs(self.parent_dir)
        with docker_errors("the leftover cleanup"):
            self.client()

    def prepare(self, etcd_version: str) -> None:
        """Resolve (pull or build) the image and create the run's network."""
        with docker_errors("preparing the sandbox"):
            self._image(etcd_version)
            self._network()

    def _network(self) -> Any:
        with self._lock:
            if self._net is None:
                self._net = self.client().networks.create(
                    f"etcdguard-sandbox-{self.run_id}", driver="bridge", labels=self.labels(), options={
                        "com.docker.network.bridge.enable_ip_masquerade": "false",
                        "com.docker.network.bridge.enable_icc": "false",
                        "com.docker.network.bridge.host_binding_ipv4": "127.0.0.1"})
            return self._net

    def snapshot_status(self, snapshot_path: Path, etcd_version: str) -> SnapshotStatus:
        """Host ``etcdutl``/``etcdctl`` when this host has one, else inside the sandbox image."""
        host = None if self.data_mode == "volume" else self._host_tools(etcd_version, exact=False)
        if host is not None:
            return host_snapshot_status(host, snapshot_path)
        with docker_errors("snapshot status"):
            image = self._image(etcd_version)
            self._ensure_snapshot(snapshot_path, image)
            out = self._run_tool(image, ["snapshot", "status", "-w", "json", SNAPSHOT_IN], "snapshot status",
                                 timeout=600.0)
        try:
            return SnapshotStatus.parse(out)
        except ValueError as exc:
            raise SandboxRestoreError(f"snapshot status: {exc}") from None

    def start(self, snapshot_path: Path, etcd_version: str) -> RunningEtcd:
        """Restore the snapshot (on the host, or in a volume) and serve it from a container."""
        timings: dict[str, float] = {}
        began = time.monotonic()
        with docker_errors("starting the sandbox"):
            image = self._image(etcd_version)
            timings["image"] = time.monotonic() - began
            began = time.monotonic()
            bind = self._bind_host(image)
            size = snapshot_path.stat().st_size
            self._hostdir = private_tempdir("etcdguard-sandbox-", self.parent_dir)
            (self._hostdir / "tls").mkdir(mode=0o700)
            self._pki = create_pki(self._hostdir / "tls")
            if bind is not None:
                host, rootless = bind
                mounts = {str(self._hostdir): {"bind": MOUNT, "mode": "rw,z"}}
                user = "0:0" if rootless else f"{os.getuid()}:{os.getgid()}"
                with ThreadPoolExecutor(1, thread_name_prefix="etcdguard-container") as pool:
                    created = pool.submit(self._create, image, mounts, user, size)  # beside the restore
                    try:
                        self._restore_on_host(snapshot_path, host, self._hostdir / "data")
                    except BaseException:
                        with contextlib.suppress(Exception):  # the restore's error is the one to raise
                            created.result()
                        raise
                    created.result()
            else:
                mounts = self._restore_in_volume(snapshot_path, image, timings)
                self._create(image, mounts, "0:0", size)
            timings["restore"] = time.monotonic() - began
            began = time.monotonic()
            endpoint = self._serve()
            version = wait_until_serving(endpoint, self.start_timeout, self._exited, tls=self._pki.client,
                                         error=SandboxRestoreError)
            timings["start"] = time.monotonic() - began
        mode = "bind" if bind is not None else "volume"
        return RunningEtcd(endpoint=endpoint, version=version, exact=version == etcd_version,
                           sandbox=f"docker:{image.ref} ({mode})", tls=self._pki.client, timings=timings)

    @staticmethod
    def _spec(snapshot: Path, data_dir: Path) -> RestoreSpec:
        return RestoreSpec(snapshot, data_dir, SANDBOX_MEMBER, {SANDBOX_MEMBER: [PEER_URL]}, SANDBOX_CLUSTER,
                           skip_hash_check=True)

    def _restore_on_host(self, snapshot_path: Path, host: HostEtcd, data_dir: Path) -> None:
        restore(host.tool, self._spec(snapshot_path, data_dir), timeout=max(self.start_timeout, TOOL_TIMEOUT),
                error=SandboxRestoreError)

    def _restore_in_volume(self, snapshot_path: Path, image: EtcdImage,
                           timings: dict[str, float]) -> dict[str, dict[str, str]]:
        began = time.monotonic()
        self._ensure_snapshot(snapshot_path, image)
        self._copy_keys(image)
        timings["copy"] = time.monotonic() - began
        tool = SnapshotTool(Path(f"{BIN_DIR}/{'etcdutl' if image.etcdutl else 'etcdctl'}"),
                            EtcdVersion.parse(image.version or "3.5.0"), image.etcdutl)
        args = restore_args(tool, self._spec(Path(SNAPSHOT_IN), Path(DATA_IN)))
        self._run_tool(image, args[1:], "snapshot restore", timeout=max(self.start_timeout, TOOL_TIMEOUT))
        return self._volume_mounts()

    def _copy_keys(self, image: EtcdImage) -> None:
        """Put the server's TLS files into the volume (root-only: the container runs as root)."""
        assert self._pki is not None
        holder = self.client().containers.create(
            image.ref, entrypoint=[f"{BIN_DIR}/etcd"], command=["--version"], network_mode="none",
            name=f"etcdguard-keys-{self.run_id}", **self._container_kwargs(self._volume_mounts()))
        try:
            holder.put_archive(MOUNT, files_tar("tls", self._pki.pem_files()))
        finally:
            holder.remove(force=True)

    def _create(self, image: EtcdImage, mounts: dict[str, dict[str, str]], user: str, size: int) -> None:
        """Create (not start) the etcd container on the run's network."""
        assert self._pki is not None
        tls = [f"{TLS_IN}/{p.name}" for p in (self._pki.server_cert, self._pki.server_key, self._pki.ca)]
        command = etcd_command(f"{BIN_DIR}/etcd", DATA_IN, "https://0.0.0.0:2379", "https://127.0.0.1:2379",
                               PEER_URL, quota_for(size),
                               ["--cert-file", tls[0], "--key-file", tls[1], "--trusted-ca-file", tls[2],
                                "--client-cert-auth"])
        self._container = self.client().containers.create(
            image.ref, entrypoint=[command[0]], command=command[1:], network=self._network().name,
            ports={"2379/tcp": ("127.0.0.1", None)}, name=f"etcdguard-sandbox-{self.run_id}",
            **self._container_kwargs(mounts, user))

    def _serve(self) -> str:
        """Start the etcd container; returns its 127.0.0.1 client URL."""
        container = self._container
        container.start()
        container.reload()
        bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get("2379/tcp") or []
        if not bindings:
            raise SandboxRestoreError("Docker did not publish the sandbox's client port")
        return f"https://127.0.0.1:{bindings[0]['HostPort']}"

    def _exited(self) -> str | None:
        container = self._container
        if container is None:
            return "no container"
        container.reload()
        if container.status in ("created", "running", "restarting"):
            return None
        logs = container.logs(stdout=True, stderr=True).decode(errors="replace")
        code = container.attrs.get("State", {}).get("ExitCode")
        return f"container {container.status} (exit {code}): {tail(logs)}"

    def stop(self) -> None:
        """Remove every container, network and volume of this run, and its host dir (idempotent)."""
        try:
            if self._client is not None:
                remove_labelled(self._client, f"{RUN_LABEL}={self.run_id}")
        except Exception as exc:  # daemon gone: the next start cleans up
            log.warning("sandbox teardown incomplete (%s); the next run removes the leftovers", exc)
        finally:
            remove_tree(self._hostdir)
            self._hostdir = None
            self._pki = None
            self._volume = None
            self._snapshot_copied = None
            self._container = None
            self._net = None
