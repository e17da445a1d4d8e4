"""The settings a new member needs to join, and where members are named by the operator.

Pure functions: the initial cluster string, the etcd environment file, the client endpoint list
(voting members only: a learner does not serve clients) and finding a member by name, hex id,
peer or client URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar
from urllib.parse import urlsplit

from etcdguard.errors import ConfigError

ENV_KEYS = ("ETCD_NAME", "ETCD_INITIAL_CLUSTER", "ETCD_INITIAL_CLUSTER_STATE", "ETCD_INITIAL_ADVERTISE_PEER_URLS")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


class ListedMember(Protocol):
    """A member as MemberList shows it (``MemberInfo`` and ``MemberHealth`` fit)."""

    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def peer_urls(self) -> tuple[str, ...]: ...
    @property
    def client_urls(self) -> tuple[str, ...]: ...
    @property
    def is_learner(self) -> bool: ...


M = TypeVar("M", bound=ListedMember)


def validate_name(name: str) -> str:
    """A member name usable in ``--initial-cluster`` and an environment file."""
    if not _NAME.match(name):
        raise ConfigError(f"invalid member name {name!r}: use letters, digits, '.', '_' or '-'")
    return name


def validate_peer_url(url: str) -> str:
    """``http(s)://host:port`` with an explicit host and port."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise ConfigError(f"invalid peer URL {url!r}: expected https://IP:2380 (scheme, host and port)")
    return f"{parts.scheme}://{parts.netloc}"


def url_host(url: str) -> str:
    """The host part of a URL (IPv6 without brackets)."""
    return urlsplit(url).hostname or ""


def find_member(members: Sequence[M], key: str) -> M | None:
    """The member named ``key``: its name, hex id, or one of its peer or client URLs."""
    text = key.strip().rstrip("/")
    for m in members:
        if text in (m.name, f"{m.id:x}") or text in m.peer_urls or text in m.client_urls:
            return m
    return None


def require_member(members: Sequence[M], key: str) -> M:
    """Like :func:`find_member`, but an unknown member is a ConfigError naming the known ones."""
    found = find_member(members, key)
    if found is None:
        names = ", ".join(sorted(m.name or f"(unstarted {m.id:x})" for m in members)) or "none"
        raise ConfigError(f"no etcd member {key!r} (members: {names})")
    return found


def member_with_peer_url(members: Iterable[M], peer_url: str) -> M | None:
    """The member already announcing ``peer_url``, if any."""
    return next((m for m in members if peer_url in m.peer_urls), None)


def client_endpoints(members: Iterable[ListedMember]) -> list[str]:
    """Client URLs of the voting members (learners never serve clients, so never listed)."""
    return [u for m in members if not m.is_learner for u in m.client_urls]


def initial_cluster(members: Iterable[ListedMember], new_id: int, new_name: str,
                    new_peer_urls: Sequence[str]) -> str:
    """``name=peerURL,...`` for the new member: every started member plus the new one.

    Members that never started (no name) are left out: the new member could not name them,
    and they must be removed before it joins anyway.
    """
    entries: list[str] = []
    seen_new = False
    for m in members:
        if m.id == new_id:
            seen_new = True
            entries += [f"{new_name}={u}" for u in new_peer_urls]
        elif m.name:
            entries += [f"{m.name}={u}" for u in m.peer_urls]
    if not seen_new:
        entries += [f"{new_name}={u}" for u in new_peer_urls]
    return ",".join(entries)


@dataclass(frozen=True)
class NewMemberSettings:
    """What a new member cannot know by itself: its name, the initial cluster, state, peer URLs."""

    name: str
    initial_cluster: str
    peer_urls: tuple[str, ...]
    client_endpoints: tuple[str, ...] = ()

    def environment(self) -> dict[str, str]:
        """The etcd environment variables, in a stable order."""
        return {"ETCD_NAME": self.name, "ETCD_INITIAL_CLUSTER": self.initial_cluster,
                "ETCD_INITIAL_CLUSTER_STATE": "existing",
                "ETCD_INITIAL_ADVERTISE_PEER_URLS": ",".join(self.peer_urls)}

    def flags(self) -> list[str]:
        """The same settings as etcd command-line flags."""
        env = self.environment()
        return [f"--name={env['ETCD_NAME']}", f"--initial-cluster={env['ETCD_INITIAL_CLUSTER']}",
                "--initial-cluster-state=existing",
                f"--initial-advertise-peer-urls={env['ETCD_INITIAL_ADVERTISE_PEER_URLS']}"]

    def env_file_text(self) -> str:
        """``KEY=value`` lines, unquoted: read alike by systemd's EnvironmentFile and ``docker --env-file``."""
        for value in self.environment().values():
            if any(c.isspace() or c in "\"'\\#$" for c in value):
                raise ConfigError(f"cannot write {value!r} to an environment file (whitespace or quotes)")
        return "".join(f"{k}={v}\n" for k, v in self.environment().items())

    def to_dict(self) -> dict[str, object]:
        """JSON-ready view."""
        return {**self.environment(), "client_endpoints": list(self.client_endpoints)}


@dataclass(frozen=True)
class SettingsOutput:
    """Where the new member's settings go besides the terminal."""

    env_file: Path | None = None
    manifest_from: Path | None = None
    manifest_out: Path | None = None


def write_outputs(settings: NewMemberSettings, output: SettingsOutput) -> list[str]:
    """Write the environment file and the kubeadm manifest asked for; returns what was written."""
    from etcdguard.members.manifest import derive_manifest

    written: list[str] = []
    if output.env_file is not None:
        _write(output.env_file, settings.env_file_text())
        written.append(f"wrote {output.env_file} (etcd environment file: {', '.join(ENV_KEYS)})")
    if output.manifest_out is not None:
        source = output.manifest_from or Path("/etc/kubernetes/manifests/etcd.yaml")
        try:
            text = source.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the existing member's manifest {source}: {exc.strerror or exc}") from None
        derived = derive_manifest(text, name=settings.name, peer_url=settings.peer_urls[0],
                                  initial_cluster=settings.initial_cluster)
        _write(output.manifest_out, derived.text)
        written.append(f"wrote {output.manifest_out} (static pod for {settings.name} at {derived.new_host}, "
                       f"derived from {source}; its data dir {derived.data_dir} must be empty on the new node)")
    return written


def _write(path: Path, text: str) -> None:
    from etcdguard.steps import atomic_write

    try:
        atomic_write(Path(path), text.encode(), mode=0o644)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror or exc}") from None
