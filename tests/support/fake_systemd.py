"""A stand-in for systemd: a ``systemctl`` script, put first on PATH, that runs units as processes.

:class:`FakeSystemd` writes ``bin/systemctl`` (a Python script with its dirs baked in, since
etcdguard gives its children a minimal environment), reads units from ``units/`` (drop-ins in
``units/NAME.d/*.conf``) and keeps state in ``state/``. Verbs: ``cat``, ``start``, ``stop``,
``is-active``, ``reset-failed``, ``daemon-reload`` and ``show -p NRestarts --value``.

``start`` spawns a supervisor process per unit (it holds ``state/UNIT.lock`` while it runs, so
each ``systemctl`` call, a separate process, can find it) that runs the unit's ``ExecStart`` in
its own process group with the unit's environment only (``Environment=``, then the
``EnvironmentFile=``s; ``$VAR`` and ``${VAR}`` expanded) and restarts it per ``Restart=``
(``always``, ``on-failure``, ``no``) after ``RestartSec=``, counting ``NRestarts``. ``stop`` sends
the supervisor SIGTERM, which stops the service's group (SIGTERM, then SIGKILL) and exits.
Supervisors die with the test process (they watch its pid); services die with their supervisor
(PR_SET_PDEATHSIG). Deliberately simple and independent of etcdguard's own unit parser.
No start rate limits, no Type=notify waits, no user switching.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parents[2]
UNIT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STOP_GRACE = 15.0


def _start_time(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(pid: int, start: str) -> bool:
    return bool(start) and _start_time(pid) == start


# -- reading units (simple on purpose) ---------------------------------------------------------------

def _unit_files(units: Path, unit: str) -> list[Path]:
    main = units / unit
    if not main.is_file():
        return []
    return [main, *sorted((units / f"{unit}.d").glob("*.conf"))]


def _service_values(files: list[Path]) -> dict[str, list[str]]:
    """The ``[Service]`` assignments, list-valued; an empty assignment resets."""
    out: dict[str, list[str]] = {}
    for path in files:
        section = ""
        text = path.read_text().replace("\\\n", " ")
        for line in (ln.strip() for ln in text.splitlines()):
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            key, _, value = line.partition("=")
            if section == "Service":
                out[key.strip()] = [*out.get(key.strip(), []), value.strip()] if value.strip() else []
    return out


def _read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            words = shlex.split(value) if value.strip() else [""]
            env[key.strip()] = " ".join(words)
    return env


def _expand(word: str, env: dict[str, str]) -> list[str]:
    if word.startswith("$") and not word.startswith("${"):
        return shlex.split(env.get(word[1:], ""))
    for name, value in env.items():
        word = word.replace("${" + name + "}", value)
    return [word]


def _specifiers(text: str, unit: str) -> str:
    base = unit.rsplit(".", 1)[0]
    for spec, value in (("%n", unit), ("%N", base), ("%p", base.split("@")[0]), ("%H", socket.gethostname())):
        text = text.replace(spec, value)
    return text.replace("%%", "%")


def _service(units: Path, unit: str) -> tuple[list[str], dict[str, str], str, float, str]:
    """(argv, env, restart policy, restart delay, working dir) of ``unit``."""
    values = {k: [_specifiers(v, unit) for v in vs] for k, vs in _service_values(_unit_files(units, unit)).items()}
    env = {"PATH": UNIT_PATH}
    for assignment in values.get("Environment", []):
        for word in shlex.split(assignment):
            key, _, value = word.partition("=")
            env[key] = value
    for entry in values.get("EnvironmentFile", []):
        path = Path(entry.lstrip("-"))
        if path.is_file() or not entry.startswith("-"):
            env.update(_read_env_file(path))
    argv = [w for word in shlex.split(values["ExecStart"][-1].lstrip("-")) for w in _expand(word, env)]
    delay = values.get("RestartSec", ["0.1"])[-1].rstrip("s")
    return (argv, env, values.get("Restart", ["no"])[-1], float(delay) if delay else 0.1,
            values.get("WorkingDirectory", ["/"])[-1].lstrip("-"))


# -- the supervisor ------------------------------------------------------------------------------

def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def supervise(units: Path, state: Path, unit: str, owner: tuple[int, str]) -> int:
    """Run ``unit`` until ``systemctl stop`` (SIGTERM) or the test process is gone."""
    lock = (state / f"{unit}.lock").open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another supervisor runs it
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    (state / f"{unit}.pid").write_text(str(os.getpid()))
    restarts = state / f"{unit}.nrestarts"
    restarts.write_text("0")  # a manual start resets the counter, as systemd does
    (state / f"{unit}.result").write_text("running")
    result = "stopped"
    with (state / f"{unit}.log").open("ab") as log:
        while True:
            argv, env, policy, delay, cwd = _service(units, unit)
            try:
                proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                        start_new_session=True, preexec_fn=_die_with_parent)
            except OSError as exc:
                log.write(f"fake systemd: cannot run {argv[0]}: {exc}\n".encode())
                code = 203  # systemd's EXIT_EXEC
            else:
                (state / f"{unit}.main").write_text(str(proc.pid))
                while proc.poll() is None and not stopping and _alive(*owner):
                    time.sleep(0.05)
                if proc.poll() is None:
                    _stop_group(proc)
                    break
                code = proc.returncode
            if policy == "no" or (policy == "on-failure" and code == 0):
                result = "failed" if code else "stopped"
                break
            until = time.monotonic() + delay
            while time.monotonic() < until and not stopping and _alive(*owner):
                time.sleep(0.05)
            if stopping or not _alive(*owner):
                break
            restarts.write_text(str(int(restarts.read_text() or 0) + 1))
    (state / f"{unit}.result").write_text(result)
    (state / f"{unit}.pid").unlink(missing_ok=True)
    (state / f"{unit}.main").unlink(missing_ok=True)
    return 0


# -- systemctl -----------------------------------------------------------------------------------

def _running(state: Path, unit: str) -> bool:
    path = state / f"{unit}.lock"
    if not path.exists():
        return False
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


def _wait(check: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def stop_unit(state: Path, unit: str) -> None:
    """SIGTERM the unit's supervisor and wait until it is gone (SIGKILL after the grace time)."""
    if not _running(state, unit):
        return
    with contextlib.suppress(OSError, ValueError):
        os.kill(int((state / f"{unit}.pid").read_text()), signal.SIGTERM)
    if not _wait(lambda: not _running(state, unit), STOP_GRACE + 5):
        for name in (f"{unit}.main", f"{unit}.pid"):
            with contextlib.suppress(OSError, ValueError):
                os.killpg(int((state / name).read_text()), signal.SIGKILL)
        _wait(lambda: not _running(state, unit), 10)


