"""How the local etcd member runs: kubeadm static pod manifests or the ``restore.member`` config.

Reading changes nothing. Container paths in a static pod are mapped to host paths through its
``hostPath`` volumes (the data dir through ``etcd-data``), so the rest of etcdguard only ever sees
host paths.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import yaml

from etcdguard.errors import ConfigError
from etcdguard.etcd.client import TLSFiles
from etcdguard.restore.settings import RestoreMemberConfig

ETCD_MANIFEST = "etcd.yaml"
APISERVER_MANIFEST = "kube-apiserver.yaml"
DEFAULT_SECURE_PORT = 6443


def parse_initial_cluster(text: str) -> dict[str, tuple[str, ...]]:
    """``a=https://x:2380,b=https://y:2380`` -> {name: peer URLs} (a name may repeat for several URLs)."""
    out: dict[str, list[str]] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, url = part.partition("=")
        if not sep or not name or not url:
            raise ConfigError(f"invalid initial cluster entry {part!r}: expected name=peer-url")
        out.setdefault(name, []).append(url)
    return {k: tuple(v) for k, v in out.items()}


def format_initial_cluster(members: Mapping[str, Iterable[str]]) -> str:
    """{name: peer URLs} -> ``name=url,...`` in the given order."""
    return ",".join(f"{name}={url}" for name, urls in members.items() for url in urls)


