"""`etcdguard member` against real etcd processes: replace, grow, guardrails, never-started, kills."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from etcdguard.etcd.client import MemberClient
from tests.integration.members_helpers import (
    Running,
    drop_dead,
    etcdguard,
    etcdguard_background,
    free_etcd_data,
    live_endpoints,
    member_list,
    new_peer_url,
    start_from_env_file,
    voters,
    wait_for_file,
)
from tests.support.etcd_cluster import EtcdCluster, etcd_cluster, installation
from tests.support.require import missing
from tests.support.waits import wait_until

pytestmark = [pytest.mark.integration]
KEYS = 300


def fill(cluster: EtcdCluster) -> None:
    with cluster.client(0) as c:
        for i in range(KEYS):
            c.put(f"/data/{i:05d}".encode(), os.urandom(512))


def keys_on(url: str) -> int:
    """Keys under /data/ as the member at ``url`` holds them (serializable: its own copy)."""
    with MemberClient(url, timeout=5) as c:
        return c.count(b"/data/", b"/data0", serializable=True)[0]


def require(version: str) -> None:
    if installation(version) is None:
        missing(f"etcd {version} is not installed (scripts/install-test-deps.sh)")


@pytest.fixture(scope="module")
def cluster35(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    require("3.5.16")
    base = tmp_path_factory.mktemp("members35")
    with etcd_cluster(base, "3.5.16", size=3) as cluster:
        fill(cluster)
        yield cluster
    free_etcd_data(base)


@pytest.fixture(autouse=True)
def _free_disk(tmp_path: Path) -> Iterator[None]:
    """Every member started here preallocates 64 MiB of WAL: free it when the test ends."""
    yield
    free_etcd_data(tmp_path)


def replace(cluster: EtcdCluster, workdir: Path, dead: str, new: str, *,
            kill_when: Callable[[str], bool] | None = None, sig: int = signal.SIGKILL, in_catch_up: bool = False,
            peer_url: str | None = None, announce: str | None = None,
            data_dir: Path | None = None) -> tuple[int, str]:
    """Run `member replace` and start the new member from the env file it writes.

    ``kill_when``: send ``sig`` (SIGKILL) to the command at the first stderr line matching, then run it
    again (a SIGTERM must end the first run with exit 130 and its one ``interrupted`` line).
    ``in_catch_up``: at that line, stop (SIGSTOP) the new member so it cannot catch up, and signal
    the command only once its journal shows the catch-up step running.
    ``announce``: start the new etcd with this (its real) peer URL instead (it then never joins);
    ``data_dir``: start it on this data dir.
    """
    peer = peer_url or new_peer_url()
    env_file = workdir / f"{new}.env"
    args = ["member", "replace", dead, "--name", new, "--peer-url", peer, "--env-file", str(env_file), "--yes",
            "--journal-dir", str(workdir / "journal"), "--endpoints", live_endpoints(cluster), "--timeout", "2",
            "--start-timeout", "20"]
    started = False
    for attempt in (1, 2):
        env_file.unlink(missing_ok=True)
        with etcdguard_background(*args) as run:
            if kill_when is not None and attempt == 1:
                started = _start_until_killed(cluster, run, env_file, kill_when, sig,
                                              workdir / "journal" if in_catch_up else None)
                continue
            if not started:
                wait_for_file(env_file, run)
                start_from_env_file(cluster, env_file, peer_url=announce, data_dir=data_dir)
            code = run.finish()
            return code, run.output
    raise AssertionError("unreachable")


def _start_until_killed(cluster: EtcdCluster, run: Running, env_file: Path, kill_when: Callable[[str], bool],
                        sig: int, journal_dir: Path | None) -> bool:
    """Start the new member once its env file is out; signal etcdguard at the first matching line.

    With ``journal_dir``: signal it while it waits for catch-up instead (see :func:`_stop_in_catch_up`).
    """
    if journal_dir is not None:
        _stop_in_catch_up(cluster, run, env_file, journal_dir)
        run.finish(60)
        return True
    started = False
    deadline = time.monotonic() + 120
    while not any(kill_when(line) for line in list(run.lines)):
        assert time.monotonic() < deadline and run.proc.poll() is None, run.output[-3000:]
        if not started and env_file.exists():
            start_from_env_file(cluster, env_file)
            started = True
        time.sleep(0.02)
    os.killpg(run.proc.pid, sig)
    code = run.finish(60)
    if sig == signal.SIGTERM:
        assert code == 130 and "interrupted" in run.output, run.output[-3000:]
    return started


def _stop_in_catch_up(cluster: EtcdCluster, run: Running, env_file: Path, journal_dir: Path) -> None:
    """SIGKILL etcdguard for sure while it waits for the learner to catch up.

    etcdguard is frozen (SIGSTOP) before the learner starts; the learner starts, joins, and is frozen
    in turn while more keys are written, so it lags; etcdguard thaws, sees it started, waits for it to
    catch up (the journal says so), and is killed there. The learner thaws afterwards.
    """
    wait_for_file(env_file, run)
    os.killpg(run.proc.pid, signal.SIGSTOP)
    learner = start_from_env_file(cluster, env_file)
    assert learner.process is not None
    wait_until(lambda: any(m.name == learner.name and m.is_learner for m in member_list(cluster)),
               what="the learner to join")
    os.kill(learner.process.pid, signal.SIGSTOP)
    with cluster.client(next(i for i, m in enumerate(cluster.members) if m.name in voters(cluster))) as c:
        for i in range(50):
            c.put(f"/lag/{i}".encode(), b"x")
    os.killpg(run.proc.pid, signal.SIGCONT)
    wait_until(lambda: _step_state(journal_dir, "catch-up") == "running", what="the catch-up step")
    os.killpg(run.proc.pid, signal.SIGKILL)
    os.kill(learner.process.pid, signal.SIGCONT)
    assert any(m.is_learner for m in member_list(cluster))  # killed before the promotion


def _step_state(journal_dir: Path, step: str) -> str:
    for path in journal_dir.glob("member-replace-*.json"):
        with contextlib.suppress(ValueError, OSError):
            doc = json.loads(path.read_text())
            return next((s["state"] for s in doc["steps"] if s["name"] == step), "")
    return ""


def assert_three_voters_with_all_data(cluster: EtcdCluster, new: str) -> None:
    drop_dead(cluster)
    members = member_list(cluster)
    assert sorted(m.is_learner for m in members) == [False, False, False], members
    new_member = next(m for m in members if m.name == new)
    assert keys_on(new_member.client_urls[0]) == KEYS
    with MemberClient(new_member.client_urls[0], timeout=5) as c:
        assert not c.status().is_learner


def kill_member(cluster: EtcdCluster, name: str) -> None:
    cluster.kill(next(i for i, m in enumerate(cluster.members) if m.name == name))


# -- guardrails (membership unchanged after every refusal) -------------------------------------
def test_guardrail_refusals_with_a_member_stopped(cluster35: EtcdCluster, tmp_path: Path) -> None:
    endpoints = live_endpoints(cluster35)
    spare = new_peer_url()
    learner = etcdguard("member", "add", "spare", "--peer-url", spare, "--learner", "--yes",
                        "--endpoints", endpoints)
    assert learner.returncode == 0, learner.stderr
    before = sorted((m.id, m.is_learner) for m in member_list(cluster35))
    cluster35.pause(2)
    try:
        common = ("--endpoints", endpoints, "--timeout", "1", "--refusal-timeout", "5")
        removal = etcdguard("member", "remove", cluster35.members[1].name, "--yes", *common)
        assert removal.returncode == 10, removal.stderr
        assert "refused" in removal.stderr and "quorum would need 2" in removal.stderr
        assert "reachable voters 1" in removal.stderr or "1 of 2 voters" in removal.stderr
        voter = etcdguard("member", "add", "extra", "--peer-url", new_peer_url(), "--yes", *common)
        assert voter.returncode == 10 and "--learner" in voter.stderr, voter.stderr
        promote = etcdguard("member", "promote", spare, *common)  # unstarted: named by its peer URL
        assert promote.returncode == 10 and "quorum would need 3" in promote.stderr, promote.stderr
        assert sorted((m.id, m.is_learner) for m in member_list(cluster35)) == before
    finally:
        cluster35.resume(2)
    cleanup = etcdguard("member", "remove", spare, "--yes", "--endpoints", endpoints)
    assert cleanup.returncode == 0, cleanup.stderr
    listed = etcdguard("member", "list", "-o", "json", "--endpoints", endpoints)
    doc = json.loads(listed.stdout)
    assert doc["quorum"]["state"] == "HEALTHY" and len(doc["members"]) == 3


def test_a_replacement_that_never_starts_is_removed_and_the_next_attempt_works(
        cluster35: EtcdCluster, tmp_path: Path) -> None:
    kill_member(cluster35, "m2")
    real, typo = new_peer_url(), new_peer_url()
    code, output = replace(cluster35, tmp_path, "m2", "n2", peer_url=typo, announce=real)
    assert code == 4, output
    assert "never started" in output and "not merely slow" in output and "changed: removed learner" in output
    assert voters(cluster35) == ["m0", "m1"] and not any(m.is_learner for m in member_list(cluster35))
    drop_dead(cluster35)
    code, output = replace(cluster35, tmp_path, "m2", "n2", peer_url=real)
    assert code == 0, output
    assert "HEALTHY" in output
    assert_three_voters_with_all_data(cluster35, "n2")


@pytest.mark.parametrize(("point", "kill_when", "sig"), [
    pytest.param("after the remove", lambda line: "changed: removed member" in line, signal.SIGKILL,
                 id="sigkill-after-remove"),
    pytest.param("after the add", lambda line: "changed: added learner" in line, signal.SIGKILL,
                 id="sigkill-after-add"),
    pytest.param("while waiting for catch-up", lambda line: "add-learner" in line and "ok" in line, signal.SIGKILL,
                 id="sigkill-in-catch-up"),  # the new member is stopped there: the kill lands in catch-up
    pytest.param("SIGTERM while waiting for the start", lambda line: "waiting up to" in line, signal.SIGTERM,
                 id="sigterm-waiting-for-start"),
])
def test_replace_killed_then_run_again_finishes(cluster35: EtcdCluster, tmp_path: Path, point: str,
                                                kill_when: Callable[[str], bool], sig: int) -> None:
    dead = sorted(m.name for m in member_list(cluster35))[0]
    kill_member(cluster35, dead)
    new = f"k{abs(hash(point)) % 1000}"
    code, output = replace(cluster35, tmp_path, dead, new, kill_when=kill_when, sig=sig,
                           in_catch_up=point == "while waiting for catch-up")
    assert code == 0, output
    assert_three_voters_with_all_data(cluster35, new)


def test_a_learner_added_with_a_wrong_peer_url_is_removed_and_added_again(cluster35: EtcdCluster,
                                                                          tmp_path: Path) -> None:
    dead = sorted(m.name for m in member_list(cluster35))[0]
    kill_member(cluster35, dead)
    typo, real = new_peer_url(), new_peer_url()
    args = ["member", "replace", dead, "--name", "w1", "--env-file", str(tmp_path / "w1.env"), "--yes",
            "--journal-dir", str(tmp_path / "journal"), "--endpoints", live_endpoints(cluster35), "--timeout", "2"]
    with etcdguard_background(*args, "--peer-url", typo) as run:  # killed once the wrong learner is added
        run.wait_for(lambda line: "changed: added learner" in line)
        os.killpg(run.proc.pid, signal.SIGKILL)
        run.proc.wait(30)
    assert [m.peer_urls for m in member_list(cluster35) if m.is_learner] == [(typo,)]
    code, output = replace(cluster35, tmp_path, dead, "w1", peer_url=real)
    assert code == 0, output
    assert f"was added by an earlier attempt with peer URL {typo}" in output and "changed: removed stale" in output
    assert all(typo not in m.peer_urls for m in member_list(cluster35))
    assert_three_voters_with_all_data(cluster35, "w1")


def test_replace_on_etcd_3_4(tmp_path: Path) -> None:
    require("3.4.23")
    with etcd_cluster(tmp_path / "c", "3.4.23", size=3) as cluster:
        fill(cluster)
        old_data = cluster.members[1].data_dir
        kill_member(cluster, "m1")
        # started on the removed member's data dir, the new member never joins: reported, removed
        code, output = replace(cluster, tmp_path, "m1", "r1", data_dir=old_data)
        assert code == 4 and "never started" in output and "an old data dir" in output, output
        assert voters(cluster) == ["m0", "m2"] and not any(m.is_learner for m in member_list(cluster))
        drop_dead(cluster)
        code, output = replace(cluster, tmp_path, "m1", "r1")  # with an empty data dir
        assert code == 0, output
        assert "catch-up" in output and "HEALTHY" in output
        assert_three_voters_with_all_data(cluster, "r1")


def test_grow_a_single_member_back_to_three(tmp_path: Path) -> None:
    require("3.5.16")
    with etcd_cluster(tmp_path / "c", "3.5.16", size=1) as cluster:
        fill(cluster)
        voter = etcdguard("member", "add", "g1", "--peer-url", new_peer_url(), "--yes",
                          "--endpoints", cluster.endpoints[0])
        assert voter.returncode == 10 and "--learner" in voter.stderr  # one member: a voter would stall it
        for name in ("g1", "g2"):
            env_file = tmp_path / f"{name}.env"
            added = etcdguard("member", "add", name, "--peer-url", new_peer_url(), "--learner", "--env-file",
                              str(env_file), "--yes", "--endpoints", cluster.endpoints[0])
            assert added.returncode == 0, added.stderr
            assert "changed: added learner" in added.stderr
            start_from_env_file(cluster, env_file)
            promoted = etcdguard("member", "promote", name, "--wait", "--endpoints", cluster.endpoints[0])
            assert promoted.returncode == 0, promoted.stderr
            assert "reports itself as a voting member" in promoted.stdout
        assert voters(cluster) == ["g1", "g2", "m0"]
        for m in member_list(cluster):
            assert keys_on(m.client_urls[0]) == KEYS
        listed = json.loads(etcdguard("member", "list", "-o", "json", "--endpoints", cluster.endpoints[0]).stdout)
        assert listed["quorum"]["state"] == "HEALTHY" and len(listed["client_endpoints"]) == 3
        # removing the live leader hands leadership to another voter first
        leader = next(m for m in listed["members"] if m["is_leader"])
        others = [m["client_urls"][0] for m in listed["members"] if not m["is_leader"]]
        removed = etcdguard("member", "remove", leader["name"], "--yes", "--endpoints", ",".join(others))
        assert removed.returncode == 0, removed.stderr
        assert "is the leader: moving leadership" in removed.stderr and "changed: moved leadership" in removed.stderr
        assert len(voters(cluster)) == 2
