"""The one table that maps gRPC status codes to etcdguard's transient / permanent errors."""

from __future__ import annotations

import grpc

from etcdguard.errors import EtcdGuardError, EtcdRequestError, EtcdUnavailableError

TRANSIENT_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
    }
)
PERMANENT_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.DATA_LOSS,
    }
)


def _details(err: grpc.RpcError) -> str:
    details = getattr(err, "details", None)
    text = details() if callable(details) else str(err)
    return " ".join(str(text or "").split()) or "no details"


def translate_rpc_error(err: grpc.RpcError, endpoint: str, what: str) -> EtcdGuardError:
    """Turn a gRPC error into a one-line etcdguard error naming the member and the call."""
    code_fn = getattr(err, "code", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details = _details(err)
    message = f"etcd {endpoint}: {what} failed: {code.name}: {details}"
    if "ssl" in details.lower() or "handshake" in details.lower() or "certificate" in details.lower():
        return EtcdRequestError(f"etcd {endpoint}: TLS handshake failed ({details}); check --cacert/--cert/--key")
    if code in PERMANENT_CODES:
        return EtcdRequestError(message)
    return EtcdUnavailableError(message)
