"""The step engine: runs named steps, records each one in a :class:`Journal` as it goes.

Two ways to use it, both recording into the same journal:

* **Recorded steps** (backup, verify): the caller's own code runs inside
  ``with runner.step(name) as step:``; steps may repeat (a retry on another member appends a
  new record) and may run beside the caller in a thread (:meth:`StepRunner.background` +
  :meth:`StepRunner.join`).
* **A plan** (restore, member workflows): a list of :class:`Step` objects, each idempotent, with
  an optional ``check`` (is its effect already in place?) and an optional ``undo``.
  :meth:`StepRunner.run` writes the whole plan (names and parameters) to the journal first, then
  runs the steps in order, skipping those the journal or their check says are done, so a run
  killed at any step boundary is finished by running the same plan again on the loaded journal.
  :meth:`StepRunner.rollback` undoes the steps that ran, newest first.

Every ``on_change`` callback is made from the thread that called the runner, so renderers need
no locking.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from etcdguard.errors import ConfigError, OperationInterruptedError
from etcdguard.steps.journal import Journal, RunOutcome, StepRecord, StepState

T = TypeVar("T")

StepListener = Callable[[StepRecord], None]
"""Called with a record each time its state changes."""


def describe_error(exc: BaseException) -> str:
    """One line for a step's failure."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _is_interrupt(exc: BaseException) -> bool:
    return isinstance(exc, (KeyboardInterrupt, OperationInterruptedError))


class StepContext:
    """What a running step sees: its record (params, result), the journal, and a way to save."""

    def __init__(self, runner: StepRunner, record: StepRecord) -> None:
        self.runner = runner
        self.record = record

    @property
    def params(self) -> dict[str, Any]:
        """The step's parameters (as recorded in the journal)."""
        return self.record.params

    @property
    def result(self) -> dict[str, Any]:
        """What the step recorded so far (kept across a resume; used by ``undo``)."""
        return self.record.result

    @property
    def journal(self) -> Journal:
        """The run's journal (run parameters, other steps' results)."""
        return self.runner.journal

    def note(self, detail: str) -> None:
        """Set the detail shown when the step finishes."""
        self.record.detail = detail

    def save(self, **result: Any) -> None:
        """Merge ``result`` into the step's record and write the journal now (before the next
        side effect: a resumed run or an undo then knows what was already done)."""
        self.record.result.update(result)
        self.runner.journal.save()


@dataclass(frozen=True)
class Step:
    """One named, idempotent step of a plan.

    ``run(ctx)`` does the work and returns a detail line (or None); running it again after a
    partial run must be safe. ``check(ctx)`` returns True when the step's effect is already in
    place (then it is not run). ``undo(ctx)`` reverses it (idempotent too; it may be called
    after a partial run, so it looks at ``ctx.result`` for what was done).
    """

    name: str
    run: Callable[[StepContext], str | None]
    check: Callable[[StepContext], bool] | None = None
    undo: Callable[[StepContext], str | None] | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    detail: str = ""


