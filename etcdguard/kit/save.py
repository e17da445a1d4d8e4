"""Save a kit: collect, compare with the newest trusted kit, and store a new one only when it changed.

collect -> content hash == newest trusted kit's? -> done (nothing written) | tar -> zstd -> age ->
store -> signed manifest (written last). Any failure leaves no manifest and no object.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyrage

from etcdguard import __version__
from etcdguard.backup.keys import (
    SigningKey,
    VerifyKey,
    fingerprint,
    load_signing_key,
    parse_recipients,
    recipient_lines,
    trusted_verify_keys,
)
from etcdguard.backup.manifest import StoredObject
from etcdguard.config import Settings
from etcdguard.errors import ConfigError, IntegrityError
from etcdguard.kit.archive import build_tar, encode
from etcdguard.kit.catalog import KitCatalog, KitEntry
from etcdguard.kit.collect import Collection, CollectOptions, collect
from etcdguard.kit.model import (
    KIT_MANIFEST_NAME,
    KIT_OBJECT,
    KIT_PLAIN_OBJECT,
    KitManifest,
    content_hash,
    kit_prefix,
    new_kit_id,
)
from etcdguard.kit.record import seal_kit
from etcdguard.storage import open_store
from etcdguard.storage.base import BlobStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KitRequest:
    """What to collect, for which cluster, and with which keys."""

    cluster_name: str
    cluster_id: str
    collect: CollectOptions
    recipients: list[pyrage.x25519.Recipient] = field(repr=False)
    recipient_texts: list[str]
    signing_key: SigningKey | None
    trusted_keys: Sequence[VerifyKey] | None  # which existing kits count (None: unsigned mode)
    compression_level: int = 3
    allow_unencrypted: bool = False
    allow_unsigned: bool = False
    force: bool = False  # save even when nothing changed
    node: str = field(default_factory=socket.gethostname)


@dataclass(frozen=True)
class KitSaveResult:
    """A new kit (``saved``) or the unchanged newest one."""

    saved: bool
    manifest: KitManifest | None
    baseline: KitEntry | None
    collection: Collection
    content_sha256: str


def preflight(request: KitRequest) -> None:
    """Fail closed before reading anything: encryption and signing keys must be configured."""
    if not request.recipients and not request.allow_unencrypted:
        raise ConfigError("no age recipient configured: pass --recipient (or recipients_file); "
                          "refusing to write an unencrypted kit without --allow-unencrypted")
    if request.signing_key is None and not request.allow_unsigned:
        raise ConfigError("no signing key configured: pass --signing-key; "
                          "refusing to write an unsigned kit without --allow-unsigned")


def save_kit(request: KitRequest, store: BlobStore, *,
             now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> KitSaveResult:
    """Collect the kit and store it unless the newest trusted kit already holds the same content."""
    preflight(request)
    collection = collect(request.collect)
    digest = content_hash(collection.entries, collection.certificates)
    catalog = KitCatalog(store, request.cluster_name)
    baseline = catalog.newest_trusted(request.trusted_keys)
    if (not request.force and baseline is not None and baseline.manifest is not None
            and baseline.manifest.content_sha256 == digest and baseline.manifest.cluster_id == request.cluster_id):
        return KitSaveResult(False, baseline.manifest, baseline, collection, digest)

    created_at = now()
    kit_id = new_kit_id(created_at)
    prefix = kit_prefix(request.cluster_name, kit_id)
    object_name = KIT_OBJECT if request.recipients else KIT_PLAIN_OBJECT
    tar_bytes = build_tar(collection.files)
    with store.open_writer(f"{prefix}/{object_name}") as writer:
        encoded = encode(tar_bytes, writer, request.recipients, request.compression_level)
        info = writer.commit()
    manifest = KitManifest(
        kit_id=kit_id, cluster_name=request.cluster_name, cluster_id=request.cluster_id, node=request.node,
        content_sha256=digest, files=collection.entries, certificates=collection.certificates,
        notes=collection.notes, sources=collection.sources, archive=encoded.archive,
        stored=StoredObject(key=object_name, size=encoded.stored_size, sha256=encoded.stored_sha256,
                         compression_level=request.compression_level,
                         encryption="age-x25519" if request.recipients else "none",
                         recipients=[fingerprint(r) for r in request.recipient_texts]),
        signing_key_id=request.signing_key.key_id if request.signing_key else None,
        created_at=created_at, tool_version=__version__,
    )
    try:
        if info.size != encoded.stored_size:
            raise IntegrityError(f"store reports {info.size} bytes for {object_name}, "
                                 f"{encoded.stored_size} were written")
        store.put_bytes(f"{prefix}/{KIT_MANIFEST_NAME}", seal_kit(manifest, request.signing_key))
    except BaseException:
        store.delete(f"{prefix}/{object_name}")
        raise
    return KitSaveResult(True, manifest, baseline, collection, digest)


def collect_options(settings: Settings) -> CollectOptions:
    """Where the configuration says the kit's files are (``kit:`` section)."""
    kit = settings.kit
    return CollectOptions(pki_dir=kit.pki_dir, manifests_dir=kit.manifests_dir,
                          kubeadm_config=list(kit.kubeadm_config))


def baseline_keys(settings: Settings) -> list[VerifyKey] | None:
    """Keys that make an existing kit count as the baseline: the configured public keys and the
    signing key's own (None when the service explicitly runs unsigned without any key)."""
    keys = trusted_verify_keys(list(settings.signing.public_keys), settings.signing.key_file, None)
    if not keys and settings.signing.allow_unsigned:
        return None
    return keys


def request_from_settings(settings: Settings, cluster_id: str, *, collect: CollectOptions | None = None,
                          force: bool = False) -> KitRequest:
    """A KitRequest from configuration (loads recipients and the signing key)."""
    enc = settings.encryption
    texts = recipient_lines(list(enc.recipients), [enc.recipients_file] if enc.recipients_file else [])
    key_file = settings.signing.key_file
    return KitRequest(
        cluster_name=settings.backup.cluster_name, cluster_id=cluster_id,
        collect=collect or collect_options(settings), recipients=parse_recipients(texts), recipient_texts=texts,
        signing_key=load_signing_key(key_file) if key_file else None, trusted_keys=baseline_keys(settings),
        compression_level=settings.backup.compression_level, allow_unencrypted=enc.allow_unencrypted,
        allow_unsigned=settings.signing.allow_unsigned, force=force)


def save_beside_snapshot(settings: Settings, cluster_id: str) -> KitSaveResult | None:
    """After a snapshot (``serve``, ``snapshot`` and so the CronJob): save a kit when ``kit.enabled``
    and its content changed since the newest trusted kit, so one always exists. None when disabled."""
    if not settings.kit.enabled:
        return None
    store_config, _ = settings.store_or_default()
    result = save_kit(request_from_settings(settings, cluster_id), open_store(store_config))
    if result.saved and result.manifest is not None:
        log.info("control-plane kit %s saved: %d files", result.manifest.kit_id,
                 sum(1 for f in result.manifest.files if not f.is_dir))
    else:
        log.info("control-plane kit unchanged since %s", result.baseline.kit_id if result.baseline else "-")
    return result
