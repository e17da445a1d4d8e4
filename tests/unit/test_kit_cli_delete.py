"""``kit delete``: explicit removal of old or untrusted kits, never the newest trusted one by accident."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from typer.testing import CliRunner

from etcdguard.backup.keys import generate_keys, load_signing_key
from etcdguard.cli.main import app
from etcdguard.kit.catalog import KitCatalog
from etcdguard.storage.local import LocalStore
from tests.support.kubeadm import make_kubeadm_node
from tests.unit.test_kit_save_restore import request, save_kit


def test_delete_refuses_the_newest_trusted_kit(tmp_path: Path) -> None:
    node = make_kubeadm_node(tmp_path / "host")
    keys, other = generate_keys(tmp_path / "keys"), generate_keys(tmp_path / "other")
    store = LocalStore(tmp_path / "store")
    t0 = datetime.now(timezone.utc)
    old = save_kit(request(node, keys), store, now=lambda: t0 - timedelta(days=2)).manifest
    node.etcd_manifest.write_text(node.etcd_manifest.read_text() + "# changed\n")
    new = save_kit(request(node, keys), store, now=lambda: t0 - timedelta(days=1)).manifest
    forged = save_kit(request(node, other, trusted_keys=[load_signing_key(other.signing_key).public]), store,
                      now=lambda: t0).manifest
    assert old and new and forged
    base = ["kit", "delete", "--store", str(tmp_path / "store"), "--cluster-name", "prod",
            "--signing-pub", str(keys.signing_pub), "--yes"]

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, [*base, *args], env={"COLUMNS": "200"})
        return result.exit_code, result.output

    code, out = run(new.kit_id)
    assert code == 10 and "newest trusted kit" in out
    assert run(forged.kit_id)[0] == 0  # an untrusted kit goes only by this explicit command
    assert run(old.kit_id)[0] == 0
    assert run("no-such-kit")[0] == 8
    assert KitCatalog(store, "prod").kit_ids() == [new.kit_id]
    assert run(new.kit_id, "--force")[0] == 0
    assert KitCatalog(store, "prod").kit_ids() == []
