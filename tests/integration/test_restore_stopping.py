"""SIGTERM and SIGINT at observed moments of `restore`: no decrypted data or half-restored dir stays
behind, and the next run either starts over (nothing had changed) or finishes with --resume.

One etcd 3.5.16 member in the command run mode holds about 60 MB of incompressible Kubernetes-like
values; one backup of it is restored again and again. Before each run the member is killed and its
db destroyed (the disaster); each test pauses the restore at the moment it wants (SIGSTOP), sends
the signal, lets it continue and checks the exit, the state dir, the data dirs and TMPDIR.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from etcdguard.restore.fencing import port_open
from tests.integration.restore_command_nodes import CmdNode, make_nodes, node_setups
from tests.integration.restore_fixtures import Setup, wait_serving
from tests.integration.snapshot_fixtures import fill_random
from tests.integration.stopping_helpers import Running, assert_interrupted, tree
from tests.support.etcd_cluster import installation
from tests.support.require import missing
from tests.support.waits import wait_until

pytestmark = pytest.mark.integration
SIGNALS = [signal.SIGTERM, signal.SIGINT]
DB_MEGABYTES = 60


@dataclass
class Node:
    """The member, its etcdguard setup and the key count of its one backup."""

    member: CmdNode
    setup: Setup
    keys: int

    @property
    def data_dir(self) -> Path:
        return self.member.data_dir

    def disaster(self) -> None:
        """etcd dies and its db is destroyed; what earlier runs kept aside is removed (disk)."""
        self.member.kill()
        wait_until(lambda: not port_open("127.0.0.1", self.member.client_port), 30, "the member's port closed")
        for kept in self.data_dir.parent.glob("data.etcdguard-*"):
            shutil.rmtree(kept)
        (self.data_dir / "member" / "snap" / "db").write_bytes(b"\0" * 4096)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    install = installation("3.5.16")
    if install is None:
        missing("etcd 3.5.16 is not installed (scripts/install-test-deps.sh)")
    base = tmp_path_factory.mktemp("restore-stop")
    (member,) = make_nodes(base / "nodes", install, 1)
    setup = node_setups(base, [member], [member.client_url], "stopping")[member.name]
    member.start()
    try:
        with wait_serving(member.client_url, None) as c:
            fill_random(c, DB_MEGABYTES)
            keys = c.count(b"/", b"\0")[0]
        snap = setup.run("snapshot")
        assert snap.returncode == 0, snap.stderr
        yield Node(member, setup, keys)
    finally:
        member.kill()


def _start(node: Node, tmp_path: Path, env: dict[str, str] | None = None) -> tuple[Running, Path]:
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir(mode=0o700)
    running = Running(node.setup.cli, ["--config", str(node.setup.config), "restore", "--yes", "--backup", "latest"],
                      {"TMPDIR": str(tmpdir), **(env or {})}, tmp_path / "run")
    return running, tmpdir


def _stopped(pid: int) -> bool:
    """True while ``pid`` is stopped (SIGSTOP: state T in /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"
    except (OSError, IndexError):
        return False


def _no_plain_copy_left(node: Node, tmpdir: Path) -> None:
    """No decrypted snapshot (staged or partial) in the state dir, nothing in TMPDIR."""
    leftovers = [p for p in tree(node.setup.state_dir) if "snapshot.db" in p and not p.startswith("emergency")]
    assert leftovers == [] and tree(tmpdir) == []


def _finished(node: Node, result_stderr: str) -> None:
    with wait_serving(node.member.client_url, None) as c:
        assert c.count(b"/", b"\0")[0] == node.keys, result_stderr


def _data_dirs(node: Node) -> list[str]:
    return sorted(p.name for p in node.data_dir.parent.iterdir() if p.name.startswith("data"))


def _staged_partial(node: Node) -> Callable[[], bool]:
    def seen() -> bool:
        return any(p.stat().st_size > (1 << 20) for p in node.setup.state_dir.glob("*/.snapshot.db.partial-*"))
    return seen


def _restoring(node: Node) -> Callable[[], bool]:
    def seen() -> bool:
        return any((d / "member").exists() for d in node.data_dir.parent.glob("data.etcdguard-new-*"))
    return seen


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
@pytest.mark.parametrize("moment", ["fetching", "restoring-into-a-new-dir"])
def test_a_stop_before_any_change_leaves_the_node_as_it_was(node: Node, tmp_path: Path, sig: int,
                                                            moment: str) -> None:
    node.disaster()
    before = _data_dirs(node)
    running, tmpdir = _start(node, tmp_path)
    try:
        running.pause_when(_staged_partial(node) if moment == "fetching" else _restoring(node), moment)
        stopped = running.stop_with(sig)
    finally:
        running.close()
    assert_interrupted(stopped, sig)
    _no_plain_copy_left(node, tmpdir)
    assert _data_dirs(node) == before == ["data"]  # no new dir, nothing moved
    assert (node.data_dir / "member" / "snap" / "db").read_bytes() == b"\0" * 4096

    # nothing had changed: a new run starts over; --resume goes on (fetching the snapshot again)
    follow = ("restore", "--resume") if sig == signal.SIGINT else ("restore", "--yes", "--backup", "latest")
    again = node.setup.run(*follow)
    assert again.returncode == 0, again.stderr
    _finished(node, again.stderr)
    _no_plain_copy_left(node, tmpdir)


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_a_stop_after_the_swap_is_finished_with_resume(node: Node, tmp_path: Path, sig: int) -> None:
    node.disaster()
    running, tmpdir = _start(node, tmp_path, {"ETCDGUARD_TEST_PAUSE_AFTER_STEP": "swap-in"})
    try:
        running.pause_when(lambda: _stopped(running.proc.pid), "the run paused after swap-in")
        stopped = running.stop_with(sig)
    finally:
        running.close()
    assert stopped.returncode == 130 and "Traceback" not in stopped.stderr, stopped.stderr
    last = [ln for ln in stopped.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith(f"interrupted ({signal.Signals(sig).name}); restore ") and "after changing this node: " \
        "run 'etcdguard restore --resume' to finish it or '--rollback' to undo it" in last, stopped.stderr
    _no_plain_copy_left(node, tmpdir)  # the decrypted snapshot goes with the stopped run

    refused = node.setup.run("restore", "--yes", "--backup", "latest")
    assert refused.returncode == 10 and "--resume" in refused.stderr, refused.stderr
    resumed = node.setup.run("restore", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    _finished(node, resumed.stderr)
    _no_plain_copy_left(node, tmpdir)
    assert not list(node.data_dir.parent.glob("data.etcdguard-new-*"))
