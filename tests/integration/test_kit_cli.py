"""``etcdguard kit`` end to end: a generated kubeadm node whose etcd runs from its manifest, real
SeaweedFS and local stores, and the real age, zstd and tar CLIs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from etcdguard.backup.keys import GeneratedKeys, generate_keys
from etcdguard.etcd.client import MemberClient, TLSFiles
from etcdguard.kit.model import KIT_MANIFEST_NAME, KIT_OBJECT, kit_prefix, kits_prefix
from tests.integration.snapshot_fixtures import CLI, assert_one_line_error, cli, keys, require_etcd, require_tool
from tests.support.etcd_cluster import installation
from tests.support.kubeadm import KubeadmNode, free_low_ports, make_kubeadm_node, running_etcd
from tests.support.seaweed import SeaweedS3

pytestmark = pytest.mark.integration
__all__ = ["cli", "keys"]  # fixtures
VERSION = "3.5.16"
OWNER = (4242, 4343)  # a non-root owner for some of the kit's files
ROOT = os.geteuid() == 0


@dataclass
class KubeNode:
    """A running kubeadm-shaped node (etcd started from its static pod manifest)."""

    node: KubeadmNode

    def etcd_args(self) -> list[str]:
        cacert, cert, key = self.node.etcd_client_tls
        return ["--endpoints", self.node.etcd_endpoint, "--cacert", str(cacert), "--cert", str(cert),
                "--key", str(key)]

    def kit_args(self) -> list[str]:
        return ["--pki-dir", str(self.node.pki_dir), "--manifests-dir", str(self.node.manifests_dir),
                "--kubeadm-config", str(self.node.kubeadm_config)]


@pytest.fixture(scope="module")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeNode]:
    require_etcd(VERSION)
    install = installation(VERSION)
    assert install is not None
    base = tmp_path_factory.mktemp("kube")
    client, peer, metrics, api = free_low_ports(4)
    node = make_kubeadm_node(base / "host", name="cp1", client_port=client, peer_port=peer, metrics_port=metrics,
                             apiserver_port=api, etcd_command=[str(install.etcd)], days={"etcd/server": 20})
    if ROOT:
        for path in (node.etcd_pki_dir, node.etcd_pki_dir / "ca.crt", node.etcd_pki_dir / "ca.key"):
            os.chown(path, *OWNER)
    with running_etcd(node, base / "etcd.log"):
        yield KubeNode(node)


def save_args(kube: KubeNode, keys: GeneratedKeys, store: str) -> list[str]:
    return ["kit", "save", *kube.kit_args(), *kube.etcd_args(), "--store", store,
            "--recipient", keys.recipient_text, "--signing-key", str(keys.signing_key)]


def s3_env(seaweed: SeaweedS3) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": seaweed.access_key, "AWS_SECRET_ACCESS_KEY": seaweed.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1"}


def cluster_id_of(record: object) -> str | None:
    """The cluster id a (backup manifest) record names, wherever its envelope puts it."""
    if isinstance(record, dict):
        cluster = record.get("cluster")
        if isinstance(cluster, dict) and "cluster_id" in cluster:
            return str(cluster["cluster_id"])
        return next((found for v in record.values() if (found := cluster_id_of(v))), None)
    return None


def kit_files(kit: dict[str, object]) -> list[dict[str, object]]:
    files = kit["files"]
    assert isinstance(files, list)
    return files


def assert_same_tree(kit: dict[str, object], root: Path) -> None:
    """Every file of the kit is under ``root`` with the original's bytes, mode and owner."""
    for entry in kit_files(kit):
        path = str(entry["path"])
        original, restored = Path(path), root / path.lstrip("/")
        a, b = original.stat(), restored.stat()
        assert stat.S_IMODE(a.st_mode) == stat.S_IMODE(b.st_mode), path
        if ROOT:
            assert (a.st_uid, a.st_gid) == (b.st_uid, b.st_gid), path
        if entry["role"] != "directory":
            assert original.read_bytes() == restored.read_bytes(), path


