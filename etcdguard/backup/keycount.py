"""Key counts at a revision: the total, and per Kubernetes resource prefix under /registry/.

``/registry/pods/ns/name`` counts under ``/registry/pods``; when the first segment is an API
group (contains a dot), the resource is the second: ``/registry/example.com/crontabs/ns/x``
counts under ``/registry/example.com/crontabs``.

Counting uses count-only range requests per prefix and skips from one prefix to the next,
so it costs a few requests per resource type, not a scan of every key and value.
"""

from __future__ import annotations

from etcdguard.backup.manifest import KeyCounts
from etcdguard.etcd.ports import EtcdMember

REGISTRY = b"/registry/"
REGISTRY_END = b"/registry0"
ALL_KEYS = (b"\x00", b"\x00")


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with ``prefix``."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def resource_prefix(key: bytes) -> str | None:
    """The Kubernetes resource prefix a key belongs to, or None outside /registry/."""
    if not key.startswith(REGISTRY):
        return None
    parts = key[len(REGISTRY):].split(b"/")
    if not parts[0]:
        return None
    depth = 2 if b"." in parts[0] and len(parts) >= 2 else 1
    return (REGISTRY + b"/".join(parts[:depth])).decode("utf-8", "replace")


def _owns_subtree(prefix: bytes) -> bool:
    """An API-group prefix of one segment (``/registry/example.com``) leaves its subtree to
    its resources (``/registry/example.com/crontabs``); every other prefix owns ``P/...``."""
    rel = prefix[len(REGISTRY):]
    return not (b"." in rel and b"/" not in rel)


def count_keys(client: EtcdMember, revision: int, *, serializable: bool = False) -> KeyCounts:
    """Count all keys, and /registry/ keys per resource prefix, at ``revision``.

    ``serializable`` reads the member's local state (no quorum needed: emergency snapshots).
    A prefix ``P`` owns the key ``P`` itself and (see :func:`_owns_subtree`) the keys under ``P/``.
    """
    total, _ = client.count(ALL_KEYS[0], ALL_KEYS[1], revision=revision, serializable=serializable)
    by_prefix: dict[str, int] = {}
    counted: list[tuple[bytes, bytes]] = []  # ranges already counted: [P/, P0)
    start = REGISTRY
    while True:
        key = client.first_key(start, REGISTRY_END, revision=revision, serializable=serializable)
        if key is None:
            break
        inside = next((end for begin, end in counted if begin <= key < end), None)
        if inside is not None:
            start = inside
            continue
        prefix = resource_prefix(key)
        if prefix is None or prefix in by_prefix:
            start = key + b"\x00"
            continue
        raw = prefix.encode()
        exact, _ = client.count(raw, b"", revision=revision, serializable=serializable)
        under = 0
        if _owns_subtree(raw):
            sub_begin, sub_end = raw + b"/", prefix_end(raw + b"/")
            under, _ = client.count(sub_begin, sub_end, revision=revision, serializable=serializable)
            counted.append((sub_begin, sub_end))
        by_prefix[prefix] = exact + under
        start = raw + b"\x00"
    return KeyCounts(total=total, by_prefix=dict(sorted(by_prefix.items())))
