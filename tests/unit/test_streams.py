"""The snapshot reader's trailer check and the key-prefix grouping."""

from __future__ import annotations

import hashlib
import io

import pytest

from etcdguard.backup.keycount import resource_prefix
from etcdguard.backup.streams import SnapshotReader
from etcdguard.errors import IntegrityError


def etcd_like(body: bytes) -> bytes:
    return body + hashlib.sha256(body).digest()


def chunks(data: bytes, size: int):
    for i in range(0, len(data), size):
        yield data[i:i + size]


@pytest.mark.parametrize("chunk_size", [1, 7, 32, 33, 1000, 10**6])
def test_trailer_is_checked_across_any_chunking(chunk_size: int) -> None:
    data = etcd_like(bytes(range(256)) * 40)
    reader = SnapshotReader(chunks(data, chunk_size))
    out = io.BufferedReader(reader).read()
    assert out == data and reader.eof
    assert reader.sha256 == hashlib.sha256(data).hexdigest()
    assert reader.trailer_hex == data[-32:].hex()


def test_a_corrupt_stream_fails_the_trailer_check() -> None:
    data = bytearray(etcd_like(b"x" * 5000))
    data[100] ^= 1
    reader = SnapshotReader(chunks(bytes(data), 512))
    with pytest.raises(IntegrityError, match="trailer"):
        io.BufferedReader(reader).read()


def test_a_truncated_stream_fails_the_trailer_check() -> None:
    data = etcd_like(b"y" * 5000)[:-10]
    with pytest.raises(IntegrityError):
        io.BufferedReader(SnapshotReader(chunks(data, 512))).read()


@pytest.mark.parametrize(("key", "prefix"), [
    (b"/registry/pods/default/web-1", "/registry/pods"),
    (b"/registry/services/specs/default/kubernetes", "/registry/services"),
    (b"/registry/stable.example.com/crontabs/default/c1", "/registry/stable.example.com/crontabs"),
    (b"/registry/apiextensions.k8s.io/customresourcedefinitions/crontabs.stable.example.com",
     "/registry/apiextensions.k8s.io/customresourcedefinitions"),
    (b"/other/key", None),
    (b"/registry/", None),
])
def test_resource_prefix(key: bytes, prefix: str | None) -> None:
    assert resource_prefix(key) == prefix
