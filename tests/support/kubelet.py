"""A stand-in for the kubelet: runs the static pods of a manifests dir as local processes.

It watches the dir, runs each manifest's first container command (``command`` + ``args``) as a
process in its own group, restarts it when it exits (with a short back-off) or when its manifest
changes, stops it when the manifest goes away, and ignores files whose names start with a dot,
as the kubelet does. Write manifests with hostPath == mountPath so the command runs unchanged.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import yaml

RESTART_BACKOFF = 1.0


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


@dataclass
class Kubelet:
    """Watches ``manifests_dir`` in a thread; :meth:`close` stops every pod."""

    manifests_dir: Path
    log_dir: Path
    poll: float = 0.2
    pods: dict[str, Pod] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> Kubelet:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)
        self._thread.start()
        return self

    def restarts(self, name: str) -> int:
        """How often the pod from manifest ``name`` was (re)started."""
        pod = self.pods.get(name)
        return pod.starts if pod else 0

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
            self._stop.wait(self.poll)

    def _sync(self) -> None:
        found = self._manifests()
        for name in list(self.pods):
            if name not in found:
                self._kill(self.pods.pop(name))
        for name, path in found.items():
            try:
                data = path.read_bytes()
            except OSError:
                continue
            digest = hashlib.sha256(data).hexdigest()
            pod = self.pods.get(name)
            if pod is not None and pod.digest != digest:
                self._kill(self.pods.pop(name))
                pod = None
            if pod is None:
                command = _command(data)
                if command is None:
                    continue
                pod = self.pods[name] = Pod(name, digest, command, log_path=self.log_dir / f"{name}.log")
            if pod.process is not None and pod.process.poll() is not None and pod.exited_at is None:
                pod.exited_at = time.monotonic()
            if pod.process is None or (pod.exited_at is not None
                                       and time.monotonic() - pod.exited_at >= RESTART_BACKOFF):
                self._spawn(pod)

    def _spawn(self, pod: Pod) -> None:
        assert pod.log_path is not None
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


def _command(data: bytes) -> list[str] | None:
    try:
        doc = yaml.safe_load(data)
        container = doc["spec"]["containers"][0]
        command = [str(c) for c in (container.get("command") or []) + (container.get("args") or [])]
    except (yaml.YAMLError, TypeError, KeyError, IndexError):
        return None
    return command or None
