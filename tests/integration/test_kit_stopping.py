"""SIGTERM / SIGINT while a kit is saved or restored: nothing partial, nothing secret left behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from etcdguard.backup.keys import GeneratedKeys, generate_keys
from tests.integration.snapshot_fixtures import CLI, cli
from tests.integration.stopping_helpers import Running, assert_interrupted, tree
from tests.support.kubeadm import KubeadmNode, make_kubeadm_node

pytestmark = pytest.mark.integration
__all__ = ["cli"]
SIGNALS = [signal.SIGTERM, signal.SIGINT]
BIG_FILES, BIG_SIZE = 12, 3 << 20  # large static pod files make each phase last long enough to catch


@pytest.fixture(scope="module")
def big_node(tmp_path_factory: pytest.TempPathFactory) -> tuple[KubeadmNode, GeneratedKeys]:
    base = tmp_path_factory.mktemp("kit-stop")
    node = make_kubeadm_node(base / "host")
    for i in range(BIG_FILES):
        (node.manifests_dir / f"big-{i:02d}.json").write_bytes(os.urandom(BIG_SIZE))
    return node, generate_keys(base / "keys")


def save_args(node: KubeadmNode, keys: GeneratedKeys, store: Path) -> list[str]:
    return ["kit", "save", "--pki-dir", str(node.pki_dir), "--manifests-dir", str(node.manifests_dir),
            "--cluster-id", "abc", "--store", str(store), "--recipient", keys.recipient_text,
            "--signing-key", str(keys.signing_key)]


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_kit_save_stopped_mid_write_leaves_no_kit(cli: CLI, big_node: tuple[KubeadmNode, GeneratedKeys],
                                                  tmp_path: Path, sig: int) -> None:
    node, keys = big_node
    store = tmp_path / "store"
    run = Running(cli, save_args(node, keys, store), {}, tmp_path / "run")
    try:
        run.pause_when(lambda: any(p.name.startswith(".partial") for p in store.rglob("*")),
                       "the kit object being written")
        result = run.stop_with(sig)
    finally:
        run.close()
    assert_interrupted(result, sig)
    assert tree(store) == []  # no temp file, no object, no manifest, no empty directory


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_kit_restore_stopped_midway_leaves_whole_files_only(
        cli: CLI, big_node: tuple[KubeadmNode, GeneratedKeys], tmp_path: Path, sig: int) -> None:
    node, keys = big_node
    store = tmp_path / "store"
    saved = cli(*save_args(node, keys, store))
    assert saved.returncode == 0, saved.stderr
    root = tmp_path / "root"
    manifests = root / str(node.manifests_dir).lstrip("/")
    restore = ["kit", "restore", "latest", "--identity", str(keys.identity), "--root", str(root), "--yes",
               "--store", str(store)]

    def midway() -> bool:
        done = [p for p in manifests.glob("big-*.json")] if manifests.is_dir() else []
        return 1 <= len(done) < BIG_FILES

    run = Running(cli, restore, {}, tmp_path / "run")
    try:
        run.pause_when(midway, "the restore half done")
        result = run.stop_with(sig)
    finally:
        run.close()
    assert_interrupted(result, sig)
    written = [p for p in root.rglob("*") if p.is_file()]
    assert not [p for p in written if p.name.startswith(".etcdguard-tmp-")]  # no temp file (with key bytes)
    for path in written:  # every file there is whole
        original = Path("/" + str(path.relative_to(root)))
        assert path.read_bytes() == original.read_bytes(), path
    again = cli(*restore)  # running it again finishes the job
    assert again.returncode == 0, again.stderr
    assert len(list(manifests.glob("big-*.json"))) == BIG_FILES
