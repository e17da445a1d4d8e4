"""The service's HTTP endpoints: /healthz, /readyz, /metrics, /api/v1/backups, /api/v1/status.

Loopback is reachable by every local user, so the server holds up against slow or hostile
clients: one selector thread accepts connections and collects request heads (at most
:data:`MAX_HEAD_BYTES`, within :data:`HEAD_TIMEOUT` seconds, at most :data:`MAX_CONNECTIONS` at
once); only a complete GET is handed to a fixed pool of :data:`WORKERS` threads, whose writes
time out too. Every response closes its connection. /api/v1 answers with a reduced view
(no endpoints, member ids, bucket paths or error texts), and /readyz without the dependencies'
error texts, unless the request carries the bearer token from ``service.api_token_file``.
Errors are logged as one scrubbed line, never a traceback.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST

from etcdguard.errors import ConfigError
from etcdguard.service.logs import scrub

log = logging.getLogger("etcdguard.service.http")

HEAD_TIMEOUT = 5.0      # seconds a client has to send its whole request head
WRITE_TIMEOUT = 10.0    # seconds a response may take to be written
MAX_HEAD_BYTES = 8192
MAX_CONNECTIONS = 512   # connections still sending their head; more are closed at once
WORKERS = 4             # threads that answer complete requests
MAX_QUEUED = 64         # complete requests waiting for a worker; more get 503
JSON = "application/json"
T = TypeVar("T")

View = Callable[[bool], tuple[int, Any]]  # (authenticated) -> (status, JSON body)


@dataclass
class Endpoints:
    """What the HTTP server serves. ``backups`` and ``status`` get whether the request is
    authenticated and must leave out endpoints, member ids and bucket paths when it is not."""

    healthz: Callable[[], tuple[int, dict[str, Any]]]
    readyz: View  # detail (the dependencies' error texts) only with the token
    metrics: Callable[[], bytes]
    backups: View
    status: View


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9479`` for IPv6) -> (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"service.listen {listen!r}: expected host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def load_token(path: Path | None) -> bytes | None:
    """The API bearer token from ``path`` (None when not configured); ConfigError when unusable."""
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read service.api_token_file {path}: {exc.strerror or exc}") from None
    if len(token) < 16:
        raise ConfigError(f"service.api_token_file {path}: the token must be at least 16 characters")
    return token.encode()


class CachedValue(Generic[T]):
    """A value loaded at most once per ``max_age`` seconds (or after :meth:`invalidate`).

    One caller loads at a time; the others get the previous value meanwhile (or wait for the
    first load). A failing load is raised to its caller and retried by the next one.
    """

    def __init__(self, load: Callable[[], T], max_age: float) -> None:
        self._load = load
        self._max_age = max_age
        self._lock = threading.Lock()
        self._value: T | None = None
        self._loaded_at = float("-inf")
        self._have = False

    def invalidate(self) -> None:
        """Load again at the next :meth:`get`."""
        self._loaded_at = float("-inf")

    def get(self) -> T:
        """The cached value, reloaded when older than ``max_age``."""
        fresh = time.monotonic() - self._loaded_at <= self._max_age
        if fresh and self._have:
            return self._value  # type: ignore[return-value]
        if self._have and not self._lock.acquire(blocking=False):
            return self._value  # type: ignore[return-value]  # someone else is reloading
        if not self._have:
            self._lock.acquire()
        try:
            if self._have and time.monotonic() - self._loaded_at <= self._max_age:
                return self._value  # type: ignore[return-value]
            value = self._load()
            self._value, self._have, self._loaded_at = value, True, time.monotonic()
            return value
        finally:
            self._lock.release()


@dataclass
class _Pending:
    sock: socket.socket
    deadline: float
    head: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True)
class Request:
    """A parsed request head."""

    method: str
    path: str
    headers: dict[str, str]


def parse_head(head: bytes) -> Request | None:
    """The method, path (query dropped) and headers of a request head; None when malformed."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ")
    except ValueError:
        return None
    if not version.startswith("HTTP/1."):
        return None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return Request(method, target.split("?", 1)[0].rstrip("/") or "/", headers)


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
            500: "Internal Server Error", 503: "Service Unavailable"}


def _response(status: int, body: bytes, content_type: str = JSON, extra: str = "") -> bytes:
    head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nServer: etcdguard\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
            f"Cache-Control: no-store\r\n{extra}\r\n")
    return head.encode() + body


def _json(status: int, data: Any) -> bytes:
    return _response(status, json.dumps(data, indent=2, sort_keys=True, default=str).encode() + b"\n")


