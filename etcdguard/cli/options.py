"""Typer option declarations and builders shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from etcdguard.backup.catalog import Catalog, trust_from_settings
from etcdguard.backup.keys import (
    VerifyKey,
    load_identities,
    trusted_verify_keys,
)
from etcdguard.config import Settings
from etcdguard.errors import ConfigError
from etcdguard.storage import open_store
from etcdguard.storage.base import BlobStore

Endpoints = Annotated[str | None, typer.Option(
    "--endpoints", help="Comma-separated etcd client URLs, e.g. https://10.0.0.1:2379.", show_default=False)]
CACert = Annotated[Path | None, typer.Option("--cacert", help="CA bundle to verify etcd's certificate.")]
Cert = Annotated[Path | None, typer.Option("--cert", help="Client certificate for etcd (TLS).")]
Key = Annotated[Path | None, typer.Option("--key", help="Client private key for etcd (TLS).")]
Store = Annotated[str | None, typer.Option(
    "--store", help="s3://bucket/prefix, file:///path or a path. Default: the embedded local store.")]
S3Endpoint = Annotated[str | None, typer.Option(
    "--s3-endpoint-url", help="Endpoint of an S3-compatible server (MinIO, SeaweedFS, Ceph ...).")]
Cluster = Annotated[str | None, typer.Option("--cluster-name", help="Name backups are filed under.")]
Identity = Annotated[Path | None, typer.Option(
    "--identity", "-i", help="age identity file (private key) to decrypt backups.")]
SigningPub = Annotated[list[Path] | None, typer.Option(
    "--signing-pub", help="Trusted Ed25519 public key (signing.pub); repeatable.")]
SkipSignature = Annotated[bool, typer.Option(
    "--insecure-skip-signature", help="DANGER: accept backups whose manifest signature is missing or wrong "
    "(only when the signing key is lost).")]


Timeout = Annotated[float | None, typer.Option(
    "--timeout", min=0.1, help="Seconds to wait for each etcd member. Default: monitor.probe_timeout (3).")]


def etcd_overrides(endpoints: str | None, cacert: Path | None, cert: Path | None,
                   key: Path | None, timeout: float | None = None) -> dict[str, Any]:
    """Config overrides for the etcd connection flags (None = flag not given)."""
    return {"etcd.endpoints": endpoints, "etcd.cacert": cacert, "etcd.cert": cert, "etcd.key": key,
            "etcd.dial_timeout": timeout}


def store_overrides(store: str | None, s3_endpoint_url: str | None,
                    cluster_name: str | None) -> dict[str, Any]:
    """Config overrides for the store flags."""
    out: dict[str, Any] = {"store": store, "backup.cluster_name": cluster_name}
    if s3_endpoint_url:
        out["store.endpoint_url"] = s3_endpoint_url
    return out


def open_configured_store(settings: Settings) -> tuple[BlobStore, bool]:
    """The configured store (or the embedded default); returns (store, is_default)."""
    config, is_default = settings.store_or_default()
    return open_store(config), is_default


def open_catalog(settings: Settings, *, skip_signature: bool = False, cluster_id: int | None = None) -> Catalog:
    """The catalog of the configured cluster in the configured store, judged with the configured
    trusted keys (and ``cluster_id`` when the live cluster is known)."""
    store, _ = open_configured_store(settings)
    return Catalog(store, settings.backup.cluster_name,
                   trust_from_settings(settings, skip_signature=skip_signature, cluster_id=cluster_id))


def verify_keys(settings: Settings, skip_signature: bool) -> list[VerifyKey] | None:
    """Trusted signing public keys, or None when the operator explicitly skips the check."""
    if skip_signature:
        return None
    keys = trusted_verify_keys(list(settings.signing.public_keys), settings.signing.key_file,
                               settings.encryption.identity_file)
    if not keys:
        raise ConfigError("no trusted signing public key: pass --signing-pub keys/signing.pub "
                          "(or keep signing.pub in a private directory beside the identity file); "
                          "--insecure-skip-signature skips the check")
    return keys


def identities(settings: Settings) -> list[Any]:
    """The configured age identities, or [] when none is configured."""
    path = settings.encryption.identity_file
    return load_identities(path) if path else []