def main(units: Path, state: Path, owner: tuple[int, str], script: str, args: list[str]) -> int:
    """``systemctl`` with the verbs etcdguard uses."""
    words = [a for a in args if a not in ("--no-pager", "--quiet", "-q", "--no-block")]
    if not words:
        print("fake systemctl: no verb", file=sys.stderr)
        return 1
    verb, rest = words[0], words[1:]
    if verb == "--supervise":
        return supervise(units, state, rest[0], owner)
    if verb == "daemon-reload":
        return 0
    unit = rest[-1] if rest else ""
    files = _unit_files(units, unit)
    if verb == "cat":
        if not files:
            print(f"No files found for {unit}.", file=sys.stderr)
            return 1
        print("\n".join(f"# {p}\n{p.read_text()}" for p in files))
        return 0
    if not files:
        print(f"Unit {unit} not found.", file=sys.stderr)
        return 5
    if verb == "start":
        if not _running(state, unit):
            log = (state / f"{unit}.supervisor.log").open("ab")
            subprocess.Popen([sys.executable, script, "--supervise", unit], stdin=subprocess.DEVNULL, stdout=log,
                             stderr=log, start_new_session=True)
            if not _wait(lambda: (state / f"{unit}.pid").exists() and _running(state, unit), 10):
                print(f"Job for {unit} failed.", file=sys.stderr)
                return 1
        return 0
    if verb == "stop":
        stop_unit(state, unit)
        return 0
    if verb == "reset-failed":
        (state / f"{unit}.result").unlink(missing_ok=True)
        return 0
    if verb == "is-active":
        result = (state / f"{unit}.result").read_text() if (state / f"{unit}.result").exists() else ""
        active = "active" if _running(state, unit) else "failed" if result == "failed" else "inactive"
        print(active)
        return 0 if active == "active" else 3
    if verb == "show" and rest[:3] == ["-p", "NRestarts", "--value"]:
        counter = state / f"{unit}.nrestarts"
        print(counter.read_text() if counter.exists() else "0")
        return 0
    print(f"fake systemctl: unsupported: {' '.join(args)}", file=sys.stderr)
    return 1


_SCRIPT = """#!{python}
import sys
sys.path.insert(0, {repo!r})
from pathlib import Path
from tests.support.fake_systemd import main
sys.exit(main(Path({units!r}), Path({state!r}), ({pid}, {start!r}), __file__, sys.argv[1:]))
"""


class FakeSystemd:
    """Units in ``root/units``, a ``systemctl`` in ``root/bin``; :meth:`close` stops every unit."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.units_dir = root / "units"
        self.state_dir = root / "state"
        self.bin_dir = root / "bin"

    def __enter__(self) -> FakeSystemd:
        for d in (self.units_dir, self.state_dir, self.bin_dir):
            d.mkdir(parents=True, exist_ok=True)
        script = self.bin_dir / "systemctl"
        pid = os.getpid()
        script.write_text(_SCRIPT.format(python=sys.executable, repo=str(REPO), units=str(self.units_dir),
                                         state=str(self.state_dir), pid=pid, start=_start_time(pid)))
        script.chmod(0o755)
        return self

    @property
    def path(self) -> str:
        """PATH with the fake ``systemctl`` first."""
        return f"{self.bin_dir}:{os.environ.get('PATH', UNIT_PATH)}"

    def install(self, unit: str, text: str, dropins: dict[str, str] | None = None) -> Path:
        """Write ``units/UNIT`` and its drop-ins (``units/UNIT.d/NAME``)."""
        path = self.units_dir / unit
        path.write_text(text)
        for name, body in (dropins or {}).items():
            (self.units_dir / f"{unit}.d").mkdir(exist_ok=True)
            (self.units_dir / f"{unit}.d" / name).write_text(body)
        return path

    def systemctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run the fake ``systemctl`` as etcdguard does (a separate process)."""
        return subprocess.run([str(self.bin_dir / "systemctl"), *args], capture_output=True, text=True, timeout=60,
                              check=False, env={"PATH": self.path, "LANG": "C.UTF-8"})

    def restarts(self, unit: str) -> int:
        """systemd's NRestarts of ``unit``."""
        return int(self.systemctl("show", "-p", "NRestarts", "--value", unit).stdout.strip() or 0)

    def active(self, unit: str) -> bool:
        """``systemctl is-active`` says active."""
        return self.systemctl("is-active", unit).stdout.strip() == "active"

    def log(self, unit: str) -> str:
        """What the unit's processes wrote (the journal)."""
        path = self.state_dir / f"{unit}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for pidfile in self.state_dir.glob("*.pid"):
            stop_unit(self.state_dir, pidfile.name[: -len(".pid")])

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
