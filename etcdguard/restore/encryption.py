"""Pre-flight for Kubernetes data encrypted at rest: are the backup's keys in the apiserver config?

kube-apiserver stores an encrypted value as ``k8s:enc:<provider>:v1:<key name>:<ciphertext>``. If
a key name found in the snapshot is not in this node's ``--encryption-provider-config``, the
restored Secrets cannot be read. The snapshot file is scanned for those prefixes (a streaming
byte scan: values are stored as written), and the configuration's key names are compared.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from etcdguard.errors import ConfigError

PROVIDERS = ("aescbc", "aesgcm", "secretbox", "kms")
_PREFIX = re.compile(rb"k8s:enc:(aescbc|aesgcm|secretbox|kms):(v[12]):([A-Za-z0-9_.\-/]{1,250}):")
_MARK = b"k8s:enc:"
_CHUNK = 4 << 20
_OVERLAP = 300


@dataclass(frozen=True, order=True)
class KeyRef:
    """One encryption key as kube-apiserver names it in stored values."""

    provider: str
    name: str

    def __str__(self) -> str:
        return f"{self.provider} key {self.name!r}"


def scan_snapshot_keys(path: Path) -> Counter[KeyRef]:
    """Key references found in a snapshot (or db) file, with how often each occurs."""
    found: Counter[KeyRef] = Counter()
    tail = b""
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            data = tail + chunk
            # a match that ends inside the overlap is counted with the next chunk
            limit = len(data) - _OVERLAP if len(chunk) == _CHUNK else len(data)
            _count_refs(data, limit, found)
            tail = data[limit:] if len(chunk) == _CHUNK else b""
    return found


def _count_refs(data: bytes, limit: int, found: Counter[KeyRef]) -> None:
    """Count the key references in ``data`` that start before ``limit``.

    ``bytes.find`` skips to each ``k8s:enc:`` much faster than a regex scan of every byte; a
    key name cannot contain ``:``, so no reference starts inside another.
    """
    at = data.find(_MARK, 0, limit + len(_MARK))
    while 0 <= at < limit:
        m = _PREFIX.match(data, at)
        if m is not None:
            found[KeyRef(m.group(1).decode(), m.group(3).decode())] += 1
        at = data.find(_MARK, at + 1, limit + len(_MARK))


def configured_keys(config_path: Path) -> set[KeyRef]:
    """Key names an EncryptionConfiguration provides (every resource, every provider)."""
    try:
        doc = yaml.safe_load(config_path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read the encryption provider config {config_path}: "
                          f"{exc.strerror or exc}") from None
    except yaml.YAMLError:
        raise ConfigError(f"{config_path} is not valid YAML") from None
    keys: set[KeyRef] = set()
    for resource in (doc or {}).get("resources") or []:
        for provider in (resource or {}).get("providers") or []:
            for kind, body in (provider or {}).items():
                keys |= _provider_keys(kind, body)
    return keys


def _provider_keys(kind: str, body: Any) -> set[KeyRef]:
    if not isinstance(body, dict):
        return set()
    if kind == "kms":
        return {KeyRef("kms", str(body["name"]))} if body.get("name") else set()
    if kind in PROVIDERS:
        return {KeyRef(kind, str(k["name"])) for k in body.get("keys") or [] if isinstance(k, dict) and "name" in k}
    return set()


@dataclass(frozen=True)
class EncryptionCheck:
    """What the snapshot needs and what this node's apiserver has."""

    found: dict[KeyRef, int]
    config_path: Path | None
    configured: frozenset[KeyRef]

    @property
    def missing(self) -> list[KeyRef]:
        """Keys used in the snapshot that the apiserver config does not provide."""
        return sorted(k for k in self.found if k not in self.configured)

    @property
    def ok(self) -> bool:
        """True when every key the snapshot uses is configured."""
        return not self.missing

    def summary(self) -> str:
        """One line for the pre-flight output."""
        if not self.found:
            return "no encrypted values in the snapshot"
        used = ", ".join(f"{k} ({n} values)" for k, n in sorted(self.found.items()))
        if self.ok:
            return f"every key is in {self.config_path}: {used}"
        where = str(self.config_path) if self.config_path else "no --encryption-provider-config on this node"
        return (f"missing from {where}: {', '.join(str(k) for k in self.missing)}; the restored values "
                f"encrypted with them would be unreadable (used: {used})")


def check_encryption_keys(snapshot: Path, config_path: Path | None) -> EncryptionCheck:
    """Compare the keys used in ``snapshot`` with those in ``config_path`` (None: no config)."""
    found = scan_snapshot_keys(snapshot)
    configured = configured_keys(config_path) if config_path is not None and found else set()
    return EncryptionCheck(dict(found), config_path, frozenset(configured))