def url_port(url: str) -> tuple[str, int]:
    """(host, port) of a client or peer URL."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.hostname is None or parts.port is None:
        raise ConfigError(f"URL {url!r} has no host:port")
    return parts.hostname, parts.port


@dataclass(frozen=True)
class LocalMember:
    """The local etcd member as its run mode describes it (host paths only)."""

    name: str
    data_dir: Path
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    source: str
    wal_dir: Path | None = None
    listen_client_urls: tuple[str, ...] = ()
    listen_peer_urls: tuple[str, ...] = ()
    initial_cluster: str | None = None
    quota_backend_bytes: int | None = None
    cert_file: Path | None = None
    key_file: Path | None = field(default=None, repr=False)
    trusted_ca_file: Path | None = None
    image: str | None = None
    owner: str | None = None
    version: str | None = None  # what the member's own etcd binary says (systemd)

    @property
    def image_version(self) -> str | None:
        """The etcd version the member runs: its binary's, or the static pod's image tag
        (``etcd:3.5.16-0`` -> ``3.5.16``)."""
        if self.version:
            return self.version
        if not self.image:
            return None
        m = re.search(r":v?(\d+\.\d+\.\d+)", self.image)
        return m.group(1) if m else None

    @property
    def ports(self) -> list[tuple[str, int]]:
        """Every (host, port) this member listens on or announces (client and peer)."""
        urls = [*self.client_urls, *self.listen_client_urls, *self.peer_urls, *self.listen_peer_urls]
        return list(dict.fromkeys(url_port(u) for u in urls))

    def client_tls(self) -> TLSFiles | None:
        """Client TLS for talking to this member, from kubeadm's PKI layout next to its CA (if present)."""
        if self.trusted_ca_file is None:
            return None
        pki = self.trusted_ca_file.parent
        cert, key = pki / "healthcheck-client.crt", pki / "healthcheck-client.key"
        if cert.is_file() and key.is_file():
            return TLSFiles(cacert=self.trusted_ca_file, cert=cert, key=key)
        return TLSFiles(cacert=self.trusted_ca_file)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (no key material, only paths)."""
        return {"name": self.name, "data_dir": str(self.data_dir),
                "wal_dir": str(self.wal_dir) if self.wal_dir else None,
                "peer_urls": list(self.peer_urls), "client_urls": list(self.client_urls),
                "initial_cluster": self.initial_cluster, "quota_backend_bytes": self.quota_backend_bytes,
                "image": self.image, "source": self.source}


@dataclass(frozen=True)
class ApiServer:
    """The local kube-apiserver as its static pod manifest describes it."""

    manifest: Path
    secure_port: int = DEFAULT_SECURE_PORT
    etcd_servers: tuple[str, ...] = ()
    encryption_provider_config: Path | None = None
    advertise_address: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"manifest": str(self.manifest), "secure_port": self.secure_port,
                "etcd_servers": list(self.etcd_servers),
                "encryption_provider_config": (str(self.encryption_provider_config)
                                               if self.encryption_provider_config else None)}


# -- static pod manifests ------------------------------------------------------------------------

@dataclass(frozen=True)
class StaticPod:
    """The parts of a static pod manifest etcdguard reads: flags of the first container, mounts."""

    path: Path
    flags: dict[str, str]
    image: str | None
    mounts: tuple[tuple[PurePosixPath, Path], ...]  # (container path, host path), longest first

    def host_path(self, container_path: str | None) -> Path | None:
        """Map a container path to the host through the hostPath volumes (unmapped: as is)."""
        if not container_path:
            return None
        path = PurePosixPath(container_path)
        for inside, outside in self.mounts:
            if path == inside or inside in path.parents:
                return outside / path.relative_to(inside)
        return Path(container_path)

    def flag_list(self, name: str) -> tuple[str, ...]:
        """A comma-separated flag as a tuple (empty when absent)."""
        return tuple(p.strip() for p in self.flags.get(name, "").split(",") if p.strip())


def parse_flags(args: Iterable[str]) -> dict[str, str]:
    """``--a=b``, ``--a b`` and bare ``--flag`` (``true``) -> {a: b}; non-flag words are skipped."""
    out: dict[str, str] = {}
    items = [str(a) for a in args]
    i = 0
    while i < len(items):
        arg = items[i]
        i += 1
        if not arg.startswith("-"):
            continue
        key, sep, value = arg.lstrip("-").partition("=")
        if not sep:
            if i < len(items) and not items[i].startswith("-"):
                value = items[i]
                i += 1
            else:
                value = "true"
        out[key] = value
    return out


def read_static_pod(path: Path) -> StaticPod:
    """Parse a static pod manifest (ConfigError when it is not one)."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError:
        raise ConfigError(f"{path} is not valid YAML") from None
    try:
        spec = doc["spec"]
        container = spec["containers"][0]
    except (TypeError, KeyError, IndexError):
        raise ConfigError(f"{path} is not a pod manifest with a container") from None
    args = [*(container.get("command") or []), *(container.get("args") or [])]
    volumes = {v.get("name"): v.get("hostPath", {}).get("path") for v in spec.get("volumes") or []
               if isinstance(v, dict) and v.get("hostPath")}
    mounts: list[tuple[PurePosixPath, Path]] = []
    for m in container.get("volumeMounts") or []:
        host = volumes.get(m.get("name"))
        if host and m.get("mountPath"):
            mounts.append((PurePosixPath(m["mountPath"]), Path(host)))
    mounts.sort(key=lambda pair: len(pair[0].parts), reverse=True)
    return StaticPod(path, parse_flags(args), container.get("image"), tuple(mounts))


def member_from_manifest(path: Path) -> LocalMember:
    """The local member described by kubeadm's ``etcd.yaml``."""
    pod = read_static_pod(path)
    f = pod.flags
    data_dir = pod.host_path(f.get("data-dir"))
    if data_dir is None:
        raise ConfigError(f"{path}: no --data-dir")
    name = f.get("name", "default")
    peer_urls = pod.flag_list("initial-advertise-peer-urls") or pod.flag_list("listen-peer-urls")
    client_urls = pod.flag_list("advertise-client-urls")
    if not peer_urls or not client_urls:
        raise ConfigError(f"{path}: --initial-advertise-peer-urls and --advertise-client-urls are required")
    quota = f.get("quota-backend-bytes")
    return LocalMember(
        name=name, data_dir=data_dir, peer_urls=peer_urls, client_urls=client_urls,
        source=f"kubeadm static pod {path}", wal_dir=pod.host_path(f.get("wal-dir")),
        listen_client_urls=pod.flag_list("listen-client-urls"),
        listen_peer_urls=pod.flag_list("listen-peer-urls"),
        initial_cluster=f.get("initial-cluster"),
        quota_backend_bytes=int(quota) if quota and quota.isdigit() and int(quota) > 0 else None,
        cert_file=pod.host_path(f.get("cert-file")), key_file=pod.host_path(f.get("key-file")),
        trusted_ca_file=pod.host_path(f.get("trusted-ca-file")), image=pod.image)


