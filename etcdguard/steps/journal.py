"""The journal of one run: its steps' records, written atomically to a private file as they change.

A journal is a JSON document (``etcdguard.journal`` format 1) naming the kind of run (backup,
verify, restore, ...), its id, the run's parameters, its outcome and one record per step with
the step's parameters, state, detail, result and timing. Every save writes a 0600 temp file in the
same private (0700) directory, fsyncs it, renames it over the journal and fsyncs the directory, so
a reader (or a resumed run after SIGKILL or power loss) sees either the previous or the next
complete version, never a torn one. A journal without a path lives in memory only.

:class:`RunLock` keeps two runs from working on the same thing at once (``flock``, released by
the kernel when the holder dies, so a killed run never leaves a stale lock).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Any

from etcdguard.errors import AbortedError, ConfigError
from etcdguard.files import fsync_dir

JOURNAL_FORMAT = 1
JOURNAL_TYPE = "etcdguard.journal"


class StepState(str, Enum):
    """Where one step is."""

    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"
    skipped = "skipped"
    undone = "undone"


class RunOutcome(str, Enum):
    """Where the whole run is."""

    running = "running"
    done = "done"
    failed = "failed"
    interrupted = "interrupted"
    rolled_back = "rolled back"


@dataclass
class StepRecord:
    """The saved status of one step: its parameters, state, detail, result and timing.

    ``started_at``/``finished_at`` are wall-clock (epoch) times, so they survive a restart;
    ``seconds`` is measured with the monotonic clock while this process runs the step.
    """

    name: str
    state: StepState = StepState.pending
    detail: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    elapsed: float | None = None
    attempts: int = 0
    _began: float | None = field(default=None, repr=False, compare=False)

    @property
    def seconds(self) -> float:
        """Duration of the last attempt (so far, while it runs)."""
        if self.elapsed is not None:
            return self.elapsed
        return time.monotonic() - self._began if self._began is not None else 0.0

    def begin(self, detail: str | None = None) -> None:
        """Mark the step running."""
        self.state = StepState.running
        self.started_at, self.finished_at, self.elapsed = time.time(), None, None
        self._began = time.monotonic()
        self.attempts += 1
        self.error = ""
        if detail is not None:
            self.detail = detail

    def end(self, state: StepState, detail: str | None = None, *, error: str = "",
            at: float | None = None) -> None:
        """Mark the step finished in ``state``; ``at`` is a monotonic end time measured elsewhere."""
        ended = at if at is not None else time.monotonic()
        self.state = state
        self.finished_at = time.time() - (time.monotonic() - ended)
        self.elapsed = round(ended - self._began, 3) if self._began is not None else self.elapsed
        self.error = error
        if detail is not None:
            self.detail = detail

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (what the journal stores)."""
        return {"name": self.name, "state": self.state.value, "detail": self.detail,
                "params": self.params, "result": self.result, "error": self.error,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "seconds": None if self.state in (StepState.pending, StepState.running) else self.elapsed,
                "attempts": self.attempts}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepRecord:
        """The record saved by :meth:`as_dict`."""
        return cls(name=str(data["name"]), state=StepState(data.get("state", "pending")),
                   detail=str(data.get("detail", "")), params=dict(data.get("params") or {}),
                   result=dict(data.get("result") or {}), error=str(data.get("error", "")),
                   started_at=data.get("started_at"), finished_at=data.get("finished_at"),
                   elapsed=data.get("seconds"), attempts=int(data.get("attempts", 0)))


