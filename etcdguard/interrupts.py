"""SIGTERM handled like SIGINT, everywhere: a flag for every thread, an exception for the main one.

Kubernetes (a CronJob past its deadline, a drained node), ``systemctl stop`` and ``timeout``
all stop a process with SIGTERM; a terminal sends SIGINT. :func:`install` (called once by the
CLI entry point) makes both do the same thing:

* the handler sets :attr:`InterruptGuard.requested` (a ``threading.Event`` that worker threads
  poll, or that is passed on as a pipeline's ``cancel`` event) and raises :class:`Interrupted`
  (a ``KeyboardInterrupt``) in the main thread, so ``finally`` blocks and ``with`` exits run
  their cleanup exactly as they do for Ctrl-C;
* inside :func:`deferred` (cleanup that must not be cut short: aborting an upload, removing a
  sandbox) the exception waits until the block ends;
* only the first signal raises: more SIGTERMs or Ctrl-Cs while cleanup runs are absorbed
  (SIGKILL remains the way to stop at once, and leaves what :meth:`BlobStore.cleanup_incomplete`
  later removes).

The CLI turns :class:`Interrupted` into one line on stderr and exit code 130.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import FrameType
from typing import Any

from etcdguard.errors import OperationInterruptedError

HANDLED_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)


class Interrupted(KeyboardInterrupt):
    """Raised in the main thread when SIGTERM or SIGINT arrives (a ``KeyboardInterrupt``)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum
        # what the stop left, when it is not "nothing" (a restore that changed the node says
        # how to finish or undo it); set by the code that knows, on its way out
        self.outcome: str | None = None


def signal_name(signum: int | None) -> str:
    """``SIGTERM``, ``SIGINT``, ... (``SIGINT`` when unknown: Ctrl-C without a handler)."""
    if signum is None:
        return "SIGINT"
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def interrupted_message(exc: BaseException | None = None) -> str:
    """The one line printed before exiting with code 130."""
    signum = exc.signum if isinstance(exc, Interrupted) else None
    guard = installed()
    if signum is None and guard is not None:
        signum = guard.signum
    outcome = exc.outcome if isinstance(exc, Interrupted) else None
    return f"interrupted ({signal_name(signum)}); {outcome or 'nothing partial was left behind'}"


class InterruptGuard:
    """The SIGTERM/SIGINT handler: sets a flag, raises :class:`Interrupted` once in the main thread."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.signum: int | None = None
        self._defer_depth = 0
        self._pending = False
        self._raised = False
        self._previous: dict[int, Any] = {}
        self.reported = False  # the CLI printed its one ``interrupted`` line

    def __repr__(self) -> str:
        return (f"InterruptGuard(requested={self.requested.is_set()}, signal={signal_name(self.signum)}, "
                f"deferred={self._defer_depth})")

    def handle(self, signum: int, frame: FrameType | None) -> None:
        """The signal handler (Python runs it in the main thread between bytecodes)."""
        del frame
        if self.signum is None:
            self.signum = signum
        self.requested.set()
        if self._raised:
            return  # already stopping: further signals do not cut the cleanup short
        if self._defer_depth:
            self._pending = True
            return
        self._raised = True
        raise Interrupted(signum)

    def install(self) -> InterruptGuard:
        """Become the handler of SIGTERM and SIGINT (main thread only); returns self."""
        for sig in HANDLED_SIGNALS:
            self._previous[sig] = signal.signal(sig, self.handle)
        return self

    def uninstall(self) -> None:
        """Restore the handlers that were there before :meth:`install`."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    @contextmanager
    def deferring(self) -> Iterator[None]:
        """Hold the interrupt until the block ends (nestable), then raise it."""
        self._defer_depth += 1
        try:
            yield
        finally:
            self._defer_depth -= 1
            if self._defer_depth == 0 and self._pending:
                self._pending = False
                self._raised = True
                raise Interrupted(self.signum or signal.SIGINT)

    def check(self, what: str = "the operation") -> None:
        """For worker threads: raise OperationInterruptedError once a stop was requested."""
        if self.requested.is_set():
            raise OperationInterruptedError(f"{what} was interrupted ({signal_name(self.signum)})")


def install() -> InterruptGuard:
    """Install a fresh :class:`InterruptGuard` for SIGTERM and SIGINT (entry points call this once)."""
    return InterruptGuard().install()


def installed() -> InterruptGuard | None:
    """The guard currently handling SIGTERM, if :func:`install` put one there.

    The signal table is the only process-wide state: the guard is found through it, so nothing
    else is kept at module level.
    """
    handler = signal.getsignal(signal.SIGTERM)
    guard = getattr(handler, "__self__", None)
    return guard if isinstance(guard, InterruptGuard) else None


def stop_requested() -> bool:
    """True once SIGTERM or SIGINT was received by the installed guard (any thread may ask)."""
    guard = installed()
    return guard is not None and guard.requested.is_set()


def raise_if_requested() -> None:
    """Raise :class:`Interrupted` when a stop was requested: native code that calls back into
    Python (pyrage) turns the interrupt raised in its callback into an error of its own."""
    guard = installed()
    if guard is not None and guard.requested.is_set():
        raise Interrupted(guard.signum or signal.SIGINT)


def cancel_event() -> threading.Event:
    """The installed guard's flag, to hand to work that polls a ``cancel`` event (a fresh one if none)."""
    guard = installed()
    return guard.requested if guard is not None else threading.Event()


@contextmanager
def deferred() -> Iterator[None]:
    """Let the block finish before SIGTERM/SIGINT interrupts the main thread; then raise it.

    Uses the installed guard; without one (library use, tests) a temporary guard handles both
    signals for the block's duration. In other threads (which signals never interrupt) this
    does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    guard = installed()
    if guard is not None:
        with guard.deferring():
            yield
        return
    temporary = InterruptGuard()
    try:
        temporary.install()
    except ValueError:  # not the main interpreter
        yield
        return
    try:
        with temporary.deferring():
            yield
    finally:
        temporary.uninstall()


def run_deferred(fn: Callable[[], None]) -> None:
    """Call ``fn`` (a cleanup) under :func:`deferred`."""
    with deferred():
        fn()


def shielded() -> AbstractContextManager[None]:
    """Keep an interrupt out of library code that is not safe against one (gRPC's call and channel
    locks: an exception raised while one is held can leave it held, and the process hangs in
    its cleanup). In the main thread with a guard installed the interrupt waits for the block
    (which the caller bounds with a timeout); elsewhere this does nothing."""
    guard = installed()
    if guard is None or threading.current_thread() is not threading.main_thread():
        return nullcontext()
    return guard.deferring()
