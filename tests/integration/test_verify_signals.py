"""SIGTERM and SIGINT stop ``verify`` at once and leave nothing behind; SIGKILL leftovers are swept.

Signals are sent at points chosen by watching the run from outside: the decrypted snapshot being
written into the work dir, and the sandbox etcd (process or container) running. Afterwards the
work dir and TMPDIR are empty, no sandbox process (psutil) or Docker resource is left, no verdict
was recorded, and the CLI exited 130.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from etcdguard import interrupts
from etcdguard.backup.manifest import VERIFICATION_NAME
from etcdguard.steps import StepRecord, StepState
from etcdguard.verify.workdirs import OWNER_FILE
from tests.integration.snapshot_fixtures import fill_random
from tests.integration.verify_fixtures import Backups, docker_or_skip, make_backup, source_cluster
from tests.support.etcd_cluster import TEST_ETCD_DIRS

pytestmark = [pytest.mark.integration]

WAIT = 120.0  # bound on every wait for an observed state, seconds
Started = tuple[subprocess.Popen[str], Path, Path]  # the CLI, its work dir, its TMPDIR


@dataclass
class Signalled:
    """A backup big enough that its download takes a visible moment."""

    backups: Backups
    backup_id: str


@pytest.fixture(scope="module")
def signalled(tmp_path_factory: pytest.TempPathFactory) -> Signalled:
    from etcdguard.backup.keys import generate_keys
    from etcdguard.storage import LocalStore

    base = tmp_path_factory.mktemp("verify-signals")
    backups = Backups(LocalStore(base / "store"), generate_keys(base / "keys"))
    with source_cluster(base / "src", "3.5.16") as cluster, cluster.client() as client:
        fill_random(client, 48)
        manifest = make_backup(backups, client)
    return Signalled(backups, manifest.backup_id)


def _wait_for(what: str, check: Callable[[], bool], proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"verify ended (exit {proc.returncode}) before {what}: {err}")
        assert time.monotonic() < deadline, f"no {what} within {WAIT:g}s"
        time.sleep(0.002)


def _decrypting(workdir: Path) -> Callable[[], bool]:
    def check() -> bool:
        for d in workdir.glob("etcdguard-verify-*"):
            try:
                if any(f.name != OWNER_FILE for f in d.iterdir()):
                    return True
            except OSError:
                continue
        return False
    return check


def _sandbox_etcds(workdir: Path) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmdline = p.info["cmdline"] or []
        if cmdline and Path(cmdline[0]).name == "etcd" and any(str(workdir) in arg for arg in cmdline):
            found.append(p)
    return found


def _docker_running(client: Any, backup_id: str) -> Callable[[], bool]:
    flt = {"label": f"etcdguard.backup-id={backup_id}", "status": "running"}
    return lambda: bool(client.containers.list(filters=flt))


@pytest.fixture
def run_verify(tmp_path: Path, signalled: Signalled) -> Iterator[Callable[[str], Started]]:
    started: list[subprocess.Popen[str]] = []

    def start(sandbox: str) -> Started:
        workdir, systmp = tmp_path / "work", tmp_path / "systmp"
        workdir.mkdir()
        systmp.mkdir()
        b = signalled.backups
        b.store.delete(f"{b.catalog.prefix(signalled.backup_id)}/{VERIFICATION_NAME}")  # an earlier test's
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("ETCDGUARD_")},
               "ETCDGUARD_VERIFY__ETCD_PATH": os.pathsep.join(map(str, TEST_ETCD_DIRS)),
               "ETCDGUARD_VERIFY__WORKDIR": str(workdir), "TMPDIR": str(systmp),
               "ETCDGUARD_STATE_DIR": str(tmp_path / "state"), "ETCDGUARD_VERIFY__START_TIMEOUT": "600"}
        proc = subprocess.Popen(
            [shutil.which("etcdguard") or "etcdguard", "verify", signalled.backup_id, "--store", str(b.store.root),
             "--cluster-name", b.cluster, "--identity", str(b.keys.identity), "--signing-key",
             str(b.keys.signing_key), "--sandbox", sandbox],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        return proc, workdir, systmp

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _assert_clean(signalled: Signalled, proc: subprocess.Popen[str], workdir: Path, systmp: Path) -> None:
    _, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err, err
    assert list(workdir.iterdir()) == [], "decrypted snapshot or restored data left in the work dir"
    assert list(systmp.iterdir()) == [], "something left in TMPDIR"
    assert _sandbox_etcds(workdir) == [], "the sandbox etcd is still running"
    b = signalled.backups
    assert b.store.stat(f"{b.catalog.prefix(signalled.backup_id)}/{VERIFICATION_NAME}") is None, "a verdict"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("point", ["decrypting", "sandbox running"])
def test_process_sandbox_stops_and_cleans_up(signalled: Signalled, run_verify: Any, signum: int,
                                             point: str) -> None:
    proc, workdir, systmp = run_verify("process")
    if point == "decrypting":
        _wait_for("decrypted data in the work dir", _decrypting(workdir), proc)
    else:
        _wait_for("a running sandbox etcd", lambda: bool(_sandbox_etcds(workdir)), proc)
    proc.send_signal(signum)
    _assert_clean(signalled, proc, workdir, systmp)


@pytest.mark.docker
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("point", ["decrypting", "sandbox running"])
def test_docker_sandbox_stops_and_cleans_up(signalled: Signalled, run_verify: Any, signum: int,
                                            point: str) -> None:
    client = docker_or_skip()
    proc, workdir, systmp = run_verify("docker")
    if point == "decrypting":
        _wait_for("decrypted data in the work dir", _decrypting(workdir), proc)
    else:
        _wait_for("a running sandbox container", _docker_running(client, signalled.backup_id), proc)
    proc.send_signal(signum)
    _assert_clean(signalled, proc, workdir, systmp)
    flt = {"label": f"etcdguard.backup-id={signalled.backup_id}"}
    assert not client.containers.list(all=True, filters=flt)
    assert not client.networks.list(filters=flt) and not client.volumes.list(filters=flt)


def test_sigkill_takes_the_sandbox_etcd_along_and_the_next_run_sweeps(signalled: Signalled, run_verify: Any,
                                                                       tmp_path: Path) -> None:
    proc, workdir, _ = run_verify("process")
    _wait_for("a running sandbox etcd", lambda: bool(_sandbox_etcds(workdir)), proc)
    [etcd] = _sandbox_etcds(workdir)
    proc.kill()
    proc.communicate()
    psutil.wait_procs([etcd], timeout=WAIT)
    assert not etcd.is_running() or etcd.status() == psutil.STATUS_ZOMBIE, "the sandbox etcd outlived its parent"
    left = sorted(p.name.split("-")[1] for p in workdir.iterdir())
    assert left == ["sandbox", "verify"], left  # SIGKILL: nothing could clean up ...
    report = signalled.backups.verifier("process", workdir).verify(signalled.backup_id)
    assert report.passed, report.verification.reason
    assert list(workdir.iterdir()) == []  # ... until the next run swept them


def test_sigint_during_teardown_records_no_verdict(tmp_path: Path, signalled: Signalled) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    b = signalled.backups
    b.store.delete(f"{b.catalog.prefix(signalled.backup_id)}/{VERIFICATION_NAME}")  # an earlier test's

    def on_step(record: StepRecord) -> None:
        if (record.name, record.state) == ("teardown", StepState.running):
            os.kill(os.getpid(), signal.SIGINT)

    guard = interrupts.install()
    try:
        with pytest.raises(KeyboardInterrupt):
            b.verifier("process", workdir, on_step=on_step).verify(signalled.backup_id)
    finally:
        guard.uninstall()
    assert b.store.stat(f"{b.catalog.prefix(signalled.backup_id)}/{VERIFICATION_NAME}") is None
    assert list(workdir.iterdir()) == [] and _sandbox_etcds(workdir) == []
