"""Fencing: the restored data must never meet the old cluster.

Before a restored member starts, every old member's client and peer ports and every known
kube-apiserver must be down. A port that is open is accepted only when what answers there is a
member of the restored cluster itself (its cluster id is the one the plan derived from the new
token): a peer port tells its cluster id in the ``X-Etcd-Cluster-ID`` header of ``/members``, a
client port in the Status header. A client port no known member owns (a configured endpoint) that
does not begin to serve within :data:`TALK_TIMEOUT` counts as silent: a restored member waiting for
quorum, passed only while nothing else old answers.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import time
from collections.abc import Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

from etcdguard.errors import EtcdGuardError
from etcdguard.etcd.client import MemberClient, TLSFiles
from etcdguard.restore.discovery import url_port
from etcdguard.restore.plan import OldMember

# a restored member runs etcd's initial corruption check (kubeadm turns it on) before it serves its peer
# port: up to 7s for each other member that does not answer yet
SILENT_GRACE = 20.0
# a client port of no known member (a configured endpoint): a serving etcd answers a TLS handshake or
# an HTTP/2 preface within milliseconds, while a restored member that loads its db or waits for
# quorum has not begun to serve it (the kernel accepts the connection, nobody reads it)
TALK_TIMEOUT = 0.3
# the client connection preface of HTTP/2 and an empty SETTINGS frame: a gRPC server answers with its own
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_ports_closed(ports: Iterable[tuple[str, int]], timeout: float, poll: float = 0.2) -> list[tuple[str, int]]:
    """Wait until none of ``ports`` accepts connections; returns those still open at the deadline."""
    pending = list(dict.fromkeys(ports))
    deadline = time.monotonic() + timeout
    while True:
        pending = [p for p in pending if port_open(*p, timeout=0.5)]
        if not pending or time.monotonic() >= deadline:
            return pending
        time.sleep(poll)


def peer_cluster_id(peer_url: str, tls: TLSFiles | None, timeout: float = 2.0) -> str | None:
    """The cluster id (hex) an etcd peer port reports on ``/members``, or None if it does not say."""
    parts = urlsplit(peer_url)
    host, port = url_port(peer_url)
    try:
        if parts.scheme == "https":
            ctx = ssl.create_default_context(cafile=str(tls.cacert) if tls and tls.cacert else None)
            ctx.check_hostname = False
            if not (tls and tls.cacert):
                ctx.verify_mode = ssl.CERT_NONE
            if tls and tls.cert and tls.key:
                ctx.load_cert_chain(str(tls.cert), str(tls.key))
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        try:
            conn.request("GET", "/members")
            resp = conn.getresponse()
            resp.read(1 << 16)
            value = resp.getheader("X-Etcd-Cluster-ID")
        finally:
            conn.close()
    except (OSError, ssl.SSLError, http.client.HTTPException):
        return None
    return value.lower() if value else None


def server_talks(url: str, timeout: float = TALK_TIMEOUT) -> bool:
    """True when a process serves ``url``'s port: it takes part in a TLS handshake (even one that
    fails) or answers (or closes) an HTTP/2 preface within ``timeout``. False for a closed port
    and for one that accepts connections nobody reads."""
    host, port = url_port(url)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if urlsplit(url).scheme == "https":
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE  # only whether it talks: nothing is sent or believed
                with contextlib.suppress(ssl.SSLError):  # an alert is an answer too
                    ctx.wrap_socket(sock, server_hostname=host).close()
                return True
            sock.sendall(_H2_PREFACE)
            sock.recv(1)  # its SETTINGS frame, or b"" when it closed the connection: either way it serves
            return True
    except (TimeoutError, ConnectionRefusedError):
        return False
    except OSError:
        return True  # reset by the peer: something read the connection and dropped it


def client_cluster_id(client_url: str, tls: TLSFiles | None, timeout: float = 2.0) -> str | None:
    """The cluster id (hex) an etcd client port reports in Status, or None if it does not answer."""
    try:
        with MemberClient(client_url, tls=tls, timeout=timeout) as client:
            return f"{client.status().cluster_id:x}"
    except EtcdGuardError:
        return None


@dataclass(frozen=True)
class FenceTarget:
    """Something that must be down (or be part of the restored cluster) before a restored member starts."""

    what: str  # "member m1 client URL", "kube-apiserver"
    url: str
    kind: str  # "peer", "client" or "apiserver"
    member: str = ""  # the old member it belongs to


@dataclass(frozen=True)
class FenceResult:
    """Which targets are still up and belong to the old world."""

    checked: int
    alive: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when everything old is down."""
        return not self.alive


