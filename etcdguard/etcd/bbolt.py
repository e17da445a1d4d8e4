"""A small read-only reader of bbolt files: etcd's ``member/snap/db`` and its snapshots.

Only what the live B+tree holds is read: the valid meta page with the highest transaction id,
then the root bucket's tree down to a named bucket, whose entries are iterated in key order.
Free pages and stale page versions are never visited, unlike a byte scan of the file.

Layout (bbolt, file format version 2, little-endian):

* every page starts with a 16-byte header: id u64, flags u16, count u16, overflow u32; a page
  spans ``(1 + overflow) * page_size`` bytes;
* pages 0 and 1 are meta pages: magic u32, version u32, page size u32, flags u32, root bucket
  (root page u64, sequence u64), freelist page u64, high-water page u64, txid u64, checksum u64
  (FNV-64a of the meta bytes before it);
* branch elements (16 bytes): pos u32, key size u32, child page u64; leaf elements (16 bytes):
  flags u32, pos u32, key size u32, value size u32; ``pos`` counts from the element itself;
* a leaf value flagged as a bucket starts with the bucket header (root page u64, sequence u64);
  root page 0 means an inline bucket whose single leaf page follows the header in the value.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from etcdguard.errors import IntegrityError

MAGIC = 0xED0CDAED
VERSION = 2
PAGE_HEADER = 16
ELEMENT = 16
BUCKET_HEADER = 16
META_SIZE = 64
BRANCH_PAGE, LEAF_PAGE, META_PAGE = 0x01, 0x02, 0x04
BUCKET_LEAF = 0x01
MAX_DEPTH = 64

_HEADER = struct.Struct("<QHHI")
_META = struct.Struct("<IIIIQQQQQQ")
_BRANCH = struct.Struct("<IIQ")
_LEAF = struct.Struct("<IIII")
_FNV_OFFSET, _FNV_PRIME, _MASK = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


class BoltError(IntegrityError):
    """The file is not a readable bbolt database (truncated, corrupt, or something else)."""


def fnv64a(data: bytes) -> int:
    """FNV-1a, 64 bits: bbolt's meta page checksum."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _MASK
    return h


@dataclass(frozen=True)
class Meta:
    """One meta page's fields."""

    page_size: int
    root: int
    freelist: int
    high_water: int
    txid: int


def parse_meta(raw: bytes) -> Meta | None:
    """A meta page's body (the 64 bytes after the page header); None when it is not valid."""
    if len(raw) < META_SIZE:
        return None
    magic, version, page_size, _flags, root, _seq, freelist, pgid, txid, checksum = _META.unpack_from(raw)
    if magic != MAGIC or version != VERSION or checksum != fnv64a(raw[:META_SIZE - 8]):
        return None
    return Meta(page_size, root, freelist, pgid, txid)


class BoltFile:
    """An open bbolt file, read through a read-only memory map. Use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with path.open("rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise BoltError(f"cannot read {path}: {exc.strerror or exc}") from None
        except ValueError:  # an empty file cannot be mapped
            raise BoltError(f"{path} is empty, not an etcd database") from None
        try:
            self.meta = self._read_meta()
        except BoltError:
            self._map.close()
            raise
        self.page_size = self.meta.page_size

    def __enter__(self) -> BoltFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Unmap the file."""
        self._map.close()

    def _read_meta(self) -> Meta:
        """The valid meta page with the highest txid (as bbolt's ``db.meta()``)."""
        m = self._map
        first = parse_meta(m[PAGE_HEADER:PAGE_HEADER + META_SIZE])
        sizes = [first.page_size] if first else [1024 << i for i in range(15)]
        second: Meta | None = None
        for size in sizes:
            if size + PAGE_HEADER + META_SIZE > len(m):
                break
            second = parse_meta(m[size + PAGE_HEADER:size + PAGE_HEADER + META_SIZE])
            if second is not None:
                break
        metas = [x for x in (first, second) if x is not None]
        if not metas:
            raise BoltError(f"{self.path} is not an etcd database: no valid bbolt meta page")
        best = max(metas, key=lambda x: x.txid)
        if best.page_size < 512 or best.page_size & (best.page_size - 1):
            raise BoltError(f"{self.path}: implausible page size {best.page_size}")
        if best.high_water * best.page_size > len(m):
            raise BoltError(f"{self.path} is truncated: {len(m):,} bytes, the database needs "
                            f"{best.high_water * best.page_size:,}")
        return best

    def _page(self, pgid: int) -> tuple[int, int, int]:
        """(offset, flags, count) of page ``pgid``, checked against the file and its own header."""
        if pgid < 2 or pgid >= self.meta.high_water:
            raise BoltError(f"{self.path}: page {pgid} is outside the database (corrupt)")
        at = pgid * self.page_size
        own_id, flags, count, overflow = _HEADER.unpack_from(self._map, at)
        if own_id != pgid or flags not in (BRANCH_PAGE, LEAF_PAGE):
            raise BoltError(f"{self.path}: page {pgid} is not a tree page (corrupt)")
        if at + (1 + overflow) * self.page_size > len(self._map) or count * ELEMENT > (1 + overflow) * self.page_size:
            raise BoltError(f"{self.path}: page {pgid} runs past the end of the file (truncated)")
        return at, flags, count

    def bucket(self, *names: bytes) -> Bucket:
        """The bucket at ``names`` (nested), starting from the root bucket."""
        b = Bucket(self, self.meta.root, None)
        for name in names:
            b = b.child(name)
        return b


