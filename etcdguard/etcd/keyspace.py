"""etcd's current keyspace, read exactly from a db or snapshot file (no etcd process needed).

etcd keeps every revision of every key in the bbolt bucket ``key``: the bucket key is the
revision (8-byte big-endian main revision, ``_``, 8-byte big-endian sub revision, then ``t`` when
the entry is a tombstone) and the value a ``mvccpb.KeyValue``. Bucket keys sort by revision, so
the last entry seen for a user key is its newest; the key is current unless that entry is a
tombstone. Old revisions (until compaction) and free pages are therefore never mistaken for data.

Two streaming passes keep memory bounded by the number of user keys (no values are kept): the
first maps each user key to its newest revision, the second yields the winning entries.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from etcdguard.etcd.bbolt import BoltError, BoltFile
from etcdguard.etcd.pb.kv_pb2 import KeyValue

KEY_BUCKET = b"key"
REVISION_BYTES = 17
TOMBSTONE_MARK = 0x74  # "t"


@dataclass(frozen=True, order=True)
class Revision:
    """An MVCC revision: ``main`` counts transactions, ``sub`` the changes within one."""

    main: int
    sub: int


def parse_revision_key(raw: bytes) -> tuple[Revision, bool]:
    """A ``key`` bucket key -> (revision, is tombstone)."""
    n = len(raw)
    if n not in (REVISION_BYTES, REVISION_BYTES + 1) or raw[8] != 0x5F or (
            n > REVISION_BYTES and raw[REVISION_BYTES] != TOMBSTONE_MARK):
        raise BoltError(f"not an etcd revision key: {raw[:32].hex()}")
    return Revision(int.from_bytes(raw[:8], "big"), int.from_bytes(raw[9:17], "big")), n > REVISION_BYTES


def user_key(value: bytes) -> bytes:
    """The user key of a serialized KeyValue (field 1, first as etcd writes it; else a full parse)."""
    if value[:1] == b"\x0a":
        length, shift, i = 0, 0, 1
        while i < len(value) and i < 11:
            b = value[i]
            length |= (b & 0x7F) << shift
            i += 1
            if not b & 0x80:
                if i + length <= len(value):
                    return value[i:i + length]
                break
            shift += 7
    return _parse(value).key


def _parse(value: bytes) -> KeyValue:
    kv = KeyValue()
    try:
        kv.ParseFromString(value)
    except DecodeError:
        raise BoltError("a value in the 'key' bucket is not an etcd KeyValue (corrupt)") from None
    return kv


def newest_revisions(db: BoltFile) -> dict[bytes, bytes]:
    """User key -> the bucket key of its newest entry, for every key that is not deleted."""
    newest: dict[bytes, bytes] = {}
    for rev, value in db.bucket(KEY_BUCKET).items():
        if len(rev) - REVISION_BYTES not in (0, 1):
            parse_revision_key(rev)  # raises, naming the bad key
        newest[user_key(value)] = rev
    return {k: r for k, r in newest.items() if len(r) == REVISION_BYTES}


def current_entries(db: BoltFile) -> Iterator[KeyValue]:
    """Every current key with its newest value, in revision order (two passes over the bucket)."""
    winners = set(newest_revisions(db).values())
    for rev, value in db.bucket(KEY_BUCKET).items():
        if rev in winners:
            parse_revision_key(rev)
            yield _parse(value)


def current_keyspace(path: Path) -> Iterator[KeyValue]:
    """The current keys of the etcd db or snapshot at ``path``; BoltError when it cannot be read."""
    with BoltFile(path) as db:
        yield from current_entries(db)


def resource_type(key: bytes, prefix: bytes = b"/registry/") -> str | None:
    """``secrets`` for ``/registry/secrets/ns/name``; ``apps.example.com/widgets`` for API groups;
    None outside ``prefix``."""
    if not key.startswith(prefix):
        return None
    parts = key[len(prefix):].split(b"/", 2)
    kind = parts[0].decode(errors="replace")
    if "." in kind and len(parts) > 2:
        kind += "/" + parts[1].decode(errors="replace")
    return kind