def fence_targets(old_members: Iterable[OldMember], apiservers: Iterable[str], *,
                  leave_out: Collection[tuple[str, int]] = ()) -> list[FenceTarget]:
    """Every old member's peer and client URLs and every apiserver, but those on ``leave_out`` ports."""
    targets: list[FenceTarget] = []
    for m in old_members:
        targets += [FenceTarget(f"old member {m.name} peer URL", u, "peer", m.name) for u in m.peer_urls]
        targets += [FenceTarget(f"old member {m.name} client URL", u, "client", m.name) for u in m.client_urls]
    targets += [FenceTarget("kube-apiserver", u, "apiserver") for u in dict.fromkeys(apiservers)]
    return [t for t in targets if url_port(t.url) not in leave_out]


def peer_answer(url: str, tls: TLSFiles | None, grace: float, poll: float = 0.3) -> tuple[bool, str | None]:
    """(open, cluster id) of a peer port. One that accepts connections without answering is asked
    again for ``grace`` seconds: a member that is starting (loading its db, checking it against its
    peers) opens its peer port before it answers, and one crash-looping closes it again; a hung one
    stays silent."""
    host, port = url_port(url)
    deadline = time.monotonic() + grace
    timeout = 0.5  # short at first (a starting member may drop the first request), longer for far peers
    while True:
        answered = peer_cluster_id(url, tls, timeout=timeout)
        timeout = min(4.0, timeout * 2)
        if answered is not None:
            return True, answered
        if not port_open(host, port):
            return False, None
        if time.monotonic() >= deadline:
            return True, None
        time.sleep(poll)


def check_fence(targets: Iterable[FenceTarget], new_cluster_id: str, *, peer_tls: TLSFiles | None = None,
                client_tls: TLSFiles | None = None, silent_grace: float = SILENT_GRACE) -> FenceResult:
    """Probe every target: closed ports pass, the restored cluster's own members pass, the rest fail
    (a peer port that stays silent for ``silent_grace`` seconds too, see :func:`peer_answer`).

    The probes of one kind run side by side (a port that accepts but does not answer costs its
    timeout once, not once per target); peer ports first, since a restored member that waits for
    quorum serves no client yet but tells its cluster id on its peer port.
    """
    ordered = sorted(targets, key=lambda t: t.kind != "peer")
    peer_members = {t.member for t in ordered if t.kind == "peer"}
    with ThreadPoolExecutor(max_workers=min(16, max(1, len(ordered)))) as pool:
        is_open = dict(zip(ordered, pool.map(lambda t: port_open(*url_port(t.url)), ordered), strict=True))
        # client ports of no known member are asked at once, beside the peer probes: one that does not
        # talk within TALK_TIMEOUT is silent; one that does must tell its cluster id
        unknown = {t: pool.submit(lambda url: client_cluster_id(url, client_tls) if server_talks(url) else None,
                                  t.url)
                   for t in ordered if t.kind == "client" and is_open[t] and t.member not in peer_members}
        peers = [t for t in ordered if t.kind == "peer" and is_open[t]]
        answers = dict(zip(peers, pool.map(lambda t: peer_answer(t.url, peer_tls, silent_grace), peers),
                           strict=True))
        # a member that started between the port scan and now: its client port is open, its peer
        # port was not; it tells its cluster id there sooner than a client port waiting for quorum
        open_clients = {t.member for t in ordered if t.kind == "client" and is_open[t]}
        late = [t for t in ordered if t.kind == "peer" and not is_open[t] and t.member in open_clients]
        answers.update(zip(late, pool.map(lambda t: peer_answer(t.url, peer_tls, silent_grace), late), strict=True))
        is_open.update({t: still_open for t, (still_open, _) in answers.items()})
        peer_ids = {t: answered for t, (_, answered) in answers.items()}
        peers = [t for t in ordered if t.kind == "peer" and is_open[t]]
        restored = {t.member for t in peers if peer_ids.get(t) == new_cluster_id}
        clients = [t for t in ordered if t.kind == "client" and is_open[t] and t.member not in restored
                   and t not in unknown]
        client_ids = dict(zip(clients, pool.map(lambda t: client_cluster_id(t.url, client_tls), clients),
                              strict=True))
        client_ids.update({t: future.result() for t, future in unknown.items()})
    alive: list[str] = []
    for t in ordered:
        if not is_open[t] or (t.kind == "peer" and peer_ids.get(t) == new_cluster_id):
            continue
        if t.kind == "client":
            if t.member in restored:
                continue
            answered = client_ids[t]
            if answered == new_cluster_id:
                continue
            # A restored member waiting for quorum accepts connections but serves nothing yet; an
            # old member answers Status. A silent port of no known member passes only when every
            # old peer port checked is down or already the restored cluster's.
            if answered is None and t.member not in peer_members and not alive:
                continue
        alive.append(f"{t.what} {t.url}")
    return FenceResult(len(ordered), tuple(alive))
