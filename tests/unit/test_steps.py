"""The step engine: journal atomicity, resume after SIGKILL at each step boundary, rollback, lock."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from etcdguard.errors import ConfigError
from etcdguard.steps import (
    Journal,
    RunLock,
    RunLockedError,
    RunOutcome,
    Step,
    StepContext,
    StepRunner,
    StepState,
    atomic_write,
    journal_table,
    step_lines,
)

# A plan whose steps append their name to ``log`` (one line per real run) and create a marker file
# (their effect, which ``check`` looks for). ``KILL_AT`` names a step that SIGKILLs its own process
# right after doing its work but before the engine records it done.
PLAN = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from etcdguard.steps import Step, StepRunner, Journal

    def plan(work: Path, kill_at: str = "") -> list[Step]:
        def make(name: str) -> Step:
            marker = work / f"{name}.done"
            def run(ctx):
                with (work / "log").open("a") as f:
                    f.write(name + "\\n")
                marker.touch()
                ctx.save(marker=str(marker))
                if name == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                return f"{name} ran"
            def undo(ctx):
                with (work / "undo").open("a") as f:
                    f.write(name + "\\n")
                marker.unlink(missing_ok=True)
                return None
            return Step(name, run, check=lambda ctx: False, undo=undo, params={"n": name})
        return [make(n) for n in ("one", "two", "three", "four")]

    if __name__ == "__main__":
        work, kill_at = Path(sys.argv[1]), sys.argv[2]
        journal_path = work / "journal" / "restore-r1.json"
        journal = (Journal.load(journal_path) if journal_path.exists()
                   else Journal.create(work / "journal", "restore", "r1", {"cluster": "c"}))
        StepRunner(journal).run(plan(work, kill_at))
""")


def _run_plan(work: Path, kill_at: str) -> int:
    script = work / "plan.py"
    script.write_text(PLAN)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, str(script), str(work), kill_at], env=env, timeout=60).returncode


def _plan(work: Path) -> list[Step]:
    namespace: dict[str, object] = {"__name__": "plan"}
    exec(PLAN, namespace)  # the same plan the child ran
    return namespace["plan"](work)  # type: ignore[operator,no-any-return]


@pytest.mark.parametrize("kill_at", ["one", "two", "three", "four"])
def test_sigkill_at_each_step_then_resume_finishes_each_step_once(tmp_path: Path, kill_at: str) -> None:
    assert _run_plan(tmp_path, kill_at) == -signal.SIGKILL
    journal = Journal.load(tmp_path / "journal" / "restore-r1.json")
    states = {r.name: r.state for r in journal.steps}
    names = ["one", "two", "three", "four"]
    cut = names.index(kill_at)
    assert [states[n] for n in names] == (
        [StepState.done] * cut + [StepState.running] + [StepState.pending] * (len(names) - cut - 1))
    assert journal.record(kill_at) is not None and journal.record(kill_at).result["marker"]  # type: ignore[union-attr]

    # resume in another process: done steps are not run again, the cut step runs again (idempotent)
    assert _run_plan(tmp_path, "") == 0
    log = (tmp_path / "log").read_text().split()
    assert log == names[:cut + 1] + names[cut:]
    done = Journal.load(tmp_path / "journal" / "restore-r1.json")
    assert done.outcome is RunOutcome.done
    assert [r.state for r in done.steps] == [StepState.done] * 4
    assert done.params == {"cluster": "c"} and [r.params["n"] for r in done.steps] == names


def test_check_skips_a_step_whose_effect_is_in_place(tmp_path: Path) -> None:
    ran: list[str] = []
    steps = [Step("a", lambda ctx: ran.append("a") or None, check=lambda ctx: True),
             Step("b", lambda ctx: ran.append("b") or "b ran")]
    journal = Journal("restore", "x")
    StepRunner(journal).run(steps)
    assert ran == ["b"]
    assert [(r.state, r.detail) for r in journal.steps] == [(StepState.done, "already done"),
                                                             (StepState.done, "b ran")]


def test_failure_is_recorded_and_resume_continues_there(tmp_path: Path) -> None:
    calls: list[str] = []
    broken = {"b": True}

    def b(ctx: StepContext) -> str:
        calls.append("b")
        if broken["b"]:
            raise ConfigError("disk full")
        return "ok"

    steps = [Step("a", lambda ctx: calls.append("a") or None), Step("b", b),
             Step("c", lambda ctx: calls.append("c") or None)]
    journal = Journal.create(tmp_path / "j", "restore", "f")
    with pytest.raises(ConfigError):
        StepRunner(journal).run(steps)
    saved = json.loads((tmp_path / "j" / "restore-f.json").read_text())
    assert saved["outcome"] == "failed" and saved["failed_step"] == "b" and saved["error"] == "disk full"
    assert [s["state"] for s in saved["steps"]] == ["done", "failed", "pending"]
    broken["b"] = False
    StepRunner(Journal.load(tmp_path / "j" / "restore-f.json")).run(steps)
    assert calls == ["a", "b", "b", "c"]


