"""The gRPC adapter of :class:`~etcdguard.etcd.ports.EtcdConnection`: one per command (or service).

Built once from :class:`~etcdguard.config.EtcdConfig`: the endpoints and TLS files are checked
at once (ConfigError), then a :class:`~etcdguard.etcd.client.MemberClient` is opened per member
URL on first use and kept (one gRPC channel per member talked to), each authenticating with the
configured credentials and renewing its token when etcd reports it expired.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time

from etcdguard.config import EtcdConfig
from etcdguard.errors import ConfigError
from etcdguard.etcd.client import Credentials, MemberClient, TLSFiles, parse_endpoint
from etcdguard.etcd.ports import EtcdConnection, EtcdMember

METRIC_SAMPLES = frozenset({"etcd_server_quota_backend_bytes", "etcd_server_leader_changes_seen_total"})
_MAX_METRICS_BYTES = 16 * 1024 * 1024


def tls_from_config(cfg: EtcdConfig) -> TLSFiles:
    """TLS files named in the config."""
    return TLSFiles(cacert=cfg.cacert, cert=cfg.cert, key=cfg.key, server_name=cfg.server_name)


def credentials_from_config(cfg: EtcdConfig) -> Credentials | None:
    """etcd username/password from the config, if any."""
    if not cfg.username:
        return None
    return Credentials(cfg.username, cfg.password.get_secret_value() if cfg.password else "")


def scrape_member_metrics(url: str, tls: TLSFiles, timeout: float) -> dict[str, float]:
    """GET ``/metrics`` on a member's client URL (same TLS files) -> {sample name: value}."""
    target, secure = parse_endpoint(url)
    host, _, port = target.rpartition(":")
    deadline = time.monotonic() + timeout
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    try:
        if secure:
            ctx = ssl.create_default_context(cafile=str(tls.cacert) if tls.cacert else None)
            if tls.cert and tls.key:
                ctx.load_cert_chain(str(tls.cert), str(tls.key))
            sock = ctx.wrap_socket(sock, server_hostname=tls.server_name or host)
        conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
        conn.sock = sock
        conn.request("GET", "/metrics", headers={"Accept": "text/plain"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise OSError(f"HTTP {resp.status}")
        chunks: list[bytes] = []
        size = 0
        while chunk := resp.read(65536):
            chunks.append(chunk)
            size += len(chunk)
            if size > _MAX_METRICS_BYTES or time.monotonic() > deadline:
                raise OSError("metrics response too large or too slow")
    finally:
        sock.close()
    from prometheus_client.parser import text_string_to_metric_families  # loads the whole client: only here

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(b"".join(chunks).decode("utf-8", "replace")):
        for sample in family.samples:
            if sample.name in METRIC_SAMPLES:
                out[sample.name] = float(sample.value)
    return out


class GrpcConnection(EtcdConnection):
    """One connection to the cluster named by an EtcdConfig (see the module docstring)."""

    def __init__(self, cfg: EtcdConfig, timeout: float | None = None) -> None:
        super().__init__()
        if not cfg.endpoints:
            raise ConfigError("no etcd endpoints configured (etcd.endpoints / --endpoints)")
        for url in cfg.endpoints:
            parse_endpoint(url)  # an invalid endpoint is a ConfigError now, not at the first call
        self.tls = tls_from_config(cfg)
        if self.tls.enabled:
            self.tls.credentials()  # unreadable TLS files are a ConfigError now
        self._endpoints = tuple(cfg.endpoints)
        self._credentials = credentials_from_config(cfg)
        self.timeout = timeout or cfg.dial_timeout
        self._clients: dict[tuple[str, bool], MemberClient] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.channels_opened: list[str] = []

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self._endpoints

    def encrypted(self, url: str) -> bool:
        """By the URL's scheme; a bare ``host:port`` is encrypted when TLS files are configured."""
        return parse_endpoint(url)[1] if "://" in url else self.tls.enabled

    def client(self, url: str) -> EtcdMember:
        if not self.allowed(url):
            raise ConfigError(f"refusing plain-text etcd URL {url}: the configured endpoints use TLS")
        key = (parse_endpoint(url)[0], self.encrypted(url))
        with self._lock:
            if self._closed:
                raise ConfigError("the etcd connection is closed")
            client = self._clients.get(key)
            if client is None:
                client = MemberClient(url, tls=self.tls, credentials=self._credentials, timeout=self.timeout)
                self._clients[key] = client
                self.channels_opened.append(url)
            return client

    def metrics(self, url: str, timeout: float) -> dict[str, float]:
        if not self.allowed(url):
            raise OSError(f"refusing plain-text URL {url}")
        return scrape_member_metrics(url, self.tls, timeout)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()


def open_connection(cfg: EtcdConfig, timeout: float | None = None) -> GrpcConnection:
    """The connection for ``cfg`` (use it as a context manager, or close it)."""
    return GrpcConnection(cfg, timeout)
