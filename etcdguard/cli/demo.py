"""``etcdguard demo``: see the main job work without an etcd of your own."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from etcdguard.backup.keys import IDENTITY_FILE, RECIPIENT_FILE, SIGNING_KEY_FILE, SIGNING_PUB_FILE, generate_keys
from etcdguard.backup.pipeline import request_from_settings, take_backup
from etcdguard.cli.common import exit_codes_epilog, handle_errors, state, stderr, stdout
from etcdguard.cli.render import human_bytes
from etcdguard.config import default_local_store_path, load_settings
from etcdguard.etcd.binaries import pick_installation
from etcdguard.etcd.client import MemberClient
from etcdguard.etcd.local import LocalEtcd
from etcdguard.etcd.tools import SnapshotTool
from etcdguard.sample_data import items
from etcdguard.storage import open_store
from etcdguard.storage.base import BlobStore

DEMO_CLUSTER = "demo"


def _default_keys_dir() -> Path:
    return default_local_store_path().parent / "demo-keys"


def demo(
    ctx: typer.Context,
    keys_dir: Annotated[Path | None, typer.Option("--keys-dir", help="Where the demo keys live "
                                                  "(created if missing).")] = None,
    store: Annotated[str | None, typer.Option("--store", help="Store URL (default: the embedded local store).")] = None,
    keys: Annotated[int, typer.Option("--keys", help="How many sample Kubernetes objects to load.")] = 2000,
) -> None:
    """Start a throwaway local etcd, load sample Kubernetes data, and back it up.

    The backup is encrypted and signed into the embedded local store (or --store); the keys
    and the backup stay, the throwaway etcd is removed. Then it prints the commands to list,
    download and restore the backup.
    """
    quiet = state(ctx).quiet
    keys_dir = keys_dir or _default_keys_dir()
    with handle_errors():
        if not (keys_dir / IDENTITY_FILE).exists():
            generate_keys(keys_dir)
            stderr.print(f"generated demo keys in {keys_dir}")
        install, _ = pick_installation(None)
        workdir = Path(tempfile.mkdtemp(prefix="etcdguard-demo-"))
        try:
            etcd = LocalEtcd(install, workdir / "data", name="demo", log_path=workdir / "etcd.log")
            with etcd:
                if not quiet:
                    stderr.print(f"started throwaway etcd {install.version} at {etcd.endpoint} "
                                 f"(binaries: {install.directory})")
                with MemberClient(etcd.endpoint, timeout=10) as client:
                    for key, value in items(keys, value_size=700):
                        client.put(key, value)
                if not quiet:
                    stderr.print(f"loaded {keys} Kubernetes-like objects (pods, secrets, events, CRs ...)")
                overrides = {
                    "etcd.endpoints": etcd.endpoint,
                    "store": store,
                    "backup.cluster_name": DEMO_CLUSTER,
                    "encryption.recipients_file": keys_dir / RECIPIENT_FILE,
                    "signing.key_file": keys_dir / SIGNING_KEY_FILE,
                }
                settings = load_settings(None, overrides, environ={})
                blob_store: BlobStore = open_store(settings.store_or_default()[0])
                result = take_backup(request_from_settings(settings), blob_store)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    m = result.manifest
    store_arg = f" --store {store}" if store else ""
    trusted_arg = f" --signing-pub {keys_dir / SIGNING_PUB_FILE}"
    stdout.print(f"[bold green]backup {m.backup_id}[/] written to {blob_store.url}/{DEMO_CLUSTER}/")
    stdout.print(f"  revision {m.hashkv.revision}, {m.key_counts.total if m.key_counts else '?'} keys, "
                 f"{human_bytes(m.snapshot.size)} snapshot -> {human_bytes(m.stored.size)} "
                 f"encrypted + signed")
    stdout.print("the throwaway etcd is gone; the backup and the keys stay. Next:")
    stdout.print(f"  etcdguard backups list --cluster-name {DEMO_CLUSTER}{store_arg}{trusted_arg}")
    stdout.print(f"  etcdguard backups show {m.backup_id} --cluster-name {DEMO_CLUSTER}{store_arg}{trusted_arg}")
    stdout.print(f"  etcdguard backups download {m.backup_id} --cluster-name {DEMO_CLUSTER}{store_arg} "
                 f"--identity {keys_dir / IDENTITY_FILE} -o demo-snapshot.db")
    tool = SnapshotTool.of(install)
    restore = f"{'' if tool.is_etcdutl else 'ETCDCTL_API=3 '}{tool.path} snapshot restore"
    stdout.print(f"  {restore} demo-snapshot.db --data-dir ./restored-etcd")


def register(app: typer.Typer) -> None:
    """Add the ``demo`` command."""
    app.command("demo", epilog=exit_codes_epilog())(demo)
