"""Run modes: how etcdguard stops and starts the local etcd member and kube-apiserver.

The :class:`RunMode` port has three adapters:

* :class:`KubeadmStaticPods` - a static pod stops when its manifest leaves the manifests dir and
  starts when it is back. Manifests are moved into the restore's own directory (never left in
  the manifests dir: the kubelet runs every file there that does not start with a dot) and put
  back atomically through a dot-file.
* :class:`CommandRunMode` - shell commands from ``restore:`` (Docker, k3s-style, custom setups).
* :class:`SystemdRunMode` - ``systemctl stop|start <unit>``.

Contract: ``stop_*`` and ``start_*`` are idempotent (calling them again after a crash is safe)
and return a detail line. They do not wait: the caller waits until the ports are closed (stop)
or serving (start), since what "stopped" means is the same for every mode.
"""

from __future__ import annotations

import abc
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from etcdguard.errors import ConfigError, EtcdGuardError
from etcdguard.etcd.tools import child_env, tail
from etcdguard.restore.discovery import APISERVER_MANIFEST, ETCD_MANIFEST, rewrite_manifest_flags
from etcdguard.restore.settings import RestoreConfig

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
    """``systemctl stop|start`` of the configured units."""

    kind = "systemd"

    def __init__(self, cfg: RestoreConfig) -> None:
        unit = cfg.etcd_unit
        api = cfg.apiserver_unit
        super().__init__(cfg.model_copy(update={
            "start_etcd": cfg.start_etcd or f"systemctl start {unit}",
            "stop_etcd": cfg.stop_etcd or f"systemctl stop {unit}",
            "start_apiserver": cfg.start_apiserver or (f"systemctl start {api}" if api else None),
            "stop_apiserver": cfg.stop_apiserver or (f"systemctl stop {api}" if api else None)}))


def run_mode_for(cfg: RestoreConfig, manifests_dir: Path) -> RunMode:
    """The configured run mode; ``auto`` is kubeadm when ``etcd.yaml`` is in ``manifests_dir``."""
    mode = cfg.run_mode
    if mode == "auto":
        mode = "kubeadm" if (manifests_dir / ETCD_MANIFEST).exists() else (
            "command" if cfg.start_etcd else "systemd" if cfg.member else "kubeadm")
    if mode == "kubeadm":
        return KubeadmStaticPods(manifests_dir)
    if mode == "systemd":
        return SystemdRunMode(cfg)
    return CommandRunMode(cfg)