def test_rollback_undoes_in_reverse_including_the_failed_step(tmp_path: Path) -> None:
    undone: list[str] = []

    def step(name: str, fail: bool = False) -> Step:
        def run(ctx: StepContext) -> None:
            if fail:
                raise RuntimeError("boom")
        return Step(name, run, undo=lambda ctx: undone.append(name) or None)

    steps = [step("stop apiserver"), Step("fetch", lambda ctx: None), step("move data aside"),
             step("restore", fail=True), step("start etcd")]
    journal = Journal.create(tmp_path, "restore", "rb")
    runner = StepRunner(journal)
    with pytest.raises(RuntimeError):
        runner.run(steps)
    runner.rollback(steps)
    assert undone == ["restore", "move data aside", "stop apiserver"]
    states = {r.name: r.state for r in Journal.load(journal.path).steps}  # type: ignore[arg-type]
    assert states == {"stop apiserver": StepState.undone, "fetch": StepState.done,
                      "move data aside": StepState.undone, "restore": StepState.undone,
                      "start etcd": StepState.pending}
    runner.rollback(steps)  # idempotent: nothing left to undo
    assert undone == ["restore", "move data aside", "stop apiserver"]
    assert Journal.load(journal.path).outcome is RunOutcome.rolled_back  # type: ignore[arg-type]


def test_a_loaded_journal_refuses_another_plan(tmp_path: Path) -> None:
    journal = Journal.create(tmp_path, "restore", "p")
    StepRunner(journal).run([Step("a", lambda ctx: None)])
    with pytest.raises(ConfigError, match="another plan"):
        StepRunner(Journal.load(journal.path)).run([Step("b", lambda ctx: None)])  # type: ignore[arg-type]


def test_journal_is_private_and_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "state" / "journal"
    journal = Journal.create(directory, "backup", "b1")
    runner = StepRunner(journal)
    with runner.step("check store", "file:///x") as ctx:
        ctx.note("usable")
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(journal.path.stat().st_mode) == 0o600  # type: ignore[union-attr]
    before = journal.path.read_bytes()  # type: ignore[union-attr]

    def crash(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError), runner.step("select source"):
        pass
    monkeypatch.undo()
    assert journal.path.read_bytes() == before  # type: ignore[union-attr]
    assert sorted(p.name for p in directory.iterdir()) == ["backup-b1.json"]  # no temp file left
    assert Journal.load(journal.path).steps[0].detail == "usable"  # type: ignore[arg-type]


def test_atomic_write_never_shows_a_torn_file(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    atomic_write(target, b"old")
    for i in range(20):
        atomic_write(target, b"x" * (i * 1000))
        assert target.read_bytes() == b"x" * (i * 1000)
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_recorded_steps_repeat_and_render(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []
    runner = StepRunner(Journal("backup", "b2"), on_change=lambda r: seen.append((r.name, r.state.value)))
    for member in ("m0", "m1"):
        with pytest.raises(ValueError) if member == "m0" else _nothing(), runner.step("hashkv", member):
            if member == "m0":
                raise ValueError("m0 [red]down[/]\nsecond line")
    runner.skip("key counts", "none recorded")
    assert seen == [("hashkv", "running"), ("hashkv", "failed"), ("hashkv", "running"), ("hashkv", "done"),
                    ("key counts", "skipped")]
    lines = step_lines(runner.journal.steps)
    assert "FAILED" in lines[0] and "m0 \\[red]down\\[/]" in lines[0] and "second line" not in lines[0]
    assert journal_table(runner.journal).row_count == 3


def test_step_lines_show_terminal_escapes_instead_of_obeying_them() -> None:
    runner = StepRunner(Journal("backup", "b3"))
    with runner.step("select source", "member \x1b[2Jevil\u202e"):
        pass
    line = step_lines(runner.journal.steps)[0]
    assert "\x1b" not in line and "\u202e" not in line
    assert "\\x1b[2Jevil\\u202e" in line


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_lock_refuses_a_second_run_and_dies_with_its_holder(tmp_path: Path) -> None:
    lock_path = tmp_path / "restore.lock"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from pathlib import Path
        from etcdguard.steps import RunLock
        lock = RunLock(Path({str(lock_path)!r}))
        lock.acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=f"pid {holder.pid}"):
            RunLock(lock_path, "a restore").acquire()
    finally:
        holder.kill()
        holder.wait(10)
    with RunLock(lock_path):  # the kernel dropped the dead holder's lock
        assert lock_path.read_text().strip() == str(os.getpid())
