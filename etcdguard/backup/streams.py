"""File-like adapters that let the backup pipeline stream: etcd chunks -> zstd -> age -> store.

The chain is pull-based: age's ``encrypt_io`` reads from a zstd ``stream_reader`` that reads
from :class:`SnapshotReader`, which pulls gRPC chunks. Errors raised while the native code is
pulling are kept on the adapter and re-raised by the pipeline with their original type.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from typing import BinaryIO

from etcdguard.errors import IntegrityError

TRAILER_BYTES = 32


class SnapshotReader(io.RawIOBase):
    """Reads an etcd snapshot stream, hashing it and checking etcd's sha256 trailer at EOF.

    etcd appends sha256(db) to the snapshot; ``trailer_ok`` is set at EOF. Chunks are passed
    through unchanged (trailer included) so the stored snapshot is exactly etcd's.
    """

    def __init__(self, chunks: Iterator[bytes], on_bytes: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self._chunks = chunks
        self._pending = memoryview(b"")
        self._body_hash = hashlib.sha256()   # everything but the last 32 bytes seen so far
        self._full_hash = hashlib.sha256()   # everything
        self._tail = b""                      # last <=32 bytes not yet in _body_hash
        self._on_bytes = on_bytes
        self.size = 0
        self.error: BaseException | None = None
        self.eof = False
        self.trailer_hex = ""

    def readable(self) -> bool:
        return True

    def _absorb(self, chunk: bytes) -> None:
        self._full_hash.update(chunk)
        joined = self._tail + chunk
        if len(joined) > TRAILER_BYTES:
            self._body_hash.update(joined[:-TRAILER_BYTES])
            self._tail = joined[-TRAILER_BYTES:]
        else:
            self._tail = joined
        self.size += len(chunk)
        if self._on_bytes is not None:
            self._on_bytes(len(chunk))

    def _finish(self) -> None:
        self.eof = True
        self.trailer_hex = self._tail.hex()
        if len(self._tail) != TRAILER_BYTES or self._body_hash.digest() != self._tail:
            raise IntegrityError(
                f"etcd snapshot sha256 trailer does not match its content ({self.size} bytes received)"
            )

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            while not self._pending:
                try:
                    chunk = next(self._chunks)
                except StopIteration:
                    if not self.eof:
                        self._finish()
                    return 0
                self._absorb(chunk)
                self._pending = memoryview(chunk)
            n = min(len(buffer), len(self._pending))
            buffer[:n] = self._pending[:n]
            self._pending = self._pending[n:]
            return n
        except BaseException as exc:
            self.error = exc
            raise

    @property
    def sha256(self) -> str:
        """sha256 of every byte read (the snapshot file as ``etcdctl snapshot save`` writes it)."""
        return self._full_hash.hexdigest()


class HashingWriter(io.RawIOBase):
    """Write-through adapter that counts and hashes bytes on their way to ``sink``."""

    def __init__(self, sink: Callable[[bytes], None]) -> None:
        super().__init__()
        self._sink = sink
        self._hash = hashlib.sha256()
        self.size = 0
        self.error: BaseException | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = bytes(data)
        try:
            self._sink(chunk)
        except BaseException as exc:
            self.error = exc
            raise
        self._hash.update(chunk)
        self.size += len(chunk)
        return len(chunk)

    @property
    def sha256(self) -> str:
        """sha256 of everything written."""
        return self._hash.hexdigest()


class HashingReader(io.RawIOBase):
    """Read-through adapter that counts and hashes bytes read from ``source``."""

    def __init__(self, source: BinaryIO) -> None:
        super().__init__()
        self._source = source
        self._hash = hashlib.sha256()
        self.size = 0
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            data = self._source.read(len(buffer))
        except BaseException as exc:
            self.error = exc
            raise
        n = len(data)
        buffer[:n] = data
        self._hash.update(data)
        self.size += n
        return n

    @property
    def sha256(self) -> str:
        """sha256 of everything read so far."""
        return self._hash.hexdigest()