@dataclass(frozen=True)
class Bucket:
    """A bucket: a tree rooted at page ``root``, or (root 0) an inline leaf page held in ``inline``."""

    db: BoltFile
    root: int
    inline: bytes | None

    def child(self, name: bytes) -> Bucket:
        """The nested bucket ``name``; BoltError when there is none."""
        for key, value, flags in self._entries():
            if key == name:
                if not flags & BUCKET_LEAF:
                    raise BoltError(f"{self.db.path}: {name.decode(errors='replace')!r} is a value, not a bucket")
                return self._open(value)
            if key > name:
                break
        raise BoltError(f"{self.db.path} has no {name.decode(errors='replace')!r} bucket (not an etcd database?)")

    def _open(self, value: bytes) -> Bucket:
        if len(value) < BUCKET_HEADER:
            raise BoltError(f"{self.db.path}: bucket header too short (corrupt)")
        root = int.from_bytes(value[:8], "little")
        return Bucket(self.db, root, value[BUCKET_HEADER:] if root == 0 else None)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) of this bucket, in key order (nested buckets are skipped)."""
        for key, value, flags in self._entries():
            if not flags & BUCKET_LEAF:
                yield key, value

    def _entries(self) -> Iterator[tuple[bytes, bytes, int]]:
        if self.inline is not None:
            yield from _leaf_entries(self.inline, 0, self.db.path)
            return
        yield from self._walk(self.root, 0, set())

    def _walk(self, pgid: int, depth: int, seen: set[int]) -> Iterator[tuple[bytes, bytes, int]]:
        if depth > MAX_DEPTH or pgid in seen:
            raise BoltError(f"{self.db.path}: the tree loops through page {pgid} (corrupt)")
        seen.add(pgid)
        at, flags, count = self.db._page(pgid)
        m = self.db._map
        if flags == LEAF_PAGE:
            yield from _leaf_entries(m, at, self.db.path)
            return
        unpack = _BRANCH.unpack_from
        children = [unpack(m, at + PAGE_HEADER + i * ELEMENT)[2] for i in range(count)]
        for child in children:
            yield from self._walk(child, depth + 1, seen)


def _leaf_entries(m: bytes | mmap.mmap, at: int, path: Path) -> Iterator[tuple[bytes, bytes, int]]:
    """(key, value, flags) of the leaf page at offset ``at`` of ``m``."""
    end = len(m)
    if at + PAGE_HEADER > end:
        raise BoltError(f"{path}: inline bucket too short (corrupt)")
    _own_id, flags, count, _overflow = _HEADER.unpack_from(m, at)
    if flags != LEAF_PAGE or at + PAGE_HEADER + count * ELEMENT > end:
        raise BoltError(f"{path}: not a leaf page (corrupt)")
    unpack = _LEAF.unpack_from
    for i in range(count):
        elem = at + PAGE_HEADER + i * ELEMENT
        eflags, pos, ksize, vsize = unpack(m, elem)
        k = elem + pos
        v = k + ksize
        if v + vsize > end:
            raise BoltError(f"{path}: a leaf entry runs past the end of the file (truncated)")
        yield m[k:v], m[v:v + vsize], eflags
