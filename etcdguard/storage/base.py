"""The BlobStore port: where backups live. Adapters: local directory, S3-compatible.

Keys are '/'-separated relative paths (``<cluster>/<backup-id>/manifest.json``); adapters add
their own root (directory or bucket prefix). Contracts every adapter keeps:

* An object written through :meth:`BlobStore.open_writer` becomes visible under its key only
  on :meth:`BlobWriter.commit`; :meth:`BlobWriter.abort` (or an exception inside the ``with``
  block) leaves nothing behind: no object, no temp file, no open multipart upload.
* :meth:`BlobStore.put_bytes` is atomic: readers see the old object, or none, or the whole new one.
* Transient failures (network, 5xx, timeouts) raise ``StorageUnavailableError``; refusals
  (no bucket, access denied) raise ``StorageError``; a missing key raises ``KeyError``
  from the read methods.
* Memory used by a writer is bounded by the adapter's part size times its concurrency,
  whatever the object's size.
* What a writer killed without a chance to abort (SIGKILL, OOM, power loss) leaves behind
  (temp files, open multipart uploads, directories it created) is listed by
  :meth:`BlobStore.list_incomplete` with the time of its last write, and removed by
  :meth:`BlobStore.cleanup_incomplete` once that is older than a threshold, so a writer
  that is still writing is never touched.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import BinaryIO

from etcdguard import interrupts


@dataclass(frozen=True)
class BlobInfo:
    """Metadata of one stored object."""

    key: str
    size: int
    modified: datetime | None = None


@dataclass(frozen=True)
class IncompleteWrite:
    """A leftover of a writer that never committed or aborted: a temp file or an open multipart upload."""

    key: str
    """The store key being written (for a local temp file: its directory plus its temp name)."""
    kind: str
    """``partial file`` or ``multipart upload``."""
    last_activity: datetime
    """When it was last written to (S3: its newest part, else its initiation)."""
    size: int | None = None


class BlobWriter(abc.ABC):
    """A streaming, all-or-nothing upload of one object."""

    key: str

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Append ``data``; may block while earlier parts are uploaded."""

    @abc.abstractmethod
    def commit(self) -> BlobInfo:
        """Make the object visible under its key (durably) and return its info."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Discard everything written so far; safe to call more than once or after commit fails."""

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            with interrupts.deferred():  # a second SIGTERM/Ctrl-C must not cut the abort short
                self.abort()


class BlobStore(abc.ABC):
    """Where backups are kept."""

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """Where this store points, for humans (never contains credentials)."""

    @abc.abstractmethod
    def check(self) -> None:
        """Raise StorageError / StorageUnavailableError unless the store is reachable and usable."""

    @abc.abstractmethod
    def open_writer(self, key: str) -> BlobWriter:
        """Start a streaming upload of ``key`` (see the module contract)."""

    @abc.abstractmethod
    def open_reader(self, key: str) -> BinaryIO:
        """A readable binary stream of ``key``; raises KeyError when it does not exist."""

    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes) -> BlobInfo:
        """Atomically store a small object."""

    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Read a small object whole; raises KeyError when it does not exist."""

    @abc.abstractmethod
    def stat(self, key: str) -> BlobInfo | None:
        """Info of ``key``, or None when it does not exist."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Every object whose key starts with ``prefix``, in key order."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete ``key``; deleting a missing key is not an error."""

    @abc.abstractmethod
    def list_incomplete(self, prefix: str = "") -> builtins.list[IncompleteWrite]:
        """Leftovers of writers under ``prefix`` that neither committed nor aborted (see the module contract).

        A writer still writing is listed too (with a recent ``last_activity``).
        """

    @abc.abstractmethod
    def cleanup_incomplete(self, prefix: str = "", older_than_seconds: float = 0.0) -> int:
        """Remove leftovers under ``prefix`` whose last write is older than the threshold; returns count.

        The local store also removes the empty directories such writers left (same threshold).
        """

    def list_children(self, prefix: str) -> builtins.list[str]:
        """Names of the immediate 'directories' under ``prefix`` (e.g. backup ids under a cluster)."""
        base = prefix.rstrip("/") + "/" if prefix else ""
        names = {info.key[len(base):].split("/", 1)[0] for info in self.list(base)
                 if "/" in info.key[len(base):]}
        return sorted(names)
