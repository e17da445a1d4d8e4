"""``etcdguard kit``: save, list, show and restore the control-plane kit."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from etcdguard.backup.keys import VerifyKey
from etcdguard.cli import options as opt
from etcdguard.cli.common import OutputFormat, exit_codes_epilog, handle_errors, print_json, settings, stderr, stdout
from etcdguard.cli.render import human_age, human_bytes, when
from etcdguard.config import Settings
from etcdguard.errors import AbortedError, BackupNotFoundError, ConfigError, EtcdGuardError
from etcdguard.etcd.connection import open_connection
from etcdguard.kit.catalog import KitCatalog, KitEntry
from etcdguard.kit.collect import CollectOptions
from etcdguard.kit.model import KitManifest
from etcdguard.kit.restore import RestorePlan, apply_restore, kubeadm_commands, plan_kit_restore
from etcdguard.kit.save import (
    KitSaveResult,
    collect_options,
    request_from_settings,
    save_beside_snapshot,
    save_kit,
)

kit_app = typer.Typer(help="The control-plane kit: CAs, service-account keys, encryption config, static pod "
                      "manifests and kubeadm config, saved beside the snapshots.", no_args_is_help=True,
                      epilog=exit_codes_epilog())

PkiDir = Annotated[Path | None, typer.Option("--pki-dir", help="kubeadm PKI dir. Default: kit.pki_dir "
                                             "(/etc/kubernetes/pki).")]
ManifestsDir = Annotated[Path | None, typer.Option("--manifests-dir", help="Static pod manifests dir. Default: "
                                                   "kit.manifests_dir (/etc/kubernetes/manifests).")]
Output = Annotated[OutputFormat, typer.Option("--output", "-o", help="table or json.")]


def _catalog(cfg: Settings) -> KitCatalog:
    store, _ = opt.open_configured_store(cfg)
    return KitCatalog(store, cfg.backup.cluster_name)


def _listing_keys(cfg: Settings, skip: bool) -> list[VerifyKey] | None:
    """Trusted keys for listing: without any, every kit is shown as untrusted (with a warning)."""
    try:
        return opt.verify_keys(cfg, skip)
    except ConfigError as exc:
        stderr.print(f"[yellow]warning:[/] {escape(exc.message)}: no kit can be trusted")
        return []


def _cluster_id(cfg: Settings, given: str | None) -> str:
    if given:
        return given.lower()
    with open_connection(cfg.etcd) as conn:
        client, _ = conn.discover()
        return f"{client.status().cluster_id:x}"


def _days_left(moment: datetime) -> str:
    days = (moment - datetime.now(timezone.utc)).total_seconds() / 86400
    text = f"{days:.0f}d left" if days >= 0 else f"EXPIRED {-days:.0f}d ago"
    return f"[red]{text}[/]" if days < 7 else f"[yellow]{text}[/]" if days < 30 else text


def manifest_dict(manifest: KitManifest) -> dict[str, Any]:
    """JSON form of a kit manifest."""
    return manifest.model_dump(mode="json")


def _save_summary(result: KitSaveResult) -> dict[str, Any]:
    m = result.manifest
    return {"saved": result.saved, "kit_id": m.kit_id if m else None, "content_sha256": result.content_sha256,
            "files": sum(1 for f in result.collection.entries if not f.is_dir),
            "stored_bytes": m.stored.size if m and result.saved else None,
            "notes": result.collection.notes}


def kit_after_snapshot(cfg: Settings, cluster_id: str) -> dict[str, Any] | None:
    """With ``kit.enabled``: save the kit beside a snapshot just taken when it changed (None when
    disabled). A failure is reported on stderr and in the result; the snapshot stands."""
    try:
        result = save_beside_snapshot(cfg, cluster_id)
    except EtcdGuardError as exc:
        stderr.print(f"[bold yellow]warning:[/] the backup is complete, but the control-plane kit was not "
                     f"saved: {escape(exc.message)}")
        return {"saved": False, "error": exc.message}
    if result is None:
        return None
    if result.saved and result.manifest is not None:
        stderr.print(f"control-plane kit {result.manifest.kit_id} saved (its content changed)")
    return _save_summary(result)


@kit_app.command("save")
def save(
    ctx: typer.Context,
    pki_dir: PkiDir = None,
    manifests_dir: ManifestsDir = None,
    kubeadm_config: Annotated[list[Path] | None, typer.Option(
        "--kubeadm-config", help="kubeadm config file(s) to keep when present; repeatable. "
        "Default: kit.kubeadm_config.")] = None,
    cluster_id: Annotated[str | None, typer.Option(
        "--cluster-id", help="etcd cluster id (hex) the kit belongs to. Default: asked from etcd.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Save even when nothing changed since the newest kit.")]
    = False,
    endpoints: opt.Endpoints = None,
    cacert: opt.CACert = None,
    cert: opt.Cert = None,
    key: opt.Key = None,
    store: opt.Store = None,
    s3_endpoint_url: opt.S3Endpoint = None,
    cluster_name: opt.Cluster = None,
    recipient: Annotated[list[str] | None, typer.Option(
        "--recipient", "-r", help="age recipient (age1...) to encrypt to; repeatable.")] = None,
    recipients_file: Annotated[Path | None, typer.Option("--recipients-file", help="File of age recipients.")]
    = None,
    signing_key: Annotated[Path | None, typer.Option("--signing-key", help="Ed25519 key that signs the manifest.")]
    = None,
    signing_pub: opt.SigningPub = None,
    allow_unencrypted: Annotated[bool, typer.Option(
        "--allow-unencrypted", help="DANGER: store the kit (CA keys!) unencrypted when no recipient is set.")]
    = False,
    allow_unsigned: Annotated[bool, typer.Option(
        "--allow-unsigned", help="DANGER: write an unsigned manifest when no signing key is set.")] = False,
    output: Output = OutputFormat.table,
) -> None:
    """Collect the control-plane kit and store it, unless the newest trusted kit holds the same content.

    Holds the cluster, front-proxy and etcd CAs (certificates and keys), the service-account key
    pair, the encryption config named by the kube-apiserver manifest, every static pod manifest
    and the kubeadm config; leaf certificates are only listed with their expiry.
    """
    overrides: dict[str, Any] = {
        **opt.etcd_overrides(endpoints, cacert, cert, key),
        **opt.store_overrides(store, s3_endpoint_url, cluster_name),
        "kit.pki_dir": pki_dir, "kit.manifests_dir": manifests_dir, "kit.kubeadm_config": kubeadm_config,
        "encryption.recipients": recipient or None, "encryption.recipients_file": recipients_file,
        "signing.key_file": signing_key, "signing.public_keys": signing_pub or None,
        "encryption.allow_unencrypted": allow_unencrypted or None,
        "signing.allow_unsigned": allow_unsigned or None,
    }
    with handle_errors():
        cfg = settings(ctx, overrides)
        options: CollectOptions = collect_options(cfg)
        request = request_from_settings(cfg, _cluster_id(cfg, cluster_id), collect=options, force=force)
        blob_store, _ = opt.open_configured_store(cfg)
        result = save_kit(request, blob_store)
    info = _save_summary(result)
    if output is OutputFormat.json:
        print_json(info)
        return
    for note in result.collection.notes:
        stderr.print(f"[yellow]note:[/] {escape(note)}")
    if result.saved:
        stdout.print(f"[bold green]kit {info['kit_id']}[/] of cluster {escape(cfg.backup.cluster_name)} -> "
                     f"{escape(blob_store.url)}: {info['files']} files, {human_bytes(info['stored_bytes'])} stored")
    else:
        stdout.print(f"kit unchanged: the newest trusted kit {info['kit_id']} holds the same content "
                     "(--force saves anyway)")


def _trust_cell(entry: KitEntry) -> str:
    if entry.trusted:
        return f"[green]signed[/] {escape(entry.signer or '')}" if entry.signer else "[yellow]unsigned[/]"
    return f"[red]UNTRUSTED[/]: {escape(entry.problem or '')}"


@kit_app.command("list")
def list_kits(
    ctx: typer.Context,
    signing_pub: opt.SigningPub = None,
    insecure_skip_signature: opt.SkipSignature = False,
    store: opt.Store = None,
    s3_endpoint_url: opt.S3Endpoint = None,
    cluster_name: opt.Cluster = None,
    output: Output = OutputFormat.table,
) -> None:
    """List kits, newest first; kits whose manifest does not verify are shown as untrusted."""
    overrides = {**opt.store_overrides(store, s3_endpoint_url, cluster_name),
                 "signing.public_keys": signing_pub or None}
    with handle_errors():
        cfg = settings(ctx, overrides)
        catalog = _catalog(cfg)
        entries = catalog.entries(_listing_keys(cfg, insecure_skip_signature))
    if output is OutputFormat.json:
        print_json([{"kit_id": e.kit_id, "trusted": e.trusted, "problem": e.problem,
                     "manifest": manifest_dict(e.manifest) if e.manifest else None} for e in entries])
        return
    if not entries:
        stdout.print(f"no kits of {escape(catalog.cluster)} in {escape(catalog.store.url)}")
        return
    table = Table(title=f"kits of {escape(catalog.cluster)} in {escape(catalog.store.url)}", title_justify="left")
    for col in ("id", "created", "node", "files", "stored", "trust"):
        table.add_column(col)
    for e in entries:
        m = e.manifest
        if m is None:
            table.add_row(e.kit_id, "-", "-", "-", "-", _trust_cell(e))
            continue
        table.add_row(e.kit_id, f"{when(m.created_at)} ({human_age(m.created_at)})", escape(m.node),
                      str(sum(1 for f in m.files if not f.is_dir)), human_bytes(m.stored.size), _trust_cell(e))
    stdout.print(table)


@kit_app.command("show")
def show(
    ctx: typer.Context,
    kit_id: Annotated[str, typer.Argument(help="Kit id, a unique prefix of it, or 'latest' (newest trusted).")],
    signing_pub: opt.SigningPub = None,
    insecure_skip_signature: opt.SkipSignature = False,
    store: opt.Store = None,
    s3_endpoint_url: opt.S3Endpoint = None,
    cluster_name: opt.Cluster = None,
    output: Output = OutputFormat.table,
) -> None:
    """Show one kit: its files (mode, owner, sha256), the certificates and their expiry."""
    overrides = {**opt.store_overrides(store, s3_endpoint_url, cluster_name),
                 "signing.public_keys": signing_pub or None}
    with handle_errors():
        cfg = settings(ctx, overrides)
        catalog = _catalog(cfg)
        keys = _listing_keys(cfg, insecure_skip_signature)
        entry = catalog.entry(catalog.resolve(kit_id, keys), keys)
    if output is OutputFormat.json or entry.manifest is None:
        print_json({"kit_id": entry.kit_id, "trusted": entry.trusted, "problem": entry.problem,
                    "manifest": manifest_dict(entry.manifest) if entry.manifest else None})
        return
    m = entry.manifest
    stdout.print(f"[bold]kit[/]        {m.kit_id}  {_trust_cell(entry)}")
    stdout.print(f"[bold]cluster[/]    {escape(m.cluster_name)} (id {escape(m.cluster_id)}), node {escape(m.node)}")
    stdout.print(f"[bold]created[/]    {when(m.created_at)} ({human_age(m.created_at)})")
    stdout.print(f"[bold]stored[/]     {escape(m.stored.key)} {human_bytes(m.stored.size)} {m.stored.encryption}")
    files = Table(title="files", title_justify="left")
    for col in ("path", "role", "mode", "owner", "size", "sha256"):
        files.add_column(col)
    for f in m.files:
        owner = f"{escape(f.user or str(f.uid))}:{escape(f.group or str(f.gid))}"
        files.add_row(escape(f.path), f.role, f"{f.mode:04o}", owner, "-" if f.is_dir else str(f.size),
                      f.sha256[:16] or "-")
    stdout.print(files)
    certs = Table(title="certificates", title_justify="left")
    for col in ("path", "subject", "expires", "", "kit"):
        certs.add_column(col)
    for c in sorted(m.certificates, key=lambda c: c.not_after):
        certs.add_row(escape(c.path), escape(c.subject), when(c.not_after), _days_left(c.not_after),
                      "CA, in kit" if c.in_kit else ("CA" if c.is_ca else "listed"))
    stdout.print(certs)
    for note in m.notes:
        stdout.print(f"[yellow]note:[/] {escape(note)}")


def _print_plan(plan: RestorePlan) -> None:
    for action in plan.actions:
        if action.action == "unchanged":
            continue
        line = f"  {action.action:<8} {escape(str(action.target))} ({action.mode:04o} {action.uid}:{action.gid})"
        if action.aside is not None:
            line += f"\n           existing one moved aside to {escape(str(action.aside))}"
        stdout.print(line)
    stdout.print(f"  {plan.count('create')} to create, {plan.count('replace')} to replace (old ones kept), "
                 f"{plan.count('unchanged')} unchanged")


@kit_app.command("restore")
def restore(
    ctx: typer.Context,
    kit_id: Annotated[str, typer.Argument(help="Kit id, a unique prefix of it, or 'latest' (newest trusted).")],
    identity: opt.Identity = None,
    root: Annotated[Path, typer.Option("--root", help="Restore under this directory instead of /.")] = Path("/"),
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    signing_pub: opt.SigningPub = None,
    insecure_skip_signature: opt.SkipSignature = False,
    store: opt.Store = None,
    s3_endpoint_url: opt.S3Endpoint = None,
    cluster_name: opt.Cluster = None,
) -> None:
    """Put a kit's files back (paths, modes, owners), after checking its signature and every digest.

    Nothing is written before every check passed. Existing files that differ are moved aside
    (``<file>.etcdguard-<time>``; static pod manifests to ``manifests.etcdguard-<time>/`` beside
    the manifests dir), never overwritten. Then prints the kubeadm commands that regenerate the rest.
    """
    overrides = {**opt.store_overrides(store, s3_endpoint_url, cluster_name),
                 "encryption.identity_file": identity, "signing.public_keys": signing_pub or None}
    with handle_errors():
        cfg = settings(ctx, overrides)
        if insecure_skip_signature:
            stderr.print("[bold red]WARNING: --insecure-skip-signature: the kit's signature is NOT checked; "
                         "a forged kit (another CA!) would be accepted[/]")
        keys = opt.verify_keys(cfg, insecure_skip_signature)
        plan = plan_kit_restore(_catalog(cfg), kit_id, keys, opt.identities(cfg), root.absolute())
        manifest = plan.manifest
        stdout.print(f"kit {manifest.kit_id} of {escape(manifest.cluster_name)} (node {escape(manifest.node)}, "
                     f"{when(manifest.created_at)}): signature and digests checked")
        _print_plan(plan)
        if plan.count("create") + plan.count("replace") and not yes:
            if not stdout.is_terminal and not stderr.is_terminal:
                raise AbortedError("not restoring without confirmation; pass --yes in scripts")
            if not typer.confirm(f"restore these files under {plan.root}?", default=False):
                raise AbortedError("not restored")
        done = apply_restore(plan)
        if not plan.chown:
            stderr.print("[yellow]not running as root: owners were not restored[/]")
    stdout.print(f"[bold green]restored[/] {len(done)} file(s) and directories under {escape(str(plan.root))}")
    stdout.print("Then regenerate the rest with kubeadm, in this order:")
    for number, (command, why) in enumerate(kubeadm_commands(manifest, plan.root), 1):
        stdout.print(f"  {number}. {escape(command)}\n     {escape(why)}")
    if any(a.target.name == "etcd.yaml" for a in done):
        stdout.print("etcd's data is not in the kit: once step 1 issued its certificates and the kubelet runs, "
                     "it starts etcd from the restored etcd.yaml on an empty data dir (revision 1). Next: "
                     "etcdguard restore --yes (it recognises the empty etcd and restores the newest backup of "
                     "this cluster into it, replacing nothing)")


@kit_app.command("delete")
def delete(
    ctx: typer.Context,
    kit_id: Annotated[str, typer.Argument(help="Kit id (exact).")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Delete even the newest trusted kit.")] = False,
    signing_pub: opt.SigningPub = None,
    store: opt.Store = None,
    s3_endpoint_url: opt.S3Endpoint = None,
    cluster_name: opt.Cluster = None,
) -> None:
    """Delete one kit (untrusted ones too); refuses the newest trusted kit without --force."""
    overrides = {**opt.store_overrides(store, s3_endpoint_url, cluster_name),
                 "signing.public_keys": signing_pub or None}
    with handle_errors():
        cfg = settings(ctx, overrides)
        catalog = _catalog(cfg)
        if kit_id not in catalog.kit_ids():
            raise BackupNotFoundError(f"no kit {kit_id!r} for cluster {catalog.cluster!r} in {catalog.store.url} "
                                      "(delete needs the exact id)")
        newest = catalog.newest_trusted(_listing_keys(cfg, False))
        if newest is not None and newest.kit_id == kit_id and not force:
            raise AbortedError(f"kit {kit_id} is the newest trusted kit: the only record of the CAs and keys "
                               "in effect now; pass --force to delete it anyway")
        if not yes:
            if not stdout.is_terminal and not stderr.is_terminal:
                raise AbortedError("not deleting without confirmation; pass --yes in scripts")
            if not typer.confirm(f"delete kit {kit_id} from {catalog.store.url}?", default=False):
                raise AbortedError("not deleted")
        catalog.delete(kit_id)
    stdout.print(f"deleted kit {kit_id}")


def register(app: typer.Typer) -> None:
    """Add the ``kit`` group."""
    app.add_typer(kit_app, name="kit")
