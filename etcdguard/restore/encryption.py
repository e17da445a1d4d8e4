"""Pre-flight for Kubernetes data encrypted at rest: are the backup's keys in the apiserver config?

kube-apiserver stores an encrypted value as ``k8s:enc:<provider>:v1:<key name>:<ciphertext>``. If
a key name found in the snapshot is not in this node's ``--encryption-provider-config``, the
restored Secrets cannot be read. The snapshot file is scanned for those prefixes (a streaming
byte scan: values are stored as written), and the configuration's key names are compared.

The byte scan also sees old revisions and free pages, so a key rotated away long ago can still
show up. When it finds a key name the configuration lacks, the exact reader confirms it: only
the current values under /registry/ (read from the db's B+tree) count.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from etcdguard.errors import ConfigError
from etcdguard.etcd.bbolt import BoltError
from etcdguard.etcd.keyspace import current_keyspace, resource_type

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
class CurrentUse:
    """What the current keyspace under /registry/ holds: encrypted values by key, keys by resource."""

    by_key: dict[KeyRef, int]
    by_resource: dict[str, int]

    def resources_line(self, top: int = 6) -> str:
        """``1,204 current /registry/ keys: 512 pods, 300 secrets, ...``."""
        total = sum(self.by_resource.values())
        ranked = sorted(self.by_resource.items(), key=lambda kv: (-kv[1], kv[0]))
        shown = ", ".join(f"{n:,} {kind}" for kind, n in ranked[:top])
        more = f", {len(ranked) - top} more types" if len(ranked) > top else ""
        return f"{total:,} current /registry/ keys" + (f": {shown}{more}" if ranked else "")


def current_key_use(snapshot: Path) -> CurrentUse:
    """Key references of the current values under /registry/ (exact: reads the db's B+tree).

    Raises BoltError when the file cannot be read as an etcd database.
    """
    by_key: Counter[KeyRef] = Counter()
    by_resource: Counter[str] = Counter()
    for kv in current_keyspace(snapshot):
        kind = resource_type(kv.key)
        if kind is None:
            continue
        by_resource[kind] += 1
        if kv.value.startswith(_MARK):
            m = _PREFIX.match(kv.value)
            if m is not None:
                by_key[KeyRef(m.group(1).decode(), m.group(3).decode())] += 1
    return CurrentUse(dict(by_key), dict(by_resource))


def _refs(counts: dict[KeyRef, int], what: str) -> str:
    return ", ".join(f"{k} ({n:,} {what})" for k, n in sorted(counts.items()))


@dataclass(frozen=True)
class EncryptionCheck:
    """What the snapshot needs and what this node's apiserver has.

    ``found``: the byte scan's counts; ``exact``: the current values' counts when the exact reader
    ran (only when the byte scan found a key the config lacks); ``exact_error``: why it could not.
    """

    found: dict[KeyRef, int]
    config_path: Path | None
    configured: frozenset[KeyRef]
    exact: CurrentUse | None = None
    exact_error: str | None = None

    @property
    def used(self) -> dict[KeyRef, int]:
        """The keys that count: the current values' when known, else everything the scan found."""
        return self.exact.by_key if self.exact is not None else self.found

    @property
    def missing(self) -> list[KeyRef]:
        """Keys used in the snapshot that the apiserver config does not provide."""
        return sorted(k for k in self.used if k not in self.configured)

    @property
    def stale(self) -> list[KeyRef]:
        """Keys the byte scan saw that no current value uses (old revisions, free pages)."""
        return sorted(k for k in self.found if k not in self.used) if self.exact is not None else []

    @property
    def ok(self) -> bool:
        """True when every key the snapshot's current values use is configured (and that is known)."""
        return not self.missing and self.exact_error is None

    @property
    def confirmed(self) -> bool:
        """False when the verdict rests on the byte scan alone because the exact reader failed."""
        return self.exact_error is None

    def summary(self) -> str:
        """One line for the pre-flight output."""
        if not self.found:
            return "no encrypted values in the snapshot"
        where = str(self.config_path) if self.config_path else "no --encryption-provider-config on this node"
        if self.exact_error is not None:
            return (f"the byte scan found keys missing from {where}: "
                    f"{', '.join(str(k) for k in self.missing)}, and the exact check could not read the "
                    f"snapshot ({self.exact_error}); refused unless --force (found: {_refs(self.found, 'values')})")
        ignored = (f"; {', '.join(str(k) for k in self.stale)} "
                   f"{'appears' if len(self.stale) == 1 else 'appear'} only in old revisions/free pages: ignored"
                   if self.stale else "")
        counts = f"; {self.exact.resources_line()}" if self.exact is not None else ""
        if self.exact is not None:
            used = _refs(self.used, "current values") if self.used else "no current value is encrypted"
        else:
            used = _refs(self.used, "values")
        if not self.missing:
            return f"every key in use is in {where}: {used}{ignored}{counts}"
        return (f"missing from {where}: {', '.join(str(k) for k in self.missing)}; the restored values "
                f"encrypted with them would be unreadable (used: {used}){ignored}{counts}")


def check_encryption_keys(snapshot: Path, config_path: Path | None) -> EncryptionCheck:
    """Compare the keys used in ``snapshot`` with those in ``config_path`` (None: no config).

    The byte scan answers when every key it finds is configured; otherwise the exact reader
    decides from the current values alone.
    """
    found = scan_snapshot_keys(snapshot)
    configured = frozenset(configured_keys(config_path) if config_path is not None and found else set())
    check = EncryptionCheck(dict(found), config_path, configured)
    if check.ok:
        return check
    try:
        return EncryptionCheck(dict(found), config_path, configured, exact=current_key_use(snapshot))
    except BoltError as exc:
        return EncryptionCheck(dict(found), config_path, configured, exact_error=str(exc))
