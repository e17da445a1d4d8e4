"""Step bookkeeping of one verification run: timing, progress callbacks, findings.

Steps either run in the calling thread (:meth:`RunState.step`) or beside it in a worker thread
(:meth:`RunState.background` + :meth:`RunState.join`); every ``on_step`` callback is made from
the calling thread, so renderers need no locking.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from etcdguard.verify.compare import HashProof

T = TypeVar("T")

StepCallback = Callable[[str, str, str], None]
"""``on_step(name, state, detail)``; state is running, done, failed or skipped."""


@dataclass
class RunState:
    """Mutable state of one verification while it runs."""

    backup_id: str
    on_step: StepCallback
    started_at: datetime
    steps: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    hash_proof: HashProof | None = None
    key_counts_match: bool | None = None
    snapshot_revision: int | None = None
    version_used: str = ""
    version_exact: bool = True
    sandbox: str = ""

    def fail(self, reason: str) -> None:
        """Record one thing that differed or broke."""
        self.failures.append(reason)

    def _timed(self, name: str, began: float) -> None:
        self.steps[name] = round(time.monotonic() - began, 3)

    @contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[list[str]]:
        """Time one step and report it; append to the yielded list to set the done detail."""
        self.on_step(name, "running", detail)
        began = time.monotonic()
        out: list[str] = []
        try:
            yield out
        except BaseException as exc:
            self._timed(name, began)
            self.on_step(name, "failed", str(exc) or type(exc).__name__)
            raise
        self._timed(name, began)
        self.on_step(name, "done", "; ".join(out))

    def background(self, pool: ThreadPoolExecutor, name: str, fn: Callable[..., T], *args: Any,
                   detail: str = "") -> Future[T]:
        """Start a step in ``pool``; report its end with :meth:`join` (or :meth:`settle`)."""
        self.on_step(name, "running", detail)
        began = time.monotonic()
        future = pool.submit(fn, *args)
        future.add_done_callback(lambda _: self._timed(name, began))
        return future

    def join(self, name: str, future: Future[T], describe: Callable[[T], str]) -> T:
        """Wait for a background step, report it, and return its result (or raise its error)."""
        try:
            value = future.result()
        except BaseException as exc:
            self.on_step(name, "failed", str(exc) or type(exc).__name__)
            raise
        self.on_step(name, "done", describe(value))
        return value

    def settle(self, name: str, future: Future[Any]) -> None:
        """Wait for a background step while another error propagates; its own error is dropped."""
        with contextlib.suppress(Exception):
            self.join(name, future, lambda _: "")
