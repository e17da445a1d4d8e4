"""What ``etcdguard serve`` checks before it reports ready: everything it will need later.

A service that starts with a missing recipients file would fail only at its first scheduled
snapshot, maybe an hour later. :func:`validate_settings` (at start and on every SIGHUP reload)
loads every file the jobs will read: recipients, signing key, the identity and trusted keys
when it verifies, etcd's TLS files (the client certificate must match its key), and parses
the schedules, the listen address and the endpoints. :func:`wait_for_store` then proves the
store usable. Each failure is one :class:`ConfigError` naming what is wrong (exit code 3).

etcd itself is not required to answer at start: watching a cluster that is down is part of
the service's job (its state shows in /readyz and the metrics).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from etcdguard.backup.catalog import trust_from_settings
from etcdguard.backup.keys import load_identities
from etcdguard.backup.pipeline import preflight, request_from_settings
from etcdguard.config import EtcdConfig, LocalStoreConfig, Settings
from etcdguard.errors import ConfigError, StorageError, StorageUnavailableError
from etcdguard.etcd.client import TLSFiles, parse_endpoint
from etcdguard.service.http import load_token, parse_listen
from etcdguard.service.schedule import cron_trigger
from etcdguard.storage import open_store
from etcdguard.storage.base import BlobStore

log = logging.getLogger("etcdguard.service")
STORE_RETRY_SECONDS = 2.0


def validate_settings(settings: Settings) -> None:
    """Raise ConfigError unless the service can run every job with ``settings`` (no network I/O)."""
    svc = settings.service
    cron_trigger(svc.snapshot_cron)
    if svc.verify_cron:
        cron_trigger(svc.verify_cron)
    parse_listen(svc.listen)
    preflight(request_from_settings(settings))  # recipients and signing key load, or fail closed
    if trust_from_settings(settings).keys == ():
        raise ConfigError("no trusted signing key: set signing.key_file or signing.public_keys (the service "
                          "counts only signed backups), or signing.allow_unsigned: true to run unsigned")
    load_token(svc.api_token_file)
    if svc.verify_after_snapshot or svc.verify_cron:
        if settings.encryption.identity_file is not None:
            load_identities(settings.encryption.identity_file)
        else:
            log.warning("no encryption.identity_file: scheduled verification will be skipped")
    if svc.emergency_local_store is not None:
        _check_store(open_store(LocalStoreConfig(path=svc.emergency_local_store)), "service.emergency_local_store")
    validate_etcd(settings.etcd)


def validate_etcd(cfg: EtcdConfig) -> None:
    """Endpoints parse; TLS files are readable and the client certificate matches its key."""
    if not cfg.endpoints:
        raise ConfigError("etcd.endpoints is empty")
    secure = [parse_endpoint(e)[1] for e in cfg.endpoints]
    tls = TLSFiles(cacert=cfg.cacert, cert=cfg.cert, key=cfg.key, server_name=cfg.server_name)
    if tls.enabled:
        tls.credentials()  # reads every file: a missing or unreadable one is a ConfigError
        if cfg.cert is not None and cfg.key is not None:
            _check_key_pair(cfg.cert, cfg.key)
    elif any(secure):
        log.info("https etcd endpoints without etcd.cacert: the system CA bundle is used")
    if cfg.username and cfg.password is None:
        raise ConfigError(f"etcd.username {cfg.username!r} is set but etcd.password is not")


def _check_key_pair(cert_path: Path, key_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        raise ConfigError(f"TLS client certificate {cert_path}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"TLS client key {key_path}: not an unencrypted PEM private key") from None
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
        raise ConfigError(f"TLS client key {key_path} does not belong to the certificate {cert_path}")


def _check_store(store: BlobStore, what: str) -> None:
    try:
        store.check()
    except StorageError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def wait_for_store(settings: Settings, timeout: float, *, stop: Callable[[], bool] = lambda: False,
                   on_retry: Callable[[str], None] = lambda error: None,
                   sleep: Callable[[float], None] = time.sleep) -> None:
    """Check that the store is usable; retry while it is unreachable, for up to ``timeout`` seconds.

    A refusal (no such bucket, access denied, bad credentials, a directory that is not
    writable) is a ConfigError at once; still unreachable after ``timeout`` is a ConfigError too.
    Returns early, without an error, once ``stop()`` is true.
    """
    config, _ = settings.store_or_default()
    store = open_store(config)
    deadline = time.monotonic() + timeout
    while True:
        try:
            _check_store(store, "store")
            return
        except StorageUnavailableError as exc:
            if stop():
                return
            if time.monotonic() >= deadline:
                raise ConfigError(f"store {store.url} still unreachable after {timeout:g}s: {exc}") from None
            log.warning("store %s unreachable, retrying: %s", store.url, exc)
            on_retry(str(exc))
            sleep(STORE_RETRY_SECONDS)
