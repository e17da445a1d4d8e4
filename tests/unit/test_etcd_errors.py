"""etcd's refusals map to distinct errors: transient ones a workflow waits out, permanent ones it reports."""

from __future__ import annotations

import grpc
import pytest

from etcdguard.errors import EtcdRequestError, EtcdUnavailableError, ExitCode, PermanentError, TransientError
from etcdguard.etcd.errors import (
    InvalidAuthTokenError,
    LearnerNotReadyError,
    MemberNotFoundError,
    MemberRemovedError,
    NotLeaderError,
    NotLearnerError,
    PeerURLExistsError,
    TooManyLearnersError,
    UnhealthyClusterError,
    translate_rpc_error,
)


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


F, U = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(("code", "details", "cls", "transient"), [
    (U, "etcdserver: unhealthy cluster", UnhealthyClusterError, True),
    (F, "etcdserver: can only promote a learner member which is in sync with leader", LearnerNotReadyError, True),
    (F, "etcdserver: can only promote a learner member", NotLearnerError, False),
    (F, "etcdserver: too many learner members in cluster", TooManyLearnersError, False),
    (F, "etcdserver: Peer URLs already exists", PeerURLExistsError, False),
    (grpc.StatusCode.NOT_FOUND, "etcdserver: member not found", MemberNotFoundError, False),
    (grpc.StatusCode.UNKNOWN, "membership: ID removed", MemberRemovedError, False),
    (F, "etcdserver: not leader", NotLeaderError, True),
    (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token", InvalidAuthTokenError, False),
])
def test_refusals_get_their_own_class(code: grpc.StatusCode, details: str, cls: type, transient: bool) -> None:
    err = translate_rpc_error(FakeRpcError(code, details), "http://127.0.0.1:1", "MemberAdd")
    assert type(err) is cls
    assert isinstance(err, TransientError if transient else PermanentError)
    assert isinstance(err, EtcdUnavailableError if transient else EtcdRequestError)
    assert err.exit_code == ExitCode.ETCD
    assert details in str(err) and "MemberAdd" in str(err) and cls.hint in str(err)


def test_other_errors_keep_the_code_table() -> None:
    assert type(translate_rpc_error(FakeRpcError(U, "etcdserver: no leader"), "e", "Put")) is EtcdUnavailableError
    assert type(translate_rpc_error(FakeRpcError(grpc.StatusCode.PERMISSION_DENIED, "etcdserver: permission denied"),
                                    "e", "Put")) is EtcdRequestError
