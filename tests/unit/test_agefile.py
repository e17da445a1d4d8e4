"""The age reader the restore decrypts with: the same plaintext as pyrage and the age command, and
every kind of damage, truncation or wrong identity refused."""

from __future__ import annotations

import io
import shutil
import subprocess

import pyrage
import pytest

from etcdguard.backup.agefile import CHUNK, AgeError, AgeReader, identity_key
from tests.support.require import missing

IDENTITY = pyrage.x25519.Identity.generate()
SECRET = str(IDENTITY)
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 12345]


def _plain(n: int) -> bytes:
    return bytes((i * 7 + i // 251) & 0xFF for i in range(n))


def _decrypt(data: bytes, identities: list[str] | None = None) -> bytes:
    reader = AgeReader(io.BytesIO(data), identities or [SECRET])
    out = bytearray()
    while chunk := reader.read_chunk():
        out += chunk
    return bytes(out)


@pytest.mark.parametrize("size", SIZES)
def test_pyrage_files_decrypt_to_the_same_bytes(size: int) -> None:
    plain = _plain(size)
    sealed = pyrage.encrypt(plain, [IDENTITY.to_public(), pyrage.x25519.Identity.generate().to_public()])
    assert _decrypt(sealed) == plain
    reader = AgeReader(io.BytesIO(sealed), [SECRET])  # read() hands out the same bytes
    assert reader.read() == plain


@pytest.mark.parametrize("size", [0, CHUNK, 2 * CHUNK + 5])
def test_files_of_the_age_command_decrypt_to_the_same_bytes(size: int) -> None:
    age = shutil.which("age") or missing("the age command is not installed (scripts/install-test-deps.sh)")
    plain = _plain(size)
    sealed = subprocess.run([age, "-r", str(IDENTITY.to_public())], input=plain, capture_output=True,
                            check=True).stdout
    assert _decrypt(sealed) == plain


def test_every_flipped_byte_is_refused() -> None:
    sealed = pyrage.encrypt(_plain(2 * CHUNK + 100), [IDENTITY.to_public()])
    header_end = sealed.index(b"\n---") + 1
    positions = [*range(0, header_end + 60, 7), header_end + 80, len(sealed) // 2, len(sealed) - 1]
    for pos in positions:
        bad = bytearray(sealed)
        bad[pos] ^= 0x01
        with pytest.raises(AgeError):
            _decrypt(bytes(bad))


def test_truncation_and_extension_are_refused() -> None:
    sealed = pyrage.encrypt(_plain(2 * CHUNK + 100), [IDENTITY.to_public()])
    for cut in (len(sealed) - 1, len(sealed) - 116, len(sealed) - (CHUNK + 16) - 116, 40):
        with pytest.raises(AgeError):
            _decrypt(sealed[:cut])
    with pytest.raises(AgeError):
        _decrypt(sealed + b"\0" * 20)  # bytes after the last chunk


def test_a_wrong_identity_or_a_foreign_file_is_refused() -> None:
    sealed = pyrage.encrypt(b"secret", [IDENTITY.to_public()])
    with pytest.raises(AgeError, match="no identity matched"):
        _decrypt(sealed, [str(pyrage.x25519.Identity.generate())])
    with pytest.raises(AgeError, match="not an age"):
        _decrypt(b"SQLite format 3\n" + bytes(100))
    with pytest.raises(AgeError, match="identity"):
        identity_key("AGE-SECRET-KEY-1QQQQ")
    with pytest.raises(AgeError, match="checksum"):
        identity_key(SECRET[:-1] + ("Q" if SECRET[-1] != "Q" else "P"))
