"""Run modes: how etcdguard stops and starts the local etcd member and kube-apiserver.

The :class:`RunMode` port has three adapters:

* :class:`KubeadmStaticPods` - a static pod stops when its manifest leaves the manifests dir and
  starts when it is back. Manifests are moved into the restore's own directory (never left in
  the manifests dir: the kubelet runs every file there that does not start with a dot) and put
  back atomically through a dot-file.
* :class:`CommandRunMode` - shell commands from ``restore:`` (Docker, k3s-style, custom setups).
* :class:`SystemdRunMode` - ``systemctl stop|start <unit>`` (the member's settings are read from
  the unit, see :mod:`etcdguard.restore.systemd_unit`).

Contract: ``stop_*`` and ``start_*`` are idempotent (calling them again after a crash is safe)
and return a detail line. They do not wait: the caller waits until the ports are closed (stop)
or serving (start), since what "stopped" means is the same for every mode.
"""

from __future__ import annotations

import abc
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from etcdguard.errors import ConfigError, EtcdGuardError
from etcdguard.etcd.tools import child_env, tail
from etcdguard.restore import crictl
from etcdguard.restore.discovery import APISERVER_MANIFEST, ETCD_MANIFEST, rewrite_manifest_flags
from etcdguard.restore.settings import RestoreConfig
from etcdguard.restore.systemd_unit import systemctl, unit_exists

Mode = Literal["kubeadm", "systemd", "command"]

COMMAND_TIMEOUT = 300.0


class RunModeError(EtcdGuardError):
    """A start or stop command failed."""


class RunMode(abc.ABC):
    """Stops and starts the local etcd and kube-apiserver (see the module contract)."""

    kind: str = ""

    @property
    @abc.abstractmethod
    def has_apiserver(self) -> bool:
        """True when this node runs a kube-apiserver etcdguard can stop and start."""

    @abc.abstractmethod
    def stop_etcd(self, aside: Path) -> str:
        """Stop etcd (kubeadm: move its manifest into ``aside``)."""

    @abc.abstractmethod
    def start_etcd(self, aside: Path, flags: Mapping[str, str], env: Mapping[str, str]) -> str:
        """Start etcd again; ``flags`` are set in a kubeadm manifest, ``env`` is given to commands."""

    @abc.abstractmethod
    def stop_apiserver(self, aside: Path) -> str:
        """Stop kube-apiserver (no-op without one)."""

    @abc.abstractmethod
    def start_apiserver(self, aside: Path) -> str:
        """Start kube-apiserver again (no-op without one)."""

    def restore_original_etcd(self, aside: Path) -> str:
        """Rollback: start etcd exactly as it was configured before the restore."""
        return self.start_etcd(aside, {}, {})

    def etcd_restarts(self) -> int | None:
        """How often the supervisor (kubelet, systemd) has restarted etcd so far, None when unknown.

        Read while a restored member rebuilds, to show an operator that it is crash-looping.
        Must not raise: a supervisor that cannot be asked gives None.
        """
        return None


def _place(src: Path, dest: Path, text: str | None = None) -> None:
    """Put ``src`` (or ``text``) at ``dest`` atomically through a dot-file the kubelet ignores."""
    tmp = dest.with_name(f".{dest.name}.etcdguard-tmp")
    data = text if text is not None else src.read_text()
    tmp.write_text(data)
    os.chmod(tmp, src.stat().st_mode & 0o777 if src.exists() else 0o600)
    os.replace(tmp, dest)


