"""A thin etcd v3 client over grpcio: one channel per member, TLS with client certificates.

Only the calls etcdguard needs are wrapped. Unary calls carry a deadline; the snapshot stream
has none but is cancelled when no chunk arrives for ``idle_timeout`` seconds.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from etcdguard import interrupts
from etcdguard.errors import ConfigError, EtcdUnavailableError
from etcdguard.etcd.channel import CallGroup, Link
from etcdguard.etcd.channel import parse_endpoint as parse_endpoint
from etcdguard.etcd.errors import InvalidAuthTokenError, translate_rpc_error
from etcdguard.etcd.pb import rpc_pb2


@dataclass(frozen=True)
class TLSFiles:
    """Paths of the PEM files used to talk TLS to etcd (any may be None)."""

    cacert: Path | None = None
    cert: Path | None = None
    key: Path | None = field(default=None, repr=False)
    server_name: str | None = None

    @property
    def enabled(self) -> bool:
        """True when any TLS material was given."""
        return any((self.cacert, self.cert, self.key))

    def credentials(self) -> grpc.ChannelCredentials:
        """Load the files into gRPC channel credentials; a missing or unreadable file is a ConfigError."""
        if (self.cert is None) != (self.key is None):
            raise ConfigError("TLS: --cert and --key must be given together")

        def read(path: Path | None, what: str) -> bytes | None:
            if path is None:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise ConfigError(f"TLS {what} {path}: {exc.strerror or exc}") from None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.cacert, "CA certificate"),
            private_key=read(self.key, "client key"),
            certificate_chain=read(self.cert, "client certificate"),
        )


@dataclass(frozen=True)
class Credentials:
    """etcd username/password authentication (password never shown)."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class HashKV:
    """Result of HashKV: the hash of the MVCC keyspace up to ``revision``."""

    revision: int
    hash: int
    compact_revision: int
    member_id: int


