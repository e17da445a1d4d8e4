#!/usr/bin/env python3
"""Benchmark: the exact keyspace reader (``etcdguard.etcd.keyspace``) against the byte scan.

    python bench/keyspace.py                  # 512 MB db, ~4 KB values
    python bench/keyspace.py --size-mb 50 --value-kb 1

Builds one single-member etcd 3.5.x db of ``--size-mb`` MB (Status db size, 10^6 bytes) with
Kubernetes-like keys (``bench/verify.py``'s ``fill``), overwrites a tenth of them, takes a
snapshot over the Snapshot RPC into a file, then times, several rounds: the byte scan for
``k8s:enc:`` prefixes, the exact reader's current keyspace (two passes, every current value
parsed), and ``current_key_use`` (what the encryption pre-flight runs). Prints MB/s and keys/s.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.verify import MB, fill  # noqa: E402
from etcdguard.etcd.keyspace import current_keyspace  # noqa: E402
from etcdguard.restore.encryption import current_key_use, scan_snapshot_keys  # noqa: E402
from tests.support.etcd_cluster import etcd_cluster  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=512, help="etcd db size to build (MB)")
    parser.add_argument("--value-kb", type=int, default=4, help="mean value size (KB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--version", default="3.5.16")
    parser.add_argument("--workdir", type=Path, default=None, help="where temp data goes")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="etcdguard-bench-keyspace-", dir=args.workdir))
    try:
        return run(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(args: argparse.Namespace, base: Path) -> int:
    snap = base / "snap.db"
    extra = ["--quota-backend-bytes", str(8 << 30), "--snapshot-count", "1000000"]
    with etcd_cluster(base / "src", args.version, extra_args=extra) as cluster:
        began = time.monotonic()
        count = fill(cluster.endpoints[0], args.size_mb, args.value_kb, args.threads)
        with cluster.client(timeout=60) as c:
            for i, key in enumerate(c.keys(b"/", b"0", 0)):
                if i % 10 == 0:
                    c.put(key, b"k8s:enc:aescbc:v1:key2:" + b"r" * 64)
            with snap.open("wb") as f:
                for chunk in c.snapshot():
                    f.write(chunk)
        print(f"{count:,} keys put, snapshot {snap.stat().st_size / MB:.0f} MB in "
              f"{time.monotonic() - began:.0f}s", flush=True)
    size = snap.stat().st_size
    cases = {
        "byte scan": lambda: sum(scan_snapshot_keys(snap).values()),
        "current keyspace": lambda: sum(1 for _ in current_keyspace(snap)),
        "current_key_use": lambda: sum(current_key_use(snap).by_resource.values()),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    found: dict[str, int] = {}
    for _ in range(args.rounds):
        for name, case in cases.items():
            began = time.monotonic()
            found[name] = case()
            times[name].append(time.monotonic() - began)
    for name, secs in times.items():
        med = statistics.median(secs)
        print(f"{name:<17} median {med:6.2f}s  {size / MB / med:7.0f} MB/s  {found[name]:>9,} "
              f"{'refs' if name == 'byte scan' else 'keys'}  ({found[name] / med:,.0f}/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
