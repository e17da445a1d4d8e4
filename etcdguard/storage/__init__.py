"""Backup storage: the BlobStore port and its adapters (local directory, S3-compatible)."""

from __future__ import annotations

from etcdguard.config import LocalStoreConfig, S3StoreConfig
from etcdguard.storage.base import BlobInfo, BlobStore, BlobWriter
from etcdguard.storage.local import LocalStore, LocalWriter, validate_key
from etcdguard.storage.s3 import S3Store, S3Writer

__all__ = [
    "BlobInfo",
    "BlobStore",
    "BlobWriter",
    "LocalStore",
    "LocalWriter",
    "S3Store",
    "S3Writer",
    "open_store",
    "validate_key",
]


def open_store(config: LocalStoreConfig | S3StoreConfig) -> BlobStore:
    """The BlobStore adapter for ``config`` (no I/O happens until it is used; call check())."""
    if isinstance(config, LocalStoreConfig):
        return LocalStore(config.path)
    return S3Store(config)
