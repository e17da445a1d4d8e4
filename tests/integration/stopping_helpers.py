"""Run the real CLI in the background and stop it with a signal at a moment chosen by observing state."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from etcdguard.backup.keys import GeneratedKeys, generate_keys
from tests.integration.snapshot_fixtures import CLI
from tests.support.seaweed import SeaweedS3

OBSERVE_TIMEOUT = 120.0


@dataclass
class Stopped:
    """How a stopped run ended."""

    returncode: int
    stdout: str
    stderr: str


class Running:
    """One ``etcdguard`` process started from a :class:`CLI`, its stderr kept in a file."""

    def __init__(self, cli: CLI, args: list[str], env: dict[str, str], workdir: Path) -> None:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDGUARD_", "AWS_"))}
        full_env.update({"HOME": str(cli.home), "XDG_DATA_HOME": str(cli.home / "data"), "COLUMNS": "200",
                         "PYTHONFAULTHANDLER": "1"})  # SIGABRT prints every thread's stack (a hang's report)
        full_env.update(cli.extra_env)
        full_env.update(env)
        exe = shutil.which("etcdguard") or sys.executable
        cmd = [exe, *args] if exe.endswith("etcdguard") else [exe, "-m", "etcdguard.cli.main", *args]
        workdir.mkdir(parents=True, exist_ok=True)
        self.stdout_path = workdir / "stdout"
        self.stderr_path = workdir / "stderr"
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=full_env)

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def pause_when(self, observed: Callable[[], bool], what: str) -> None:
        """Poll ``observed`` until it holds, SIGSTOP the process, and check it still holds.

        While stopped the process cannot move on, so the signal sent next lands exactly in the
        observed state (an upload in flight, a partial file being written, ...).
        """
        deadline = time.monotonic() + OBSERVE_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the process ended ({self.proc.returncode}) before {what}: "
                                     f"{self.stderr_text()[-2000:]}")
            if observed():
                os.kill(self.proc.pid, signal.SIGSTOP)
                if observed():
                    return
                os.kill(self.proc.pid, signal.SIGCONT)  # it moved on meanwhile: look again
            time.sleep(0.02)
        raise AssertionError(f"never saw {what} within {OBSERVE_TIMEOUT}s: {self.stderr_text()[-2000:]}")

    def stop_with(self, sig: int, timeout: float = 120.0) -> Stopped:
        """Send ``sig`` to the (paused) process, let it continue, wait for it to exit."""
        os.kill(self.proc.pid, sig)
        os.kill(self.proc.pid, signal.SIGCONT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:  # a hang: make it say where every thread is
            os.kill(self.proc.pid, signal.SIGABRT)
            self.proc.wait(30)
            raise AssertionError(f"still running {timeout:g}s after {signal.Signals(sig).name}; its threads:\n"
                                 f"{self.stderr_text()[-12000:]}") from None
        return Stopped(self.proc.returncode, self.stdout_path.read_text(errors="replace"), self.stderr_text())

    def kill(self) -> None:
        """SIGKILL (no handler runs) and reap."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()


def assert_interrupted(result: Stopped, sig: int) -> None:
    """Exit 130 with exactly the documented one line (no traceback, no error line)."""
    assert result.returncode == 130, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr
    last = [ln for ln in result.stderr.splitlines() if ln.strip()][-1]
    assert last == f"interrupted ({signal.Signals(sig).name}); nothing partial was left behind", result.stderr


def tree(path: Path) -> list[str]:
    """Every file and directory under ``path`` (relative), for 'nothing left' assertions."""
    if not path.exists():
        return []
    return sorted(p.relative_to(path).as_posix() + ("/" if p.is_dir() else "") for p in path.rglob("*"))


def s3_env(seaweed: SeaweedS3) -> dict[str, str]:
    """AWS credentials of the test SeaweedFS for a CLI run."""
    return {"AWS_ACCESS_KEY_ID": seaweed.access_key, "AWS_SECRET_ACCESS_KEY": seaweed.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def module_keys(tmp_path_factory: pytest.TempPathFactory) -> GeneratedKeys:
    """One set of keys for a module's tests."""
    return generate_keys(tmp_path_factory.mktemp("keys") / "keys")
