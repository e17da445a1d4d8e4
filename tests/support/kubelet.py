"""A stand-in for the kubelet: runs the static pods of a manifests dir as local processes.

It watches the dir, runs each manifest's first container command (``command`` + ``args``) as a
process in its own group, restarts it when it exits (with a short back-off) or when its manifest
changes, stops it when the manifest goes away, and ignores files whose names start with a dot,
as the kubelet does. Write manifests with hostPath == mountPath so the command runs unchanged.

With ``crictl_bin`` it also installs a ``crictl`` stand-in there (:mod:`tests.support.crictl`) that
lists its containers: one per start, ``attempt`` counting the restarts of the pod, the previous
attempts and the containers of removed pods kept as exited (as the kubelet keeps dead
containers). ``crictl_linger`` keeps a removed pod's container listed as running that much longer
(a runtime still tearing it down after its process closed its ports). ``backoff`` is the wait
before a crashed container is started again (the kubelet's CrashLoopBackOff).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml

from tests.support import crictl

RESTART_BACKOFF = 1.0
DEAD_KEPT = 20
RUNNING, EXITED = crictl.RUNNING, crictl.EXITED


@dataclass
class Pod:
    """One static pod the kubelet runs."""

    name: str
    digest: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    exited_at: float | None = None
    log_path: Path | None = None
    container: str = ""
    container_id: str = ""
    created_ns: int = 0

    def listing(self, state: str) -> dict[str, Any]:
        """This pod's current container as crictl lists it."""
        return {"id": self.container_id, "metadata": {"name": self.container, "attempt": max(0, self.starts - 1)},
                "state": state, "createdAt": str(self.created_ns)}


@dataclass
class Kubelet:
    """Watches ``manifests_dir`` in a thread; :meth:`close` stops every pod."""

    manifests_dir: Path
    log_dir: Path
    poll: float = 0.2
    backoff: float = RESTART_BACKOFF
    crictl_bin: Path | None = None
    crictl_linger: float = 0.0
    pods: dict[str, Pod] = field(default_factory=dict)
    dead: list[tuple[float, dict[str, Any]]] = field(default_factory=list)  # (listed running until, container)
    _written: str = ""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Kubelet:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.crictl_bin is not None:
            crictl.install(self.crictl_bin, self.crictl_state)
            self._write_state()
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)
        self._thread.start()
        return self

    def restarts(self, name: str) -> int:
        """How often the pod from manifest ``name`` was (re)started."""
        pod = self.pods.get(name)
        return pod.starts if pod else 0

    @property
    def crictl_state(self) -> Path:
        """The containers as the crictl stand-in reads them."""
        return self.log_dir / "crictl-state.json"

    def crash(self, name: str) -> None:
        """SIGKILL the processes of the pod from manifest ``name`` (it is restarted after the back-off)."""
        with self._lock:
            pod = self.pods.get(name)
            if pod is not None and pod.process is not None and pod.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pod.process.pid, signal.SIGKILL)
                pod.process.wait(10)

    def running(self, name: str) -> bool:
        pod = self.pods.get(name)
        return bool(pod and pod.process and pod.process.poll() is None)

    def _manifests(self) -> dict[str, Path]:
        try:
            return {p.name: p for p in self.manifests_dir.iterdir() if p.is_file() and not p.name.startswith(".")}
        except OSError:
            return {}

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self._sync()
                if self.crictl_bin is not None:
                    self._write_state()
            self._stop.wait(self.poll)

    def _sync(self) -> None:
        found = self._manifests()
        for name in list(self.pods):
            if name not in found:  # running() stays true until its process is gone
                self._bury(self.pods[name], self.crictl_linger)
                del self.pods[name]
        for name, path in found.items():
            try:
                data = path.read_bytes()
                st = path.stat()
            except OSError:
                continue
            # a manifest taken out and put back between two polls is a new pod, as the kubelet's inotify
            # watch sees it: the file's identity counts, not only its content
            digest = hashlib.sha256(data + f"{st.st_ino}:{st.st_mtime_ns}".encode()).hexdigest()
            pod = self.pods.get(name)
            if pod is not None and pod.digest != digest:
                self._bury(pod, self.crictl_linger)
                del self.pods[name]
                pod = None
            if pod is None:
                parsed = _command(data)
                if parsed is None:
                    continue
                command, container = parsed
                pod = self.pods[name] = Pod(name, digest, command, log_path=self.log_dir / f"{name}.log",
                                            container=container)
            if pod.process is not None and pod.process.poll() is not None and pod.exited_at is None:
                pod.exited_at = time.monotonic()
            if pod.process is None or (pod.exited_at is not None
                                       and time.monotonic() - pod.exited_at >= self.backoff):
                self._spawn(pod)

    def _bury(self, pod: Pod, linger: float) -> None:
        """Stop a removed pod; its last container stays listed (if it ran: as running ``linger`` more seconds)."""
        alive = pod.process is not None and pod.process.poll() is None
        self._kill(pod)
        if pod.container_id:
            self.dead.append((time.monotonic() + (linger if alive else 0.0), pod.listing(EXITED)))
            del self.dead[:-DEAD_KEPT]

    def _write_state(self) -> None:
        now = time.monotonic()
        listed = [{**c, "state": RUNNING if until > now else EXITED} for until, c in self.dead]
        for pod in self.pods.values():
            if pod.container_id:
                alive = pod.process is not None and pod.process.poll() is None
                listed.append(pod.listing(RUNNING if alive else EXITED))
        text = json.dumps({"containers": listed})
        if text != self._written:
            tmp = self.crictl_state.with_name(".crictl-state.tmp")
            tmp.write_text(text)
            os.replace(tmp, self.crictl_state)
            self._written = text

    def _spawn(self, pod: Pod) -> None:
        assert pod.log_path is not None
        if pod.container_id:  # the previous attempt stays listed as exited
            self.dead.append((0.0, pod.listing(EXITED)))
            del self.dead[:-DEAD_KEPT]
        with pod.log_path.open("ab") as log:
            try:
                pod.process = subprocess.Popen(pod.command, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                               start_new_session=True)
            except OSError as exc:
                log.write(f"kubelet: cannot start {pod.command[0]}: {exc}\n".encode())
                pod.process = None
                pod.exited_at = time.monotonic()
                return
        pod.starts += 1
        pod.exited_at = None
        pod.container_id = secrets.token_hex(32)
        pod.created_ns = time.time_ns()

    @staticmethod
    def _kill(pod: Pod) -> None:
        proc = pod.process
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        with self._lock:
            for pod in self.pods.values():
                self._kill(pod)

    def __enter__(self) -> Kubelet:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _command(data: bytes) -> tuple[list[str], str] | None:
    """The first container's command line and name."""
    try:
        doc = yaml.safe_load(data)
        container = doc["spec"]["containers"][0]
        command = [str(c) for c in (container.get("command") or []) + (container.get("args") or [])]
    except (yaml.YAMLError, TypeError, KeyError, IndexError):
        return None
    return (command, str(container.get("name") or "")) if command else None
