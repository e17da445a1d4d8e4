"""etcd's command-line tools as etcdguard runs them: one place for every command line.

* :func:`child_env` - the minimal, explicit environment every child process gets (no cloud
  credentials, no ``ETCDGUARD_*`` secrets, no stray ``ETCD_*``/``ETCDCTL_*`` settings).
* :class:`SnapshotTool` - the ``etcdutl`` (3.5+) or ``etcdctl`` (3.4) that restores and inspects
  snapshots, with what it supports (``--bump-revision``/``--mark-compacted``: etcdutl 3.5.10+ and
  3.6, etcdctl 3.4.27+; read from its ``--help``, the version decides when that fails).
* :class:`RestoreSpec` + :func:`restore_args` - ``snapshot restore`` with the member name, initial
  cluster, token, advertised peer URLs, wal dir, hash-check skip and revision bump.
* :func:`run_tool` and :func:`snapshot_status`.
* :func:`free_port` - a loopback port below the kernel's ephemeral range, checked by binding.
"""

from __future__ import annotations

import functools
import json
import os
import random
import socket
import subprocess
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from etcdguard.errors import ConfigError, EtcdGuardError, PermanentError, SandboxUnavailableError
from etcdguard.etcd.binaries import EtcdInstallation, EtcdVersion
from etcdguard.etcd.childenv import child_env as child_env

TOOL_TIMEOUT = 600.0


class EtcdToolError(PermanentError):
    """An etcd tool (``etcdutl``/``etcdctl``) failed or did not finish."""


def tail(text: str, lines: int = 5) -> str:
    """The last non-empty lines of a log, joined on one line."""
    return " | ".join(ln.strip() for ln in text.strip().splitlines()[-lines:] if ln.strip())


# -- ports ------------------------------------------------------------------------------------

def ephemeral_port_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> tuple[int, int]:
    """The kernel's ephemeral (client) port range; Linux's default when it cannot be read."""
    try:
        low, high = (int(x) for x in path.read_text().split()[:2])
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


_handed_out: set[int] = set()
_ports_lock = threading.Lock()


