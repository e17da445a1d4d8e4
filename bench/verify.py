#!/usr/bin/env python3
"""Benchmark: ``etcdguard verify`` (process and Docker sandboxes) vs the raw restore baseline.

    python bench/verify.py                    # 512 MB db, 3 rounds
    python bench/verify.py --size-mb 50 --rounds 2

Builds one single-member etcd (3.5.x, 127.0.0.1, 8 GiB quota) of ``--size-mb`` MB (db size from
Status, 10^6 bytes) with Kubernetes-like keys and ~``--value-kb`` KB values (``sample_data.items``:
JSON and protobuf-like values, partly random) put by many threads, takes one real backup with the
snapshot pipeline into a local store (zstd + age + signed manifest), stops the source etcd, then
runs, several rounds, interleaved:

* baseline: copy the stored object to a temp file (the "download"), ``age -d | zstd -d`` to a
  snapshot file, ``etcdutl snapshot restore``, start etcd and wait until it serves, stop it;
* ``Verifier.verify`` with the process sandbox, and with the Docker sandbox (when Docker runs).

It prints wall seconds per round, the medians and the ratio to the baseline (target <= 2x), plus
the verifier's per-step timings of the last round. Everything it starts is removed on exit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from etcdguard.backup.catalog import Catalog  # noqa: E402
from etcdguard.backup.keys import (  # noqa: E402
    generate_keys,
    load_identities,
    load_signing_key,
    load_verify_key,
    parse_recipients,
)
from etcdguard.backup.pipeline import BackupRequest, take_backup  # noqa: E402
from etcdguard.config import EtcdConfig, VerifyConfig  # noqa: E402
from etcdguard.etcd.client import MemberClient  # noqa: E402
from etcdguard.etcd.local import wait_until_serving  # noqa: E402
from etcdguard.etcd.tools import RestoreSpec, free_port, restore  # noqa: E402
from etcdguard.sample_data import items  # noqa: E402
from etcdguard.storage import LocalStore  # noqa: E402
from etcdguard.verify import Verifier, VerifyOptions, sandbox_factory  # noqa: E402
from etcdguard.verify.hosttools import pick_host_etcd  # noqa: E402
from tests.support.etcd_cluster import TEST_ETCD_DIRS, etcd_cluster  # noqa: E402

MB = 1_000_000
TARGET_RATIO = 2.0


def fill(client_url: str, size_mb: int, value_kb: int, threads: int) -> int:
    """Put Kubernetes-like objects until the db is ``size_mb`` MB; returns the key count."""
    clients = [MemberClient(client_url, timeout=60) for _ in range(threads)]
    written = 0
    batch = max(threads * 8, 64)
    try:
        with clients[0] as probe:
            while probe.status().db_size < size_mb * MB:
                chunk = list(items(batch, value_size=value_kb * 1024, seed=written + 1))
                chunk = [(k.replace(b"-", f"-{written}-".encode(), 1), v) for k, v in chunk]
                with ThreadPoolExecutor(threads) as pool:
                    list(pool.map(lambda i, kvs=chunk: clients[i % threads].put(*kvs[i]), range(len(chunk))))
                written += len(chunk)
    finally:
        for c in clients[1:]:
            c.close()
    return written


def baseline(store: LocalStore, object_key: str, identity: Path, host_dir: list[Path], version: str,
             work: Path) -> float:
    """Copy + age -d | zstd -d + etcdutl snapshot restore + etcd start until serving."""
    host = pick_host_etcd(version, host_dir)
    tmp = Path(tempfile.mkdtemp(prefix="bench-baseline-", dir=work))
    proc: subprocess.Popen[bytes] | None = None
    began = time.monotonic()
    try:
        obj = tmp / "snapshot.db.zst.age"
        shutil.copyfile(store.path_of(object_key), obj)
        snap = tmp / "snapshot.db"
        with snap.open("wb") as out:
            age = subprocess.Popen(["age", "-d", "-i", str(identity), str(obj)], stdout=subprocess.PIPE)
            subprocess.run(["zstd", "-d", "-q", "-c"], stdin=age.stdout, stdout=out, check=True)
            assert age.stdout is not None
            age.stdout.close()
            if age.wait() != 0:
                raise RuntimeError("age -d failed")
        peer, client = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
        restore(host.tool, RestoreSpec(snap, tmp / "data", "etcdguard-sandbox", {"etcdguard-sandbox": [peer]},
                                       "etcdguard-verify"))
        log = (tmp / "etcd.log").open("wb")
        command = [str(host.install.etcd), "--name", "etcdguard-sandbox", "--data-dir", str(tmp / "data"),
                   "--listen-client-urls", client, "--advertise-client-urls", client,
                   "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                   "--initial-cluster", f"etcdguard-sandbox={peer}", "--initial-cluster-token", "etcdguard-verify"]
        proc = subprocess.Popen(command, stdout=log, stderr=log)  # etcd's defaults, as an operator would
        log.close()
        wait_until_serving(client, 120, lambda: None if proc.poll() is None else "exited")
        return time.monotonic() - began
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def docker_available() -> bool:
    """True when a Docker daemon answers."""
    try:
        import docker

        docker.from_env(timeout=5).ping()
        return True
    except Exception:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=512, help="etcd db size to build (MB)")
    parser.add_argument("--value-kb", type=int, default=100, help="mean value size (KB)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--version", default="3.5.16", help="etcd version of the source")
    parser.add_argument("--no-docker", action="store_true", help="skip the Docker sandbox")
    parser.add_argument("--workdir", type=Path, default=None, help="where temp data goes")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="etcdguard-bench-verify-", dir=args.workdir))
    try:
        return run(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(args: argparse.Namespace, base: Path) -> int:
    keys = generate_keys(base / "keys")
    store = LocalStore(base / "store")
    extra = ["--quota-backend-bytes", str(8 << 30), "--snapshot-count", "1000000"]
    print(f"building a {args.size_mb} MB etcd {args.version} db ...", flush=True)
    with etcd_cluster(base / "src", args.version, extra_args=extra) as cluster:
        began = time.monotonic()
        count = fill(cluster.endpoints[0], args.size_mb, args.value_kb, args.threads)
        with cluster.client() as c:
            db_size = c.status().db_size
        print(f"  {count} keys, db {db_size / MB:.0f} MB in {time.monotonic() - began:.0f}s", flush=True)
        request = BackupRequest(etcd=EtcdConfig(endpoints=cluster.endpoints), cluster_name="bench",
                                recipients=parse_recipients([keys.recipient_text]),
                                recipient_texts=[keys.recipient_text],
                                signing_key=load_signing_key(keys.signing_key))
        began = time.monotonic()
        result = take_backup(request, store)
    manifest = result.manifest
    print(f"  backup {manifest.backup_id}: snapshot {manifest.snapshot.size / MB:.0f} MB, stored "
          f"{manifest.stored.size / MB:.0f} MB, took {time.monotonic() - began:.1f}s", flush=True)

    cases = ["baseline", "process"] + ([] if args.no_docker or not docker_available() else ["docker"])
    catalog = Catalog(store, "bench")
    options = VerifyOptions(identities=load_identities(keys.identity),
                            trusted_keys=[load_verify_key(keys.signing_pub)],
                            signing_key=load_signing_key(keys.signing_key), workdir=base)
    times: dict[str, list[float]] = {c: [] for c in cases}
    steps: dict[str, dict[str, float]] = {}
    object_key = f"{catalog.prefix(manifest.backup_id)}/{manifest.stored.key}"
    for rnd in range(args.rounds):
        order = cases[rnd % len(cases):] + cases[:rnd % len(cases)]
        for case in order:
            if case == "baseline":
                seconds = baseline(store, object_key, keys.identity, list(TEST_ETCD_DIRS), args.version, base)
            else:
                config = VerifyConfig(sandbox=case, etcd_path=list(TEST_ETCD_DIRS), workdir=base,
                                      memory_limit="2g")
                verifier = Verifier(catalog, sandbox_factory(config), options)
                began = time.monotonic()
                report = verifier.verify(manifest.backup_id)
                seconds = time.monotonic() - began
                if not report.passed:
                    print(f"VERIFICATION FAILED ({case}): {report.verification.reason}")
                    return 1
                steps[case] = report.verification.steps
            times[case].append(seconds)
            print(f"  round {rnd + 1} {case:<9} {seconds:6.2f}s", flush=True)
    return report_results(args, times, steps, db_size)


def report_results(args: argparse.Namespace, times: dict[str, list[float]], steps: dict[str, dict[str, float]],
                   db_size: int) -> int:
    """Print medians, ratios and step timings; exit 0 when every ratio meets the target."""
    base, best = statistics.median(times["baseline"]), min(times["baseline"])
    print(f"\ndb {db_size / MB:.0f} MB, {args.rounds} rounds (seconds; ratio = median / baseline median, "
          "best = min / baseline min)")
    print(f"{'case':<10} {'median':>8} {'min':>8} {'max':>8} {'ratio':>7} {'best':>7}")
    ok = True
    for case, values in times.items():
        med = statistics.median(values)
        ratio = med / base
        ok = ok and (case == "baseline" or ratio <= TARGET_RATIO)
        print(f"{case:<10} {med:8.2f} {min(values):8.2f} {max(values):8.2f} {ratio:6.2f}x "
              f"{min(values) / best:6.2f}x")
    for case, timing in steps.items():
        shown = ", ".join(f"{k} {v:.2f}" for k, v in timing.items())
        print(f"steps ({case}, last round): {shown}")
    print(f"target: verification <= {TARGET_RATIO:.0f}x baseline (medians): {'met' if ok else 'NOT met'}")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} (1 min) on {os.cpu_count()} CPUs")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