def test_save_to_s3_restore_identical_and_recover_with_standard_tools(
        kube: KubeNode, keys: GeneratedKeys, cli: CLI, s3_bucket: tuple[SeaweedS3, str], tmp_path: Path) -> None:
    age, zstd, tar = require_tool("age"), require_tool("zstd"), require_tool("tar")
    seaweed, bucket = s3_bucket
    store = f"s3://{bucket}/etcd"
    env = s3_env(seaweed)
    args = [*save_args(kube, keys, store), "--s3-endpoint-url", seaweed.endpoint_url]
    first = cli(*args, "-o", "json", env=env)
    assert first.returncode == 0, first.stderr
    saved = json.loads(first.stdout)
    assert saved["saved"] and saved["files"] == 12
    second = cli(*args, "-o", "json", env=env)
    assert second.returncode == 0 and json.loads(second.stdout) == {**saved, "saved": False, "stored_bytes": None}

    listing = cli("kit", "list", "--store", store, "--s3-endpoint-url", seaweed.endpoint_url,
                  "--signing-pub", str(keys.signing_pub), "-o", "json", env=env)
    assert listing.returncode == 0, listing.stderr
    (entry,) = json.loads(listing.stdout)
    assert entry["kit_id"] == saved["kit_id"] and entry["trusted"]
    kit = entry["manifest"]
    cacert, cert, key = kube.node.etcd_client_tls
    with MemberClient(kube.node.etcd_endpoint, tls=TLSFiles(cacert=cacert, cert=cert, key=key)) as client:
        assert kit["cluster_id"] == f"{client.status().cluster_id:x}"  # asked from etcd

    root = tmp_path / "restored"
    restored = cli("kit", "restore", "latest", "--identity", str(keys.identity), "--root", str(root), "--yes",
                   "--store", store, "--s3-endpoint-url", seaweed.endpoint_url,
                   "--signing-pub", str(keys.signing_pub), env=env)
    assert restored.returncode == 0, restored.stderr
    assert "kubeadm init phase certs all" in restored.stdout
    order = [restored.stdout.index(f"kubeadm init phase {p}") for p in
             ("certs all", "kubeconfig all", "control-plane all", "etcd local")]
    assert order == sorted(order)
    assert_same_tree(kit, root)

    # the same object, recovered with age, zstd and tar alone
    obj = tmp_path / KIT_OBJECT
    body = seaweed.client().get_object(Bucket=bucket, Key=f"etcd/{kit_prefix('default', saved['kit_id'])}/"
                                                          f"{KIT_OBJECT}")["Body"].read()
    obj.write_bytes(body)
    plain = tmp_path / "plain"
    plain.mkdir()
    subprocess.run(f"{age} -d -i {keys.identity} {obj} | {zstd} -d | {tar} -x -p --same-owner -C {plain}",
                   shell=True, check=True)
    assert_same_tree(kit, plain)


@pytest.fixture
def local_kit(kube: KubeNode, keys: GeneratedKeys, cli: CLI, tmp_path: Path) -> tuple[Path, str]:
    store = tmp_path / "store"
    result = cli(*save_args(kube, keys, str(store)), "-o", "json")
    assert result.returncode == 0, result.stderr
    return store, json.loads(result.stdout)["kit_id"]


def restore_args(keys: GeneratedKeys, store: Path, root: Path) -> list[str]:
    return ["kit", "restore", "latest", "--identity", str(keys.identity), "--root", str(root), "--yes",
            "--store", str(store), "--signing-pub", str(keys.signing_pub)]


