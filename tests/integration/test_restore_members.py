"""`etcdguard restore` in the command run mode: a plan for three members, a survivor, --single-member."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from etcdguard.steps import RunLock
from tests.integration.restore_command_nodes import CmdNode, cmd_nodes, make_nodes, node_setups, start_all  # noqa: F401
from tests.integration.restore_fixtures import Setup, keys_with_prefix, wait_serving
from tests.integration.snapshot_fixtures import require_etcd
from tests.support.etcd_cluster import installation

pytestmark = pytest.mark.integration


def test_three_members_fully_lost_restored_from_one_backup_with_a_plan_file(
        tmp_path: Path, cmd_nodes: list[CmdNode]) -> None:
    require_etcd("3.5.16")
    install = installation("3.5.16")
    assert install is not None
    nodes = make_nodes(tmp_path / "nodes", install, 3)
    cmd_nodes.extend(nodes)
    start_all(nodes)
    setups = node_setups(tmp_path, nodes, [n.client_url for n in nodes], "three")
    with nodes[0].client() as c:
        for i in range(20):
            c.put(f"/registry/configmaps/default/cm{i}".encode(), b"v")
    assert setups["m0"].run("snapshot").returncode == 0
    with nodes[0].client() as c:
        c.put(b"/registry/configmaps/default/after-backup", b"lost")
    for n in nodes:  # everything is lost
        n.kill()
        shutil.rmtree(n.data_dir)

    plan_path = tmp_path / "plan.json"
    planned = setups["m0"].run("restore", "--plan-only", "--plan-file", str(plan_path), "--backup", "latest",
                               "-o", "json")
    assert planned.returncode == 0, planned.stderr
    out = json.loads(planned.stdout)
    plan = out["plan"]
    assert [m["name"] for m in plan["members"]] == ["m0", "m1", "m2"]
    assert out["recommendation"]["path"] == "c" and plan["bump_revision"] >= 1_000_000_000
    assert [s["name"] for s in out["steps"]][:2] == ["fetch", "preflight"]
    assert json.loads(plan_path.read_text())["signature"]  # signed: it binds token and initial cluster

    procs = {n.name: setups[n.name].start("restore", "--plan-file", str(plan_path), "--member", n.name, "--yes")
             for n in nodes}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (name, err)
    for n in nodes:
        with wait_serving(n.client_url, None) as c:
            assert len(c.member_list()) == 3
            assert f"{c.status().cluster_id:x}" == plan["new_cluster_id"]
            assert len(keys_with_prefix(c, b"/registry/configmaps/default/cm")) == 20
            assert c.get(b"/registry/configmaps/default/after-backup") is None
            assert c.status().revision >= 1_000_000_000
    # a plan for another cluster is refused before anything runs
    other = node_setups(tmp_path / "other", [nodes[0]], [nodes[0].client_url], "another")["m0"]
    refused = other.run("restore", "--plan-file", str(plan_path), "--member", "m0", "--yes")
    assert refused.returncode != 0 and "not 'another'" in refused.stderr


def test_quorum_lost_with_a_newer_survivor_recovers_the_survivor(tmp_path: Path, cmd_nodes: list[CmdNode]) -> None:
    require_etcd("3.5.16")
    install = installation("3.5.16")
    assert install is not None
    nodes = make_nodes(tmp_path / "nodes", install, 3)
    cmd_nodes.extend(nodes)
    start_all(nodes)
    setups = node_setups(tmp_path, nodes, [n.client_url for n in nodes], "surv")
    with nodes[0].client() as c:
        c.put(b"/registry/pods/default/in-backup", b"v")
    assert setups["m0"].run("snapshot").returncode == 0
    with nodes[0].client() as c:
        for i in range(10):
            c.put(f"/registry/pods/default/newer{i}".encode(), b"only on the members")
    nodes[1].kill()
    nodes[2].kill()

    result = setups["m0"].run("restore", "--yes")
    assert result.returncode == 0, result.stderr
    assert "(b) recover from the surviving member's data" in result.stderr
    assert "revisions newer than the newest" in result.stderr
    # an etcd-only node (no kube-apiserver, no restore.encryption_provider_config) cannot judge keys
    assert "encryption keys: not checked: no kube-apiserver on this node" in result.stderr
    with wait_serving(nodes[0].client_url, None) as c:
        assert [m.name for m in c.member_list()] == ["m0"]
        assert c.get(b"/registry/pods/default/in-backup") == b"v"
        assert len(keys_with_prefix(c, b"/registry/pods/default/newer")) == 10
        assert c.status().revision >= 1_000_000_000
    assert list(nodes[0].base.glob("data.etcdguard-old-*"))
    assert list((nodes[0].base / "state" / "emergency").rglob("manifest.json"))  # saved before any change


def test_three_member_backup_restored_with_single_member_on_a_new_node(tmp_path: Path,
                                                                        cmd_nodes: list[CmdNode]) -> None:
    require_etcd("3.4.23")
    install = installation("3.4.23")
    assert install is not None and install.etcdctl is not None
    old = make_nodes(tmp_path / "old", install, 3)
    cmd_nodes.extend(old)
    start_all(old)
    setups = node_setups(tmp_path, old, [n.client_url for n in old], "grow")
    with old[0].client() as c:
        c.put(b"/registry/services/default/api", b"svc")
    assert setups["m0"].run("snapshot").returncode == 0
    for n in old:
        n.kill()

    new = make_nodes(tmp_path / "new", install, 1, prefix="new")[0]
    cmd_nodes.append(new)
    s = node_setups(tmp_path / "n", [new], [new.client_url], "grow")["new0"]
    s.config.write_text(s.config.read_text().replace(str(tmp_path / "n" / "store"), str(tmp_path / "store")))
    s = Setup(s.config, setups["m0"].keys, s.cli, s.state_dir)
    s.config.write_text(s.config.read_text().replace(str(tmp_path / "n" / "keys"), str(tmp_path / "keys")))
    tool = str(install.etcdctl)
    refused = s.run("restore", "--single-member", "--yes", "--backup", "latest", "--etcdutl", tool)
    assert refused.returncode == 10 and "cannot bump revisions" in refused.stderr, refused.stderr
    assert not new.data_dir.exists()

    result = s.run("restore", "--single-member", "--yes", "--backup", "latest", "--etcdutl", tool,
                   "--no-bump-revision")
    assert result.returncode == 0, result.stderr
    assert "(d) restore this node as a one-member cluster" in result.stderr
    with wait_serving(new.client_url, None) as c:
        assert [m.name for m in c.member_list()] == ["new0"]
        assert c.get(b"/registry/services/default/api") == b"svc"
    assert "restart every controller" in result.stderr


def test_an_old_member_still_answering_is_fenced_off(tmp_path: Path, cmd_nodes: list[CmdNode]) -> None:
    require_etcd("3.5.16")
    install = installation("3.5.16")
    assert install is not None
    nodes = make_nodes(tmp_path / "nodes", install, 3)
    cmd_nodes.extend(nodes)
    start_all(nodes)
    setups = node_setups(tmp_path, nodes, [n.client_url for n in nodes], "fence")
    with nodes[0].client() as c:
        c.put(b"/registry/pods/default/p", b"v")
    assert setups["m0"].run("snapshot").returncode == 0
    nodes[2].kill()
    pid = int(nodes[1].pidfile.read_text())
    os.kill(pid, signal.SIGSTOP)  # m1 hangs: quorum is lost, but its ports are still open
    try:
        db = nodes[0].data_dir / "member" / "snap" / "db"
        refused = setups["m0"].run("restore", "--yes", "--backup", "latest")
        assert refused.returncode == 10, refused.stderr
        assert "fencing" in refused.stderr and "old member m1" in refused.stderr
        assert "ok stop-etcd" not in refused.stderr and db.exists()
        with nodes[0].client() as c:
            c.status()  # m0 was not stopped
    finally:
        os.kill(pid, signal.SIGCONT)
        nodes[1].kill()
    with RunLock(setups["m0"].state_dir / "restore.lock"):  # another restore runs on this node
        locked = setups["m0"].run("restore", "--yes", "--backup", "latest")
    assert locked.returncode == 10 and "another etcdguard restore is in progress" in locked.stderr
    result = setups["m0"].run("restore", "--yes", "--backup", "latest")
    assert result.returncode == 0, result.stderr
    with wait_serving(nodes[0].client_url, None) as c:
        assert [m.name for m in c.member_list()] == ["m0"] and c.get(b"/registry/pods/default/p") == b"v"
