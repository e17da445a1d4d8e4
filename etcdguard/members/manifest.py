"""Derive a kubeadm static pod manifest for a new etcd member from an existing member's ``etcd.yaml``.

Every URL that carries the existing node's address (client, peer, metrics URLs, probes, the
``kubeadm.kubernetes.io/etcd.advertise-client-urls`` annotation) is moved to the new member's
address, the name and initial cluster are the new member's, the state is ``existing``, and
flags that only make sense on the source node (``--force-new-cluster``) are dropped.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from etcdguard.errors import ConfigError

ADVERTISE_ANNOTATION = "kubeadm.kubernetes.io/etcd.advertise-client-urls"
DROPPED_FLAGS = frozenset({"--force-new-cluster", "--initial-cluster-state", "--initial-cluster"})
# loopback-only endpoints: moved only when the source node's address is not loopback itself
LOCAL_FLAGS = frozenset({"--listen-metrics-urls"})


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True)
class DerivedManifest:
    """The new member's manifest and what the operator must know about it."""

    text: str
    data_dir: str
    source_host: str
    new_host: str
    client_urls: tuple[str, ...]


def _move_host(url: str, old: str, new: str) -> str:
    parts = urlsplit(url)
    if parts.hostname != old:
        return url
    host = f"[{new}]" if ":" in new else new
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _move_urls(value: str, old: str, new: str) -> str:
    return ",".join(_move_host(u, old, new) if "://" in u else u for u in value.split(","))


def _etcd_container(pod: Any) -> dict[str, Any]:
    containers = (pod.get("spec") or {}).get("containers") or [] if isinstance(pod, dict) else []
    for c in containers:
        command = c.get("command") or []
        if c.get("name") == "etcd" or (command and str(command[0]).rsplit("/", 1)[-1] == "etcd"):
            return dict(c)
    raise ConfigError("not an etcd static pod manifest: no container running etcd")


def _flags(command: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for arg in command[1:]:
        name, _, value = str(arg).partition("=")
        out[name] = value
    return out


def derive_manifest(source_text: str, *, name: str, peer_url: str, initial_cluster: str) -> DerivedManifest:
    """The manifest for member ``name`` at ``peer_url``, derived from an existing member's manifest."""
    try:
        pod = yaml.safe_load(source_text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse the etcd manifest: {exc}") from None
    container = _etcd_container(pod)
    command = [str(a) for a in container.get("command") or []]
    flags = _flags(command)
    source_peer = flags.get("--initial-advertise-peer-urls", "").split(",")[0]
    old = urlsplit(source_peer).hostname
    new = urlsplit(peer_url).hostname
    if not old or not new:
        raise ConfigError("the etcd manifest has no --initial-advertise-peer-urls to take the node address from")
    rewritten = [command[0]]
    for arg in command[1:]:
        flag, sep, value = arg.partition("=")
        if flag in DROPPED_FLAGS:
            continue
        if flag == "--name":
            value = name
        elif flag == "--initial-advertise-peer-urls":
            value = peer_url
        elif flag == "--listen-peer-urls":
            value = ",".join(peer_url if urlsplit(u).hostname == old else u for u in value.split(","))
        elif flag in LOCAL_FLAGS and _is_loopback(old):
            pass
        elif "://" in value:
            value = _move_urls(value, old, new)
        rewritten.append(f"{flag}{sep}{value}" if sep else flag)
    rewritten += [f"--initial-cluster={initial_cluster}", "--initial-cluster-state=existing"]
    container["command"] = [rewritten[0], *sorted(rewritten[1:])]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        get = (container.get(probe) or {}).get("httpGet")
        if isinstance(get, dict) and get.get("host") == old and not _is_loopback(old):
            get["host"] = new
    spec = pod["spec"]
    spec["containers"] = [container if c.get("name") == container.get("name") else c for c in spec["containers"]]
    advertise = _flags(container["command"]).get("--advertise-client-urls", "")
    metadata = pod.setdefault("metadata", {})
    annotations = metadata.setdefault("annotations", {}) or {}
    if advertise:
        annotations[ADVERTISE_ANNOTATION] = advertise
    metadata["annotations"] = annotations
    data_dir = _flags(container["command"]).get("--data-dir", "/var/lib/etcd")
    text = yaml.safe_dump(pod, sort_keys=False, default_flow_style=False)
    return DerivedManifest(text, data_dir, old, new, tuple(u for u in advertise.split(",") if u))
