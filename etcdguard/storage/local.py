"""BlobStore adapter over a local directory (the embedded default store).

Objects are plain files under the root directory (created 0700). Writers stream into a private
``.partial-*`` temp file (0600) next to the target, then fsync, ``os.replace`` and fsync the
directory, so an object is either absent or complete, even across a crash. An aborted writer
removes its temp file and the directories that became empty; a killed one leaves both, which
:meth:`LocalStore.cleanup_incomplete` removes later.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO

from etcdguard import interrupts
from etcdguard.errors import StorageError
from etcdguard.files import fsync_dir
from etcdguard.storage.base import BlobInfo, BlobStore, BlobWriter, IncompleteWrite

PARTIAL_PREFIX = ".partial-"
_DIR_MODE = 0o700


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative '/'-separated key, else raise ValueError."""
    if not key or key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid storage key {key!r}: must be a non-empty relative '/'-separated path")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"invalid storage key {key!r}: empty, '.' or '..' component")
        if part.startswith(PARTIAL_PREFIX):
            raise ValueError(f"invalid storage key {key!r}: components may not start with {PARTIAL_PREFIX!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """Return ``prefix`` if it is '' or could start a valid key, else raise ValueError."""
    if prefix:
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if head:
            validate_key(head)
        if prefix.startswith("/") or "\x00" in prefix or "\\" in prefix:
            raise ValueError(f"invalid storage prefix {prefix!r}")
    return prefix


def _os_error(action: str, path: Path, exc: OSError) -> StorageError:
    return StorageError(f"local store: cannot {action} {path}: {exc.strerror or exc}")


class LocalWriter(BlobWriter):
    """Streams into a ``.partial-*`` temp file; commit renames it into place."""

    def __init__(self, store: LocalStore, key: str) -> None:
        self.key = key
        self._store = store
        self._final = store.path_of(key)
        self._size = 0
        self._state = "open"
        self._tmp: Path | None = None
        self._file: BinaryIO | None = None
        try:
            # SIGTERM/SIGINT wait until this writer knows its temp file, then abort() removes it
            with interrupts.deferred():
                self._create_temp_file()
        except BaseException:
            self.abort()
            raise

    def _create_temp_file(self) -> None:
        store = self._store
        for attempt in range(3):  # a concurrent delete() may prune the fresh directory
            store.ensure_dir(self._final.parent)
            try:
                fd, tmp = tempfile.mkstemp(prefix=PARTIAL_PREFIX, dir=self._final.parent)
                break
            except FileNotFoundError as exc:
                if attempt == 2:
                    raise _os_error("create a temp file in", self._final.parent, exc) from exc
            except OSError as exc:
                raise _os_error("create a temp file in", self._final.parent, exc) from exc
        self._tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")

    def __repr__(self) -> str:
        return f"LocalWriter({str(self._final)!r}, state={self._state}, size={self._size})"

    def _require_open(self) -> None:
        if self._state != "open":
            raise StorageError(f"local store: writer for {self.key} is already {self._state}")

    def write(self, data: bytes) -> None:
        """Append ``data`` to the temp file."""
        self._require_open()
        assert self._file is not None and self._tmp is not None  # open writers have their temp file
        try:
            self._file.write(data)
        except OSError as exc:
            raise _os_error("write", self._tmp, exc) from exc
        self._size += len(data)

    def commit(self) -> BlobInfo:
        """fsync the temp file, rename it to the key's path and fsync the directory (not cut short
        by SIGTERM/SIGINT: an object that became visible is reported as committed)."""
        self._require_open()
        with interrupts.deferred():
            self._commit()
        return BlobInfo(self.key, self._size, datetime.now(timezone.utc))

    def _commit(self) -> None:
        assert self._file is not None and self._tmp is not None  # open writers have their temp file
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            os.replace(self._tmp, self._final)
            fsync_dir(self._final.parent)
        except OSError as exc:
            self._state = "failed"
            raise _os_error("commit", self._final, exc) from exc
        self._state = "committed"

    def abort(self) -> None:
        """Close and remove the temp file and the directories left empty; idempotent, never raises."""
        if self._state in ("committed", "aborted"):
            return
        self._state = "aborted"
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.unlink()
        self._store.prune_empty_dirs(self._final.parent)


class LocalStore(BlobStore):
    """Objects as files under ``root``; keys map to relative paths."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(os.path.abspath(root))

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    @property
    def url(self) -> str:
        """``file:///abs/path`` of the root directory."""
        return self.root.as_uri()

    def path_of(self, key: str) -> Path:
        """The file path of ``key`` (validated)."""
        return self.root.joinpath(*validate_key(key).split("/"))

    def ensure_dir(self, path: Path) -> None:
        """Create ``path`` (under the root) and its parents with mode 0700, fsyncing each parent."""
        missing: list[Path] = []
        cur = path
        while not cur.is_dir():
            missing.append(cur)
            if cur == cur.parent:
                break
            cur = cur.parent
        for d in reversed(missing):
            try:
                d.mkdir(mode=_DIR_MODE)
            except FileExistsError:
                if not d.is_dir():
                    raise StorageError(f"local store: {d} exists and is not a directory") from None
                continue
            except OSError as exc:
                raise _os_error("create directory", d, exc) from exc
            with contextlib.suppress(OSError):
                fsync_dir(d.parent)

    def prune_empty_dirs(self, path: Path) -> None:
        """Remove ``path`` and its parents while they are empty (never the root); never raises."""
        while path != self.root and self.root in path.parents:
            try:
                path.rmdir()
            except OSError:  # not empty (another writer), gone, or not ours to remove
                return
            with contextlib.suppress(OSError):
                fsync_dir(path.parent)
            path = path.parent

    def check(self) -> None:
        """The root exists (or can be created) and is writable."""
        if self.root.exists() and not self.root.is_dir():
            raise StorageError(f"local store {self.root} is not a directory")
        self.ensure_dir(self.root)
        try:
            fd, tmp = tempfile.mkstemp(prefix=PARTIAL_PREFIX + "check-", dir=self.root)
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise StorageError(f"local store {self.root} is not writable: {exc.strerror or exc}") from exc

    def open_writer(self, key: str) -> BlobWriter:
        """Start an atomic streaming write of ``key``."""
        return LocalWriter(self, key)

    def open_reader(self, key: str) -> BinaryIO:
        """Open ``key`` for reading; KeyError if it does not exist."""
        path = self.path_of(key)
        try:
            return path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None
        except OSError as exc:
            raise _os_error("read", path, exc) from exc

    def put_bytes(self, key: str, data: bytes) -> BlobInfo:
        """Atomically write a small object (temp file + rename)."""
        with self.open_writer(key) as writer:
            writer.write(data)
            return writer.commit()

    def get_bytes(self, key: str) -> bytes:
        """Read ``key`` whole; KeyError if it does not exist."""
        with self.open_reader(key) as f:
            return f.read()

    def stat(self, key: str) -> BlobInfo | None:
        """Size and mtime of ``key``, or None."""
        path = self.path_of(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise _os_error("stat", path, exc) from exc
        if not stat.S_ISREG(st.st_mode):
            return None
        return BlobInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def _walk(self, prefix: str, partial: bool) -> Iterator[tuple[str, os.DirEntry[str]]]:
        """(key, entry) of regular files under ``prefix`` in key order; partial files xor objects."""
        validate_prefix(prefix)
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*head.split("/")) if head else self.root
        yield from self._walk_dir(start, head + "/" if head else "", prefix, partial)

    def _walk_dir(self, path: Path, base: str, prefix: str,
                  partial: bool) -> Iterator[tuple[str, os.DirEntry[str]]]:
        try:
            with os.scandir(path) as it:
                entries = [(e.name + ("/" if e.is_dir(follow_symlinks=False) else ""), e) for e in it]
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise _os_error("list", path, exc) from exc
        # Sorting names with a trailing '/' for directories yields exact key (code point) order.
        for name, entry in sorted(entries, key=lambda t: t[0]):
            key = base + name
            if name.endswith("/"):
                if key.startswith(prefix) or prefix.startswith(key):
                    yield from self._walk_dir(Path(entry.path), key, prefix, partial)
            elif not entry.is_file(follow_symlinks=False) or name.startswith(PARTIAL_PREFIX) != partial:
                continue
            # Temp files belong to a whole directory, so only those in a directory inside the prefix.
            elif base.startswith(prefix) if partial else key.startswith(prefix):
                yield key, entry

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """Every committed object whose key starts with ``prefix``, in key order."""
        for key, entry in self._walk(prefix, partial=False):
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            yield BlobInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

    def delete(self, key: str) -> None:
        """Remove ``key`` and prune now-empty parent directories (never the root)."""
        path = self.path_of(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except IsADirectoryError:
            return
        except OSError as exc:
            raise _os_error("delete", path, exc) from exc
        with contextlib.suppress(OSError):
            fsync_dir(path.parent)
        self.prune_empty_dirs(path.parent)

    def list_incomplete(self, prefix: str = "") -> builtins.list[IncompleteWrite]:
        """``.partial-*`` temp files under ``prefix`` (size, mtime), and empty directories."""
        found = []
        for key, entry in self._walk(prefix, partial=True):
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            found.append(IncompleteWrite(key, "partial file", datetime.fromtimestamp(st.st_mtime, timezone.utc),
                                         st.st_size))
        for path, mtime in self._empty_dirs(prefix):
            found.append(IncompleteWrite(path.relative_to(self.root).as_posix() + "/", "empty directory",
                                         datetime.fromtimestamp(mtime, timezone.utc), 0))
        return found

    def cleanup_incomplete(self, prefix: str = "", older_than_seconds: float = 0.0) -> int:
        """Remove ``.partial-*`` temp files, then empty directories, not modified for the threshold.

        Returns how many temp files were removed. A directory another writer has just created
        (or written a temp file into) has a fresh mtime and is left alone.
        """
        cutoff = time.time() - older_than_seconds
        removed = 0
        for _key, entry in list(self._walk(prefix, partial=True)):
            try:
                if entry.stat(follow_symlinks=False).st_mtime <= cutoff:
                    os.unlink(entry.path)
                    removed += 1
                    self.prune_empty_dirs(Path(entry.path).parent)  # its backup directory, if now empty
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _os_error("remove", Path(entry.path), exc) from exc
        self._remove_stale_empty_dirs(prefix, cutoff)
        return removed

    def _empty_dirs(self, prefix: str) -> Iterator[tuple[Path, float]]:
        """(path, mtime) of empty directories under ``prefix``, deepest first (never the root)."""
        validate_prefix(prefix)
        head = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*head.split("/")) if head else self.root
        if not start.is_dir():
            return
        for dirpath, dirs, files in os.walk(start, topdown=False):
            path = Path(dirpath)
            if path == self.root or files or any((path / d).exists() for d in dirs):
                continue
            rel = path.relative_to(self.root).as_posix() + "/"
            if not rel.startswith(prefix) or rel == prefix:
                continue
            try:
                yield path, path.stat().st_mtime
            except OSError:
                continue

    def _remove_stale_empty_dirs(self, prefix: str, cutoff: float) -> None:
        """Remove empty directories under ``prefix`` (deepest first) last modified before ``cutoff``."""
        for path, mtime in self._empty_dirs(prefix):
            if mtime <= cutoff:
                with contextlib.suppress(OSError):  # a writer just put something in it
                    path.rmdir()
