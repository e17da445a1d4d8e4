"""Download a backup as a plain etcd snapshot: to a file, or (checked first) to a stream such as stdout.

Both paths go through :func:`recover_snapshot` (digest, signature, decryption and etcd trailer
checks, a private temp file renamed into place). A stream gets the bytes only after every check
passed: the snapshot is staged in a private (0700) temporary directory, copied out, and removed,
also when SIGTERM or SIGINT arrives meanwhile.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from etcdguard import interrupts
from etcdguard.backup.catalog import Catalog
from etcdguard.backup.keys import VerifyKey
from etcdguard.backup.manifest import Manifest
from etcdguard.backup.recover import READ_SIZE, recover_snapshot

STAGING_PREFIX = "etcdguard-download-"


@dataclass(frozen=True)
class Downloaded:
    """A checked plain snapshot: where it went (None for a stream), its size and sha256."""

    manifest: Manifest
    path: Path | None
    size: int
    sha256: str


def download_backup(catalog: Catalog, selector: str, keys: list[VerifyKey] | None, identities: list[Any],
                    dest: Path | BinaryIO, *, on_start: Callable[[Manifest], None] | None = None,
                    on_bytes: Callable[[int], None] | None = None, for_etcdutl: bool = False) -> Downloaded:
    """Resolve ``selector``, check the manifest with ``keys`` (None skips it) and write the snapshot.

    ``dest`` is a file path (written through a temp file beside it) or a binary stream (written
    only after all checks passed). ``on_start`` gets the manifest before any byte is fetched,
    ``on_bytes`` the count of each block of plain snapshot bytes written. ``for_etcdutl``: see
    :func:`recover_snapshot` (a file path only).
    """
    backup_id = catalog.resolve(selector)
    manifest = catalog.open(backup_id, keys)
    if on_start is not None:
        on_start(manifest)
    prefix = catalog.prefix(backup_id)
    if isinstance(dest, Path):
        result = recover_snapshot(catalog.store, manifest, prefix, identities, dest, on_bytes=on_bytes,
                                  for_etcdutl=for_etcdutl)
        return Downloaded(manifest, result.path, result.size, result.sha256)
    staging: Path | None = None
    try:
        with interrupts.deferred():  # known before SIGTERM/SIGINT can leave it behind
            staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX))  # 0700, private to this user
        result = recover_snapshot(catalog.store, manifest, prefix, identities, staging / "snapshot.db",
                                  on_bytes=on_bytes)
        with result.path.open("rb") as checked:
            shutil.copyfileobj(checked, dest, READ_SIZE)
        dest.flush()
        return Downloaded(manifest, None, result.size, result.sha256)
    finally:
        if staging is not None:
            with interrupts.deferred():
                shutil.rmtree(staging, ignore_errors=True)
