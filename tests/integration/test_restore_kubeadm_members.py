"""`etcdguard restore` of a three-node kubeadm control plane that lost every etcd data dir: one plan file,
each node's part run at once on its node (static pods run by one kubelet stand-in per node)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from etcdguard.backup.keys import generate_keys
from etcdguard.restore.discovery import member_from_manifest
from etcdguard.restore.fencing import port_open
from etcdguard.restore.plan import member_id
from tests.integration.restore_fixtures import (
    Setup,
    cli_env,
    destroy_db,
    keys_with_prefix,
    kubeadm_cluster,
    node_tls,
    wait_serving,
    write_config,
)
from tests.integration.snapshot_fixtures import CLI, require_etcd
from tests.support.seaweed import SeaweedS3

pytestmark = pytest.mark.integration

# the kubelet's CrashLoopBackOff after a few crashes: a member whose db was destroyed does not come
# back up while the restore runs (each node stops its own etcd; the others' would trip the fencing)
CRASH_BACKOFF = 30.0


def test_three_kubeadm_nodes_fully_lost_restored_with_a_plan_file(tmp_path: Path,
                                                                   s3_bucket: tuple[SeaweedS3, str]) -> None:
    require_etcd("3.5.16")
    seaweed, bucket = s3_bucket
    with kubeadm_cluster(tmp_path / "nodes", 3, backoff=CRASH_BACKOFF) as members:
        nodes = [n for n, _ in members]
        keys = generate_keys(tmp_path / "keys")
        home = tmp_path / "home"
        home.mkdir()
        setups: dict[str, Setup] = {}
        for n in nodes:
            ca, cert, key = n.etcd_client_tls
            config = write_config(n.root / "etcdguard.yaml", store=bucket, seaweed=seaweed, keys=keys, cluster="ha",
                                  state_dir=n.root / "state",
                                  etcd={"endpoints": [m.etcd_endpoint for m in nodes], "cacert": str(ca),
                                        "cert": str(cert), "key": str(key)},
                                  restore={"manifests_dir": str(n.manifests_dir)})
            setups[n.name] = Setup(config, keys, CLI(home, cli_env(seaweed)), n.root / "state")
        with wait_serving(nodes[0].etcd_endpoint, node_tls(nodes[0])) as c:
            for i in range(20):
                c.put(f"/registry/configmaps/default/cm{i}".encode(), b"v")
            before_rev = c.status().revision
        assert setups["cp1"].run("snapshot").returncode == 0
        with wait_serving(nodes[0].etcd_endpoint, node_tls(nodes[0])) as c:
            c.put(b"/registry/configmaps/default/after-backup", b"lost")
        for node, kubelet in members:  # every member's data is destroyed
            destroy_db(node, kubelet, tmp_path / f"{node.name}-etcd.yaml")

        # kubeadm wrote the full member list only into the last joined node's etcd.yaml, but the
        # signed backup manifest names every voting member: the plan can be made on the first node
        plan_path = tmp_path / "plan.json"
        planned = setups["cp1"].run("restore", "--plan-only", "--plan-file", str(plan_path), "--backup", "latest",
                                    "-o", "json")
        assert planned.returncode == 0, planned.stderr
        plan = json.loads(planned.stdout)["plan"]
        assert sorted(m["name"] for m in plan["members"]) == ["cp1", "cp2", "cp3"] and plan["bump_revision"] > 0

        procs = {n.name: setups[n.name].start("restore", "--plan-file", str(plan_path), "--member", n.name, "--yes")
                 for n in nodes}
        for name, proc in procs.items():
            _, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, (name, err)

        for node, kubelet in members:
            with wait_serving(node.etcd_endpoint, node_tls(node)) as c:
                listed = c.member_list()
                status = c.status()
                assert f"{status.cluster_id:x}" == plan["new_cluster_id"]
                # every member was restored with the plan's one new token: its id is derived from it
                assert sorted(m.name for m in listed) == ["cp1", "cp2", "cp3"]
                assert all(m.id == member_id(list(m.peer_urls), plan["token"]) for m in listed)
                assert len(keys_with_prefix(c, b"/registry/configmaps/default/cm")) == 20
                assert c.get(b"/registry/configmaps/default/after-backup") is None
                assert status.revision >= before_rev + plan["bump_revision"]
            (old,) = (node.root / "var" / "lib").glob("etcd.etcdguard-old-*")
            assert (old / "member" / "snap" / "db").read_bytes() == b"\0" * 4096
            assert sorted(p.name for p in node.manifests_dir.iterdir()) == ["etcd.yaml", "kube-apiserver.yaml"]
            assert member_from_manifest(node.etcd_manifest).initial_cluster == plan["initial_cluster"]
            assert kubelet.running("kube-apiserver.yaml") and port_open("127.0.0.1", node.apiserver_port)
