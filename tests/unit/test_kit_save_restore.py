"""Kit save and restore on a generated kubeadm node, with the local store (real files, real crypto)."""

from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from etcdguard.backup.keys import GeneratedKeys, generate_keys, load_identities, load_signing_key, parse_recipients
from etcdguard.errors import BackupNotFoundError, IntegrityError
from etcdguard.kit.catalog import KitCatalog, matching_kit
from etcdguard.kit.collect import CollectOptions
from etcdguard.kit.model import KIT_MANIFEST_NAME, kit_prefix
from etcdguard.kit.restore import apply_restore, kubeadm_commands, plan_restore
from etcdguard.kit.save import KitRequest, KitSaveResult, save_kit
from etcdguard.storage.local import LocalStore
from tests.support.kubeadm import KubeadmNode, make_kubeadm_node

CLUSTER = "prod"
OWNER = (4242, 4343)  # a non-root owner (etcd's data owner on many hosts)


@pytest.fixture
def keys(tmp_path: Path) -> GeneratedKeys:
    return generate_keys(tmp_path / "keys")


@pytest.fixture
def node(tmp_path: Path) -> KubeadmNode:
    n = make_kubeadm_node(tmp_path / "host", name="cp1")
    if os.geteuid() == 0:
        for path in (n.etcd_pki_dir / "ca.key", n.etcd_pki_dir / "ca.crt", n.etcd_pki_dir):
            os.chown(path, *OWNER)
    return n


def request(node: KubeadmNode, keys: GeneratedKeys, **kw: object) -> KitRequest:
    base: dict[str, object] = dict(
        cluster_name=CLUSTER, cluster_id="c0ffee",
        collect=CollectOptions(node.pki_dir, node.manifests_dir, [node.kubeadm_config]),
        recipients=parse_recipients([keys.recipient_text]), recipient_texts=[keys.recipient_text],
        signing_key=load_signing_key(keys.signing_key), trusted_keys=[load_signing_key(keys.signing_key).public])
    base.update(kw)
    return KitRequest(**base)  # type: ignore[arg-type]


def save(node: KubeadmNode, keys: GeneratedKeys, store: LocalStore, **kw: object) -> KitSaveResult:
    return save_kit(request(node, keys, **kw), store)


