"""SIGTERM and SIGINT handled alike: a flag for threads, one Interrupted in the main thread."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from etcdguard import interrupts
from etcdguard.errors import OperationInterruptedError


@pytest.fixture
def guard() -> Iterator[interrupts.InterruptGuard]:
    installed = interrupts.install()
    try:
        yield installed
    finally:
        installed.uninstall()


def _wait_for_signal(guard: interrupts.InterruptGuard) -> None:
    """Block in Python code until the handler has run (it raises in this thread)."""
    while not guard.requested.wait(0.01):
        pass


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_raises_interrupted_and_sets_the_flag(guard: interrupts.InterruptGuard, sig: int) -> None:
    assert interrupts.installed() is guard
    with pytest.raises(interrupts.Interrupted) as caught:
        os.kill(os.getpid(), sig)
        _wait_for_signal(guard)
        signal.sigtimedwait([], 0.5)  # give the interpreter a chance to run the handler
    assert caught.value.signum == sig
    assert isinstance(caught.value, KeyboardInterrupt)
    assert interrupts.stop_requested()
    assert interrupts.cancel_event() is guard.requested
    assert signal.Signals(sig).name in interrupts.interrupted_message(caught.value)


def test_deferred_holds_the_interrupt_until_the_block_ends(guard: interrupts.InterruptGuard) -> None:
    finished = []
    with pytest.raises(interrupts.Interrupted), interrupts.deferred():
        with interrupts.deferred():  # nested blocks hold it too
            os.kill(os.getpid(), signal.SIGTERM)
            _wait_for_signal(guard)
            finished.append("inner")
        finished.append("outer")
    assert finished == ["inner", "outer"]


def test_only_the_first_signal_raises(guard: interrupts.InterruptGuard) -> None:
    cleaned = False
    with pytest.raises(interrupts.Interrupted):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            _wait_for_signal(guard)
            signal.sigtimedwait([], 0.5)
        finally:
            os.kill(os.getpid(), signal.SIGINT)  # a second signal during cleanup is absorbed
            signal.sigtimedwait([], 0.2)
            cleaned = True
    assert cleaned
    assert guard.signum == signal.SIGTERM


def test_worker_threads_see_the_flag(guard: interrupts.InterruptGuard) -> None:
    seen: list[BaseException] = []

    def worker() -> None:
        guard.requested.wait(10)
        try:
            guard.check("the upload")
        except OperationInterruptedError as exc:
            seen.append(exc)

    thread = threading.Thread(target=worker)
    thread.start()
    with pytest.raises(interrupts.Interrupted):
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for_signal(guard)
    thread.join(10)
    assert len(seen) == 1
    assert "SIGTERM" in str(seen[0])


def test_deferred_without_an_installed_guard_uses_a_temporary_one() -> None:
    assert interrupts.installed() is None
    before = signal.getsignal(signal.SIGTERM)
    done = []
    with pytest.raises(interrupts.Interrupted), interrupts.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 0.3)
        done.append(True)
    assert done == [True]
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_exits_130_with_one_line(sig: int, tmp_path: object) -> None:
    """A command blocked in Python code: the entry point answers either signal with 130 and one line."""
    code = (
        "import sys, time\n"
        "from etcdguard.cli import main\n"
        "from etcdguard.cli.common import handle_errors\n"
        "@main.app.command('sleep-for-test')\n"
        "def _sleep() -> None:\n"
        "    with handle_errors():\n"
        "        print('ready', flush=True)\n"
        "        time.sleep(60)\n"
        "sys.argv = ['etcdguard', 'sleep-for-test']\n"
        "main.run()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines == [f"interrupted ({signal.Signals(sig).name}); nothing partial was left behind"]


def test_a_signal_while_a_local_writer_creates_its_temp_file_leaves_nothing(
        guard: interrupts.InterruptGuard, tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile
    from pathlib import Path

    from etcdguard.storage import LocalStore

    real_mkstemp = tempfile.mkstemp

    def mkstemp_then_signal(*args: object, **kwargs: object) -> tuple[int, str]:
        created = real_mkstemp(*args, **kwargs)  # type: ignore[call-overload]
        os.kill(os.getpid(), signal.SIGTERM)
        _wait_for_signal(guard)  # the handler ran, held back by the writer's deferral
        return created  # type: ignore[no-any-return]

    root = Path(str(tmp_path)) / "store"
    store = LocalStore(root)
    store.check()
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_then_signal)
    with pytest.raises(interrupts.Interrupted):
        store.open_writer("prod/20250101T000000Z-aaaaaa/snapshot.db.zst.age")
    assert list(root.rglob("*")) == []  # no temp file, no backup directory