class StepRunner:
    """Runs steps and records them in ``journal`` (see the module docstring)."""

    def __init__(self, journal: Journal, on_change: StepListener | None = None) -> None:
        self.journal = journal
        self.on_change = on_change or (lambda record: None)
        self._ended: dict[int, list[float]] = {}  # background steps: the worker's end time

    # -- recording ----------------------------------------------------------------------------
    def _changed(self, record: StepRecord) -> None:
        self.journal.save()
        self.on_change(record)

    def begin(self, name: str, detail: str = "", params: Mapping[str, Any] | None = None) -> StepRecord:
        """Start a new record of step ``name`` (see :meth:`step` for the usual form)."""
        record = self.journal.add(name, dict(params or {}))
        record.begin(detail)
        self._changed(record)
        return record

    def end(self, record: StepRecord, state: StepState, detail: str | None = None, *,
            error: str = "", at: float | None = None) -> None:
        """Finish ``record`` in ``state`` (``at``: monotonic end time measured in a worker)."""
        record.end(state, detail, error=error, at=at)
        self._changed(record)

    def fail(self, record: StepRecord, exc: BaseException, at: float | None = None) -> None:
        """Record ``record`` as failed because of ``exc``."""
        message = describe_error(exc)
        self.end(record, StepState.failed, message, error=message, at=at)

    def skip(self, name: str, detail: str) -> StepRecord:
        """Record step ``name`` as skipped."""
        record = self.journal.add(name)
        record.state, record.detail = StepState.skipped, detail
        self._changed(record)
        return record

    @contextmanager
    def step(self, name: str, detail: str = "", params: Mapping[str, Any] | None = None
             ) -> Iterator[StepContext]:
        """Run the ``with`` body as step ``name``; ``ctx.note(...)`` sets the finished detail."""
        record = self.begin(name, detail, params)
        ctx = StepContext(self, record)
        try:
            yield ctx
        except BaseException as exc:
            self.fail(record, exc)
            raise
        self.end(record, StepState.done)

    def background(self, pool: ThreadPoolExecutor, name: str, fn: Callable[..., T], *args: Any,
                   detail: str = "") -> tuple[StepRecord, Future[T]]:
        """Start step ``name`` in ``pool``; report its end with :meth:`join` or :meth:`settle`."""
        record = self.begin(name, detail)
        ended = self._ended.setdefault(id(record), [])
        future = pool.submit(fn, *args)
        future.add_done_callback(lambda _: ended.append(time.monotonic()))
        return record, future

    def join(self, started: tuple[StepRecord, Future[T]], describe: Callable[[T], str]) -> T:
        """Wait for a background step, record it, and return its result (or raise its error)."""
        record, future = started
        try:
            value = future.result()
        except BaseException as exc:
            self.fail(record, exc, at=self._ended_at(record))
            raise
        self.end(record, StepState.done, describe(value), at=self._ended_at(record))
        return value

    def settle(self, started: tuple[StepRecord, Future[Any]]) -> None:
        """Wait for a background step while another error propagates; its own error is dropped."""
        with contextlib.suppress(Exception):
            self.join(started, lambda _: "")

    def _ended_at(self, record: StepRecord) -> float | None:
        ended = self._ended.pop(id(record), [])
        return ended[0] if ended else None

    def close(self, error: BaseException | None = None) -> None:
        """Record the run's outcome: done, or failed/interrupted naming the step and the reason."""
        if error is None:
            self.journal.finish(RunOutcome.done)
            return
        failed = next((r.name for r in reversed(self.journal.steps) if r.state is StepState.failed), "")
        outcome = RunOutcome.interrupted if _is_interrupt(error) else RunOutcome.failed
        self.journal.finish(outcome, describe_error(error), failed)

    # -- plans: resume and rollback ---------------------------------------------------------
    def plan(self, steps: Sequence[Step]) -> None:
        """Write ``steps`` (names and parameters) to a fresh journal, or check that a loaded
        journal holds the same plan (ConfigError otherwise)."""
        names = [s.name for s in steps]
        if len(set(names)) != len(names):
            raise ValueError(f"step names must be unique: {names}")
        recorded = [r.name for r in self.journal.steps]
        if not recorded:
            for s in steps:
                self.journal.add(s.name, dict(s.params))
            self.journal.save()
        elif recorded != names:
            raise ConfigError(f"the journal {self.journal.path} holds another plan "
                              f"({', '.join(recorded)}); not {', '.join(names)}")

    def run(self, steps: Sequence[Step]) -> None:
        """Run the plan ``steps`` in order, resuming where the journal left off.

        A step the journal records as done is skipped; a step whose ``check`` says its effect is
        in place is recorded done without running. A failure is recorded (the step, the reason,
        the run's outcome) and re-raised; running the same plan again resumes at that step.
        """
        self.plan(steps)
        self.journal.outcome = RunOutcome.running
        try:
            for step in steps:
                self._run_one(step)
        except BaseException as exc:
            self.close(exc)
            raise
        self.close()

    def _run_one(self, step: Step) -> None:
        record = self.journal.record(step.name)
        assert record is not None
        if record.state is StepState.done:
            return
        ctx = StepContext(self, record)
        if step.check is not None and record.state is not StepState.undone and step.check(ctx):
            record.state, record.detail = StepState.done, record.detail or "already done"
            self._changed(record)
            return
        record.begin(step.detail)
        self._changed(record)
        try:
            detail = step.run(ctx)
        except BaseException as exc:
            self.fail(record, exc)
            raise
        self.end(record, StepState.done, detail if detail is not None else record.detail)

    def rollback(self, steps: Sequence[Step]) -> None:
        """Undo, newest first, every step of the plan that ran (done, failed or cut short).

        Steps without ``undo`` are left as they are. An undo that fails is recorded and re-raised
        (the journal keeps what is still to undo; rolling back again continues there).
        """
        self.plan(steps)
        by_name = {s.name: s for s in steps}
        try:
            for record in reversed(self.journal.steps):
                step = by_name[record.name]
                if step.undo is None or record.state not in (StepState.done, StepState.failed,
                                                              StepState.running):
                    continue
                record.begin(f"undo {step.name}")
                self._changed(record)
                try:
                    detail = step.undo(StepContext(self, record))
                except BaseException as exc:
                    message = f"undo failed: {describe_error(exc)}"
                    self.end(record, StepState.failed, message, error=message)
                    raise
                self.end(record, StepState.undone, detail or "undone")
        except BaseException as exc:
            self.close(exc)
            raise
        self.journal.finish(RunOutcome.rolled_back)
