"""The interactive restore through its prompts (pexpect), the --yes flow on a stopped member with newer
data, and pre-flight refusals (quota, full disk) that change nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
import yaml

from etcdguard.backup.keys import generate_keys
from tests.integration.restore_command_nodes import CmdNode, cmd_nodes, make_nodes, node_setups, start_all  # noqa: F401
from tests.integration.restore_fixtures import Setup, cli_env, wait_serving, write_config
from tests.integration.snapshot_fixtures import CLI, require_etcd
from tests.support.etcd_cluster import installation
from tests.support.kubeadm import make_kubeadm_node
from tests.support.require import missing

pytestmark = pytest.mark.integration


def _with_member(s: Setup, path: Path, **member: object) -> Setup:
    data = yaml.safe_load(s.config.read_text())
    data["restore"]["member"].update(member)
    path.write_text(yaml.safe_dump(data))
    return Setup(path, s.keys, s.cli, s.state_dir)


def _spawn(s: Setup, *args: str) -> pexpect.spawn:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDGUARD_", "AWS_"))}
    env.update({"HOME": str(s.cli.home), "COLUMNS": "200", **s.cli.extra_env})
    exe = shutil.which("etcdguard")
    base = [exe] if exe else [sys.executable, "-m", "etcdguard.cli.main"]
    return pexpect.spawn(base[0], [*base[1:], "--config", str(s.config), *args], env=env, encoding="utf-8",
                         timeout=180)


def test_interactive_then_yes_and_preflight_refusals(tmp_path: Path, cmd_nodes: list[CmdNode]) -> None:
    require_etcd("3.5.16")
    install = installation("3.5.16")
    assert install is not None
    node = make_nodes(tmp_path / "nodes", install, 1)[0]
    cmd_nodes.append(node)
    start_all([node])
    s = node_setups(tmp_path, [node], [node.client_url], "solo")["m0"]
    with node.client() as c:
        c.put(b"/registry/pods/default/in-backup", b"v")
    assert s.run("snapshot").returncode == 0
    with node.client() as c:
        c.put(b"/registry/pods/default/after-backup", b"x")
    node.kill()
    db = node.data_dir / "member" / "snap" / "db"

    def untouched() -> tuple[list[str], bytes]:
        return sorted(p.name for p in node.base.iterdir() if p.name != "state"), db.read_bytes()

    data_before = untouched()

    # pre-flight refusals: nothing is changed
    quota = s.run("--config", str(_with_member(s, tmp_path / "quota.yaml", quota_backend_bytes=4096).config),
                  "restore", "--yes", "--backup", "latest")
    assert quota.returncode == 10 and "db size vs quota" in quota.stderr, quota.stderr
    if os.geteuid() != 0:
        missing("mounting a small tmpfs (a full disk) needs root")
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(small)], check=True)
    try:
        full = _with_member(s, tmp_path / "full.yaml", data_dir=str(small / "etcd"))
        disk = full.run("restore", "--yes", "--backup", "latest")
        assert disk.returncode == 10 and "disk space" in disk.stderr, disk.stderr
    finally:
        subprocess.run(["umount", str(small)], check=False)
    assert untouched() == data_before

    # declined at the prompt: nothing changed
    child = _spawn(s, "restore")
    child.expect(r"backup to restore from .*\[\d{8}T\d{6}Z-[0-9a-f]{6}\]")
    child.sendline("")
    child.expect(r"Run this restore on m0\? Nothing has been changed yet\. \[y/N\]")
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 10
    assert untouched() == data_before

    # accepted: the default backup is restored
    child = _spawn(s, "restore")
    child.expect(r"backup to restore from")
    child.sendline("")
    child.expect(r"\[y/N\]")
    child.sendline("y")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    with wait_serving(node.client_url, None) as c:
        assert c.get(b"/registry/pods/default/in-backup") == b"v"
        assert c.get(b"/registry/pods/default/after-backup") is None
        c.put(b"/registry/pods/default/newer", b"only on disk")

    # --yes on a stopped member whose data dir is newer than the backup: it is recovered, offline
    node.kill()
    result = s.run("restore", "--yes")
    assert result.returncode == 0, result.stderr
    assert "(b) recover from the surviving member's data" in result.stderr and "stopped, db" in result.stderr
    with wait_serving(node.client_url, None) as c:
        assert c.get(b"/registry/pods/default/newer") == b"only on disk"


def test_a_node_without_manifest_and_pki_is_offered_the_matching_kit(tmp_path: Path) -> None:
    keys = generate_keys(tmp_path / "keys")
    node = make_kubeadm_node(tmp_path / "old", client_port=22379, peer_port=22380, metrics_port=22381,
                             apiserver_port=26443)
    empty = tmp_path / "new" / "etc" / "kubernetes" / "manifests"
    empty.mkdir(parents=True)
    config = write_config(tmp_path / "etcdguard.yaml", store=str(tmp_path / "store"), seaweed=None, keys=keys,
                          cluster="kitty", state_dir=tmp_path / "state", restore={"manifests_dir": str(empty)})
    home = tmp_path / "home"
    home.mkdir()
    s = Setup(config, keys, CLI(home, cli_env(None)), tmp_path / "state")
    saved = s.run("kit", "save", "--pki-dir", str(node.pki_dir), "--manifests-dir", str(node.manifests_dir),
                  "--cluster-id", "abc123", "-o", "json")
    assert saved.returncode == 0, saved.stderr
    kit_id = json.loads(saved.stdout)["kit_id"]
    result = s.run("restore", "--yes")
    assert result.returncode == 3, result.stderr
    assert f"etcdguard kit restore {kit_id}" in result.stderr and "no PKI" in result.stderr
