"""Key material: age X25519 recipients/identities for encryption, Ed25519 keys for signing.

The service needs only public parts (recipients, and the signing private key); identities
(private age keys) live offline and are needed only to verify and restore.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyrage
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from etcdguard.errors import ConfigError, IntegrityError

IDENTITY_FILE = "identity.age"
RECIPIENT_FILE = "recipient.txt"
SIGNING_KEY_FILE = "signing.key"
SIGNING_PUB_FILE = "signing.pub"


def fingerprint(text: str) -> str:
    """Short stable fingerprint of a recipient or public key (sha256, 16 hex chars)."""
    return hashlib.sha256(text.strip().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key; never printed."""

    private: Ed25519PrivateKey = field(repr=False)

    @property
    def public(self) -> VerifyKey:
        """The matching public key."""
        return VerifyKey(self.private.public_key())

    @property
    def key_id(self) -> str:
        """Fingerprint of the public key."""
        return self.public.key_id

    def sign(self, data: bytes) -> bytes:
        """Ed25519 signature of ``data``."""
        return self.private.sign(data)


@dataclass(frozen=True)
class VerifyKey:
    """An Ed25519 public key."""

    public: Ed25519PublicKey

    @property
    def key_id(self) -> str:
        """Fingerprint of the raw public key bytes."""
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return hashlib.sha256(raw).hexdigest()[:16]

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True when ``signature`` is valid for ``data``."""
        try:
            self.public.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def pem(self) -> bytes:
        """PEM SubjectPublicKeyInfo encoding."""
        return self.public.public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@dataclass(frozen=True)
class GeneratedKeys:
    """Paths written by :func:`generate_keys`."""

    identity: Path
    recipient: Path
    signing_key: Path
    signing_pub: Path
    recipient_text: str
    key_id: str


def generate_keys(directory: Path, *, force: bool = False) -> GeneratedKeys:
    """Write identity.age (0600), recipient.txt, signing.key (0600) and signing.pub into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    reason = unsafe_reason(directory)
    if reason is not None:
        raise ConfigError(f"refusing to write keys into {directory}: {reason} "
                          "(another user could replace them); use a private directory (chmod 700)")
    paths = [directory / n for n in (IDENTITY_FILE, RECIPIENT_FILE, SIGNING_KEY_FILE, SIGNING_PUB_FILE)]
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]} already exists; refusing to overwrite keys (use --force)")
    for p in existing:
        p.unlink()
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    _write_private(paths[0], f"# public key: {recipient}\n{identity}\n".encode())
    paths[1].write_text(recipient + "\n")
    signing = Ed25519PrivateKey.generate()
    _write_private(paths[2], signing.private_bytes(serialization.Encoding.PEM,
                                                   serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption()))
    key = SigningKey(signing)
    paths[3].write_bytes(key.public.pem())
    return GeneratedKeys(identity=paths[0], recipient=paths[1], signing_key=paths[2], signing_pub=paths[3],
                         recipient_text=recipient, key_id=key.key_id)


def recipient_lines(texts: list[str], files: list[Path] | None = None) -> list[str]:
    """Recipient strings from ``texts`` and recipient files (one per line, # comments dropped)."""
    lines = list(texts)
    for path in files or []:
        try:
            lines += path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read recipients file {path}: {exc.strerror or exc}") from None
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def parse_recipients(texts: list[str], files: list[Path] | None = None) -> list[pyrage.x25519.Recipient]:
    """Parse ``age1...`` recipients from strings and recipient files (one per line, # comments)."""
    recipients = []
    for line in recipient_lines(texts, files):
        try:
            recipients.append(pyrage.x25519.Recipient.from_str(line))
        except Exception:  # pyrage raises its own RecipientError types
            raise ConfigError(f"invalid age recipient {line[:12]}...: expected age1...") from None
    return recipients


def load_identities(path: Path) -> list[pyrage.x25519.Identity]:
    """Read AGE-SECRET-KEY-1... identities from an age identity file."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read identity file {path}: {exc.strerror or exc}") from None
    identities = []
    for line in (ln.strip() for ln in text.splitlines()):
        if line.startswith("AGE-SECRET-KEY-"):
            try:
                identities.append(pyrage.x25519.Identity.from_str(line))
            except Exception:
                raise ConfigError(f"identity file {path}: invalid age secret key") from None
    if not identities:
        raise ConfigError(f"identity file {path}: no AGE-SECRET-KEY-1... line found")
    return identities


def load_signing_key(path: Path) -> SigningKey:
    """Load an Ed25519 private key (PEM PKCS8)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read signing key {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(f"signing key {path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"signing key {path}: not an Ed25519 key")
    return SigningKey(key)


def load_verify_key(path: Path) -> VerifyKey:
    """Load an Ed25519 public key (PEM) or derive it from a private key file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read signing public key {path}: {exc.strerror or exc}") from None
    if b"PRIVATE KEY" in data:
        return load_signing_key(path).public
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        raise ConfigError(f"signing public key {path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"signing public key {path}: not an Ed25519 key")
    return VerifyKey(key)


def unsafe_reason(path: Path) -> str | None:
    """Why ``path`` could have been written by another user (None when it could not): not owned
    by this user, or writable by group or others."""
    try:
        st = path.lstat() if path.is_symlink() else path.stat()
    except OSError as exc:
        return f"cannot stat {path}: {exc.strerror or exc}"
    if st.st_uid != os.geteuid():
        return f"{path} is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return f"{path} is writable by {'others' if st.st_mode & 0o002 else 'group'} (mode {st.st_mode & 0o7777:o})"
    return None


def trusted_verify_keys(public_key_files: list[Path], signing_key_file: Path | None,
                        identity_file: Path | None) -> list[VerifyKey]:
    """Public keys trusted to sign records: the configured ones (``signing.public_keys``,
    ``--signing-pub``) and the public half of the configured signing key.

    Only when none is configured, ``signing.pub`` beside the identity file (``keys generate``
    writes them together) is used, and only if it and its directory belong to this user and are
    not writable by group or others (ConfigError otherwise: someone else could have planted it).
    """
    keys = [load_verify_key(p) for p in public_key_files]
    if signing_key_file is not None and signing_key_file.exists():
        keys.append(load_signing_key(signing_key_file).public)
    if not keys and identity_file is not None:
        beside = identity_file.parent / SIGNING_PUB_FILE
        if beside.exists():
            reason = unsafe_reason(beside.parent) or unsafe_reason(beside)
            if reason is not None:
                raise ConfigError(f"not trusting {beside}: {reason}; fix its permissions or pass "
                                  "--signing-pub / signing.public_keys")
            keys.append(load_verify_key(beside))
    unique = {k.key_id: k for k in keys}
    return list(unique.values())


def check_signature(keys: list[VerifyKey], key_id: str, signature: bytes, data: bytes, what: str) -> None:
    """Raise IntegrityError unless one trusted key with ``key_id`` signed ``data``."""
    match = [k for k in keys if k.key_id == key_id]
    if not match:
        known = ", ".join(k.key_id for k in keys) or "none"
        raise IntegrityError(f"{what} is signed by unknown key {key_id} (trusted: {known})")
    if not match[0].verify(signature, data):
        raise IntegrityError(f"{what} signature does not verify: it was modified or forged")