def tree(root: Path) -> dict[str, tuple[bytes | None, int, int, int]]:
    """Every path under ``root`` -> (bytes, mode, uid, gid)."""
    out: dict[str, tuple[bytes | None, int, int, int]] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        body = path.read_bytes() if stat.S_ISREG(st.st_mode) else None
        out[str(path.relative_to(root))] = (body, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


def test_kit_holds_what_a_rebuilt_node_needs(node: KubeadmNode, keys: GeneratedKeys, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    result = save(node, keys, store)
    assert result.saved and result.manifest is not None
    files = {f.path: f for f in result.manifest.files}
    for rel in ("ca.crt", "ca.key", "front-proxy-ca.crt", "front-proxy-ca.key", "etcd/ca.crt", "etcd/ca.key",
                "sa.key", "sa.pub"):
        assert str(node.pki_dir / rel) in files, rel
    assert files[str(node.encryption_config)].role == "encryption-config"
    assert files[str(node.etcd_manifest)].role == "static-pod-manifest"
    assert files[str(node.apiserver_manifest)].role == "static-pod-manifest"
    assert files[str(node.kubeadm_config)].role == "kubeadm-config"
    assert str(node.etcd_pki_dir / "server.key") not in files  # leaf certificates are regenerated
    leaves = {c.path: c for c in result.manifest.certificates}
    server = leaves[str(node.etcd_pki_dir / "server.crt")]
    assert not server.in_kit and not server.is_ca
    assert server.not_after == node.certs["etcd/server"].not_after
    assert leaves[str(node.pki_dir / "ca.crt")].in_kit
    if os.geteuid() == 0:
        assert (files[str(node.etcd_pki_dir / "ca.key")].uid, files[str(node.etcd_pki_dir / "ca.key")].gid) == OWNER
    # the secret never appears in the manifest
    raw = store.get_bytes(f"{kit_prefix(CLUSTER, result.manifest.kit_id)}/{KIT_MANIFEST_NAME}")
    assert node.encryption_secret.encode() not in raw
    assert (node.etcd_pki_dir / "ca.key").read_bytes() not in store.get_bytes(
        f"{kit_prefix(CLUSTER, result.manifest.kit_id)}/kit.tar.zst.age")


def test_unchanged_content_saves_no_new_kit(node: KubeadmNode, keys: GeneratedKeys, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    first = save(node, keys, store)
    second = save(node, keys, store)
    assert first.saved and not second.saved
    assert second.baseline is not None and first.manifest is not None
    assert second.baseline.kit_id == first.manifest.kit_id
    assert len(KitCatalog(store, CLUSTER).kit_ids()) == 1
    node.etcd_manifest.write_text(node.etcd_manifest.read_text() + "# edited\n")
    third = save_kit(request(node, keys), store, now=lambda: datetime.now(timezone.utc) + timedelta(minutes=1))
    assert third.saved and len(KitCatalog(store, CLUSTER).kit_ids()) == 2


def test_an_untrusted_newest_kit_is_no_baseline(node: KubeadmNode, keys: GeneratedKeys, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    save(node, keys, store)
    other = generate_keys(tmp_path / "other")
    later = datetime.now(timezone.utc) + timedelta(minutes=5)
    forged = save_kit(request(node, other, trusted_keys=[load_signing_key(other.signing_key).public]), store,
                      now=lambda: later)
    assert forged.saved
    catalog = KitCatalog(store, CLUSTER)
    trusted = [load_signing_key(keys.signing_key).public]
    assert [e.trusted for e in catalog.entries(trusted)] == [False, True]
    assert forged.manifest is not None and catalog.resolve("latest", trusted) != forged.manifest.kit_id
    again = save(node, keys, store)
    assert not again.saved  # same content as the newest *trusted* kit


def test_restore_into_an_empty_root_is_identical(node: KubeadmNode, keys: GeneratedKeys, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    manifest = save(node, keys, store).manifest
    assert manifest is not None
    catalog = KitCatalog(store, CLUSTER)
    opened = catalog.open(manifest.kit_id, [load_signing_key(keys.signing_key).public])
    data = catalog.fetch(opened, load_identities(keys.identity))
    root = tmp_path / "newroot"
    plan = plan_restore(opened, data, root)
    assert plan.count("create") == len(manifest.files)
    apply_restore(plan)
    for entry in manifest.files:
        original, restored = Path(entry.path), root / entry.path.lstrip("/")
        a, b = original.stat(), restored.stat()
        assert stat.S_IMODE(a.st_mode) == stat.S_IMODE(b.st_mode), entry.path
        assert (a.st_uid, a.st_gid) == (b.st_uid, b.st_gid) or os.geteuid() != 0, entry.path
        if not entry.is_dir:
            assert original.read_bytes() == restored.read_bytes()
    assert stat.S_IMODE((root / str(node.pki_dir / "sa.key").lstrip("/")).stat().st_mode) == 0o600
    if os.geteuid() == 0:
        assert (root / str(node.etcd_pki_dir / "ca.key").lstrip("/")).stat().st_uid == OWNER[0]
    leftovers = [p for p in root.rglob(".etcdguard-tmp-*")]
    assert not leftovers
    # a second restore changes nothing
    again = plan_restore(opened, data, root)
    assert again.count("unchanged") == len(manifest.files)
    commands = [c for c, _ in kubeadm_commands(opened, root)]
    assert [c.split(" --")[0] for c in commands] == [
        "kubeadm init phase certs all", "kubeadm init phase kubeconfig all",
        "kubeadm init phase control-plane all", "kubeadm init phase etcd local"]
    assert all(f"--config {node.kubeadm_config} --rootfs {root}" in c for c in commands)


def test_existing_files_are_moved_aside_never_into_the_manifests_dir(
        node: KubeadmNode, keys: GeneratedKeys, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    manifest = save(node, keys, store).manifest
    assert manifest is not None
    catalog = KitCatalog(store, CLUSTER)
    data = catalog.fetch(manifest, load_identities(keys.identity))
    root = tmp_path / "newroot"
    etcd_yaml = root / str(node.etcd_manifest).lstrip("/")
    ca_key = root / str(node.pki_dir / "ca.key").lstrip("/")
    etcd_yaml.parent.mkdir(parents=True)
    etcd_yaml.write_text("a different etcd manifest\n")
    ca_key.parent.mkdir(parents=True, exist_ok=True)
    ca_key.write_text("another CA key\n")
    apply_restore(plan_restore(manifest, data, root))
    assert etcd_yaml.read_bytes() == node.etcd_manifest.read_bytes()
    assert ca_key.read_bytes() == (node.pki_dir / "ca.key").read_bytes()
    manifests = etcd_yaml.parent
    assert sorted(p.name for p in manifests.iterdir()) == ["etcd.yaml", "kube-apiserver.yaml"]
    aside = [p for p in manifests.parent.iterdir() if p.name.startswith("manifests.etcdguard-")]
    assert len(aside) == 1 and (aside[0] / "etcd.yaml").read_text() == "a different etcd manifest\n"
    kept = list(ca_key.parent.glob("ca.key.etcdguard-*"))
    assert len(kept) == 1 and kept[0].read_text() == "another CA key\n"


@pytest.mark.parametrize("target", ["manifest", "object", "signature"])
def test_a_tampered_kit_is_refused_before_anything_is_written(
        node: KubeadmNode, keys: GeneratedKeys, tmp_path: Path, target: str) -> None:
    store = LocalStore(tmp_path / "store")
    manifest = save(node, keys, store).manifest
    assert manifest is not None
    prefix = kit_prefix(CLUSTER, manifest.kit_id)
    trusted = [load_signing_key(keys.signing_key).public]
    if target == "manifest":
        raw = store.get_bytes(f"{prefix}/{KIT_MANIFEST_NAME}").replace(b'"mode": 384', b'"mode": 420', 1)
        store.put_bytes(f"{prefix}/{KIT_MANIFEST_NAME}", raw)
    elif target == "signature":
        raw = store.get_bytes(f"{prefix}/{KIT_MANIFEST_NAME}")
        other = generate_keys(tmp_path / "other")
        forged = save(node, other, LocalStore(tmp_path / "elsewhere"))
        assert forged.manifest is not None
        raw_forged = LocalStore(tmp_path / "elsewhere").get_bytes(
            f"{kit_prefix(CLUSTER, forged.manifest.kit_id)}/{KIT_MANIFEST_NAME}")
        store.put_bytes(f"{prefix}/{KIT_MANIFEST_NAME}", raw_forged.replace(
            forged.manifest.kit_id.encode(), manifest.kit_id.encode()))
    else:
        key = f"{prefix}/kit.tar.zst.age"
        body = bytearray(store.get_bytes(key))
        body[len(body) // 2] ^= 1
        store.put_bytes(key, bytes(body))
    root = tmp_path / "newroot"
    catalog = KitCatalog(store, CLUSTER)
    with pytest.raises(IntegrityError):
        opened = catalog.open(manifest.kit_id, trusted)
        catalog.fetch(opened, load_identities(keys.identity))
    assert not root.exists()
    if target != "object":  # a kit whose manifest does not verify is never "latest"
        with pytest.raises(BackupNotFoundError):
            catalog.resolve("latest", trusted)


def test_matching_kit_is_the_one_in_effect(node: KubeadmNode, keys: GeneratedKeys, tmp_path: Path) -> None:
    import datetime as dt

    store = LocalStore(tmp_path / "store")
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    first = save_kit(request(node, keys), store, now=lambda: t0)
    node.etcd_manifest.write_text(node.etcd_manifest.read_text() + "# changed\n")
    second = save_kit(request(node, keys), store, now=lambda: t0 + dt.timedelta(days=10))
    assert first.manifest is not None and second.manifest is not None
    trusted = [load_signing_key(keys.signing_key).public]
    at = matching_kit(store, CLUSTER, t0 + dt.timedelta(days=5), trusted)
    assert at is not None and at.entry.kit_id == first.manifest.kit_id
    later = matching_kit(store, CLUSTER, t0 + dt.timedelta(days=11), trusted)
    assert later is not None and later.entry.kit_id == second.manifest.kit_id
    before = matching_kit(store, CLUSTER, t0 - dt.timedelta(days=1), trusted)
    assert before is not None and before.entry.kit_id == first.manifest.kit_id
    assert matching_kit(store, CLUSTER, t0, trusted, cluster_id="other") is None
    assert matching_kit(store, "other-cluster", t0, trusted) is None


def test_a_kit_manifest_replayed_under_another_id_or_cluster_is_refused(
        node: KubeadmNode, keys: GeneratedKeys, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    manifest = save(node, keys, store).manifest
    assert manifest is not None
    raw = store.get_bytes(f"{kit_prefix(CLUSTER, manifest.kit_id)}/{KIT_MANIFEST_NAME}")
    trusted = [load_signing_key(keys.signing_key).public]
    other_id = "20200101T000000Z-abcdef"
    store.put_bytes(f"{kit_prefix(CLUSTER, other_id)}/{KIT_MANIFEST_NAME}", raw)
    store.put_bytes(f"{kit_prefix('staging', manifest.kit_id)}/{KIT_MANIFEST_NAME}", raw)
    with pytest.raises(IntegrityError, match="belongs to"):
        KitCatalog(store, CLUSTER).open(other_id, trusted)
    with pytest.raises(IntegrityError, match="belongs to"):
        KitCatalog(store, "staging").open(manifest.kit_id, trusted)
    entries = {e.kit_id: e for e in KitCatalog(store, CLUSTER).entries(trusted)}
    assert entries[manifest.kit_id].trusted and not entries[other_id].trusted
    # a backup manifest is no kit manifest, even when signed by the same key
    from etcdguard.backup.signed import MANIFEST, Subject, seal_record

    backup_record = seal_record(MANIFEST, Subject(cluster=CLUSTER, cluster_id="c0ffee", id=other_id),
                                manifest, load_signing_key(keys.signing_key))
    store.put_bytes(f"{kit_prefix(CLUSTER, other_id)}/{KIT_MANIFEST_NAME}", backup_record)
    with pytest.raises(IntegrityError, match="not a kit manifest"):
        KitCatalog(store, CLUSTER).open(other_id, trusted)


def test_plan_kit_restore_needs_the_identity_and_sweeps_a_killed_restores_leftovers(
        node: KubeadmNode, keys: GeneratedKeys, tmp_path: Path) -> None:
    from etcdguard.errors import ConfigError
    from etcdguard.kit.restore import plan_kit_restore

    store = LocalStore(tmp_path / "store")
    save(node, keys, store)
    catalog = KitCatalog(store, CLUSTER)
    trusted = [load_signing_key(keys.signing_key).public]
    root = tmp_path / "root"
    with pytest.raises(ConfigError, match="--identity"):
        plan_kit_restore(catalog, "latest", trusted, [], root)
    pki = root / str(node.pki_dir).lstrip("/")
    pki.mkdir(parents=True)
    stale, fresh = pki / ".etcdguard-tmp-0123456789ab", pki / ".etcdguard-tmp-ba9876543210"
    stale.write_bytes(b"a CA key a killed restore left")
    fresh.write_bytes(b"another restore's file being written")
    os.utime(stale, (1, 1))
    plan = plan_kit_restore(catalog, "latest", trusted, load_identities(keys.identity), root)
    apply_restore(plan)
    assert not stale.exists() and fresh.exists()
