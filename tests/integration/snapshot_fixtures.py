"""Helpers for snapshot tests: keys, the real CLI as a subprocess, data loading, tools."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from etcdguard.backup.keys import GeneratedKeys, generate_keys
from etcdguard.etcd.client import MemberClient
from etcdguard.sample_data import items
from tests.support.etcd_cluster import EtcdCluster, installation
from tests.support.require import missing, require_tool  # noqa: F401 - require_tool for the tests


def require_etcd(version: str) -> None:
    """Skip (or fail in CI) when an etcd version is not installed."""
    if installation(version) is None:
        missing(f"etcd {version} not installed (scripts/install-test-deps.sh)")


@dataclass
class CLI:
    """Runs the real ``etcdguard`` console script with a clean environment."""

    home: Path
    extra_env: dict[str, str]

    def __call__(self, *args: str, timeout: float = 120, input_text: str | None = None,
                 env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDGUARD_", "AWS_"))}
        full_env.update({"HOME": str(self.home), "XDG_DATA_HOME": str(self.home / "data"), "COLUMNS": "200"})
        full_env.update(self.extra_env)
        full_env.update(env or {})
        exe = shutil.which("etcdguard") or sys.executable
        cmd = [exe, *args] if exe.endswith("etcdguard") else [exe, "-m", "etcdguard.cli.main", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env,
                              input=input_text, check=False)

    def json(self, *args: str, **kw: object) -> object:
        result = self(*args, "-o", "json", **kw)  # type: ignore[arg-type]
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """A failed run: the documented exit code, one 'error:' line, no traceback."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), lines[0]


@pytest.fixture
def keys(tmp_path: Path) -> GeneratedKeys:
    """Fresh age + Ed25519 keys."""
    return generate_keys(tmp_path / "keys")


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    """The real CLI with HOME inside the test's temp dir."""
    home = tmp_path / "home"
    home.mkdir()
    return CLI(home, {})


def load_sample(client: MemberClient, count: int, value_size: int = 600, seed: int = 7) -> None:
    """Put ``count`` Kubernetes-like objects (in a few threads)."""
    batch = list(items(count, value_size=value_size, seed=seed))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda kv: client.put(kv[0], kv[1]), batch))


def fill_random(client: MemberClient, megabytes: int, value_kib: int = 512) -> None:
    """Grow the db by about ``megabytes`` MB of incompressible values."""
    count = megabytes * 1024 // value_kib
    def put(i: int) -> None:
        client.put(f"/registry/blobs/default/b{i:06d}".encode(), os.urandom(value_kib * 1024))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(put, range(count)))


def snapshot_args(cluster: EtcdCluster, keys: GeneratedKeys, store: str, *extra: str) -> list[str]:
    """``etcdguard snapshot`` arguments for a test cluster (TLS flags when the cluster has TLS)."""
    args = ["snapshot", "--endpoints", ",".join(cluster.endpoints), "--store", store,
            "--recipient", keys.recipient_text, "--signing-key", str(keys.signing_key)]
    if cluster.tls is not None:
        args += ["--cacert", str(cluster.tls.ca), "--cert", str(cluster.tls.client_cert),
                 "--key", str(cluster.tls.client_key)]
    return args + list(extra)
