"""A kube-apiserver stand-in: takes kube-apiserver's flags, listens on 127.0.0.1:--secure-port.

Run as ``python -m tests.support.apiserver --secure-port=N ...`` (the container command of a test
kube-apiserver manifest). It answers ``GET /livez`` with ``ok`` over plain HTTP and stops on
SIGTERM or SIGINT.
"""

from __future__ import annotations

import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main(argv: list[str]) -> int:
    port = next((int(a.split("=", 1)[1]) for a in argv if a.startswith("--secure-port=")), 6443)
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
