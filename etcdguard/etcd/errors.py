"""The one table that maps gRPC status codes to etcdguard's transient / permanent errors.

etcd's refusals that a workflow must tell apart (a cluster that is briefly unhealthy after a
membership change, a learner not yet in sync, too many learners, a peer URL in use, a removed
member) get their own classes, recognised by etcd's message; each keeps exit code 4.
"""

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


class UnhealthyClusterError(EtcdUnavailableError):
    """etcd refuses a reconfiguration until the leader has been connected to every voter for 5 s."""

    hint = "the cluster refuses membership changes until every voting member has been connected for 5 s"


class NotEnoughStartedError(EtcdUnavailableError):
    """etcd refuses a reconfiguration that would leave too few started members."""

    hint = "too few members are started for this change to keep quorum"


class LearnerNotReadyError(EtcdUnavailableError):
    """A learner cannot be promoted before it has caught up with the leader."""

    hint = "the learner has not caught up with the leader yet"


class NotLeaderError(EtcdUnavailableError):
    """The request must go to the leader (MoveLeader), which changed or is not this member."""

    hint = "this member is not the leader (leadership may just have moved)"


class TooManyLearnersError(EtcdRequestError):
    """etcd allows one learner at a time; another learner must be promoted or removed first."""

    hint = "etcd allows only one learner: promote or remove the existing learner first"


class PeerURLExistsError(EtcdRequestError):
    """Another member already uses this peer URL."""

    hint = "another member already has this peer URL"


class MemberNotFoundError(EtcdRequestError):
    """No member has this id (it was never added, or already removed)."""

    hint = "no member has this id"


class MemberRemovedError(EtcdRequestError):
    """The member was permanently removed; it must start over with an empty data dir and a new id."""

    hint = "the member was removed from the cluster; start it again with an empty data dir after adding it anew"


class NotLearnerError(EtcdRequestError):
    """Only learners can be promoted."""

    hint = "only a learner can be promoted"


class BadLeaderTransfereeError(EtcdRequestError):
    """Leadership can only move to a started voting member."""

    hint = "leadership can only move to a started voting member"


class InvalidAuthTokenError(EtcdRequestError):
    """etcd no longer accepts the auth token (expired, or the auth store changed)."""

    hint = "the auth token expired or was revoked"


# etcd's messages (the text after "etcdserver: "), most specific first.
_REFUSALS: tuple[tuple[str, type[EtcdGuardError]], ...] = (
    ("unhealthy cluster", UnhealthyClusterError),
    ("re-configuration failed due to not enough started members", NotEnoughStartedError),
    ("can only promote a learner member which is in sync with leader", LearnerNotReadyError),
    ("can only promote a learner member", NotLearnerError),
    ("too many learner members", TooManyLearnersError),
    ("peer urls already exists", PeerURLExistsError),
    ("member id already exist", PeerURLExistsError),  # the same peer URLs added twice within a second
    ("member has been permanently removed", MemberRemovedError),
    ("id removed", MemberRemovedError),
    ("member not found", MemberNotFoundError),
    ("bad leader transferee", BadLeaderTransfereeError),
    ("not leader", NotLeaderError),
    ("invalid auth token", InvalidAuthTokenError),
    ("user name is empty", InvalidAuthTokenError),
    ("revision of auth store is old", InvalidAuthTokenError),
)


def _details(err: grpc.RpcError) -> str:
    details = getattr(err, "details", None)
    text = details() if callable(details) else str(err)
    return " ".join(str(text or "").split()) or "no details"


def refusal_class(details: str) -> type[EtcdGuardError] | None:
    """The distinct error class for one of etcd's known refusals, by its message (else None)."""
    text = details.lower()
    for needle, cls in _REFUSALS:
        if needle in text:
            return cls
    return None


def translate_rpc_error(err: grpc.RpcError, endpoint: str, what: str) -> EtcdGuardError:
    """Turn a gRPC error into a one-line etcdguard error naming the member and the call."""
    code_fn = getattr(err, "code", None)
    code = code_fn() if callable(code_fn) else grpc.StatusCode.UNKNOWN
    details = _details(err)
    message = f"etcd {endpoint}: {what} failed: {code.name}: {details}"
    if "ssl" in details.lower() or "handshake" in details.lower() or "certificate" in details.lower():
        return EtcdRequestError(f"etcd {endpoint}: TLS handshake failed ({details}); check --cacert/--cert/--key")
    refusal = refusal_class(details)
    if refusal is not None:
        hint = getattr(refusal, "hint", "")
        return refusal(f"{message} ({hint})" if hint else message)
    if code in PERMANENT_CODES:
        return EtcdRequestError(message)
    return EtcdUnavailableError(message)
