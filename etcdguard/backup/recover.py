"""Turn a stored backup back into a plain etcd snapshot file, checking everything on the way.

store object -> sha256 (stored) -> age decrypt -> zstd -d -> sha256 (plain) -> etcd trailer
-> private temp file beside the destination -> rename. Any failed check removes the output.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import pyrage
import zstandard

from etcdguard.backup.manifest import Manifest
from etcdguard.backup.streams import TRAILER_BYTES, HashingReader
from etcdguard.errors import ConfigError, IntegrityError
from etcdguard.storage.base import BlobStore

READ_SIZE = 1 << 20


@dataclass(frozen=True)
class RecoveredSnapshot:
    """A plain snapshot file restored from a backup."""

    path: Path
    size: int
    sha256: str


class _PlainSink:
    """Receives decompressed bytes: writes them to a file, hashes them, remembers the tail.

    Refuses (IntegrityError, kept in :attr:`error`) any byte beyond ``limit``, the plain size
    the signed manifest states, so a decompression bomb writes no more than that.
    """

    def __init__(self, fd: int, on_bytes: Callable[[int], None] | None, limit: int, what: str) -> None:
        self._file = os.fdopen(fd, "wb", buffering=READ_SIZE)
        self.body_hash = hashlib.sha256()
        self.tail = b""
        self.size = 0
        self._on_bytes = on_bytes
        self._limit = limit
        self._what = what
        self.error: IntegrityError | None = None

    def write(self, data: bytes) -> int:
        if self.size + len(data) > self._limit:
            self.error = IntegrityError(
                f"{self._what}: decompresses to more than the {self._limit} bytes its manifest states; "
                "refusing it (damaged or forged)")
            raise self.error
        self._file.write(data)
        view = memoryview(data)
        if len(view) >= TRAILER_BYTES:  # the held-back tail is body now; hash in place, no copies
            self.body_hash.update(self.tail)
            self.body_hash.update(view[:-TRAILER_BYTES])
            self.tail = bytes(view[-TRAILER_BYTES:])
        else:
            joined = self.tail + bytes(view)
            if len(joined) > TRAILER_BYTES:
                self.body_hash.update(joined[:-TRAILER_BYTES])
            self.tail = joined[-TRAILER_BYTES:]
        self.size += len(data)
        if self._on_bytes is not None:
            self._on_bytes(len(data))
        return len(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def recover_snapshot(
    store: BlobStore,
    manifest: Manifest,
    prefix: str,
    identities: list[pyrage.x25519.Identity],
    dest: Path,
    *,
    on_bytes: Callable[[int], None] | None = None,
) -> RecoveredSnapshot:
    """Write the plain snapshot of ``manifest`` to ``dest`` after checking digests and the trailer.

    ``prefix`` is the backup's key prefix in ``store``. Raises IntegrityError (nothing written)
    when the stored object, the decryption or the plain snapshot does not check out.
    """
    stored = manifest.stored
    encrypted = stored.encryption != "none"
    what = f"backup {manifest.backup_id}"
    if encrypted and not identities:
        raise ConfigError("this backup is encrypted: pass --identity with the age identity file")
    key = f"{prefix}/{stored.key}"
    info = store.stat(key)
    if info is None:
        raise IntegrityError(f"{what}: its manifest names object {stored.key}, which is missing from the store")
    if info.size != stored.size:
        raise IntegrityError(f"{what}: the stored object is {info.size} bytes, its manifest says {stored.size}; "
                             "refusing it before download (damaged or replaced)")
    dest = dest.resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.partial-", dir=dest.parent)
    tmp = Path(tmp_name)
    sink = _PlainSink(fd, on_bytes, manifest.snapshot.size, what)
    ok = False
    try:
        try:
            source = store.open_reader(key)
        except KeyError:
            raise IntegrityError(f"{what}: its manifest names object {stored.key}, "
                                 "which is missing from the store") from None
        reader = HashingReader(source, limit=stored.size, what=what)
        decompressor: Any = zstandard.ZstdDecompressor().stream_writer(
            cast(BinaryIO, sink), write_size=READ_SIZE, closefd=False)
        try:
            if encrypted:
                pyrage.decrypt_io(reader, decompressor, identities)
            else:
                while chunk := reader.read(READ_SIZE):
                    decompressor.write(chunk)
            decompressor.flush()
        except IntegrityError:
            raise
        except zstandard.ZstdError:
            if sink.error is not None:
                raise sink.error from None
            raise IntegrityError(f"backup {manifest.backup_id}: compressed data is corrupt") from None
        except (pyrage.DecryptError, OSError):
            for error in (sink.error, reader.error):
                if error is not None:
                    raise error from None
            while reader.read(READ_SIZE):  # hash the rest: damaged object, or wrong identity?
                pass
            if reader.size != stored.size or reader.sha256 != stored.sha256:
                raise IntegrityError(
                    f"backup {manifest.backup_id}: stored object is damaged: decryption failed and "
                    "its sha256 does not match the manifest") from None
            raise IntegrityError(
                f"backup {manifest.backup_id}: cannot decrypt with the given identity "
                "(wrong key, or the object was re-encrypted by someone else)") from None
            # drain anything the decrypter did not need to read, so the digest covers it all
            while reader.read(READ_SIZE):
                pass
        finally:
            source.close()
        if reader.size != stored.size or reader.sha256 != stored.sha256:
            raise IntegrityError(
                f"backup {manifest.backup_id}: stored object sha256 does not match the manifest")
        sink.close()
        # body sha256 == etcd's trailer == the signed trailer, and the size matches: that pins
        # every byte of the file (body + trailer), so a second full-file hash is not needed.
        if sink.size != manifest.snapshot.size or sink.tail.hex() != manifest.snapshot.trailer_sha256:
            raise IntegrityError(f"backup {manifest.backup_id}: snapshot does not match the manifest")
        if sink.body_hash.digest() != sink.tail:
            raise IntegrityError(f"backup {manifest.backup_id}: etcd snapshot trailer does not match its content")
        os.replace(tmp, dest)
        ok = True
        return RecoveredSnapshot(dest, sink.size, manifest.snapshot.sha256)
    finally:
        if not ok:
            with contextlib.suppress(OSError, ValueError):
                sink.close()
            tmp.unlink(missing_ok=True)
