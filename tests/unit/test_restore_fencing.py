"""Fencing against peer ports that accept connections before (or without) answering."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from etcdguard.etcd.tools import free_port
from etcdguard.restore.fencing import FenceTarget, check_fence, fence_targets, server_talks
from etcdguard.restore.plan import OldMember

NEW_ID = "c0ffee"


class _PeerServer(ThreadingHTTPServer):
    """An etcd peer port stand-in: closes the first ``silent`` connections without an answer (a member
    still loading its db), then answers ``/members`` with ``cluster_id``; ``close_after_silence``
    shuts the port after the first silent one (a member that crashed while starting)."""

    def __init__(self, port: int, silent: int, cluster_id: str | None, close_after_silence: bool = False) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.silent, self.cluster_id, self.close_after_silence = silent, cluster_id, close_after_silence
        self.asked = 0


class _Handler(BaseHTTPRequestHandler):
    server: _PeerServer

    def do_GET(self) -> None:
        srv = self.server
        srv.asked += 1
        if srv.silent > 0 or srv.cluster_id is None:
            srv.silent -= 1
            self.close_connection = True
            if srv.close_after_silence:
                threading.Thread(target=lambda: (srv.shutdown(), srv.server_close()), daemon=True).start()
            return
        self.send_response(200)
        self.send_header("X-Etcd-Cluster-ID", srv.cluster_id)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"[]")

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def _peer(silent: int, cluster_id: str | None, close_after_silence: bool = False) -> Iterator[_PeerServer]:
    server = _PeerServer(free_port(), silent, cluster_id, close_after_silence)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _target(server: _PeerServer) -> FenceTarget:
    return FenceTarget("old member m1 peer URL", f"http://127.0.0.1:{server.server_address[1]}", "peer", "m1")


def test_a_restored_member_that_answers_late_is_not_taken_for_the_old_cluster() -> None:
    with _peer(silent=2, cluster_id=NEW_ID) as server:
        result = check_fence([_target(server)], NEW_ID, silent_grace=30)
    assert result.ok and server.asked == 3


def test_a_peer_port_that_never_answers_is_fenced_off_after_the_grace() -> None:
    with _peer(silent=0, cluster_id=None) as server:
        result = check_fence([_target(server)], NEW_ID, silent_grace=0.5)
    assert not result.ok and result.alive == (f"old member m1 peer URL {_target(server).url}",)
    assert server.asked >= 2  # asked again before giving up


def test_a_member_that_dies_while_starting_passes() -> None:
    with _peer(silent=1, cluster_id=None, close_after_silence=True) as server:
        result = check_fence([_target(server)], NEW_ID, silent_grace=30)
    assert result.ok and server.asked == 1


def test_an_old_member_answering_its_own_cluster_id_is_fenced_off() -> None:
    with _peer(silent=0, cluster_id="0dd") as server:
        result = check_fence([_target(server)], NEW_ID, silent_grace=30)
    assert not result.ok and server.asked == 1


def test_fence_targets_name_every_old_port_but_those_left_out() -> None:
    old = [OldMember(name="m0", peer_urls=["https://10.0.0.1:2380"], client_urls=["https://10.0.0.1:2379"]),
           OldMember(name="m1", peer_urls=["https://10.0.0.2:2380"], client_urls=[])]
    apis = ["https://10.0.0.1:6443", "https://10.0.0.2:6443", "https://10.0.0.1:6443"]
    every = fence_targets(old, apis)
    assert [(t.kind, t.url, t.member) for t in every] == [
        ("peer", "https://10.0.0.1:2380", "m0"), ("client", "https://10.0.0.1:2379", "m0"),
        ("peer", "https://10.0.0.2:2380", "m1"),
        ("apiserver", "https://10.0.0.1:6443", ""), ("apiserver", "https://10.0.0.2:6443", "")]
    mine = {("10.0.0.1", 2380), ("10.0.0.1", 2379), ("10.0.0.1", 6443)}
    assert [t.url for t in fence_targets(old, apis, leave_out=mine)] == ["https://10.0.0.2:2380",
                                                                          "https://10.0.0.2:6443"]


def test_a_silent_client_port_of_no_known_member_passes_an_old_one_answering_does_not() -> None:
    """A restored member waiting for quorum accepts connections on its client port and says
    nothing: a configured endpoint that no known member owns then passes, asked only briefly."""
    import socket

    with socket.socket() as listener, _peer(silent=0, cluster_id="0dd") as old_peer:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen(8)  # never accepted: the kernel completes the handshake, nobody answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        silent = FenceTarget("old member (configured endpoints) client URL", url, "client", "(configured endpoints)")
        assert check_fence([silent], NEW_ID).ok
        assert not server_talks(url) and server_talks(_target(old_peer).url)
        # with an old member's peer port answering, the same silent port is not given the benefit of the doubt
        result = check_fence([silent, _target(old_peer)], NEW_ID, silent_grace=30)
        assert not result.ok and len(result.alive) == 2
