"""Streaming decryption of age files (age-encryption.org/v1, X25519 recipients) with `cryptography`.

The restore stages a backup through this reader rather than pyrage: pyrage decrypts at about a
fifth of the speed and holds the interpreter lock while it does, so on a restore's critical
path decryption cost more than decompression. The format is small (https://age-encryption.org/v1):

* a text header: the version line, one stanza per recipient (``-> X25519 <share>`` and the
  wrapped file key), and ``--- <MAC>``, an HMAC-SHA256 of the header under a key derived from
  the file key;
* a 16-byte nonce, then the payload in 64 KiB chunks, each ChaCha20-Poly1305 sealed under a key
  derived from the file key and that nonce, with an 11-byte counter and a last-chunk flag as
  the chunk nonce (so a truncated or reordered payload does not authenticate).

Everything fails closed with :class:`AgeError`. The restore also holds the whole stored object to
the sha256 its signed manifest states, so this reader is not what makes the data trusted.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import io
from collections.abc import Iterable
from hashlib import sha256

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION_LINE = b"age-encryption.org/v1"
CHUNK = 64 * 1024
TAG = 16
FILE_KEY = 16  # bytes; wrapped: 32
_MAX_HEADER = 64 * 1024
_COLUMNS = 64
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_IDENTITY_HRP = "age-secret-key-"


class AgeError(Exception):
    """The input is not an age file this identity can open, or it does not authenticate."""


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _b64(text: bytes) -> bytes:
    """age's base64: standard alphabet, no padding, canonical."""
    if b"=" in text or b"\r" in text:
        raise AgeError("malformed header: padded or non-canonical base64")
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise AgeError("malformed header: invalid base64") from None
    if base64.b64encode(data).rstrip(b"=") != text:
        raise AgeError("malformed header: non-canonical base64")
    return data