class KubeadmStaticPods(RunMode):
    """Static pods in ``manifests_dir`` run by the kubelet."""

    kind = "kubeadm"

    def __init__(self, manifests_dir: Path) -> None:
        self.manifests_dir = manifests_dir
        self._etcd_started: float | None = None  # epoch seconds, when start_etcd put the manifest in
        self._first_attempt: int | None = None

    @property
    def has_apiserver(self) -> bool:
        return (self.manifests_dir / APISERVER_MANIFEST).exists()

    def _move_out(self, name: str, aside: Path) -> str:
        live, kept = self.manifests_dir / name, aside / name
        aside.mkdir(parents=True, exist_ok=True, mode=0o700)
        if live.exists():
            if kept.exists():  # both: a crash after the copy; the live one is ours
                live.unlink()
            else:
                shutil.move(str(live), str(kept))
            return f"moved {live} to {kept}"
        if kept.exists():
            return f"{name} already moved to {kept}"
        raise ConfigError(f"no {name} in {self.manifests_dir} nor in {aside}")

    def _move_in(self, name: str, aside: Path, text: str | None = None) -> str:
        live, kept = self.manifests_dir / name, aside / name
        if not kept.exists():
            if live.exists():
                return f"{live} is in place"
            raise ConfigError(f"the original {name} is neither in {aside} nor in {self.manifests_dir}")
        _place(kept, live, text)
        if text is None:
            kept.unlink()
        return f"{'wrote' if text is not None else 'moved back'} {live}"

    def stop_etcd(self, aside: Path) -> str:
        return self._move_out(ETCD_MANIFEST, aside)

    def start_etcd(self, aside: Path, flags: Mapping[str, str], env: Mapping[str, str]) -> str:
        self._etcd_started, self._first_attempt = time.time(), None
        kept = aside / ETCD_MANIFEST
        if not flags or not kept.exists():
            return self._move_in(ETCD_MANIFEST, aside)
        # the original stays aside (rollback puts it back); the restored member runs from a copy
        text = rewrite_manifest_flags(kept.read_text(), flags)
        live = self.manifests_dir / ETCD_MANIFEST
        _place(kept, live, text)
        return f"wrote {live} ({', '.join(f'--{k}' for k in flags)} set)"

    def restore_original_etcd(self, aside: Path) -> str:
        kept = aside / ETCD_MANIFEST
        if kept.exists():
            _place(kept, self.manifests_dir / ETCD_MANIFEST)
            kept.unlink()
            return f"moved back the original {ETCD_MANIFEST}"
        return self._move_in(ETCD_MANIFEST, aside)

    def stop_restored_etcd(self, aside: Path) -> str:
        """Take a restored member's manifest out (kept as ``etcd.restored.yaml`` beside the original)."""
        live = self.manifests_dir / ETCD_MANIFEST
        if not live.exists():
            return "etcd manifest already out"
        if not (aside / ETCD_MANIFEST).exists():
            return self._move_out(ETCD_MANIFEST, aside)
        shutil.move(str(live), str(aside / "etcd.restored.yaml"))
        return f"moved the restored {ETCD_MANIFEST} to {aside}"

    def etcd_restarts(self) -> int | None:
        """From crictl (None without it): the ``attempt`` of the newest etcd container, counted from the
        first container started after :meth:`start_etcd` in this process (the kubelet may go on
        counting the old pod's attempts or start again at 0)."""
        listed = crictl.containers("etcd")
        if not listed:
            return None
        since = self._etcd_started
        fresh = [c for c in listed if since is None or c.created_at >= since * 1e9]
        if not fresh:
            return 0
        newest = max(fresh, key=lambda c: c.created_at)
        if since is None:
            return newest.attempt
        if self._first_attempt is None:
            self._first_attempt = min(c.attempt for c in fresh)
        return max(0, newest.attempt - self._first_attempt)

    def stop_apiserver(self, aside: Path) -> str:
        if not (self.manifests_dir / APISERVER_MANIFEST).exists() and not (aside / APISERVER_MANIFEST).exists():
            return "no kube-apiserver manifest"
        return self._move_out(APISERVER_MANIFEST, aside)

    def start_apiserver(self, aside: Path) -> str:
        if not (aside / APISERVER_MANIFEST).exists() and not (self.manifests_dir / APISERVER_MANIFEST).exists():
            return "no kube-apiserver manifest"
        return self._move_in(APISERVER_MANIFEST, aside)


class CommandRunMode(RunMode):
    """Shell commands from the ``restore:`` config section."""

    kind = "command"

    def __init__(self, cfg: RestoreConfig) -> None:
        self.start_etcd_cmd = cfg.start_etcd
        self.stop_etcd_cmd = cfg.stop_etcd
        self.start_apiserver_cmd = cfg.start_apiserver
        self.stop_apiserver_cmd = cfg.stop_apiserver
        self.timeout = max(cfg.stop_timeout, cfg.start_timeout, COMMAND_TIMEOUT)
        if not self.start_etcd_cmd or not self.stop_etcd_cmd:
            raise ConfigError(f"restore.run_mode {self.kind}: restore.start_etcd and restore.stop_etcd are required")

    @property
    def has_apiserver(self) -> bool:
        return bool(self.stop_apiserver_cmd and self.start_apiserver_cmd)

    def _run(self, command: str | None, what: str, env: Mapping[str, str] | None = None) -> str:
        if not command:
            return f"no {what} command"
        try:
            done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                                  env=child_env(env), timeout=self.timeout, stdin=subprocess.DEVNULL, check=False,
                                  start_new_session=True)  # a daemon it starts must outlive our terminal
        except subprocess.TimeoutExpired:
            raise RunModeError(f"{what} command did not finish within {self.timeout:g}s: {command}") from None
        if done.returncode != 0:
            raise RunModeError(f"{what} command failed (exit {done.returncode}): {command}: "
                               f"{tail(done.stderr or done.stdout)}")
        return f"ran: {command}"

    def stop_etcd(self, aside: Path) -> str:
        return self._run(self.stop_etcd_cmd, "stop etcd")

    def start_etcd(self, aside: Path, flags: Mapping[str, str], env: Mapping[str, str]) -> str:
        return self._run(self.start_etcd_cmd, "start etcd", env)

    def stop_apiserver(self, aside: Path) -> str:
        return self._run(self.stop_apiserver_cmd, "stop kube-apiserver")

    def start_apiserver(self, aside: Path) -> str:
        return self._run(self.start_apiserver_cmd, "start kube-apiserver")


