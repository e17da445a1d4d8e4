"""Turn a stored backup back into a plain etcd snapshot file, checking everything on the way.

store object -> sha256 (stored) -> age decrypt -> zstd -d -> sha256 (plain) -> etcd trailer
-> private temp file beside the destination -> rename. Any failed check removes the output.

Three threads stream it in one pass: a download thread reads and hashes the stored object into
a bounded pipe, the calling thread decrypts and decompresses (counting plain bytes against the
manifest's size), and a write thread hashes the plain bytes and writes them. hashlib, zstd and
file writes release the GIL, so the stages overlap on several cores; the file is fsynced once.

A staging file that only ``etcdutl snapshot restore`` reads next (``for_etcdutl=True``) is
written as ``age -d | zstd -d`` would: no plain hash and no fsync, zstd's small output blocks
written from the decoding thread while they are still in the CPU cache. That is as safe: the
signed stored sha256 pins every byte age decrypts (its ChaCha20-Poly1305 chunks are
authenticated) and zstd inflates; the trailer, which the backup checked against etcd's body
hash when it was taken, must equal the signed one. A staging file that outlives the process
that wrote it is checked against that trailer before it is used (the restore does it beside
``snapshot restore``, before anything is changed).

Decryption is :mod:`etcdguard.backup.agefile` in both modes (about four times pyrage's speed).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import pyrage
import zstandard

from etcdguard import interrupts
from etcdguard.backup.agefile import AgeError, AgeReader
from etcdguard.backup.manifest import Manifest
from etcdguard.backup.streams import TRAILER_BYTES, BytePipe, HashingReader, PipeClosedError
from etcdguard.errors import ConfigError, IntegrityError
from etcdguard.storage.base import BlobStore

READ_SIZE = 1 << 20
DIRECT_BLOCK = 128 << 10  # zstd output blocks written straight away: they stay in the CPU cache
PIPE_BYTES = 16 << 20  # what each pipe between two stages may hold
WRITEBACK_BYTES = 64 << 20  # start writing back to disk every so many bytes: the final fsync is short
_JOIN_SECONDS = 60.0


@dataclass(frozen=True)
class RecoveredSnapshot:
    """A plain snapshot file restored from a backup."""

    path: Path
    size: int
    sha256: str


def _close(fd: int) -> int:
    """Close ``fd`` if it is open (errors ignored); returns -1, the closed marker."""
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
    return -1


class _Stage(threading.Thread):
    """A daemon thread running ``work``; keeps the exception it ended with in :attr:`error`."""

    def __init__(self, name: str, work: Callable[[], None]) -> None:
        super().__init__(name=name, daemon=True)
        self._work = work
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._work()
        except BaseException as exc:
            self.error = exc


class _PipeReader(io.RawIOBase):
    """Reads a :class:`BytePipe` block by block, handing out slices of each block without copying."""

    def __init__(self, pipe: BytePipe) -> None:
        super().__init__()
        self._pipe = pipe
        self._block = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self._block:
            self._block = memoryview(self._pipe.read(PIPE_BYTES))
        n = min(len(buffer), len(self._block))
        buffer[:n] = self._block[:n]
        self._block = self._block[n:]
        return n

    def drain(self) -> None:
        """Read to EOF (so the download hashes every byte)."""
        self._block = memoryview(b"")
        while self._pipe.read(PIPE_BYTES):
            pass


class _PlainSink:
    """Receives decompressed bytes and hands each block to a hash thread and a write thread.

    Refuses (IntegrityError, kept in :attr:`error`) any byte beyond ``limit``, the plain size
    the signed manifest states, so a decompression bomb writes no more than that.
    """

    def __init__(self, fd: int, on_bytes: Callable[[int], None] | None, limit: int, what: str) -> None:
        self._fd = fd
        self._to_hash = BytePipe(PIPE_BYTES)
        self._to_write = BytePipe(PIPE_BYTES)
        self.body_hash = hashlib.sha256()
        self.tail = b""
        self.size = 0
        self._on_bytes = on_bytes
        self._limit = limit
        self._what = what
        self.error: IntegrityError | None = None
        self._hasher = _Stage("recover-hash", self._hash_all)
        self._writer = _Stage("recover-write", self._write_all)
        self._hasher.start()
        self._writer.start()

    def write(self, data: bytes) -> int:
        if self.size + len(data) > self._limit:
            self.error = IntegrityError(
                f"{self._what}: decompresses to more than the {self._limit} bytes its manifest states; "
                "refusing it (damaged or forged)")
            raise self.error
        block = data if isinstance(data, bytes) else bytes(data)
        try:
            self._to_write.put(block)
            self._to_hash.put(block)
        except PipeClosedError:
            self._writer.join(_JOIN_SECONDS)
            raise self._writer.error or OSError("the snapshot write stopped") from None
        self.size += len(block)
        if self._on_bytes is not None:
            self._on_bytes(len(block))
        return len(block)

    @property
    def write_failure(self) -> BaseException | None:
        """What the write thread failed with (disk full, ...), None while it runs or after success."""
        return self._writer.error

    def _hash_all(self) -> None:
        try:
            while block := self._to_hash.read(PIPE_BYTES):
                view = memoryview(block)
                if len(view) >= TRAILER_BYTES:  # the held-back tail is body now; hash in place, no copies
                    self.body_hash.update(self.tail)
                    self.body_hash.update(view[:-TRAILER_BYTES])
                    self.tail = bytes(view[-TRAILER_BYTES:])
                else:
                    joined = self.tail + block
                    if len(joined) > TRAILER_BYTES:
                        self.body_hash.update(joined[:-TRAILER_BYTES])
                    self.tail = joined[-TRAILER_BYTES:]
        finally:
            self._to_hash.close_read()

    def _write_all(self) -> None:
        try:
            written = flushed = 0
            while block := self._to_write.read(PIPE_BYTES):
                view = memoryview(block)
                while view:
                    view = view[os.write(self._fd, view):]
                written += len(block)
                if written - flushed >= WRITEBACK_BYTES:
                    start_writeback(self._fd, flushed, written - flushed)
                    flushed = written
            os.fsync(self._fd)
        finally:
            self._to_write.close_read()

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        """Wait until every byte is hashed, written and fsynced; raise what the write thread hit."""
        self._to_write.close_write()
        self._to_hash.close_write()
        self._hasher.join()
        self._writer.join()
        for stage in (self._writer, self._hasher):
            if stage.error is not None:
                raise stage.error

    def abort(self) -> None:
        """Stop both threads (the caller removes the file) and close the file."""
        self._to_write.abort()
        self._to_hash.abort()
        self._hasher.join(_JOIN_SECONDS)
        self._writer.join(_JOIN_SECONDS)
        self.close()

    def close(self) -> None:
        self._fd = _close(self._fd)


class _DirectSink:
    """Writes decompressed blocks to the file in the decoding thread, keeping only the trailer.

    Same interface and size bound as :class:`_PlainSink`, for ``for_etcdutl`` (module docstring).
    """

    def __init__(self, fd: int, on_bytes: Callable[[int], None] | None, limit: int, what: str) -> None:
        self._fd = fd
        self.tail = b""
        self.size = 0
        self._on_bytes = on_bytes
        self._unreported = 0
        self._limit = limit
        self._what = what
        self.error: IntegrityError | None = None
        self.write_failure: OSError | None = None

    def write(self, data: bytes) -> int:
        n = len(data)
        if self.size + n > self._limit:
            self.error = IntegrityError(
                f"{self._what}: decompresses to more than the {self._limit} bytes its manifest states; "
                "refusing it (damaged or forged)")
            raise self.error
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            self.write_failure = exc  # kept: the decoder may report it as an error of its own
            raise
        self.tail = (self.tail + bytes(data[-TRAILER_BYTES:]))[-TRAILER_BYTES:]
        self.size += n
        self._unreported += n
        if self._on_bytes is not None and self._unreported >= READ_SIZE:
            self._on_bytes(self._unreported)
            self._unreported = 0
        return n

    def flush(self) -> None:
        pass

    def finish(self) -> None:
        """Report the last bytes written (nothing to wait for: every write is done)."""
        if self._on_bytes is not None and self._unreported:
            self._on_bytes(self._unreported)
            self._unreported = 0

    def abort(self) -> None:
        """Close the file (the caller removes it)."""
        self.close()

    def close(self) -> None:
        self._fd = _close(self._fd)


class _Download:
    """The download thread: reads and hashes the stored object into a pipe (bounded by its size)."""

    def __init__(self, source: BinaryIO, limit: int, what: str) -> None:
        self.reader = HashingReader(source, limit=limit, what=what)
        self.pipe = BytePipe(PIPE_BYTES)
        self.output = _PipeReader(self.pipe)
        self._thread = _Stage("recover-download", self._run)
        self._thread.start()

    def _run(self) -> None:
        try:
            while block := self.reader.read(READ_SIZE):
                self.pipe.put(block)
        except BaseException:
            self.pipe.abort()
            raise
        self.pipe.close_write()

    @property
    def error(self) -> BaseException | None:
        """What stopped the download (None while it runs or after a clean end)."""
        return self._thread.error

    def finish(self) -> None:
        """Read what the decrypter left and wait for the download thread (which then hashed it all)."""
        with contextlib.suppress(PipeClosedError):
            self.output.drain()
        self._thread.join()

    def stop(self) -> None:
        """Make the download thread stop at its next block."""
        self.pipe.close_read()
        self._thread.join(_JOIN_SECONDS)


def _libc_sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return cast(Callable[[int, int, int, int], int], call)


_SYNC_FILE_RANGE = _libc_sync_file_range()
_SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask Linux to start writing a range of ``fd`` to disk without waiting (a no-op elsewhere)."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def recover_snapshot(
    store: BlobStore,
    manifest: Manifest,
    prefix: str,
    identities: list[pyrage.x25519.Identity],
    dest: Path,
    *,
    on_bytes: Callable[[int], None] | None = None,
    for_etcdutl: bool = False,
) -> RecoveredSnapshot:
    """Write the plain snapshot of ``manifest`` to ``dest`` after checking digests and the trailer.

    ``prefix`` is the backup's key prefix in ``store``. Raises IntegrityError (nothing written)
    when the stored object, the decryption or the plain snapshot does not check out.
    ``for_etcdutl``: a staging file for ``etcdutl snapshot restore``: its body is not hashed
    here and it is not fsynced; once it outlives this process, check it against the trailer
    (``streams.trailer_matches``) before use (module docstring).
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
    try:
        source = store.open_reader(key)
    except KeyError:
        raise IntegrityError(f"{what}: its manifest names object {stored.key}, "
                             "which is missing from the store") from None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.partial-", dir=dest.parent)
    tmp = Path(tmp_name)
    sink: _PlainSink | _DirectSink = (_DirectSink if for_etcdutl else _PlainSink)(
        fd, on_bytes, manifest.snapshot.size, what)
    download = _Download(source, stored.size, what)
    ok = False
    try:
        try:
            _decode(download.output, sink, identities if encrypted else None,
                    DIRECT_BLOCK if for_etcdutl else READ_SIZE)
            download.finish()
        except BaseException as exc:
            _explain(exc, manifest, download, sink)
            raise
        finally:
            download.stop()
            source.close()
        if download.error is not None:
            raise download.error
        reader = download.reader
        if reader.size != stored.size or reader.sha256 != stored.sha256:
            raise IntegrityError(f"{what}: stored object sha256 does not match the manifest")
        sink.finish()
        sink.close()
        # body sha256 == etcd's trailer == the signed trailer, and the size matches: that pins
        # every byte of the file (body + trailer), so a second full-file hash is not needed.
        if sink.size != manifest.snapshot.size or sink.tail.hex() != manifest.snapshot.trailer_sha256:
            raise IntegrityError(f"{what}: snapshot does not match the manifest")
        if isinstance(sink, _PlainSink) and sink.body_hash.digest() != sink.tail:
            raise IntegrityError(f"{what}: etcd snapshot trailer does not match its content")
        os.replace(tmp, dest)
        ok = True
        return RecoveredSnapshot(dest, sink.size, manifest.snapshot.sha256)
    finally:
        if not ok:
            sink.abort()
            tmp.unlink(missing_ok=True)