def identity_key(text: str) -> X25519PrivateKey:
    """The X25519 key of an ``AGE-SECRET-KEY-1...`` identity (Bech32, checksum verified)."""
    lower = text.strip().lower()
    hrp, sep, data = lower.rpartition("1")
    if not sep or hrp != _IDENTITY_HRP or len(data) < 6 or any(c not in _BECH32 for c in data):
        raise AgeError("not an age X25519 identity")
    values = [_BECH32.index(c) for c in data]
    if _bech32_polymod([ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + values) != 1:
        raise AgeError("age identity checksum mismatch")
    acc = bits = 0
    out = bytearray()
    for v in values[:-6]:
        acc, bits = (acc << 5) | v, bits + 5
        while bits >= 8:
            bits -= 8
            out.append((acc >> bits) & 0xFF)
    if bits >= 5 or (acc & ((1 << bits) - 1)) or len(out) != 32:
        raise AgeError("malformed age identity")
    return X25519PrivateKey.from_private_bytes(bytes(out))


def _bech32_polymod(values: Iterable[int]) -> int:
    generators = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i, g in enumerate(generators):
            chk ^= g if (top >> i) & 1 else 0
    return chk


def _read_line(source: io.RawIOBase, header: bytearray) -> bytes:
    """One ``\\n``-terminated header line (without it), appended to ``header`` as read."""
    line = bytearray()
    while True:
        byte = source.read(1)
        if not byte:
            raise AgeError("truncated age header")
        header += byte
        if len(header) > _MAX_HEADER:
            raise AgeError("age header too long")
        if byte == b"\n":
            return bytes(line)
        line += byte


def _file_key(source: io.RawIOBase, keys: list[X25519PrivateKey]) -> bytes:
    """Parse the header, unwrap the file key with one of ``keys`` and check the header MAC."""
    header = bytearray()
    if _read_line(source, header) != VERSION_LINE:
        raise AgeError("not an age-encryption.org/v1 file")
    file_key: bytes | None = None
    while True:
        line = _read_line(source, header)
        if line.startswith(b"---"):
            if not line.startswith(b"--- "):
                raise AgeError("malformed header: MAC line")
            mac = _b64(line[4:])
            covered = bytes(header[:len(header) - len(line) - 1 + 3])  # through "---"
            break
        if not line.startswith(b"-> "):
            raise AgeError("malformed header: stanza line")
        args = line[3:].split(b" ")
        body = bytearray()
        while True:  # body lines of 64 columns, ended by a shorter one
            part = _read_line(source, header)
            if len(part) > _COLUMNS:
                raise AgeError("malformed header: stanza body line too long")
            body += _b64(part)
            if len(part) < _COLUMNS:
                break
        if file_key is None and args[0] == b"X25519":
            file_key = _unwrap_x25519(args, bytes(body), keys)
    if file_key is None:
        raise AgeError("no identity matched any of the file's recipients")
    mac_key = _hkdf(file_key, b"", b"header")
    if not hmac.compare_digest(hmac.new(mac_key, covered, sha256).digest(), mac):
        raise AgeError("age header MAC mismatch")
    return file_key


def _unwrap_x25519(args: list[bytes], body: bytes, keys: list[X25519PrivateKey]) -> bytes | None:
    if len(args) != 2 or len(body) != FILE_KEY + TAG:
        raise AgeError("malformed X25519 stanza")
    share = _b64(args[1])
    if len(share) != 32:
        raise AgeError("malformed X25519 stanza share")
    peer = X25519PublicKey.from_public_bytes(share)
    for key in keys:
        try:
            shared = key.exchange(peer)
        except ValueError:  # an all-zero shared secret (a low-order share)
            raise AgeError("X25519 stanza with a low-order share") from None
        mine = key.public_key().public_bytes_raw()
        wrap = _hkdf(shared, share + mine, b"age-encryption.org/v1/X25519")
        try:
            return ChaCha20Poly1305(wrap).decrypt(bytes(12), body, None)
        except InvalidTag:
            continue
    return None


class AgeReader(io.RawIOBase):
    """The plaintext of an age file read from ``source``, chunk by chunk (64 KiB in memory).

    The header is read and checked on construction (AgeError when no identity opens it); every
    chunk is authenticated before any of its bytes are handed out, and the end of the input must
    be the chunk flagged last.
    """

    def __init__(self, source: io.RawIOBase, identities: Iterable[str]) -> None:
        super().__init__()
        self._source = source
        file_key = _file_key(source, [identity_key(i) for i in identities])
        nonce = self._read_exact(16)
        if len(nonce) != 16:
            raise AgeError("truncated age payload nonce")
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._counter = 0
        self._pending = self._read_exact(CHUNK + TAG)
        self._plain = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def _read_exact(self, n: int) -> bytes:
        parts = bytearray()
        while len(parts) < n:
            got = self._source.read(n - len(parts))
            if not got:
                break
            parts += got
        return bytes(parts)

    def _next_chunk(self) -> bytes:
        following = self._read_exact(CHUNK + TAG)
        last = not following
        sealed = self._pending
        if len(sealed) < TAG or (not last and len(sealed) != CHUNK + TAG):
            raise AgeError("truncated age payload")
        nonce = self._counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")
        try:
            plain = self._aead.decrypt(nonce, sealed, None)
        except InvalidTag:
            raise AgeError("age payload chunk does not authenticate (damaged, truncated or wrong file)") from None
        if last and not plain and self._counter > 0:
            raise AgeError("age payload ends with an empty chunk")
        self._counter += 1
        self._pending = following
        self._done = last
        return plain

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._plain:
            if self._done:
                return 0
            self._plain = memoryview(self._next_chunk())
        n = min(len(buffer), len(self._plain))
        buffer[:n] = self._plain[:n]
        self._plain = self._plain[n:]
        return n

    def read_chunk(self) -> bytes:
        """The next authenticated plaintext chunk as it is (b"" at the end): no copy per read."""
        if self._plain:
            rest, self._plain = bytes(self._plain), memoryview(b"")
            return rest
        return b"" if self._done else self._next_chunk()
