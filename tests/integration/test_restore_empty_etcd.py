"""A new etcd that an apiserver already wrote to is still recognised as empty, against a real etcd.

After a kit restore the kubelet starts etcd on an empty data dir and kube-apiserver writes to it at
once: its revision is above 1. With the newest backup from another cluster (another cluster id,
far more revisions) ``etcdguard restore`` calls it a new, empty etcd and recommends restoring into
it; once a backup of that very etcd is the newest, it is the live cluster: refused with exit 10.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from etcdguard.backup.keys import generate_keys
from etcdguard.etcd.client import MemberClient
from tests.integration.restore_fixtures import Setup, cli_env, kubeadm_node, node_tls, wait_serving, write_config
from tests.integration.snapshot_fixtures import CLI, require_etcd
from tests.support.etcd_cluster import etcd_cluster

pytestmark = pytest.mark.integration

WRITTEN_KEYS = 50


def _apiserver_writes(c: MemberClient) -> None:
    """What a fresh kube-apiserver does first: bootstrap objects, then renew its identity lease."""
    kinds = ["namespaces", "clusterroles", "clusterrolebindings", "priorityclasses", "flowschemas"]
    for i in range(WRITTEN_KEYS - 1):
        c.put(f"/registry/{kinds[i % len(kinds)]}/obj{i}".encode(), b"k8s\x00" + bytes(40))
    for renewal in range(12):
        c.put(b"/registry/leases/kube-system/apiserver-abc", b"renew %d" % renewal)


def test_a_new_etcd_an_apiserver_wrote_to_is_empty_unless_the_backup_came_from_it(tmp_path: Path) -> None:
    require_etcd("3.5.16")
    keys = generate_keys(tmp_path / "keys")
    home = tmp_path / "home"
    home.mkdir()
    store = str(tmp_path / "store")
    # the newest backup comes from the old cluster: same name, its own cluster id, 1,500 revisions
    with etcd_cluster(tmp_path / "old", "3.5.16") as old, old.client() as c:
        for i in range(1_500):
            c.put(f"/registry/configmaps/default/cm{i % 100}".encode(), b"v%d" % i)
        old_config = write_config(tmp_path / "old.yaml", store=store, seaweed=None, keys=keys, cluster="cp",
                                  state_dir=tmp_path / "state-old", etcd={"endpoints": old.endpoints})
        old_setup = Setup(old_config, keys, CLI(home, cli_env(None)), tmp_path / "state-old")
        backed_up = old_setup.run("snapshot")
        assert backed_up.returncode == 0, backed_up.stderr
        old_cluster_id = c.status().cluster_id

    with kubeadm_node(tmp_path / "node") as (node, _kubelet):
        tls = node_tls(node)
        with wait_serving(node.etcd_endpoint, tls) as c:
            _apiserver_writes(c)
            status = c.status()
        assert status.cluster_id != old_cluster_id and status.revision == WRITTEN_KEYS + 12
        ca, cert, key = node.etcd_client_tls
        config = write_config(tmp_path / "etcdguard.yaml", store=store, seaweed=None, keys=keys, cluster="cp",
                              state_dir=tmp_path / "state",
                              etcd={"endpoints": [node.etcd_endpoint], "cacert": str(ca), "cert": str(cert),
                                    "key": str(key)},
                              restore={"manifests_dir": str(node.manifests_dir)})
        s = Setup(config, keys, CLI(home, cli_env(None)), tmp_path / "state")

        planned = s.run("restore", "--plan-only", "-o", "json")
        assert planned.returncode == 0, planned.stderr
        out = json.loads(planned.stdout)
        diagnosis, check = out["diagnosis"], out["diagnosis"]["empty_check"]
        assert diagnosis["empty_cluster"] is True and diagnosis["key_count"] == WRITTEN_KEYS
        assert check["revision"] == status.revision and check["cluster_id"] == f"{status.cluster_id:x}"
        assert check["backup_cluster_id"] == f"{old_cluster_id:x}" and check["backup_revision"] > 1_500
        assert out["recommendation"]["path"] == "c" and "a new, empty etcd" in out["recommendation"]["reason"]
        assert out["plan"]["source"]["kind"] == "backup" and out["steps"]

        text = s.run("restore", "--plan-only")
        assert text.returncode == 0, text.stderr
        said = " ".join(text.stderr.split())
        assert (f"empty etcd yes: etcd answers but holds {WRITTEN_KEYS} keys at revision {status.revision}, "
                f"cluster id {f'{status.cluster_id:x}'[:4]}… differs from the backup's "
                f"{f'{old_cluster_id:x}'[:4]}…: a new, empty etcd") in said
        assert "(c) restore from the backup" in said

        # a backup of this very etcd is now the newest: it is the live cluster, restoring is refused
        own = s.run("snapshot")
        assert own.returncode == 0, own.stderr
        refused = s.run("restore", "--plan-only")
        assert refused.returncode == 10, refused.stderr
        said = " ".join(refused.stderr.split())
        assert "empty etcd no:" in said and "the cluster the backup came from" in said
        assert "refusing to restore: the cluster has quorum" in said
        with wait_serving(node.etcd_endpoint, tls) as c:
            assert c.count(b"\0", b"\0")[0] == WRITTEN_KEYS  # nothing was changed