@dataclass(frozen=True)
class MemberInfo:
    """One entry of MemberList."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool


@dataclass(frozen=True)
class MemberStatus:
    """The Status RPC answer of one member."""

    member_id: int
    cluster_id: int
    version: str
    db_size: int
    db_size_in_use: int
    leader: int
    raft_index: int
    raft_term: int
    raft_applied_index: int
    is_learner: bool
    errors: tuple[str, ...]
    revision: int


@dataclass(frozen=True)
class AlarmInfo:
    """An active alarm on a member (NOSPACE, CORRUPT)."""

    member_id: int
    alarm: str


@dataclass(frozen=True)
class MemberAddResult:
    """MemberAdd's answer: the new member and the member list including it.

    The list is what the new member's ``--initial-cluster`` is built from.
    """

    member: MemberInfo
    members: tuple[MemberInfo, ...]


def _member_info(m: Any) -> MemberInfo:
    return MemberInfo(id=m.ID, name=m.name, peer_urls=tuple(m.peerURLs), client_urls=tuple(m.clientURLs),
                      is_learner=m.isLearner)


class MemberClient:
    """gRPC client bound to one etcd member endpoint.

    With credentials, it authenticates on first use and, when etcd says the token is invalid
    or expired, authenticates again once and retries the call. :meth:`with_timeout` and
    :meth:`in_group` return views that share the channel and the token.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        tls: TLSFiles | None = None,
        credentials: Credentials | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._link = Link(endpoint, tls or TLSFiles(), credentials)
        self._group: CallGroup | None = None

    # -- plumbing -------------------------------------------------------------------------
    def close(self) -> None:
        """Close the channel (every view of it too)."""
        self._link.channel.close()

    def __enter__(self) -> MemberClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def with_timeout(self, timeout: float) -> MemberClient:
        """A view of this client whose unary calls have ``timeout`` (same channel and token)."""
        view = copy.copy(self)
        view.timeout = timeout
        return view

    def in_group(self, group: CallGroup) -> MemberClient:
        """A view of this client whose unary calls ``group.cancel()`` cancels."""
        view = copy.copy(self)
        view._group = group
        return view

    def _authenticate(self, stale: str | None) -> str | None:
        link = self._link
        if link.credentials is None:
            return None
        with link.token_lock:
            if link.token is None or link.token == stale:
                reply = self._invoke(
                    "Authenticate", link.auth.Authenticate,
                    rpc_pb2.AuthenticateRequest(name=link.credentials.username,
                                                password=link.credentials.password),
                    None, self.timeout)
                link.token = reply.token or None
            return link.token

    def _metadata(self, stale: str | None = None) -> tuple[tuple[str, str], ...] | None:
        token = self._authenticate(stale) if (self._link.token is None or stale) else self._link.token
        return None if token is None else (("token", token),)

    def _invoke(self, what: str, method: Any, request: Any, metadata: Any, timeout: float) -> Any:
        with interrupts.shielded():  # a stop lands after the call (bounded by ``timeout``), not in gRPC
            return self._invoke_unshielded(what, method, request, metadata, timeout)

    def _invoke_unshielded(self, what: str, method: Any, request: Any, metadata: Any, timeout: float) -> Any:
        group = self._group
        try:
            if group is None:
                return method(request, timeout=timeout, metadata=metadata)
            if group.cancelled:
                raise EtcdUnavailableError(f"etcd {self.endpoint}: {what} cancelled")
            call = method.future(request, timeout=timeout, metadata=metadata)
            group.add(call)
            try:
                return call.result()
            finally:
                group.discard(call)
        except grpc.FutureCancelledError:
            raise EtcdUnavailableError(f"etcd {self.endpoint}: {what} cancelled") from None
        except grpc.RpcError as err:
            raise translate_rpc_error(err, self.endpoint, what) from None

    def _call(self, what: str, method: Any, request: Any, *, timeout: float | None = None) -> Any:
        metadata = self._metadata()
        try:
            return self._invoke(what, method, request, metadata, timeout or self.timeout)
        except InvalidAuthTokenError:
            if metadata is None:
                raise
        # the token expired (etcd's --auth-token-ttl) or the auth store changed: once more
        return self._invoke(what, method, request, self._metadata(stale=metadata[0][1]),
                            timeout or self.timeout)

    # -- maintenance ----------------------------------------------------------------------
    def status(self) -> MemberStatus:
        """Status of this member."""
        r = self._call("Status", self._link.maintenance.Status, rpc_pb2.StatusRequest())
        return MemberStatus(
            member_id=r.header.member_id,
            cluster_id=r.header.cluster_id,
            version=r.version,
            db_size=r.dbSize,
            db_size_in_use=r.dbSizeInUse,
            leader=r.leader,
            raft_index=r.raftIndex,
            raft_term=r.raftTerm,
            raft_applied_index=r.raftAppliedIndex,
            is_learner=r.isLearner,
            errors=tuple(r.errors),
            revision=r.header.revision,
        )

    def hash_kv(self, revision: int = 0) -> HashKV:
        """HashKV at ``revision`` (0 = current); the header revision tells which one was hashed."""
        r = self._call("HashKV", self._link.maintenance.HashKV, rpc_pb2.HashKVRequest(revision=revision),
                       timeout=max(self.timeout, 60.0))
        hashed_rev = revision or r.header.revision
        return HashKV(revision=hashed_rev, hash=r.hash, compact_revision=r.compact_revision,
                      member_id=r.header.member_id)

    def alarms(self) -> list[AlarmInfo]:
        """Active alarms on the cluster, as seen by this member."""
        req = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET, memberID=0,
                                   alarm=rpc_pb2.NONE)
        r = self._call("Alarm", self._link.maintenance.Alarm, req)
        return [AlarmInfo(member_id=a.memberID, alarm=rpc_pb2.AlarmType.Name(a.alarm)) for a in r.alarms]

    def disarm_alarm(self, member_id: int, alarm: str) -> None:
        """Deactivate one alarm."""
        req = rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.DEACTIVATE, memberID=member_id,
                                   alarm=rpc_pb2.AlarmType.Value(alarm))
        self._call("Alarm", self._link.maintenance.Alarm, req)

    def move_leader(self, target_id: int) -> None:
        """Hand leadership to ``target_id`` (a started voter); only the leader accepts this."""
        self._call("MoveLeader", self._link.maintenance.MoveLeader,
                   rpc_pb2.MoveLeaderRequest(targetID=target_id), timeout=max(self.timeout, 30.0))

    def defragment(self) -> None:
        """Defragment this member's backend."""
        self._call("Defragment", self._link.maintenance.Defragment, rpc_pb2.DefragmentRequest(),
                   timeout=max(self.timeout, 300.0))

    def snapshot(self, idle_timeout: float = 30.0) -> Generator[bytes, None, None]:
        """Stream this member's backend snapshot as raw chunks (etcd's sha256 trailer included).

        No overall deadline; the stream is cancelled if no chunk arrives for ``idle_timeout``
        seconds. Closing the iterator early cancels the RPC. An expired auth token is renewed
        (once) when etcd refuses it before the first chunk.
        """
        metadata = self._metadata()
        started: list[bool] = []
        try:
            yield from self._snapshot_stream(metadata, idle_timeout, started)
        except InvalidAuthTokenError:
            if metadata is None or started:
                raise
            yield from self._snapshot_stream(self._metadata(stale=metadata[0][1]), idle_timeout, started)

    def _snapshot_stream(self, metadata: Any, idle_timeout: float,
                         started: list[bool]) -> Generator[bytes, None, None]:
        with interrupts.shielded():
            call = self._link.maintenance.Snapshot(rpc_pb2.SnapshotRequest(), metadata=metadata)
        last = [time.monotonic()]
        done = threading.Event()
        idle = threading.Event()

        def watchdog() -> None:
            while not done.wait(min(1.0, idle_timeout / 4)):
                if time.monotonic() - last[0] > idle_timeout:
                    idle.set()
                    call.cancel()
                    return

        thread = threading.Thread(target=watchdog, name="etcd-snapshot-watchdog", daemon=True)
        thread.start()
        messages = iter(call)
        try:
            while True:
                with interrupts.shielded():  # a stop lands between chunks (the watchdog bounds a stall)
                    message = next(messages, None)
                if message is None:
                    break
                last[0] = time.monotonic()
                if message.blob:
                    started.append(True)
                    yield bytes(message.blob)
        except grpc.RpcError as err:
            if idle.is_set():
                raise EtcdUnavailableError(
                    f"etcd {self.endpoint}: snapshot stream idle for more than {idle_timeout:g}s"
                ) from None
            raise translate_rpc_error(err, self.endpoint, "Snapshot") from None
        finally:
            done.set()
            with interrupts.shielded():
                call.cancel()

    # -- cluster --------------------------------------------------------------------------
    def member_list(self) -> list[MemberInfo]:
        """Members of the cluster, as seen by this member."""
        r = self._call("MemberList", self._link.cluster.MemberList, rpc_pb2.MemberListRequest())
        return [_member_info(m) for m in r.members]

    def member_add(self, peer_urls: list[str], *, learner: bool = False) -> MemberAddResult:
        """Add a member (optionally as a learner); returns it and the member list including it."""
        r = self._call("MemberAdd", self._link.cluster.MemberAdd,
                       rpc_pb2.MemberAddRequest(peerURLs=peer_urls, isLearner=learner))
        return MemberAddResult(_member_info(r.member), tuple(_member_info(m) for m in r.members))

    def member_update(self, member_id: int, peer_urls: list[str]) -> list[MemberInfo]:
        """Change a member's peer URLs; returns the member list after the change."""
        r = self._call("MemberUpdate", self._link.cluster.MemberUpdate,
                       rpc_pb2.MemberUpdateRequest(ID=member_id, peerURLs=peer_urls))
        return [_member_info(m) for m in r.members]

    def member_remove(self, member_id: int) -> None:
        """Remove a member by id."""
        self._call("MemberRemove", self._link.cluster.MemberRemove, rpc_pb2.MemberRemoveRequest(ID=member_id))

    def member_promote(self, member_id: int) -> None:
        """Promote a learner to a voting member."""
        self._call("MemberPromote", self._link.cluster.MemberPromote, rpc_pb2.MemberPromoteRequest(ID=member_id))

    # -- kv -------------------------------------------------------------------------------
    def put(self, key: bytes, value: bytes, lease: int = 0) -> int:
        """Put a key; returns the new revision."""
        r = self._call("Put", self._link.kv.Put, rpc_pb2.PutRequest(key=key, value=value, lease=lease))
        return int(r.header.revision)

    def get(self, key: bytes, revision: int = 0) -> bytes | None:
        """Value of one key, or None."""
        r = self._call("Range", self._link.kv.Range, rpc_pb2.RangeRequest(key=key, revision=revision))
        return bytes(r.kvs[0].value) if r.kvs else None

    def count(self, key: bytes, range_end: bytes, revision: int = 0, *,
              serializable: bool = False) -> tuple[int, int]:
        """Number of keys in [key, range_end) at ``revision``; returns (count, revision)."""
        r = self._call("Range", self._link.kv.Range, rpc_pb2.RangeRequest(
            key=key, range_end=range_end, revision=revision, count_only=True, serializable=serializable),
            timeout=max(self.timeout, 60.0))
        return int(r.count), int(r.header.revision)

    def first_key(self, key: bytes, range_end: bytes, revision: int = 0, *,
                  serializable: bool = False) -> bytes | None:
        """The smallest key in [key, range_end) at ``revision``, or None."""
        r = self._call("Range", self._link.kv.Range, rpc_pb2.RangeRequest(
            key=key, range_end=range_end, revision=revision, keys_only=True, limit=1,
            serializable=serializable))
        return bytes(r.kvs[0].key) if r.kvs else None

    def keys(self, key: bytes, range_end: bytes, revision: int, page: int = 10000, *,
             serializable: bool = False) -> Iterator[bytes]:
        """Iterate the keys in [key, range_end) at ``revision``, in pages, keys only."""
        start = key
        while True:
            r = self._call("Range", self._link.kv.Range, rpc_pb2.RangeRequest(
                key=start, range_end=range_end, revision=revision, keys_only=True, limit=page,
                serializable=serializable,
                sort_order=rpc_pb2.RangeRequest.ASCEND, sort_target=rpc_pb2.RangeRequest.KEY),
                timeout=max(self.timeout, 60.0))
            for kv in r.kvs:
                yield bytes(kv.key)
            if not r.more or not r.kvs:
                return
            start = bytes(r.kvs[-1].key) + b"\x00"

    def delete(self, key: bytes, range_end: bytes = b"") -> int:
        """Delete a key (or range); returns the number deleted."""
        r = self._call("DeleteRange", self._link.kv.DeleteRange,
                       rpc_pb2.DeleteRangeRequest(key=key, range_end=range_end))
        return int(r.deleted)

    def compact(self, revision: int, physical: bool = True) -> None:
        """Compact the keyspace up to ``revision``."""
        self._call("Compact", self._link.kv.Compact, rpc_pb2.CompactionRequest(revision=revision, physical=physical),
                   timeout=max(self.timeout, 60.0))

    # -- leases (leader election) ---------------------------------------------------------
    def lease_grant(self, ttl: int) -> int:
        """Grant a lease of ``ttl`` seconds; returns its id."""
        r = self._call("LeaseGrant", self._link.lease.LeaseGrant, rpc_pb2.LeaseGrantRequest(TTL=ttl))
        return int(r.ID)

    def lease_keepalive_once(self, lease_id: int) -> int:
        """Refresh a lease once; returns the remaining TTL (0 or less: expired)."""
        metadata = self._metadata()
        try:
            return self._keepalive(lease_id, metadata)
        except InvalidAuthTokenError:
            if metadata is None:
                raise
            return self._keepalive(lease_id, self._metadata(stale=metadata[0][1]))

    def _keepalive(self, lease_id: int, metadata: Any) -> int:
        try:
            replies = self._link.lease.LeaseKeepAlive(iter([rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)]),
                                                      timeout=self.timeout, metadata=metadata)
            for reply in replies:
                return int(reply.TTL)
        except grpc.RpcError as err:
            raise translate_rpc_error(err, self.endpoint, "LeaseKeepAlive") from None
        return 0

    def lease_revoke(self, lease_id: int) -> None:
        """Revoke a lease (deleting the keys attached to it)."""
        self._call("LeaseRevoke", self._link.lease.LeaseRevoke, rpc_pb2.LeaseRevokeRequest(ID=lease_id))

    def put_if_absent(self, key: bytes, value: bytes, lease: int) -> bool:
        """Create ``key`` only if it does not exist (a transaction); True when created."""
        txn = rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=key, target=rpc_pb2.Compare.CREATE,
                                     result=rpc_pb2.Compare.EQUAL, create_revision=0)],
            success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease))],
        )
        r = self._call("Txn", self._link.kv.Txn, txn)
        return bool(r.succeeded)
