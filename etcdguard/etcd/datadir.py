"""What a stopped member's data dir holds: its db's snapshot status, member id and cluster id.

The ids come from the WAL's metadata record (the first records of the oldest ``.wal`` file: a
frame is a little-endian uint64 whose low 56 bits are the record's length and whose top byte
holds the padding; a record is the protobuf ``walpb.Record{type, crc, data}``, and the metadata
record's data is ``etcdserverpb.Metadata{NodeID, ClusterID}``). Nothing here writes to the dir.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from etcdguard.errors import EtcdGuardError
from etcdguard.etcd.tools import EtcdToolError, SnapshotStatus, SnapshotTool, snapshot_status

_METADATA_TYPE = 1
_MAX_RECORD = 64 << 20
_SCAN_RECORDS = 16


@dataclass(frozen=True)
class DataDirInfo:
    """A member data dir as found on disk (any part may be missing)."""

    path: Path
    db: Path | None
    wal_dir: Path | None
    member_id: int | None = None
    cluster_id: int | None = None
    status: SnapshotStatus | None = None
    problem: str = ""

    @property
    def exists(self) -> bool:
        """True when the dir holds an etcd db or WAL."""
        return self.db is not None or self.wal_dir is not None


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes) -> dict[int, int | bytes]:
    """The varint and length-delimited fields of a protobuf message (last one wins)."""
    out: dict[int, int | bytes] = {}
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            out[number], pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            out[number], pos = buf[pos:pos + size], pos + size
        elif wire == 1:
            out[number], pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 5:
            out[number], pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
    return out


def wal_ids(wal_dir: Path) -> tuple[int, int]:
    """(member id, cluster id) from the metadata record of the oldest WAL file in ``wal_dir``."""
    files = sorted(wal_dir.glob("*.wal"))
    if not files:
        raise ValueError(f"no .wal files in {wal_dir}")
    with files[0].open("rb") as f:
        for _ in range(_SCAN_RECORDS):
            head = f.read(8)
            if len(head) < 8:
                break
            frame = struct.unpack("<Q", head)[0]
            length, padding = frame & ((1 << 56) - 1), (frame >> 56) & 0x7 if frame >> 63 else 0
            if length == 0 or length > _MAX_RECORD:
                break
            record = _fields(f.read(length))
            f.read(padding)
            if record.get(1) == _METADATA_TYPE:
                data = record.get(3, b"")
                meta = _fields(data if isinstance(data, bytes) else b"")
                member, cluster = meta.get(1, 0), meta.get(2, 0)
                if isinstance(member, int) and isinstance(cluster, int) and member and cluster:
                    return member, cluster
                raise ValueError("the WAL metadata record holds no ids")
    raise ValueError(f"no metadata record at the start of {files[0]}")


def read_data_dir(data_dir: Path, tool: SnapshotTool | None = None, wal_dir: Path | None = None) -> DataDirInfo:
    """Inspect a stopped member's data dir: ``member/snap/db`` (snapshot status when ``tool`` is
    given) and the WAL (``member/wal`` or ``wal_dir``) for its member and cluster id.

    Never raises for what it finds: a damaged or missing part is named in ``problem``.
    """
    db = data_dir / "member" / "snap" / "db"
    wal = wal_dir or data_dir / "member" / "wal"
    problems: list[str] = []
    member_id = cluster_id = None
    status = None
    has_wal = wal.is_dir() and any(wal.glob("*.wal"))
    if has_wal:
        try:
            member_id, cluster_id = wal_ids(wal)
        except (OSError, ValueError, struct.error) as exc:
            problems.append(f"WAL unreadable: {exc}")
    if db.is_file() and tool is not None:
        try:
            status = snapshot_status(tool, db, error=EtcdToolError)
        except EtcdGuardError as exc:
            problems.append(f"db unreadable: {exc}")
    return DataDirInfo(data_dir, db if db.is_file() else None, wal if has_wal else None, member_id,
                       cluster_id, status, "; ".join(problems))
