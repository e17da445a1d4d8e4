#!/usr/bin/env python3
"""Benchmark: reading a store's backup entries (``backups``, ``check``, ``prune`` and every
``restore`` diagnosis do it), one request at a time vs side by side.

    python bench/catalog.py                  # 60 backups in SeaweedFS on 127.0.0.1
    python bench/catalog.py --backups 200 --rounds 5

Takes ``--backups`` real backups of a small etcd 3.5.16 into a SeaweedFS bucket, then reads
every entry (manifest, pin, verification: up to three requests each) with one worker (the
baseline: how entries were read before) and with eight, alternating which goes first, in the
same process. Prints the median seconds of each and their ratio (target < 1.0), on loopback
(almost no latency: the CPU of parsing and checking signatures decides) and with ``--latency-ms``
added before every request, as a remote S3 endpoint has. Everything it starts is stopped and
removed on exit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from etcdguard.backup.catalog import Catalog, Trust, safe_entries  # noqa: E402
from etcdguard.backup.keys import generate_keys, load_signing_key, load_verify_key, parse_recipients  # noqa: E402
from etcdguard.backup.pipeline import BackupRequest, take_backup  # noqa: E402
from etcdguard.config import EtcdConfig, S3StoreConfig  # noqa: E402
from etcdguard.etcd.client import MemberClient  # noqa: E402
from etcdguard.storage import open_store  # noqa: E402
from etcdguard.storage.base import BlobInfo, BlobStore  # noqa: E402
from tests.support.etcd_cluster import etcd_cluster, installation  # noqa: E402
from tests.support.seaweed import SeaweedS3  # noqa: E402


class _Distant:
    """The store with a round trip added before each request the entries make."""

    def __init__(self, store: BlobStore, latency: float) -> None:
        self._store, self._latency = store, latency

    def get_bytes(self, key: str) -> bytes:
        time.sleep(self._latency)
        return self._store.get_bytes(key)

    def stat(self, key: str) -> BlobInfo | None:
        time.sleep(self._latency)
        return self._store.stat(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _measure(catalog: Catalog, backups: int, rounds: int) -> tuple[float, float]:
    """Median seconds to read every entry with one worker and with eight."""
    times: dict[int, list[float]] = {1: [], 8: []}
    for round_ in range(rounds):
        for workers in (1, 8) if round_ % 2 == 0 else (8, 1):
            began = time.perf_counter()
            entries = safe_entries(catalog, workers=workers)
            times[workers].append(time.perf_counter() - began)
            assert len(entries) == backups and all(e.trusted for e in entries)
    return statistics.median(times[1]), statistics.median(times[8])


def run(args: argparse.Namespace, base: Path) -> int:
    if installation("3.5.16") is None:
        print("etcd 3.5.16 is not installed (scripts/install-test-deps.sh)")
        return 2
    keys = generate_keys(base / "keys")
    with SeaweedS3(base / "seaweed") as weed:
        bucket = weed.create_bucket("bench-catalog")
        os.environ.update({"AWS_ACCESS_KEY_ID": weed.access_key, "AWS_SECRET_ACCESS_KEY": weed.secret_key,
                           "AWS_DEFAULT_REGION": "us-east-1"})
        store = open_store(S3StoreConfig(bucket=bucket, endpoint_url=weed.endpoint_url, addressing_style="path"))
        with etcd_cluster(base / "src", "3.5.16") as src:
            with MemberClient(src.endpoints[0]) as client:
                client.put(b"/registry/pods/default/p", b"v")
            request = BackupRequest(etcd=EtcdConfig(endpoints=src.endpoints), cluster_name="bench",
                                    recipients=parse_recipients([keys.recipient_text]),
                                    recipient_texts=[keys.recipient_text],
                                    signing_key=load_signing_key(keys.signing_key))
            print(f"taking {args.backups} backups ...", flush=True)
            for _ in range(args.backups):
                take_backup(request, store)
        trust = Trust.of([load_verify_key(keys.signing_pub)])
        for label, latency in (("loopback", 0.0), (f"+{args.latency_ms:g} ms per request", args.latency_ms / 1000)):
            target = cast(BlobStore, _Distant(store, latency)) if latency else store
            one, eight = _measure(Catalog(target, "bench", trust), args.backups, args.rounds)
            print(f"{args.backups} entries, {label}: one worker {one:.3f} s, eight workers {eight:.3f} s, "
                  f"ratio {eight / one:.2f} (target < 1.0; {os.cpu_count()} cores)", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backups", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="round trip added per request")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="etcdguard-bench-catalog-"))
    try:
        return run(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
