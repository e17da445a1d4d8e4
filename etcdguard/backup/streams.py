"""File-like adapters that let the backup pipeline stream: etcd chunks -> zstd -> age -> store.

The chain is pull-based: age's ``encrypt_io`` reads from a zstd ``stream_reader`` that reads
from :class:`SnapshotReader`, which pulls gRPC chunks. Errors raised while the native code is
pulling are kept on the adapter and re-raised by the pipeline with their original type.
A :class:`BytePipe` (bounded) lets the etcd side and the compress/encrypt side run in two threads.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from etcdguard.errors import IntegrityError

TRAILER_BYTES = 32


def trailer_matches(path: Path, block: int = 1 << 20) -> bool:
    """True when the sha256 of a snapshot file's body equals its 32-byte trailer (what
    ``etcdutl snapshot restore`` checks unless ``--skip-hash-check``). hashlib releases the GIL,
    so this runs beside other work."""
    size = path.stat().st_size
    if size < TRAILER_BYTES:
        return False
    digest = hashlib.sha256()
    buffer = bytearray(block)
    view = memoryview(buffer)
    left = size - TRAILER_BYTES
    with path.open("rb", buffering=0) as f:
        while left > 0:
            n = f.readinto(view[:min(block, left)])
            if not n:
                return False
            digest.update(view[:n])
            left -= n
        return digest.digest() == f.read(TRAILER_BYTES)


class SnapshotReader(io.RawIOBase):
    """Reads an etcd snapshot stream, hashing it and checking etcd's sha256 trailer at EOF.

    etcd appends sha256(db) to the snapshot; it is checked at EOF (``IntegrityError``). Chunks are passed
    through unchanged (trailer included) so the stored snapshot is exactly etcd's.

    Each byte is hashed once: ``_body_hash`` covers everything but the last 32 bytes seen so far
    (the trailer candidate, kept in ``_tail``), and the sha256 of the whole stream is a copy of it
    fed the tail. :meth:`read` hands out etcd's chunks as they are, without copying them.
    """

    def __init__(self, chunks: Iterator[bytes], on_bytes: Callable[[int], None] | None = None) -> None:
        super().__init__()
        self._chunks = chunks
        self._chunk = b""                    # the chunk being handed out ...
        self._offset = 0                     # ... from this offset
        self._body_hash = hashlib.sha256()   # everything but the last 32 bytes seen so far
        self._tail = b""                      # last <=32 bytes not yet in _body_hash
        self._on_bytes = on_bytes
        self.size = 0
        self.error: BaseException | None = None
        self.eof = False
        self.trailer_hex = ""

    def readable(self) -> bool:
        return True

    def _absorb(self, chunk: bytes) -> None:
        if len(chunk) >= TRAILER_BYTES:
            if self._tail:
                self._body_hash.update(self._tail)
            with memoryview(chunk) as view:
                self._body_hash.update(view[:-TRAILER_BYTES])
            self._tail = bytes(chunk[-TRAILER_BYTES:])
        else:
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

    def _fill(self) -> bool:
        """Make sure a chunk is pending; False at EOF (after the trailer check)."""
        while self._offset >= len(self._chunk):
            try:
                chunk = next(self._chunks)
            except StopIteration:
                if not self.eof:
                    self._finish()
                return False
            self._absorb(chunk)
            self._chunk, self._offset = chunk, 0
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Up to ``size`` bytes, at most one etcd chunk: the chunk object itself when it fits."""
        if size is None or size < 0:
            return self.readall()
        try:
            if size == 0 or not self._fill():
                return b""
            chunk, start = self._chunk, self._offset
            if start == 0 and size >= len(chunk):
                self._offset = len(chunk)
                return chunk
            end = min(len(chunk), start + size)
            self._offset = end
            return chunk[start:end]
        except BaseException as exc:
            self.error = exc
            raise

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            if not self._fill():
                return 0
            n = min(len(buffer), len(self._chunk) - self._offset)
            buffer[:n] = memoryview(self._chunk)[self._offset:self._offset + n]
            self._offset += n
            return n
        except BaseException as exc:
            self.error = exc
            raise

    @property
    def sha256(self) -> str:
        """sha256 of every byte read (the snapshot file as ``etcdctl snapshot save`` writes it)."""
        full = self._body_hash.copy()
        full.update(self._tail)
        return full.hexdigest()


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
    """Read-through adapter that counts and hashes bytes read from ``source``.

    With ``limit``, reading more than ``limit`` bytes raises IntegrityError (kept in
    :attr:`error`): the object is larger than its manifest says.
    """

    def __init__(self, source: BinaryIO, limit: int | None = None, what: str = "stored object") -> None:
        super().__init__()
        self._source = source
        self._hash = hashlib.sha256()
        self._limit = limit
        self._what = what
        self.size = 0
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        try:
            want = len(buffer) if self._limit is None else min(len(buffer), self._limit - self.size + 1)
            data = self._source.read(want) if want > 0 else b""
            if self._limit is not None and self.size + len(data) > self._limit:
                raise IntegrityError(f"{self._what}: the stored object is larger than the {self._limit} bytes "
                                     "its manifest states")
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


class PipeClosedError(Exception):
    """The other end of a :class:`BytePipe` is gone (the reader stopped, or the writer aborted)."""


class BytePipe(io.RawIOBase):
    """A bounded in-memory pipe between one writer thread and one reader thread.

    The writer puts blocks with :meth:`put` (blocking while ``max_bytes`` are already queued)
    and ends with :meth:`close_write` (EOF) or :meth:`abort` (the reader's next read raises
    :class:`PipeClosedError`). The reader gets the blocks as they were put, without copying,
    and calls :meth:`close_read` when it stops, so a blocked writer never waits forever.
    """

    def __init__(self, max_bytes: int) -> None:
        super().__init__()
        self._cond = threading.Condition()
        self._blocks: deque[bytes] = deque()
        self._queued = 0
        self._max = max_bytes
        self._eof = False
        self._aborted = False
        self._reader_gone = False
        self.peak_bytes = 0

    def readable(self) -> bool:
        return True

    def put(self, block: bytes) -> None:
        """Queue ``block``; raises PipeClosedError when the reader is gone."""
        with self._cond:
            while self._queued >= self._max and not self._reader_gone:
                self._cond.wait()
            if self._reader_gone:
                raise PipeClosedError("the pipe's reader stopped")
            self._blocks.append(block)
            self._queued += len(block)
            self.peak_bytes = max(self.peak_bytes, self._queued)
            self._cond.notify_all()

    def close_write(self) -> None:
        """No more blocks: the reader sees EOF once the queue is drained."""
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def abort(self) -> None:
        """The writer failed: drop what is queued; the reader's next read raises PipeClosedError."""
        with self._cond:
            self._aborted = True
            self._blocks.clear()
            self._queued = 0
            self._cond.notify_all()

    def close_read(self) -> None:
        """The reader stopped (done or failed): wake and refuse the writer from now on."""
        with self._cond:
            self._reader_gone = True
            self._blocks.clear()
            self._queued = 0
            self._cond.notify_all()

    def read(self, size: int | None = -1) -> bytes:
        """The next queued block (or its first ``size`` bytes); b"" at EOF."""
        if size is None or size < 0:
            return self.readall()
        with self._cond:
            while not self._blocks and not self._eof and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise PipeClosedError("the pipe's writer aborted")
            if not self._blocks or size == 0:
                return b""
            block = self._blocks[0]
            if size >= len(block):
                self._blocks.popleft()
            else:
                self._blocks[0] = block[size:]
                block = block[:size]
            self._queued -= len(block)
            self._cond.notify_all()
            return block

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)