@pytest.mark.parametrize("tamper", ["manifest", "object", "signature"])
def test_a_tampered_kit_is_refused_with_nothing_written(
        kube: KubeNode, keys: GeneratedKeys, cli: CLI, tmp_path: Path, local_kit: tuple[Path, str],
        tamper: str) -> None:
    store, kit_id = local_kit
    prefix = store / kit_prefix("default", kit_id)
    manifest = prefix / KIT_MANIFEST_NAME
    if tamper == "manifest":  # another CA key digest
        data = json.loads(manifest.read_text())
        ca_key = next(f for f in data["record"]["files"] if f["path"].endswith("/pki/ca.key"))
        ca_key["sha256"] = "0" * 64
        manifest.write_text(json.dumps(data))
    elif tamper == "object":
        body = bytearray((prefix / KIT_OBJECT).read_bytes())
        body[-40] ^= 0x01
        (prefix / KIT_OBJECT).write_bytes(bytes(body))
    else:  # signed by a key that is not trusted
        other = generate_keys(tmp_path / "other")
        forged_store = tmp_path / "forged"
        forged = cli(*save_args(kube, other, str(forged_store)), "-o", "json")
        assert forged.returncode == 0, forged.stderr
        forged_id = json.loads(forged.stdout)["kit_id"]
        for name in (KIT_MANIFEST_NAME, KIT_OBJECT):
            source = forged_store / kit_prefix("default", forged_id) / name
            (prefix / name).write_bytes(source.read_bytes().replace(forged_id.encode(), kit_id.encode()))
    root = tmp_path / "root"
    result = cli("kit", "restore", kit_id, *restore_args(keys, store, root)[3:])
    assert_one_line_error(result, 6)
    assert not root.exists()


def test_existing_files_are_moved_aside(kube: KubeNode, keys: GeneratedKeys, cli: CLI, tmp_path: Path,
                                        local_kit: tuple[Path, str]) -> None:
    store, _ = local_kit
    root = tmp_path / "root"
    manifests = root / str(kube.node.manifests_dir).lstrip("/")
    ca_key = root / str(kube.node.pki_dir / "ca.key").lstrip("/")
    manifests.mkdir(parents=True)
    (manifests / "etcd.yaml").write_text("an old etcd manifest\n")
    ca_key.parent.mkdir(parents=True, exist_ok=True)
    ca_key.write_text("an old CA key\n")
    result = cli(*restore_args(keys, store, root))
    assert result.returncode == 0, result.stderr
    assert "moved aside" in result.stdout
    assert (manifests / "etcd.yaml").read_bytes() == kube.node.etcd_manifest.read_bytes()
    assert sorted(p.name for p in manifests.iterdir()) == ["etcd.yaml", "kube-apiserver.yaml"]
    (aside,) = [p for p in manifests.parent.iterdir() if p.name.startswith("manifests.etcdguard-")]
    assert (aside / "etcd.yaml").read_text() == "an old etcd manifest\n"
    (kept,) = ca_key.parent.glob("ca.key.etcdguard-*")
    assert kept.read_text() == "an old CA key\n"
    assert ca_key.read_bytes() == (kube.node.pki_dir / "ca.key").read_bytes()