def _decode(source: io.RawIOBase, sink: _PlainSink | _DirectSink, identities: list[pyrage.x25519.Identity] | None,
            block: int) -> None:
    """age-decrypt ``source`` (with :class:`~etcdguard.backup.agefile.AgeReader`, unless
    ``identities`` is None) and zstd-decompress it into ``sink`` in output blocks of ``block`` bytes."""
    decompressor: Any = zstandard.ZstdDecompressor().stream_writer(
        cast(BinaryIO, sink), write_size=block, closefd=False)
    if identities is not None:
        reader = AgeReader(source, [str(i) for i in identities])
        while chunk := reader.read_chunk():
            decompressor.write(chunk)
    else:
        while chunk := source.read(READ_SIZE):
            decompressor.write(chunk)
    decompressor.flush()


def _explain(exc: BaseException, manifest: Manifest, download: _Download, sink: _PlainSink | _DirectSink) -> None:
    """Raise the error behind a failed decode, or return to let ``exc`` propagate."""
    what = f"backup {manifest.backup_id}"
    stored = manifest.stored
    if isinstance(exc, IntegrityError | KeyboardInterrupt):
        return
    interrupts.raise_if_requested()  # a stop that a decoder reported as an error of its own
    for error in (sink.error, download.reader.error, sink.write_failure, download.error):
        if error is not None and not isinstance(error, PipeClosedError):
            raise error from None
    if isinstance(exc, zstandard.ZstdError):
        raise IntegrityError(f"{what}: compressed data is corrupt") from None
    if isinstance(exc, AgeError | OSError | PipeClosedError):
        download.finish()  # hash the rest: damaged object, or wrong identity?
        reader = download.reader
        if reader.size != stored.size or reader.sha256 != stored.sha256:
            raise IntegrityError(f"{what}: stored object is damaged: decryption failed and "
                                 "its sha256 does not match the manifest") from None
        raise IntegrityError(f"{what}: cannot decrypt with the given identity "
                             "(wrong key, or the object was re-encrypted by someone else)") from None
