"""Key counts at a revision: the total, and per Kubernetes resource prefix under /registry/.

``/registry/pods/ns/name`` counts under ``/registry/pods``; when the second segment is an API
group (contains a dot), the resource is the third: ``/registry/example.com/crontabs/ns/x``
counts under ``/registry/example.com/crontabs``.
"""

from __future__ import annotations

from collections import Counter

from etcdguard.backup.manifest import KeyCounts
from etcdguard.etcd.client import MemberClient

REGISTRY = b"/registry/"
ALL_KEYS = (b"\x00", b"\x00")


def resource_prefix(key: bytes) -> str | None:
    """The Kubernetes resource prefix a key belongs to, or None outside /registry/."""
    if not key.startswith(REGISTRY):
        return None
    parts = key[len(REGISTRY):].split(b"/")
    if not parts or not parts[0]:
        return None
    depth = 2 if b"." in parts[0] and len(parts) > 2 else 1
    return (REGISTRY + b"/".join(parts[:depth])).decode("utf-8", "replace")


def count_keys(client: MemberClient, revision: int, *, serializable: bool = False) -> KeyCounts:
    """Count all keys, and /registry/ keys per resource prefix, at ``revision``.

    ``serializable`` reads the member's local state (no quorum needed: emergency snapshots).
    """
    total, _ = client.count(ALL_KEYS[0], ALL_KEYS[1], revision=revision, serializable=serializable)
    by_prefix: Counter[str] = Counter()
    registry_count, _ = client.count(REGISTRY, b"/registry0", revision=revision, serializable=serializable)
    if registry_count:
        for key in client.keys(REGISTRY, b"/registry0", revision=revision, serializable=serializable):
            prefix = resource_prefix(key)
            if prefix is not None:
                by_prefix[prefix] += 1
    return KeyCounts(total=total, by_prefix=dict(sorted(by_prefix.items())))
