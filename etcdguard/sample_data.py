"""Kubernetes-like sample keys and values (for ``etcdguard demo`` and the benchmarks).

Keys follow the API server's layout (``/registry/<resource>/<namespace>/<name>``, custom
resources under ``/registry/<group>/<plural>/...``); values are JSON documents or
protobuf-looking binary blobs (``k8s\\x00`` magic) with realistic, partly repetitive content.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator

RESOURCES: tuple[tuple[str, float], ...] = (
    ("pods", 0.30),
    ("events", 0.25),
    ("secrets", 0.10),
    ("configmaps", 0.10),
    ("services/specs", 0.05),
    ("deployments", 0.05),
    ("replicasets", 0.05),
    ("stable.example.com/crontabs", 0.05),
    ("monitoring.coreos.com/servicemonitors", 0.05),
)
NAMESPACES = ("default", "kube-system", "payments", "checkout", "monitoring", "ingress")


def _json_value(rng: random.Random, resource: str, ns: str, name: str, size: int) -> bytes:
    doc = {
        "apiVersion": "v1", "kind": resource.split("/")[-1].rstrip("s").capitalize(),
        "metadata": {"name": name, "namespace": ns, "uid": f"{rng.getrandbits(128):032x}",
                     "labels": {"app": name.rsplit("-", 1)[0], "tier": rng.choice(["web", "db", "cache"])},
                     "resourceVersion": str(rng.randint(1, 10**7))},
        "spec": {"containers": [{"name": "main", "image": f"registry.local/{name}:{rng.randint(1, 99)}",
                                 "env": [{"name": f"VAR_{i}", "value": f"{rng.getrandbits(32):08x}"}
                                         for i in range(4)]}]},
    }
    text = json.dumps(doc)
    if len(text) < size:
        doc["status"] = {"message": ("ready " * (size // 6))[: size - len(text)]}
        text = json.dumps(doc)
    return text.encode()


def _proto_value(rng: random.Random, name: str, size: int) -> bytes:
    header = b"k8s\x00\n\x0b\n\x02v1\x12\x05" + name.encode()[:32]
    body_random = rng.randbytes(max(0, size // 3))
    filler = (b"\x12\x08status\x1a\x05Ready" * (size // 20 + 1))[: max(0, size - len(header) - len(body_random))]
    return header + body_random + filler


def items(count: int, *, value_size: int = 1024, seed: int = 7) -> Iterator[tuple[bytes, bytes]]:
    """``count`` Kubernetes-like (key, value) pairs, deterministic for a seed."""
    rng = random.Random(seed)  # noqa: S311 - sample data, not secrets
    names = [r for r, _ in RESOURCES]
    weights = [w for _, w in RESOURCES]
    for i in range(count):
        resource = rng.choices(names, weights)[0]
        ns = rng.choice(NAMESPACES)
        name = f"{resource.split('/')[-1].rstrip('s')}-{i:07d}"
        key = f"/registry/{resource}/{ns}/{name}".encode()
        size = max(64, int(rng.gauss(value_size, value_size / 4)))
        if resource in ("secrets", "pods", "events") and rng.random() < 0.6:
            value = _proto_value(rng, name, size)
        else:
            value = _json_value(rng, resource, ns, name, size)
        yield key, value
