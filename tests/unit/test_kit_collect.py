"""What a kit collects from a kubeadm node: files, host paths, providers, notes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from etcdguard.errors import ConfigError
from etcdguard.kit.collect import CollectOptions, collect, flag_values, host_path
from tests.support.kubeadm import make_kubeadm_node


def test_dot_files_are_skipped_and_kms_is_noted(tmp_path: Path) -> None:
    node = make_kubeadm_node(tmp_path / "h", kms_endpoint="unix:///var/run/kms/socket.sock")
    (node.manifests_dir / ".etcd.yaml.swp").write_text("editor leftovers")
    found = collect(CollectOptions(node.pki_dir, node.manifests_dir))
    paths = {f.path for f in found.entries}
    assert str(node.manifests_dir / ".etcd.yaml.swp") not in paths
    assert any("kms test-kms at unix:///var/run/kms/socket.sock" in n for n in found.notes)
    assert found.sources.encryption_config == str(node.encryption_config)


def test_container_paths_map_to_host_paths_and_referenced_files_are_kept(tmp_path: Path) -> None:
    node = make_kubeadm_node(tmp_path / "h")
    host_enc = tmp_path / "h" / "srv" / "enc"
    host_enc.mkdir(parents=True)
    (host_enc / "key.bin").write_bytes(b"k" * 32)
    (host_enc / "config.yaml").write_text(yaml.safe_dump({
        "apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
        "resources": [{"resources": ["secrets"], "providers": [
            {"custom": {"keyFile": "/etc/enc/key.bin"}}, {"identity": {}}]}]}))
    pod = yaml.safe_load(node.apiserver_manifest.read_text())
    container = pod["spec"]["containers"][0]
    container["command"] = [a for a in container["command"] if not a.startswith("--encryption-provider-config")]
    container["command"] += ["--encryption-provider-config", "/etc/enc/config.yaml"]
    container["volumeMounts"].append({"name": "enc", "mountPath": "/etc/enc", "readOnly": True})
    pod["spec"]["volumes"].append({"name": "enc", "hostPath": {"path": str(host_enc)}})
    node.apiserver_manifest.write_text(yaml.safe_dump(pod))
    assert flag_values(container, "--encryption-provider-config") == ["/etc/enc/config.yaml"]
    assert host_path(pod, container, "/etc/enc/config.yaml") == str(host_enc / "config.yaml")
    roles = {f.path: f.role for f in collect(CollectOptions(node.pki_dir, node.manifests_dir)).entries}
    assert roles[str(host_enc / "config.yaml")] == "encryption-config"
    assert roles[str(host_enc / "key.bin")] == "encryption-key-file"


def test_external_ca_and_missing_encryption_config_are_noted(tmp_path: Path) -> None:
    node = make_kubeadm_node(tmp_path / "h")
    (node.pki_dir / "ca.key").unlink()
    node.encryption_config.unlink()
    found = collect(CollectOptions(node.pki_dir, node.manifests_dir))
    assert any("no key of the cluster CA in" in n and "external CA" in n for n in found.notes)
    assert any("does not exist" in n and "unreadable" in n for n in found.notes)


def test_nothing_to_collect_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nothing to put in a kit"):
        collect(CollectOptions(tmp_path / "pki", tmp_path / "manifests"))