class Router:
    """Turns a request into response bytes (no I/O; unit-testable)."""

    def __init__(self, endpoints: Endpoints, token: bytes | None) -> None:
        self.endpoints = endpoints
        self.token = token

    def authenticated(self, request: Request) -> bool | None:
        """True with the right bearer token, False without one, None with a wrong one."""
        header = request.headers.get("authorization", "")
        if not header:
            return False
        scheme, _, given = header.partition(" ")
        if self.token is None or scheme.lower() != "bearer":
            return None
        return True if hmac.compare_digest(given.strip().encode(), self.token) else None

    def handle(self, request: Request) -> bytes:
        """The full response to ``request``."""
        if request.method not in ("GET", "HEAD"):
            return _json(405, {"error": "method not allowed"})
        try:
            if request.path == "/healthz":
                return _json(*self.endpoints.healthz())
            if request.path == "/readyz":  # kubelet probes carry no token: a wrong one is only less detail
                return _json(*self.endpoints.readyz(self.authenticated(request) is True))
            if request.path == "/metrics":
                return _response(200, self.endpoints.metrics(), CONTENT_TYPE_LATEST)
            views = {"/api/v1/backups": self.endpoints.backups, "/api/v1/status": self.endpoints.status}
            view = views.get(request.path)
            if view is None:
                return _json(404, {"error": "not found"})
            auth = self.authenticated(request)
            if auth is None:
                return _response(401, b'{"error": "invalid bearer token"}\n', JSON,
                                 'WWW-Authenticate: Bearer realm="etcdguard"\r\n')
            return _json(*view(auth))
        except Exception as exc:  # one scrubbed line, never a traceback or details to the client
            log.error("GET %s failed: %s: %s", request.path, type(exc).__name__, scrub(str(exc)))
            return _json(500, {"error": "internal error (see the service log)"})


class HttpServer:
    """The endpoints on one selector thread plus a fixed pool of worker threads."""

    def __init__(self, listen: str, endpoints: Endpoints, *, token: bytes | None = None,
                 head_timeout: float = HEAD_TIMEOUT) -> None:
        host, port = parse_listen(listen)
        self._router = Router(endpoints, token)
        self._head_timeout = head_timeout
        try:  # IPv6 when the host is an IPv6 address; "::" also accepts IPv4 (dual stack)
            self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._sock.family == socket.AF_INET6:
                self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self._sock.bind((host, port))
            self._sock.listen(1024)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {listen}: {exc.strerror or exc}") from None
        self._sock.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._pending: dict[int, _Pending] = {}
        self._queued = 0
        self._queued_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="etcdguard-http-worker")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="etcdguard-http", daemon=True)

    @property
    def address(self) -> str:
        """The bound host:port."""
        host, port = self._sock.getsockname()[:2]
        return f"[{host!s}]:{port}" if ":" in str(host) else f"{host!s}:{port}"

    def start(self) -> None:
        """Serve in the background."""
        self._selector.register(self._sock, selectors.EVENT_READ)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving (bounded): close every connection, let running answers finish."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- the selector thread ----------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while not self._stop.is_set():
                for key, _ in self._selector.select(timeout=0.2):
                    if key.fileobj is self._sock:
                        self._accept()
                    else:
                        self._read(key.fd)
                self._expire()
        finally:
            for pending in list(self._pending.values()):
                self._drop(pending)
            self._selector.close()
            self._sock.close()

    def _accept(self) -> None:
        for _ in range(64):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: try again at the next event
                log.warning("accept failed: %s", exc.strerror or exc)
                return
            if len(self._pending) >= MAX_CONNECTIONS:
                conn.close()
                continue
            conn.setblocking(False)
            pending = _Pending(conn, time.monotonic() + self._head_timeout)
            self._pending[conn.fileno()] = pending
            self._selector.register(conn, selectors.EVENT_READ)

    def _drop(self, pending: _Pending) -> None:
        self._pending.pop(pending.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(pending.sock)
        pending.sock.close()

    def _expire(self) -> None:
        now = time.monotonic()
        for pending in [p for p in self._pending.values() if p.deadline < now]:
            self._drop(pending)

    def _read(self, fd: int) -> None:
        pending = self._pending.get(fd)
        if pending is None:
            return
        try:
            data = pending.sock.recv(MAX_HEAD_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(pending)
            return
        pending.head += data
        end = pending.head.find(b"\r\n\r\n")
        if end < 0:
            if len(pending.head) >= MAX_HEAD_BYTES:
                self._drop(pending)
            return
        self._pending.pop(fd, None)
        self._selector.unregister(pending.sock)
        request = parse_head(bytes(pending.head[:end]))
        with self._queued_lock:
            busy = self._queued >= MAX_QUEUED
            if not busy:
                self._queued += 1
        if request is None or busy:
            if request is None and not busy:
                with self._queued_lock:
                    self._queued -= 1
            reply = _json(400, {"error": "bad request"}) if request is None else _json(503, {"error": "busy"})
            with contextlib.suppress(OSError):  # never block the selector thread: best effort, then close
                pending.sock.send(reply)
            pending.sock.close()
            return
        self._pool.submit(self._work, pending.sock, request)

    # -- worker threads ---------------------------------------------------------------------
    def _work(self, sock: socket.socket, request: Request) -> None:
        try:
            reply = self._router.handle(request)
            if request.method == "HEAD":
                reply = reply[:reply.find(b"\r\n\r\n") + 4]
            sock.setblocking(True)
            sock.settimeout(WRITE_TIMEOUT)
            sock.sendall(reply)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the client went away or stopped reading
        except Exception as exc:
            log.error("answering %s failed: %s", request.path, type(exc).__name__)
        finally:
            sock.close()
            with self._queued_lock:
                self._queued -= 1


def loop_health(last_loop: float, max_age: float) -> tuple[int, dict[str, Any]]:
    """Liveness: the daemon loop ran within ``max_age`` seconds."""
    age = time.monotonic() - last_loop
    ok = age <= max_age
    return (200 if ok else 503), {"status": "ok" if ok else "stalled", "loop_age_seconds": round(age, 3)}