class Journal:
    """The records of one run, saved atomically to ``path`` (None: memory only) on every change."""

    def __init__(self, kind: str, run_id: str, *, path: Path | None = None,
                 params: dict[str, Any] | None = None) -> None:
        self.kind = kind
        self.run_id = run_id
        self.path = path
        self.params: dict[str, Any] = dict(params or {})
        self.outcome = RunOutcome.running
        self.error = ""
        self.failed_step = ""
        self.created_at = time.time()
        self.updated_at = self.created_at
        self.pid = os.getpid()
        self.steps: list[StepRecord] = []
        self._lock = threading.RLock()

    @classmethod
    def create(cls, directory: Path, kind: str, run_id: str,
               params: dict[str, Any] | None = None) -> Journal:
        """A new journal file ``<directory>/<kind>-<run_id>.json`` in a private directory."""
        ensure_private_dir(directory)
        journal = cls(kind, run_id, path=directory / f"{kind}-{run_id}.json", params=params)
        journal.save()
        return journal

    @classmethod
    def load(cls, path: Path) -> Journal:
        """Read a journal back (after a crash, to resume or roll back); ConfigError if unreadable."""
        try:
            data = json.loads(path.read_text())
            if data.get("type") != JOURNAL_TYPE or data.get("format") != JOURNAL_FORMAT:
                raise ValueError("not an etcdguard journal")
            journal = cls(str(data["kind"]), str(data["run_id"]), path=path, params=dict(data.get("params") or {}))
            journal.outcome = RunOutcome(data.get("outcome", "running"))
            journal.error = str(data.get("error", ""))
            journal.failed_step = str(data.get("failed_step", ""))
            journal.created_at = float(data.get("created_at", 0.0))
            journal.updated_at = float(data.get("updated_at", 0.0))
            journal.pid = int(data.get("pid", 0))
            journal.steps = [StepRecord.from_dict(s) for s in data.get("steps", [])]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"cannot read the journal {path}: {exc}") from None
        return journal

    @staticmethod
    def find(directory: Path, kind: str) -> list[Path]:
        """Journal files of ``kind`` in ``directory``, newest first."""
        try:
            found = [p for p in directory.glob(f"{kind}-*.json") if p.is_file()]
        except OSError:
            return []
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)

    def record(self, name: str) -> StepRecord | None:
        """The newest record of step ``name``, if any."""
        return next((r for r in reversed(self.steps) if r.name == name), None)

    def add(self, name: str, params: dict[str, Any] | None = None) -> StepRecord:
        """Append a pending record (not saved yet)."""
        with self._lock:
            rec = StepRecord(name, params=dict(params or {}))
            self.steps.append(rec)
            return rec

    def finish(self, outcome: RunOutcome, error: str = "", failed_step: str = "") -> None:
        """Record the run's outcome and save."""
        with self._lock:
            self.outcome, self.error, self.failed_step = outcome, error, failed_step
            self.save()

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form (what the file holds)."""
        with self._lock:
            return {"type": JOURNAL_TYPE, "format": JOURNAL_FORMAT, "kind": self.kind, "run_id": self.run_id,
                    "outcome": self.outcome.value, "error": self.error, "failed_step": self.failed_step,
                    "params": self.params, "pid": self.pid, "created_at": self.created_at,
                    "updated_at": self.updated_at, "steps": [s.as_dict() for s in self.steps]}

    def save(self) -> None:
        """Write the journal atomically (no-op for an in-memory journal)."""
        with self._lock:
            self.updated_at = time.time()
            if self.path is not None:
                atomic_write(self.path, (json.dumps(self.as_dict(), indent=1, default=str) + "\n").encode())


def prune_journals(directory: Path, kind: str, keep: int) -> list[Path]:
    """Remove all but the ``keep`` newest finished journals of ``kind``; returns those removed.

    A journal whose run is still marked running is kept (it may be resumed or be in use).
    """
    removed: list[Path] = []
    finished = 0
    for path in Journal.find(directory, kind):
        try:
            outcome = json.loads(path.read_text()).get("outcome")
        except (OSError, ValueError):
            continue
        if outcome == RunOutcome.running.value:
            continue
        finished += 1
        if finished > keep:
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data``: temp file (``mode``) in the same dir, fsync, rename, fsync dir."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700) or check that it is ours and closed to others; returns it.

    An existing directory owned by someone else, or open to group/others and not ours to fix,
    raises ConfigError: another user could read or replace what we write there.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_uid != os.geteuid():
        raise ConfigError(f"{path} belongs to another user (uid {st.st_uid}); refusing to use it")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


class RunLockedError(AbortedError):
    """Another run holds the lock."""


class RunLock:
    """An exclusive, non-blocking ``flock`` on ``path`` (created 0600); the holder's pid is written
    into the file for the message another run gets. Released on exit or when the holder dies."""

    def __init__(self, path: Path, what: str = "another etcdguard run") -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise RunLockedError naming the holder."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise RunLockedError(f"{self.what} is in progress (pid {holder}, lock {self.path})") from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays; it is reused)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
