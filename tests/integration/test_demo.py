"""`etcdguard demo`: a newcomer sees the main job work, and the printed commands work."""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

import psutil
import pytest

from tests.integration.snapshot_fixtures import CLI, cli  # noqa: F401 - fixture

pytestmark = pytest.mark.integration


def etcd_processes() -> set[int]:
    return {p.pid for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "etcd" and "demo" in " ".join(p.info["cmdline"] or [])}


def test_demo_backs_up_a_throwaway_etcd_and_prints_working_commands(cli: CLI, tmp_path: Path) -> None:
    before = etcd_processes()
    store = tmp_path / "store"
    keys_dir = tmp_path / "demo-keys"
    result = cli("demo", "--store", str(store), "--keys-dir", str(keys_dir), "--keys", "300")
    assert result.returncode == 0, result.stderr
    assert etcd_processes() <= before, "the throwaway etcd must be gone"
    assert (keys_dir / "identity.age").stat().st_mode & 0o777 == 0o600
    manifests = list(store.glob("demo/*/manifest.json"))
    assert len(manifests) == 1
    assert "300 keys" in result.stdout and "encrypted + signed" in result.stdout

    commands = [line.strip() for line in result.stdout.splitlines() if line.strip().startswith("etcdguard ")]
    assert [c.split()[1] for c in commands] == ["backups", "backups", "backups"]
    for command in commands:
        args = shlex.split(command)[1:]
        args = [str(tmp_path / a) if a == "demo-snapshot.db" else a for a in args]
        run = cli(*args)
        assert run.returncode == 0, (command, run.stderr)
        assert "UNTRUSTED" not in run.stdout + run.stderr, (command, run.stdout)
    assert (tmp_path / "demo-snapshot.db").stat().st_size > 0
    restore = next(line for line in result.stdout.splitlines() if "snapshot restore" in line)
    assert re.search(r"(etcdutl|etcdctl) snapshot restore demo-snapshot.db", restore)


def test_demo_uses_the_embedded_default_store(cli: CLI, tmp_path: Path) -> None:
    result = cli("demo", "--keys", "50", "--keys-dir", str(tmp_path / "keys"))
    assert result.returncode == 0, result.stderr
    match = re.search(r"backup (\S+) written to file://(\S+)/demo/", result.stdout)
    assert match, result.stdout
    backup_id, root = match.group(1), Path(match.group(2))
    expected = Path("/var/lib/etcdguard/backups") if os.geteuid() == 0 else cli.home / "data/etcdguard/backups"
    assert root == expected
    backup_dir = root / "demo" / backup_id
    try:
        assert (backup_dir / "manifest.json").exists()
    finally:
        shutil.rmtree(backup_dir, ignore_errors=True)
