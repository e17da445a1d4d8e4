"""The service's HTTP endpoints: /healthz, /readyz, /metrics, /api/v1/backups, /api/v1/status."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

from etcdguard.errors import ConfigError

log = logging.getLogger("etcdguard.service.http")


@dataclass
class Endpoints:
    """What the HTTP server serves; each callable returns (status, JSON body) or bytes."""

    healthz: Callable[[], tuple[int, dict[str, Any]]]
    readyz: Callable[[], tuple[int, dict[str, Any]]]
    metrics: Callable[[], bytes]
    backups: Callable[[], tuple[int, Any]]
    status: Callable[[], tuple[int, Any]]


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9479`` for IPv6) -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"service.listen {listen!r}: expected host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def _handler(endpoints: Endpoints) -> type[BaseHTTPRequestHandler]:
    routes: dict[str, Callable[[], tuple[int, Any]]] = {
        "/healthz": endpoints.healthz, "/readyz": endpoints.readyz,
        "/api/v1/backups": endpoints.backups, "/api/v1/status": endpoints.status,
    }

    class Handler(BaseHTTPRequestHandler):
        server_version = "etcdguard"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0].rstrip("/") or "/"
            try:
                if path == "/metrics":
                    self._send(200, endpoints.metrics(), CONTENT_TYPE_LATEST)
                    return
                route = routes.get(path)
                if route is None:
                    self._send(404, b'{"error": "not found"}\n', "application/json")
                    return
                status, data = route()
            except Exception as exc:
                log.exception("%s failed", path)
                status, data = 500, {"error": f"{type(exc).__name__}: {exc}"}
            body = json.dumps(data, indent=2, sort_keys=True, default=str).encode() + b"\n"
            self._send(status, body, "application/json")

    return Handler


class _DualStackServer(ThreadingHTTPServer):
    """IPv6 when the host is an IPv6 address; ``::`` also accepts IPv4 (dual stack)."""

    def server_bind(self) -> None:
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class HttpServer:
    """A threaded HTTP server on its own daemon thread."""

    def __init__(self, listen: str, endpoints: Endpoints) -> None:
        host, port = parse_listen(listen)
        try:
            server = type("Server", (_DualStackServer,), {
                "address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
            self._server = server((host, port), _handler(endpoints))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="etcdguard-http",
                                        kwargs={"poll_interval": 0.2}, daemon=True)

    @property
    def address(self) -> str:
        """The bound host:port."""
        host, port = self._server.server_address[:2]
        return f"[{host!s}]:{port}" if ":" in str(host) else f"{host!s}:{port}"

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (bounded)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def loop_health(last_loop: float, max_age: float) -> tuple[int, dict[str, Any]]:
    """Liveness: the daemon loop ran within ``max_age`` seconds."""
    age = time.monotonic() - last_loop
    ok = age <= max_age
    return (200 if ok else 503), {"status": "ok" if ok else "stalled", "loop_age_seconds": round(age, 3)}
