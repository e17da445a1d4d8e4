"""etcdguard snapshot against real etcd 3.4.23 / 3.5.1 / 3.5.16, single and 3-member, TLS."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from etcdguard.backup.keys import GeneratedKeys
from tests.integration.restore_helpers import served_snapshot
from tests.integration.snapshot_fixtures import (
    CLI,
    cli,  # noqa: F401 - fixture
    keys,  # noqa: F401 - fixture
    load_sample,
    require_etcd,
    require_tool,
    snapshot_args,
)
from tests.support.etcd_cluster import etcd_cluster, installation
from tests.support.tls import make_tls_bundle

pytestmark = pytest.mark.integration

VERSIONS = ["3.4.23", "3.5.1", "3.5.16"]


@pytest.mark.parametrize("size", [1, 3])
@pytest.mark.parametrize("version", VERSIONS)
def test_snapshot_download_restore_round_trip(version: str, size: int, tmp_path: Path, cli: CLI,
                                              keys: GeneratedKeys) -> None:
    require_etcd(version)
    tls = make_tls_bundle(tmp_path / "tls") if size == 3 else None
    store = tmp_path / "store"
    with etcd_cluster(tmp_path / "etcd", version, size=size, tls=tls) as cluster:
        with cluster.client(0) as client:
            load_sample(client, 300)
            client.put(b"/plain/key", b"v")
        result = cli(*snapshot_args(cluster, keys, str(store), "-o", "json"))
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
        with cluster.client(0) as client:
            leader_id = client.status().leader
            names = {m.id: m.name for m in client.member_list()}
    assert info["source_member"] == names[leader_id], "the leader is the default source"
    assert info["etcd_version"] == version and info["encrypted"] and info["signed"]
    assert info["keys"] == 301

    manifest = json.loads((store / "default" / info["backup_id"] / "manifest.json").read_text())["record"]
    assert manifest["key_counts"]["by_prefix"]["/registry/pods"] > 0
    assert manifest["stored"]["encryption"] == "age-x25519"

    out = tmp_path / "snapshot.db"
    dl = cli("backups", "download", info["backup_id"], "--store", str(store), "--identity", str(keys.identity),
             "-o", str(out))
    assert dl.returncode == 0, dl.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    install = installation(version)
    assert install is not None
    with served_snapshot(install, out, tmp_path / "restore") as restored:
        total, _ = restored.count(b"\x00", b"\x00")
        assert total == 301
        assert restored.hash_kv(manifest["hashkv"]["revision"]).hash == manifest["hashkv"]["hash"]


def test_member_option_picks_the_source_and_an_unknown_member_is_a_config_error(
        tmp_path: Path, cli: CLI, keys: GeneratedKeys) -> None:
    """--member by name or hex id streams from that follower; a typo is exit 3 and leaves nothing."""
    require_etcd("3.5.16")
    store = tmp_path / "store"
    with etcd_cluster(tmp_path / "etcd", "3.5.16", size=3) as cluster:
        with cluster.client(0) as client:
            load_sample(client, 50)
            leader_id = client.status().leader
            follower = next(m for m in client.member_list() if m.id != leader_id)
        for key in (follower.name, f"{follower.id:x}"):
            result = cli(*snapshot_args(cluster, keys, str(store), "--member", key, "-o", "json"))
            assert result.returncode == 0, result.stderr
            info = json.loads(result.stdout)
            assert info["source_member"] == follower.name and info["sources_tried"] == [follower.name]
        before = sorted(p.relative_to(store) for p in store.rglob("*"))
        typo = cli(*snapshot_args(cluster, keys, str(store), "--member", "no-such-member"))
    assert typo.returncode == 3, typo.stderr
    assert typo.stderr.strip().splitlines()[-1] == "error: no etcd member 'no-such-member' (members: m0, m1, m2)"
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


def test_standard_tools_recover_a_backup_without_etcdguard(tmp_path: Path, cli: CLI, keys: GeneratedKeys) -> None:
    """age -d | zstd -d > snapshot.db, then etcdutl snapshot restore: no etcdguard involved."""
    require_etcd("3.5.16")
    age = require_tool("age")
    zstd = require_tool("zstd")
    store = tmp_path / "store"
    with etcd_cluster(tmp_path / "etcd", "3.5.16") as cluster:
        with cluster.client(0) as client:
            load_sample(client, 500)
        result = cli(*snapshot_args(cluster, keys, f"file://{store}", "-o", "json"))
        assert result.returncode == 0, result.stderr
        info = json.loads(result.stdout)
    obj = store / "default" / info["backup_id"] / "snapshot.db.zst.age"
    snapshot = tmp_path / "snapshot.db"
    pipeline = f"'{age}' -d -i '{keys.identity}' '{obj}' | '{zstd}' -d > '{snapshot}'"
    subprocess.run(["bash", "-o", "pipefail", "-c", pipeline], check=True, timeout=60)
    install = installation("3.5.16")
    assert install is not None and install.etcdutl is not None
    with served_snapshot(install, snapshot, tmp_path / "restore") as restored:
        total, _ = restored.count(b"\x00", b"\x00")
        assert total == info["keys"] == 500