def apiserver_from_manifest(path: Path) -> ApiServer:
    """The local kube-apiserver described by kubeadm's ``kube-apiserver.yaml``."""
    pod = read_static_pod(path)
    f = pod.flags
    port = f.get("secure-port", str(DEFAULT_SECURE_PORT))
    if not port.isdigit():
        raise ConfigError(f"{path}: invalid --secure-port {port!r}")
    return ApiServer(manifest=path, secure_port=int(port), etcd_servers=pod.flag_list("etcd-servers"),
                     encryption_provider_config=pod.host_path(f.get("encryption-provider-config")),
                     advertise_address=f.get("advertise-address"))


REQUIRED_MEMBER_FIELDS = ("name", "data_dir", "peer_urls", "client_urls")


def member_config_complete(cfg: RestoreMemberConfig | None) -> bool:
    """True when ``restore.member`` alone describes the member."""
    return cfg is not None and all(getattr(cfg, f) for f in REQUIRED_MEMBER_FIELDS)


def member_from_config(cfg: RestoreMemberConfig) -> LocalMember:
    """The local member described by ``restore.member`` (ConfigError when a required field is missing)."""
    missing = [f for f in REQUIRED_MEMBER_FIELDS if not getattr(cfg, f)]
    if missing or cfg.name is None or cfg.data_dir is None:
        raise ConfigError(f"restore.member: {', '.join(missing)} required (name, data_dir, peer_urls, client_urls)")
    return LocalMember(name=cfg.name, data_dir=cfg.data_dir, wal_dir=cfg.wal_dir,
                       peer_urls=tuple(cfg.peer_urls), client_urls=tuple(cfg.client_urls),
                       source="restore.member configuration", initial_cluster=cfg.initial_cluster,
                       quota_backend_bytes=cfg.quota_backend_bytes, cert_file=cfg.cert_file,
                       key_file=cfg.key_file, trusted_ca_file=cfg.trusted_ca_file, owner=cfg.owner)


def member_with_overrides(local: LocalMember, cfg: RestoreMemberConfig | None) -> LocalMember:
    """``local`` with the ``restore.member`` fields that were given."""
    if cfg is None or not cfg.model_fields_set:
        return local
    given = {k: getattr(cfg, k) for k in cfg.model_fields_set
             if k not in REQUIRED_MEMBER_FIELDS or getattr(cfg, k)}  # a required one given empty: the unit's
    for key in ("peer_urls", "client_urls"):
        if key in given:
            given[key] = tuple(given[key])
    if not given:
        return local
    return replace(local, **given, source=f"{local.source}, restore.member ({', '.join(sorted(given))})")


_FLAG_LINE = r"^(?P<indent>[ \t]*-[ \t]+)(?P<quote>['\"]?)--{flag}=(?P<value>[^\n]*?)(?P=quote)[ \t]*$"


def rewrite_manifest_flags(text: str, flags: Mapping[str, str]) -> str:
    """Set ``--flag=value`` lines of a static pod manifest in place, keeping everything else as written.

    A flag that is not there yet is added after the ``--name=`` line. ConfigError when neither exists.
    """
    for flag, value in flags.items():
        pattern = re.compile(_FLAG_LINE.format(flag=re.escape(flag)), re.MULTILINE)
        m = pattern.search(text)
        if m is not None:
            text = f"{text[:m.start()]}{m['indent']}--{flag}={value}{text[m.end():]}"
            continue
        anchor = re.compile(_FLAG_LINE.format(flag="name"), re.MULTILINE).search(text)
        if anchor is None:
            raise ConfigError(f"cannot set --{flag}: the manifest has no '- --name=' line to anchor it")
        line = f"\n{anchor['indent']}--{flag}={value}"
        text = text[:anchor.end()] + line + text[anchor.end():]
    return text