def free_port(host: str = "127.0.0.1", attempts: int = 200) -> int:
    """A random TCP port below the ephemeral range that is free on ``host`` right now.

    Ports inside the ephemeral range (and port 0's pick) collide with client sockets: the kernel
    may give one to an outgoing connection before the server binds it. This picks from the
    ``[low/2, low)`` band below it (at least 10000), checks with ``bind`` and never hands out the
    same port twice in this process.
    """
    low, _ = ephemeral_port_range()
    top = max(low, 11000)
    bottom = max(1024, min(top // 2, top - 1000))
    with _ports_lock:
        for _ in range(attempts):
            port = random.randrange(bottom, top)  # noqa: S311 - not a secret
            if port in _handed_out:
                continue
            with socket.socket() as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    raise SandboxUnavailableError(f"no free TCP port on {host} in {bottom}-{top - 1}")


# -- the snapshot tool ------------------------------------------------------------------------

@dataclass(frozen=True)
class SnapshotStatus:
    """``snapshot status`` of a snapshot or db file."""

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
class SnapshotTool:
    """The binary that restores and inspects snapshots: ``etcdutl``, or 3.4's ``etcdctl``."""

    path: Path
    version: EtcdVersion
    is_etcdutl: bool

    @classmethod
    def of(cls, install: EtcdInstallation) -> SnapshotTool:
        """The installation's etcdutl, else its etcdctl; SandboxUnavailableError with neither."""
        if install.etcdutl is not None:
            return cls(install.etcdutl, install.version, True)
        if install.etcdctl is not None:
            return cls(install.etcdctl, install.version, False)
        raise SandboxUnavailableError(f"etcd {install.version} in {install.directory} has neither etcdutl "
                                      "nor etcdctl to restore snapshots with")

    @property
    def env(self) -> dict[str, str]:
        """The tool's environment (3.4's etcdctl needs ETCDCTL_API=3)."""
        return child_env(None if self.is_etcdutl else {"ETCDCTL_API": "3"})

    @property
    def supports_bump_revision(self) -> bool:
        """True when ``snapshot restore`` takes ``--bump-revision`` and ``--mark-compacted``."""
        return _restore_help_has(str(self.path), self.is_etcdutl, "--bump-revision",
                                 bump_by_version(self.version, self.is_etcdutl))


def bump_by_version(version: EtcdVersion, is_etcdutl: bool) -> bool:
    """Whether a release's restore takes ``--bump-revision``: etcdutl 3.5.10+ / 3.6+, etcdctl 3.4.27+
    (etcdctl's restore in 3.5 is deprecated and lacks it)."""
    if is_etcdutl:
        return version >= EtcdVersion(3, 5, 10)
    return EtcdVersion(3, 4, 27) <= version < EtcdVersion(3, 5, 0)


@functools.lru_cache(maxsize=32)
def _restore_help_has(tool: str, is_etcdutl: bool, flag: str, fallback: bool) -> bool:
    env = child_env(None if is_etcdutl else {"ETCDCTL_API": "3"})
    try:
        done = subprocess.run([tool, "snapshot", "restore", "--help"], capture_output=True, text=True,
                              env=env, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return fallback
    text = done.stdout + done.stderr
    return flag in text if "--data-dir" in text else fallback


@dataclass(frozen=True)
class RestoreSpec:
    """What ``snapshot restore`` should build: one member's data dir of a (new) cluster.

    ``initial_cluster`` maps every member's name to its peer URLs; ``bump_revision`` (with
    ``mark_compacted``) raises every revision so watchers and informers see the restored data as
    new; ``skip_hash_check`` only for a file whose sha256 trailer was checked already, or a
    member's db file (which has none).
    """

    snapshot: Path
    data_dir: Path
    name: str
    initial_cluster: Mapping[str, Sequence[str]]
    token: str
    wal_dir: Path | None = None
    skip_hash_check: bool = False
    bump_revision: int | None = None
    mark_compacted: bool = False
    extra: Sequence[str] = field(default_factory=tuple)

    @property
    def peer_urls(self) -> list[str]:
        """This member's advertised peer URLs."""
        return list(self.initial_cluster[self.name])


def initial_cluster_arg(members: Mapping[str, Sequence[str]]) -> str:
    """``a=https://10.0.0.1:2380,b=...`` (every peer URL of every member)."""
    return ",".join(f"{name}={url}" for name, urls in members.items() for url in urls)


def restore_args(tool: SnapshotTool, spec: RestoreSpec) -> list[str]:
    """The ``snapshot restore`` command line; ConfigError when a bump is asked of a tool without it."""
    if spec.name not in spec.initial_cluster:
        raise ConfigError(f"member {spec.name} is not in the initial cluster "
                          f"{initial_cluster_arg(spec.initial_cluster)}")
    args = [str(tool.path), "snapshot", "restore", str(spec.snapshot), "--name", spec.name,
            "--data-dir", str(spec.data_dir), "--initial-cluster", initial_cluster_arg(spec.initial_cluster),
            "--initial-cluster-token", spec.token,
            "--initial-advertise-peer-urls", ",".join(spec.peer_urls)]
    if spec.wal_dir is not None:
        args += ["--wal-dir", str(spec.wal_dir)]
    if spec.skip_hash_check:
        args.append("--skip-hash-check")
    if spec.bump_revision is not None:
        if not tool.supports_bump_revision:
            raise ConfigError(f"{tool.path} ({tool.version}) cannot bump revisions on restore: "
                              "it needs etcdutl 3.5.10+ or etcdctl 3.4.27+")
        args += ["--bump-revision", str(spec.bump_revision)]
        if spec.mark_compacted:
            args.append("--mark-compacted")
    return args + list(spec.extra)


def run_tool(args: Sequence[str], *, what: str, env: Mapping[str, str] | None = None,
             timeout: float = TOOL_TIMEOUT, error: type[EtcdGuardError] = EtcdToolError) -> str:
    """Run an etcd tool with a minimal environment; stdout on success.

    A failure or timeout raises ``error`` naming ``what``; a binary that cannot be started raises
    SandboxUnavailableError.
    """
    try:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout,
                              env=dict(env) if env is not None else child_env(), stdin=subprocess.DEVNULL,
                              check=False)
    except subprocess.TimeoutExpired:
        raise error(f"{what} did not finish within {timeout:g}s") from None
    except OSError as exc:
        raise SandboxUnavailableError(f"cannot run {args[0]}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        raise error(f"{what} failed (exit {done.returncode}): {tail(done.stderr or done.stdout)}")
    return done.stdout


def restore(tool: SnapshotTool, spec: RestoreSpec, *, timeout: float = TOOL_TIMEOUT,
            error: type[EtcdGuardError] = EtcdToolError) -> None:
    """Run ``snapshot restore`` for ``spec`` and make the data dir 0700 (etcd's own mode)."""
    run_tool(restore_args(tool, spec), what="snapshot restore", env=tool.env, timeout=timeout, error=error)
    os.chmod(spec.data_dir, 0o700)


def snapshot_status(tool: SnapshotTool, path: Path, *, timeout: float = TOOL_TIMEOUT,
                    error: type[EtcdGuardError] = EtcdToolError) -> SnapshotStatus:
    """``snapshot status -w json`` of a snapshot or a stopped member's db file."""
    out = run_tool([str(tool.path), "snapshot", "status", "-w", "json", str(path)], what="snapshot status",
                   env=tool.env, timeout=timeout, error=error)
    try:
        return SnapshotStatus.parse(out)
    except ValueError as exc:
        raise error(f"snapshot status: {exc}") from None


def has_etcdutl(version: str) -> bool:
    """etcdutl exists from etcd 3.5 on; older releases restore with etcdctl."""
    return EtcdVersion.parse(version) >= EtcdVersion(3, 5, 0)
