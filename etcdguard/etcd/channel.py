"""One gRPC channel to one etcd member (shared by the views of a MemberClient), and call groups."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import grpc

from etcdguard.errors import ConfigError
from etcdguard.etcd.pb import rpc_pb2_grpc

if TYPE_CHECKING:
    from etcdguard.etcd.client import Credentials, TLSFiles

MAX_MESSAGE_BYTES = 256 * 1024 * 1024


def parse_endpoint(endpoint: str) -> tuple[str, bool]:
    """Return (``host:port`` target, secure?) for ``https://h:p``, ``http://h:p`` or ``h:p``."""
    text = endpoint.strip()
    if "://" not in text:
        return text, False
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https", "unix", "unixs"} or not parts.netloc:
        raise ConfigError(f"invalid etcd endpoint {endpoint!r}: expected http(s)://host:port")
    port = parts.port or 2379
    return f"{parts.hostname}:{port}", parts.scheme in {"https", "unixs"}


class CallGroup:
    """In-flight unary calls that can be cancelled together (a key count when its stream fails).

    After :meth:`cancel`, calls made through the group fail at once with EtcdUnavailableError.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: set[grpc.Future] = set()
        self.cancelled = False

    def add(self, call: grpc.Future) -> None:
        """Track ``call``; cancel it at once if the group is already cancelled."""
        with self._lock:
            self._calls.add(call)
            cancelled = self.cancelled
        if cancelled:
            call.cancel()

    def discard(self, call: grpc.Future) -> None:
        """Stop tracking ``call`` (it finished)."""
        with self._lock:
            self._calls.discard(call)

    def cancel(self) -> None:
        """Cancel every tracked call and every later one."""
        with self._lock:
            self.cancelled = True
            calls = list(self._calls)
        for call in calls:
            call.cancel()


class Link:
    """One gRPC channel to one member, its stubs, and the auth token (shared by client views)."""

    def __init__(self, endpoint: str, tls: TLSFiles, credentials: Credentials | None) -> None:
        target, secure = parse_endpoint(endpoint)
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.enable_retries", 0),
            # a member that comes back is reached again within a second, not after gRPC's
            # default exponential backoff of up to two minutes
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 1000),
            # one thread per stream and a capped HTTP/2 window: the snapshot stream is consumed
            # at the pipeline's pace instead of being buffered in memory when etcd is faster
            ("SingleThreadedUnaryStream", 1),
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", 1 << 20),
        ]
        if tls.server_name:
            options.append(("grpc.ssl_target_name_override", tls.server_name))
        self.secure = secure or tls.enabled
        if self.secure:
            self.channel = grpc.secure_channel(target, tls.credentials(), options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.kv = rpc_pb2_grpc.KVStub(self.channel)
        self.maintenance = rpc_pb2_grpc.MaintenanceStub(self.channel)
        self.cluster = rpc_pb2_grpc.ClusterStub(self.channel)
        self.lease = rpc_pb2_grpc.LeaseStub(self.channel)
        self.auth = rpc_pb2_grpc.AuthStub(self.channel)
        self.credentials = credentials
        self.token: str | None = None
        self.token_lock = threading.Lock()