def test_snapshot_saves_a_kit_beside_it_only_when_changed(kube: KubeNode, keys: GeneratedKeys, cli: CLI,
                                                          tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = {"ETCDGUARD_KIT__ENABLED": "true", "ETCDGUARD_KIT__PKI_DIR": str(kube.node.pki_dir),
           "ETCDGUARD_KIT__MANIFESTS_DIR": str(kube.node.manifests_dir)}
    args = ["snapshot", *kube.etcd_args(), "--store", str(store), "--recipient", keys.recipient_text,
            "--signing-key", str(keys.signing_key), "-o", "json"]
    runs = [cli(*args, env=env) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    infos = [json.loads(r.stdout) for r in runs]
    assert infos[0]["kit"]["saved"] and not infos[1]["kit"]["saved"]
    assert infos[0]["kit"]["kit_id"] == infos[1]["kit"]["kit_id"]
    kits = list((store / kits_prefix("default")).iterdir())
    assert len(kits) == 1
    kit = json.loads((kits[0] / KIT_MANIFEST_NAME).read_text())["record"]
    backup = json.loads((store / "default" / infos[0]["backup_id"] / "manifest.json").read_text())
    assert kit["cluster_id"] == cluster_id_of(backup)
    without = cli(*args)  # kit.enabled unset: no kit
    assert without.returncode == 0 and json.loads(without.stdout)["kit"] is None
    # snapshot retention never touches kits
    prune_env = {"ETCDGUARD_RETENTION__KEEP_LAST": "1", "ETCDGUARD_RETENTION__HOURLY": "0",
                 "ETCDGUARD_RETENTION__DAILY": "0", "ETCDGUARD_RETENTION__WEEKLY": "0",
                 "ETCDGUARD_RETENTION__MONTHLY": "0", "ETCDGUARD_RETENTION__MIN_COUNT": "1"}
    pruned = cli("backups", "prune", "--yes", "--store", str(store),
                 env={**prune_env, "ETCDGUARD_SIGNING_PUBLIC_KEYS": str(keys.signing_pub)})
    assert pruned.returncode == 0, pruned.stderr
    assert len([p for p in (store / "default").iterdir() if p.name != "kits"]) == 1  # 3 backups -> 1
    assert [p.name for p in (store / kits_prefix("default")).iterdir()] == [kits[0].name]
    assert sorted(p.name for p in kits[0].iterdir()) == sorted([KIT_MANIFEST_NAME, KIT_OBJECT])


def test_check_reports_certificate_expiry(kube: KubeNode, cli: CLI, tmp_path: Path) -> None:
    env = {"ETCDGUARD_KIT__PKI_DIR": str(kube.node.pki_dir)}
    metrics = tmp_path / "metrics.prom"
    result = cli("check", *kube.etcd_args(), "--metrics-file", str(metrics), env=env)
    assert result.returncode == 1, result.stdout  # the etcd server certificate lapses in 20 days
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("WARNING certificates:"))
    assert "etcd/server.crt" in line and "20 days left" in line
    assert "etcdguard_certificate_expiry_days{" in metrics.read_text()
    strict = cli("check", *kube.etcd_args(), "-o", "json",
                 env={**env, "ETCDGUARD_MONITOR__CERT_CRITICAL_DAYS": "25"})
    assert strict.returncode == 2
    checks = {c["name"]: c for c in json.loads(strict.stdout)["checks"]}
    assert checks["certificates"]["severity"] == "CRITICAL"


@pytest.mark.slow
def test_serve_saves_a_kit_beside_its_snapshots_and_exports_certificate_expiry(
        kube: KubeNode, keys: GeneratedKeys, tmp_path: Path) -> None:
    from tests.e2e.serve_helpers import Serve, wait_for

    cacert, cert, key = kube.node.etcd_client_tls
    store = tmp_path / "store"
    config = {
        "etcd": {"endpoints": [kube.node.etcd_endpoint], "cacert": str(cacert), "cert": str(cert), "key": str(key)},
        "store": {"type": "local", "path": str(store)},
        "encryption": {"recipients_file": str(keys.recipient)},
        "signing": {"key_file": str(keys.signing_key)},
        "kit": {"enabled": True, "pki_dir": str(kube.node.pki_dir), "manifests_dir": str(kube.node.manifests_dir),
                "kubeadm_config": [str(kube.node.kubeadm_config)]},
        "service": {"snapshot_cron": "*/2 * * * * *", "health_interval_seconds": 1, "lease_ttl_seconds": 3,
                    "verify_after_snapshot": False, "prune_after_snapshot": False},
    }
    serve = Serve(tmp_path, config).start()
    try:
        wait_for(lambda: serve.metric('etcdguard_backups_total{result="success"}') >= 3, 60, "3 backups")
        status, body = serve.get("/api/v1/status")
        assert status == 200 and body["jobs"]["kit"]["runs"] >= 3, body["jobs"]
        assert body["jobs"]["kit"]["last_result"] == "ok"
        kits = list((store / kits_prefix("default")).iterdir())
        assert len(kits) == 1  # saved once, then unchanged
        assert (kits[0] / KIT_MANIFEST_NAME).exists()
        _, text = serve.get("/metrics")
        server = next(ln for ln in text.splitlines()
                      if ln.startswith("etcdguard_certificate_expiry_days{") and "etcd/server.crt" in ln)
        assert 19 < float(server.rsplit(" ", 1)[1]) <= 20
        assert 'etcdguard_check_severity{check="certificates"} 1.0' in text
    finally:
        assert serve.stop() == 0, serve.log()