class SystemdRunMode(CommandRunMode):
    """``systemctl stop|start`` of the configured units (``restore.start_etcd`` etc. override)."""

    kind = "systemd"

    def __init__(self, cfg: RestoreConfig) -> None:
        self.unit = cfg.etcd_unit
        self.apiserver_unit = cfg.apiserver_unit
        self.start_etcd_cmd = cfg.start_etcd
        self.stop_etcd_cmd = cfg.stop_etcd
        self.start_apiserver_cmd = cfg.start_apiserver
        self.stop_apiserver_cmd = cfg.stop_apiserver
        self.timeout = max(cfg.stop_timeout, cfg.start_timeout, COMMAND_TIMEOUT)

    @property
    def has_apiserver(self) -> bool:
        return bool(self.apiserver_unit) or super().has_apiserver

    def _ctl(self, verb: str, unit: str, what: str) -> str:
        try:
            done = systemctl(verb, unit, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise RunModeError(f"{what}: systemctl {verb} {unit} did not finish within {self.timeout:g}s") from None
        except OSError as exc:
            raise RunModeError(f"{what}: cannot run systemctl: {exc.strerror or exc}") from None
        if done.returncode != 0:
            raise RunModeError(f"{what}: systemctl {verb} {unit} failed (exit {done.returncode}): "
                               f"{tail(done.stderr or done.stdout)}")
        return f"systemctl {verb} {unit}"

    def _start(self, unit: str, what: str) -> str:
        # a unit that crash-looped may have hit its start limit: clear that first, as an operator would
        with contextlib.suppress(RunModeError):
            self._ctl("reset-failed", unit, what)
        return self._ctl("start", unit, what)

    def stop_etcd(self, aside: Path) -> str:
        if self.stop_etcd_cmd:
            return super().stop_etcd(aside)
        return self._ctl("stop", self.unit, "stop etcd")

    def start_etcd(self, aside: Path, flags: Mapping[str, str], env: Mapping[str, str]) -> str:
        if self.start_etcd_cmd:
            return super().start_etcd(aside, flags, env)
        detail = self._start(self.unit, "start etcd")
        if "initial-cluster" in flags:  # etcd reads it only on an empty data dir; the restored one has its own
            detail += (f"; note: {self.unit} still names the old initial cluster, update it to "
                       f"{flags['initial-cluster']} before the member is ever started on an empty data dir")
        return detail

    def stop_apiserver(self, aside: Path) -> str:
        if self.stop_apiserver_cmd or not self.apiserver_unit:
            return super().stop_apiserver(aside)
        return self._ctl("stop", self.apiserver_unit, "stop kube-apiserver")

    def start_apiserver(self, aside: Path) -> str:
        if self.start_apiserver_cmd or not self.apiserver_unit:
            return super().start_apiserver(aside)
        return self._start(self.apiserver_unit, "start kube-apiserver")

    def etcd_restarts(self) -> int | None:
        """systemd's ``NRestarts`` of the etcd unit (systemd 235+), None when it cannot be asked."""
        try:
            done = systemctl("show", "-p", "NRestarts", "--value", self.unit, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        value = done.stdout.strip()
        return int(value) if done.returncode == 0 and value.isdigit() else None


def run_mode_for(cfg: RestoreConfig, manifests_dir: Path, mode: str | None = None) -> RunMode:
    """The run mode ``mode`` (default: the configured one, ``auto`` resolved by :func:`resolve_run_mode`)."""
    mode = mode or resolve_run_mode(cfg, manifests_dir)[0]
    if mode == "kubeadm":
        return KubeadmStaticPods(manifests_dir)
    if mode == "systemd":
        return SystemdRunMode(cfg)
    return CommandRunMode(cfg)


def resolve_run_mode(cfg: RestoreConfig, manifests_dir: Path) -> tuple[Mode, str | None]:
    """The run mode and, for systemd, the ``systemctl cat`` output of the etcd unit when it was read.

    ``auto``: kubeadm when ``etcd.yaml`` is in ``manifests_dir``; command with ``restore.start_etcd``;
    systemd with ``restore.member`` or when ``restore.etcd_unit`` can be read; else kubeadm.
    """
    if cfg.run_mode != "auto":
        return cfg.run_mode, None
    if (manifests_dir / ETCD_MANIFEST).exists():
        return "kubeadm", None
    if cfg.start_etcd:
        return "command", None
    if cfg.member is not None:
        return "systemd", None
    text = unit_exists(cfg.etcd_unit)
    return ("systemd", text) if text is not None else ("kubeadm", None)
