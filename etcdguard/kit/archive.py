"""The kit object both ways: tar -> zstd -> age, and back with every check before anything is used.

The tar members are the files' host paths without the leading slash, with their modes, owners
(ids and names) and directory entries, so standard tools restore the tree::

    age -d -i identity.age kit.tar.zst.age | zstd -d | tar -x -p --same-owner -C /restore-root

Reading back is bounded: the stored size is checked before the download, the sha256 of the
stored bytes and of the tar are checked, decompression stops at the tar size the manifest states,
and each member must be exactly the file the manifest lists (type, size, sha256).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass

import pyrage
import zstandard

from etcdguard.backup.streams import HashingWriter
from etcdguard.errors import ConfigError, IntegrityError
from etcdguard.kit.collect import CollectedFile
from etcdguard.kit.model import ArchiveInfo, KitFile, KitManifest
from etcdguard.storage.base import BlobWriter

MTIME = 0  # members carry no time: the same content gives the same archive


def build_tar(files: list[CollectedFile]) -> bytes:
    """A POSIX tar of ``files`` (directories first, as collected)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for item in files:
            entry = item.entry
            info = tarfile.TarInfo(entry.member_name)
            info.mode, info.uid, info.gid = entry.mode, entry.uid, entry.gid
            info.uname, info.gname, info.mtime = entry.user, entry.group, MTIME
            if entry.is_dir:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(item.data)
                tar.addfile(info, io.BytesIO(item.data))
    return buffer.getvalue()


@dataclass(frozen=True)
class Encoded:
    """Digests of what was written."""

    archive: ArchiveInfo
    stored_size: int
    stored_sha256: str


def encode(tar_bytes: bytes, writer: BlobWriter, recipients: list[pyrage.x25519.Recipient],
           level: int) -> Encoded:
    """zstd-compress and age-encrypt ``tar_bytes`` (plain zstd with no recipient) into ``writer``."""
    compressed = zstandard.ZstdCompressor(level=level).compress(tar_bytes)
    sink = HashingWriter(writer.write)
    try:
        if recipients:
            pyrage.encrypt_io(io.BytesIO(compressed), sink, recipients)
        else:
            sink.write(compressed)
    except BaseException:
        if sink.error is not None:  # the store's (or a signal's) exception, not age's wrapper of it
            raise sink.error from None
        raise
    if sink.error is not None:
        raise sink.error
    archive = ArchiveInfo(size=len(tar_bytes), sha256=hashlib.sha256(tar_bytes).hexdigest())
    return Encoded(archive, sink.size, sink.sha256)


def decode(stored: bytes, manifest: KitManifest, identities: list[pyrage.x25519.Identity]) -> bytes:
    """The tar bytes of a stored kit object, after the stored and plain digests check."""
    what = f"kit {manifest.kit_id}"
    if len(stored) != manifest.stored.size or hashlib.sha256(stored).hexdigest() != manifest.stored.sha256:
        raise IntegrityError(f"{what}: the stored object does not match its manifest's sha256 "
                             "(it was modified or truncated)")
    if manifest.stored.encryption == "age-x25519":
        if not identities:
            raise ConfigError(f"{what} is encrypted: pass --identity (the age identity file)")
        try:
            compressed = pyrage.decrypt(stored, identities)
        except Exception:  # pyrage raises its own DecryptError types
            raise IntegrityError(f"{what}: age decryption failed (wrong identity?)") from None
    else:
        compressed = stored
    try:
        plain = zstandard.ZstdDecompressor().decompress(compressed, max_output_size=manifest.archive.size)
    except zstandard.ZstdError:
        raise IntegrityError(f"{what}: the zstd data is corrupt or larger than its manifest states") from None
    if len(plain) != manifest.archive.size or hashlib.sha256(plain).hexdigest() != manifest.archive.sha256:
        raise IntegrityError(f"{what}: the tar archive does not match its manifest's sha256")
    return plain


def read_members(tar_bytes: bytes, manifest: KitManifest) -> dict[str, bytes]:
    """Every file's bytes by host path, after checking the archive holds exactly the manifest's files."""
    what = f"kit {manifest.kit_id}"
    expected: dict[str, KitFile] = {f.member_name: f for f in manifest.files}
    out: dict[str, bytes] = {}
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
            for info in tar:
                entry = expected.get(info.name)
                if entry is None or info.name in seen:
                    raise IntegrityError(f"{what}: unexpected archive member {info.name!r}")
                seen.add(info.name)
                if entry.is_dir:
                    if not info.isdir():
                        raise IntegrityError(f"{what}: {entry.path} should be a directory")
                    continue
                if not info.isreg() or info.size != entry.size:
                    raise IntegrityError(f"{what}: {entry.path} is not the file its manifest lists")
                extracted = tar.extractfile(info)
                data = extracted.read() if extracted is not None else b""
                if hashlib.sha256(data).hexdigest() != entry.sha256:
                    raise IntegrityError(f"{what}: {entry.path} does not match its sha256")
                out[entry.path] = data
    except tarfile.TarError:
        raise IntegrityError(f"{what}: the tar archive is corrupt") from None
    missing = sorted(set(expected) - seen)
    if missing:
        raise IntegrityError(f"{what}: the archive lacks {len(missing)} listed file(s), e.g. /{missing[0]}")
    return out
