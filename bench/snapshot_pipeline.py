#!/usr/bin/env python3
"""Benchmark: ``etcdguard snapshot`` (to SeaweedFS S3 and to the local store) vs ``etcdctl snapshot save``.

    python bench/snapshot_pipeline.py --size-mb 512 --size-mb 1024 --rounds 3

For each size (the etcd db size reported by Status, in MB of 10^6 bytes) the script grows one
single-member etcd 3.5.x (127.0.0.1, ``--quota-backend-bytes`` 8 GiB, high ``--snapshot-count``)
with Kubernetes-like keys and values (``etcdguard.sample_data.items``: pods, secrets, events,
custom resources; protobuf-like and JSON values, partly random so zstd sees a realistic ratio),
loaded by several threads with one gRPC client each. Sizes are reached in increasing order on the
same db (the larger size adds keys to the smaller one). Then, several rounds, interleaved (the case
order rotates every round), it runs as subprocesses:

* ``etcdctl snapshot save`` to local disk: the baseline;
* ``etcdguard snapshot`` to a SeaweedFS S3 bucket (``weed server -s3`` started here on 127.0.0.1);
* ``etcdguard snapshot`` to a local-directory store;

the etcdguard runs being the real console script, encrypting to a recipient made by
``etcdguard keys generate`` and signing the manifest.

Throughput is db bytes / wall seconds of the whole subprocess (start to exit, so startup, HashKV
and the key count are included for etcdguard, as connection setup is for etcdctl), median of the
rounds. Peak RSS: each subprocess is reaped with ``os.wait4(pid)``, whose ``ru_maxrss`` is the
kernel's high-water mark of resident memory of *that* process (not the max over all children that
``getrusage(RUSAGE_CHILDREN)`` gives, and exact rather than sampled). etcdguard starts no
subprocesses, so this is the peak of etcdguard itself, native buffers and threads included.

CPU: each run records its own user + system time and what etcd and SeaweedFS used meanwhile
(from /proc). Their sum is the CPU the case needs; spread perfectly over this machine's cores it
gives the shortest wall time the case could have, and so the best ratio to the baseline it could
reach here (column ``max x``): on a small machine, where etcd and SeaweedFS share the cores with
etcdguard, that ceiling, not etcdguard's code, may decide whether a target can be met.

Everything (etcd, SeaweedFS, temp dirs, half-run subprocesses) is stopped and removed on exit,
Ctrl-C or SIGTERM. Results are printed as a table and written as JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from etcdguard.etcd.client import MemberClient  # noqa: E402
from etcdguard.sample_data import items  # noqa: E402
from tests.support.etcd_cluster import EtcdCluster, etcd_cluster, installation  # noqa: E402
from tests.support.seaweed import SeaweedS3  # noqa: E402

MB = 1_000_000
GIB = 1 << 30
CASES = ("etcdctl-local", "etcdguard-s3", "etcdguard-local")
BASELINE = "etcdctl-local"
S3_TARGET_RATIO = 0.9
RSS_TARGET_MB = 150.0
RSS_FLAT_TOLERANCE_MB = 10.0
BUCKET = "etcdguard-bench"


# -- data -----------------------------------------------------------------------------------------

def realistic(value: bytes, rng: random.Random, random_fraction: float) -> bytes:
    """Make a JSON sample value less repetitive: a base64 blob (like a last-applied-configuration
    annotation or a certificate) replaces ``random_fraction`` of its filler; the size stays the same.
    Protobuf-like values (``k8s\\x00``) already carry a random third and are kept as they are."""
    if value.startswith(b"k8s\x00") or random_fraction <= 0:
        return value
    doc = json.loads(value)
    blob_len = int(len(value) * random_fraction) // 4 * 4
    blob = base64.b64encode(rng.randbytes(blob_len * 3 // 4)).decode()
    doc["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": blob}
    message = doc.get("status", {}).get("message")
    if isinstance(message, str):
        doc["status"]["message"] = message[: max(0, len(message) - blob_len)]
    return json.dumps(doc).encode()


class SampleSource:
    """Thread-safe batches of Kubernetes-like (key, value) pairs, continuing across sizes."""

    def __init__(self, value_size: int, random_fraction: float, seed: int) -> None:
        self._items: Iterator[tuple[bytes, bytes]] = items(10**8, value_size=value_size, seed=seed)
        self._rng = random.Random(seed + 1)
        self._fraction = random_fraction
        self._lock = threading.Lock()
        self.count = 0
        self.value_bytes = 0

    def batch(self, n: int) -> list[tuple[bytes, bytes]]:
        with self._lock:
            out = [(k, realistic(v, self._rng, self._fraction)) for k, v in
                   (next(self._items) for _ in range(n))]
            self.count += len(out)
            self.value_bytes += sum(len(v) for _, v in out)
            return out


def grow_db(endpoint: str, target_bytes: int, source: SampleSource, threads: int) -> int:
    """Put sample objects with ``threads`` clients until Status reports db_size >= target."""
    with MemberClient(endpoint, timeout=10) as c:
        size = c.status().db_size
    if size >= target_bytes:
        return size
    stop = threading.Event()
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with MemberClient(endpoint, timeout=30) as client:
                while not stop.is_set():
                    for key, value in source.batch(32):
                        client.put(key, value)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
            stop.set()

    pool = [threading.Thread(target=worker, name=f"load-{i}", daemon=True) for i in range(threads)]
    started = time.monotonic()
    for t in pool:
        t.start()
    last_print = 0.0
    try:
        with MemberClient(endpoint, timeout=10) as c:
            while not stop.is_set():
                time.sleep(0.5)
                size = c.status().db_size
                now = time.monotonic()
                if now - last_print > 10:
                    last_print = now
                    print(f"  loading: db {size / MB:7.0f} MB, {source.count} keys, "
                          f"{size / MB / (now - started):.1f} MB/s", file=sys.stderr, flush=True)
                if size >= target_bytes:
                    break
    finally:
        stop.set()
        for t in pool:
            t.join(60)
    if errors:
        raise RuntimeError(f"loading failed: {errors[0]!r}")
    with MemberClient(endpoint, timeout=10) as c:
        return c.status().db_size


# -- measured subprocesses ------------------------------------------------------------------------

@dataclass
class Measured:
    """One finished subprocess."""

    wall_seconds: float
    max_rss_bytes: int
    cpu_seconds: float  # its user + system time
    other_cpu_seconds: float  # CPU the rest of the machine used meanwhile, minus etcd and SeaweedFS
    server_cpu_seconds: dict[str, float]  # CPU each server (etcd, SeaweedFS) used meanwhile
    returncode: int
    stdout: str
    stderr: str


_TICK = os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all CPUs), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _TICK


def _process_cpu_seconds(pids: list[int]) -> float:
    """utime + stime of ``pids`` (0 for one that is gone)."""
    total = 0
    for pid in pids:
        try:
            parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(parts[11]) + int(parts[12])
    return total / _TICK


def _servers_cpu(servers: dict[str, list[int]]) -> dict[str, float]:
    return {name: _process_cpu_seconds(pids) for name, pids in servers.items()}


def run_measured(cmd: list[str], env: dict[str, str], workdir: Path, timeout: float,
                 servers: dict[str, list[int]]) -> Measured:
    """Run ``cmd``; wall time from spawn to exit; peak RSS and CPU from ``os.wait4`` on its own pid.

    The child gets its own session (a terminal Ctrl-C reaches only this script, which then kills
    it by pid); a timer kills it after ``timeout`` seconds. ``other_cpu_seconds`` is what the
    machine spent meanwhile on anything but the child and the servers (this host is shared:
    it says how noisy the run was). ``servers`` names the server processes whose CPU is part of the
    work (etcd, SeaweedFS): what each used meanwhile is kept, so the CPU the whole case needs is known.
    """
    out_path, err_path = workdir / "cmd.stdout", workdir / "cmd.stderr"
    busy0, servers0 = _busy_seconds(), _servers_cpu(servers)
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)  # still unreaped here, so the pid is ours

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
    except BaseException:
        kill()
        with contextlib.suppress(ChildProcessError):
            os.wait4(proc.pid, 0)
        proc.returncode = -9
        raise
    finally:
        timer.cancel()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if timed_out.is_set():
        raise TimeoutError(f"{cmd[0]} did not finish in {timeout:g}s")
    cpu = usage.ru_utime + usage.ru_stime
    busy = _busy_seconds() - busy0
    server_cpu = {name: round(used - servers0[name], 2) for name, used in _servers_cpu(servers).items()}
    other = busy - cpu - sum(server_cpu.values())
    return Measured(wall, usage.ru_maxrss * 1024, cpu, max(0.0, other),  # ru_maxrss is in KiB on Linux
                    server_cpu, proc.returncode, out_path.read_text(errors="replace"),
                    err_path.read_text(errors="replace"))


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCDGUARD_", "AWS_", "ETCDCTL_"))}
    env.update(extra or {})
    return env


@dataclass
class RunResult:
    """One measured run of one case."""

    case: str
    size_target_mb: int
    round: int
    db_bytes: int
    wall_seconds: float
    mb_per_s: float
    max_rss_bytes: int
    cpu_seconds: float
    other_cpu_seconds: float
    server_cpu_seconds: dict[str, float] = field(default_factory=dict)
    snapshot_bytes: int | None = None
    stored_bytes: int | None = None
    compression_ratio: float | None = None
    pipeline_seconds: float | None = None  # etcdguard's own timing (from take_backup start)
    warmup: bool = False


@dataclass
class Bench:
    """The servers and tools of one benchmark run."""

    cluster: EtcdCluster
    etcdctl: Path
    etcdguard: str
    seaweed: SeaweedS3
    keys_dir: Path
    recipient: str
    workdir: Path
    timeout: float
    extra_env: dict[str, str] = field(default_factory=dict)
    variants: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return self.cluster.endpoints[0]

    def servers(self) -> dict[str, list[int]]:
        """etcd's and SeaweedFS's processes (their CPU is part of the measured work, not noise)."""
        weed = self.seaweed._proc  # the test helper keeps its Popen private
        return {"etcd": [m.process.pid for m in self.cluster.members if m.process is not None],
                "seaweedfs": [weed.pid] if weed is not None else []}

    def db_size(self) -> int:
        with MemberClient(self.endpoint, timeout=10) as c:
            return c.status().db_size

    def s3_env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": self.seaweed.access_key, "AWS_SECRET_ACCESS_KEY": self.seaweed.secret_key,
                "AWS_DEFAULT_REGION": "us-east-1"}

    def run_case(self, case: str, size_target_mb: int, round_no: int, warmup: bool) -> RunResult:
        db = self.db_size()
        scratch = self.workdir / "scratch"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        try:
            if case == BASELINE:
                cmd = [str(self.etcdctl), "--endpoints", self.endpoint, "--command-timeout", "30m",
                       "snapshot", "save", str(scratch / "snapshot.db")]
                m = self._run(cmd, clean_env())
                return RunResult(case, size_target_mb, round_no, db, m.wall_seconds, db / MB / m.wall_seconds,
                                 m.max_rss_bytes, m.cpu_seconds, m.other_cpu_seconds, m.server_cpu_seconds,
                                 snapshot_bytes=(scratch / "snapshot.db").stat().st_size, warmup=warmup)
            base_case, _, variant = case.partition("@")
            if base_case == "etcdguard-s3":
                store, env = f"s3://{BUCKET}/bench-r{round_no}", self.s3_env()
                extra = ["--s3-endpoint-url", self.seaweed.endpoint_url]
            else:
                store, env, extra = str(scratch / "store"), {}, []
            env = {**env, **self.variants.get(variant, {})}
            cmd = [self.etcdguard, "snapshot", "--endpoints", self.endpoint, "--store", store, *extra,
                   "--cluster-name", "bench", "--recipient", self.recipient,
                   "--signing-key", str(self.keys_dir / "signing.key"), "-o", "json"]
            home = scratch / "home"
            home.mkdir()
            m = self._run(cmd, clean_env({**env, "HOME": str(home), **self.extra_env}))
            info = json.loads(m.stdout)
            if not info.get("encrypted") or not info.get("signed"):
                raise RuntimeError(f"{case}: backup not encrypted and signed: {info}")
            return RunResult(case, size_target_mb, round_no, db, m.wall_seconds, db / MB / m.wall_seconds,
                             m.max_rss_bytes, m.cpu_seconds, m.other_cpu_seconds, m.server_cpu_seconds,
                             snapshot_bytes=info["snapshot_bytes"],
                             stored_bytes=info["stored_bytes"],
                             compression_ratio=info["snapshot_bytes"] / info["stored_bytes"],
                             pipeline_seconds=info["seconds"], warmup=warmup)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
            if case.startswith("etcdguard-s3"):
                self._empty_bucket()

    def _run(self, cmd: list[str], env: dict[str, str]) -> Measured:
        m = run_measured(cmd, env, self.workdir, self.timeout, self.servers())
        if m.returncode != 0:
            raise RuntimeError(f"{Path(cmd[0]).name} {cmd[1]} exited {m.returncode}: "
                               f"{m.stderr.strip()[-2000:]}")
        return m

    def _empty_bucket(self) -> None:
        client = self.seaweed.client()
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
            for obj in page.get("Contents", []):
                client.delete_object(Bucket=BUCKET, Key=obj["Key"])


# -- report ---------------------------------------------------------------------------------------

def summarize(results: list[RunResult], cpus: int) -> list[dict[str, Any]]:
    """One row per size and case: medians of the measured rounds.

    ``cpu_bound_max_vs_baseline`` is the best ratio the case could reach on this machine: all the
    CPU the case needs (the measured process plus etcd and SeaweedFS meanwhile) spread perfectly
    over ``cpus`` cores gives a shortest possible wall time.
    """
    rows: list[dict[str, Any]] = []
    cases = [c for c in CASES if any(r.case == c for r in results)]
    cases += sorted({r.case for r in results} - set(CASES))  # variants, after the standard cases
    for size in sorted({r.size_target_mb for r in results}):
        base: float | None = None
        for case in cases:
            runs = [r for r in results if r.size_target_mb == size and r.case == case and not r.warmup]
            if not runs:
                continue
            median = statistics.median(r.mb_per_s for r in runs)
            if case == BASELINE:
                base = median
            ratios = [r.compression_ratio for r in runs if r.compression_ratio]
            server_cpu = {name: round(statistics.median(r.server_cpu_seconds.get(name, 0.0) for r in runs), 2)
                          for name in sorted({n for r in runs for n in r.server_cpu_seconds})}
            total_cpu = statistics.median(r.cpu_seconds + sum(r.server_cpu_seconds.values()) for r in runs)
            db_mb = statistics.median(r.db_bytes for r in runs) / MB
            ceiling = db_mb / (total_cpu / cpus) if total_cpu else None
            rows.append({
                "size_target_mb": size,
                "db_mb": round(db_mb, 1),
                "case": case,
                "rounds": len(runs),
                "mb_per_s": [round(r.mb_per_s, 1) for r in runs],
                "median_mb_per_s": round(median, 1),
                "vs_baseline": round(median / base, 3) if base else None,
                "median_wall_s": round(statistics.median(r.wall_seconds for r in runs), 2),
                "median_cpu_s": round(statistics.median(r.cpu_seconds for r in runs), 2),
                "median_server_cpu_s": server_cpu,
                "median_total_cpu_s": round(total_cpu, 2),
                "cpu_bound_max_vs_baseline": round(ceiling / base, 2) if ceiling and base else None,
                "median_other_load_cores": round(statistics.median(r.other_cpu_seconds / r.wall_seconds
                                                                   for r in runs), 2),
                "median_pipeline_s": (round(statistics.median(r.pipeline_seconds for r in runs
                                                              if r.pipeline_seconds), 2)
                                      if any(r.pipeline_seconds for r in runs) else None),
                "compression_ratio": round(statistics.median(ratios), 2) if ratios else None,
                "peak_rss_mb": round(max(r.max_rss_bytes for r in runs) / MB, 1),
                "median_peak_rss_mb": round(statistics.median(r.max_rss_bytes for r in runs) / MB, 1),
            })
    return rows


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for row in rows:
        if row["case"] == "etcdguard-s3":
            ok = row["vs_baseline"] is not None and row["vs_baseline"] >= S3_TARGET_RATIO
            lines.append(f"{'PASS' if ok else 'FAIL'}  etcdguard-s3 @ {row['db_mb']:.0f} MB: "
                         f"{row['vs_baseline']}x baseline (target >= {S3_TARGET_RATIO}x; the "
                         f"{row['median_total_cpu_s']} CPU-s it needs, etcd and SeaweedFS included, cap it at "
                         f"{row['cpu_bound_max_vs_baseline']}x on this machine's cores)")
        if row["case"].startswith("etcdguard"):
            ok = row["peak_rss_mb"] <= RSS_TARGET_MB
            lines.append(f"{'PASS' if ok else 'FAIL'}  {row['case']} @ {row['db_mb']:.0f} MB: peak RSS "
                         f"{row['peak_rss_mb']} MB (target <= {RSS_TARGET_MB:g} MB)")
    for case in ("etcdguard-s3", "etcdguard-local"):
        case_rows = [r for r in rows if r["case"] == case]
        if len(case_rows) >= 2:
            first, last = case_rows[0], case_rows[-1]
            delta = last["median_peak_rss_mb"] - first["median_peak_rss_mb"]
            ok = delta <= RSS_FLAT_TOLERANCE_MB
            lines.append(f"{'PASS' if ok else 'FAIL'}  {case} peak RSS flat: median {delta:+.1f} MB "
                         f"(max {last['peak_rss_mb'] - first['peak_rss_mb']:+.1f} MB) from "
                         f"{first['db_mb']:.0f} to {last['db_mb']:.0f} MB db "
                         f"(tolerance {RSS_FLAT_TOLERANCE_MB:g} MB on the median)")
    return lines


def render(rows: list[dict[str, Any]]) -> str:
    width = max([16] + [len(r["case"]) for r in rows])
    head = (f"{'db MB':>7}  {'case':<{width}} {'MB/s (rounds)':<22} {'median':>7} {'x base':>7} "
            f"{'wall s':>7} {'cpu s':>6} {'etcd':>5} {'s3':>5} {'max x':>6} {'compr':>6} "
            f"{'RSS MB med/max':>14} {'other load':>10}")
    lines = [head, "-" * len(head)]
    for r in rows:
        per_round = " ".join(f"{v:.0f}" for v in r["mb_per_s"])
        ratio = f"{r['compression_ratio']:.2f}x" if r["compression_ratio"] else "-"
        lines.append(f"{r['db_mb']:>7.0f}  {r['case']:<{width}} {per_round:<22} {r['median_mb_per_s']:>7.1f} "
                     f"{r['vs_baseline']:>6.2f}x {r['median_wall_s']:>7.2f} {r['median_cpu_s']:>6.2f} "
                     f"{r['median_server_cpu_s'].get('etcd', 0.0):>5.2f} "
                     f"{r['median_server_cpu_s'].get('seaweedfs', 0.0):>5.2f} "
                     f"{r['cpu_bound_max_vs_baseline'] or 0:>5.2f}x {ratio:>6} "
                     f"{r['median_peak_rss_mb']:>6.0f} / {r['peak_rss_mb']:<5.0f} "
                     f"{r['median_other_load_cores']:>9.2f}c")
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------------

def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=int, action="append",
                   help="etcd db size to measure at, MB (10^6 bytes); repeatable (default 512)")
    p.add_argument("--rounds", type=int, default=3, help="measured rounds per case and size (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured rounds per size first (default 1)")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument("--etcd-version", default="3.5.16")
    p.add_argument("--value-kib", type=float, default=8.0, help="mean value size, KiB (default 8)")
    p.add_argument("--random-fraction", type=float, default=0.45,
                   help="share of each JSON value replaced by base64 random data (default 0.45)")
    p.add_argument("--load-threads", type=int, default=6, help="loader threads, one client each (default 6)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--timeout", type=float, default=900.0, help="per-subprocess timeout, seconds")
    p.add_argument("--workdir", type=Path, default=None,
                   help="parent of the temp dir (default: the system temp dir); removed at exit")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for the etcdguard runs (e.g. ETCDGUARD_BACKUP__COMPRESSION_LEVEL=1)")
    p.add_argument("--variant", action="append", default=[], metavar="[s3/|local/]NAME:KEY=VALUE[,KEY=VALUE]",
                   help="also run etcdguard with this environment, as cases etcdguard-s3@NAME and "
                        "etcdguard-local@NAME (only one with an s3/ or local/ prefix), e.g. "
                        "s3/part8:ETCDGUARD_STORE__PART_SIZE_MB=8 or before:PYTHONPATH=/an/older/tree; "
                        "informative, not part of the targets")
    p.add_argument("--results-dir", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--report", type=Path, default=None, metavar="RESULTS.json",
                   help="only print the table and verdicts of an earlier run's results file")
    args = p.parse_args(argv)
    args.size_mb = sorted(set(args.size_mb or [512]))
    args.cases = [c for c in args.cases.split(",") if c]
    unknown = set(args.cases) - set(CASES)
    if unknown:
        p.error(f"unknown cases: {sorted(unknown)}")
    variants: dict[str, dict[str, str]] = {}
    variant_cases: list[str] = []
    for spec in args.variant:
        name, sep, assignments = spec.partition(":")
        only = ""
        if name.startswith(("s3/", "local/")):
            only, name = name.split("/", 1)
        if not sep or not name or "@" in name or any("=" not in a for a in assignments.split(",")):
            p.error(f"--variant {spec!r}: expected [s3/|local/]NAME:KEY=VALUE[,KEY=VALUE]")
        variants[name] = dict(a.split("=", 1) for a in assignments.split(","))
        variant_cases += [f"etcdguard-{store}@{name}" for store in ("s3", "local")
                          if (not only or store == only) and f"etcdguard-{store}" in args.cases]
    args.variants = variants
    args.cases += variant_cases
    return args


def find_etcdguard() -> str:
    """The real console script next to this interpreter (not a pyenv shim), else PATH."""
    local = Path(sys.executable).parent / "etcdguard"
    if local.is_file():
        return str(local)
    found = shutil.which("etcdguard")
    if found is None:
        raise SystemExit("etcdguard console script not found: pip install -e .")
    return found


def report(path: Path) -> int:
    """Re-render an earlier results file (summaries are recomputed from its runs)."""
    data = json.loads(path.read_text())
    rows = summarize([RunResult(**r) for r in data["runs"]], data["host"]["cpus"])
    print(f"{' '.join(data['command'])}  ({data['started_at']}, {data['host']['cpus']} CPUs)")
    print(render(rows))
    print()
    for line in verdicts(rows):
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.report is not None:
        return report(args.report)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    install = installation(args.etcd_version)
    if install is None or install.etcdctl is None:
        raise SystemExit(f"etcd {args.etcd_version} with etcdctl not found (ETCDGUARD_TEST_ETCD_DIRS)")
    etcdguard = find_etcdguard()
    extra_env = dict(kv.split("=", 1) for kv in args.env)
    workdir = Path(tempfile.mkdtemp(prefix="etcdguard-bench-", dir=args.workdir))
    results: list[RunResult] = []
    db_sizes: dict[int, int] = {}
    load_seconds: dict[int, float] = {}
    started_at = datetime.now(timezone.utc)
    try:
        keys_dir = workdir / "keys"
        subprocess.run([etcdguard, "keys", "generate", "--dir", str(keys_dir)], check=True,
                       capture_output=True, env=clean_env({"HOME": str(workdir)}), timeout=60)
        recipient = (keys_dir / "recipient.txt").read_text().strip()
        etcd_args = ["--quota-backend-bytes", str(8 * GIB), "--snapshot-count", "1000000"]
        with SeaweedS3(workdir / "seaweed") as seaweed, \
                etcd_cluster(workdir / "etcd", args.etcd_version, 1, extra_args=etcd_args) as cluster:
            seaweed.create_bucket(BUCKET)
            bench = Bench(cluster, install.etcdctl, etcdguard, seaweed, keys_dir, recipient, workdir,
                          args.timeout, extra_env, args.variants)
            source = SampleSource(int(args.value_kib * 1024), args.random_fraction, args.seed)
            print(f"etcd {install.version} at {bench.endpoint}, SeaweedFS S3 at {seaweed.endpoint_url}, "
                  f"workdir {workdir}", file=sys.stderr, flush=True)
            for size in args.size_mb:
                t0 = time.monotonic()
                db_sizes[size] = grow_db(bench.endpoint, size * MB, source, args.load_threads)
                load_seconds[size] = time.monotonic() - t0
                print(f"db {db_sizes[size] / MB:.0f} MB ({source.count} keys, "
                      f"{source.value_bytes / MB:.0f} MB of values) after {load_seconds[size]:.0f}s",
                      file=sys.stderr, flush=True)
                total = args.warmup + args.rounds
                for i in range(total):
                    warm = i < args.warmup
                    round_no = i - args.warmup
                    order = args.cases[i % len(args.cases):] + args.cases[: i % len(args.cases)]
                    for case in order:
                        r = bench.run_case(case, size, round_no, warm)
                        results.append(r)
                        tag = "warmup" if warm else f"round {round_no + 1}/{args.rounds}"
                        ratio = f", {r.compression_ratio:.2f}x" if r.compression_ratio else ""
                        servers_cpu = sum(r.server_cpu_seconds.values())
                        print(f"  {size} MB {tag} {case:<20} {r.wall_seconds:6.2f}s {r.mb_per_s:6.1f} MB/s, "
                              f"cpu {r.cpu_seconds:5.2f}s (servers {servers_cpu:5.2f}s), "
                              f"RSS {r.max_rss_bytes / MB:.1f} MB{ratio}, "
                              f"other load {r.other_cpu_seconds / r.wall_seconds:.2f} cores",
                              file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    rows = summarize(results, os.cpu_count() or 1)
    print()
    print(render(rows))
    print()
    for line in verdicts(rows):
        print(line)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"snapshot_pipeline-{started_at:%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({
        "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
        "started_at": started_at.isoformat(),
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()},
        "etcd_version": str(install.version),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "db_bytes": db_sizes,
        "load_seconds": {k: round(v, 1) for k, v in load_seconds.items()},
        "rss_method": "os.wait4(pid) ru_maxrss of each subprocess (kernel high-water mark, KiB)",
        "other_load": "CPU the host spent during a run on anything but the measured subprocess, etcd "
                      "and SeaweedFS (/proc/stat busy time minus theirs), in cores",
        "summary": rows,
        "verdicts": verdicts(rows),
        "runs": [asdict(r) for r in results],
    }, indent=2))
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; everything started here was stopped and removed", file=sys.stderr)
        sys.exit(130)
