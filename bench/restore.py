#!/usr/bin/env python3
"""Benchmark: ``etcdguard restore`` vs the raw sequence an operator would type, from SeaweedFS.

    python bench/restore.py                      # >= 500 MB db, 1 and 3 members
    python bench/restore.py --size-mb 100 --members 1

Builds an etcd 3.5.16 db of ``--size-mb`` MB with Kubernetes-like keys on a three-member cluster
(command run mode, fixed ports), takes one real backup of it (zstd + age + signed manifest,
recording the members) into a SeaweedFS bucket on 127.0.0.1 and loses the cluster. Three-member
rounds restore it on the same names and ports, as after a real loss; one-member rounds restore
it onto a new node with ``--single-member``. Then, for each member count
and round, both sequences in the same run, the first one alternating between rounds, each
started from the same state (the other's files removed and synced: on ext4 an fsync of the
second would otherwise also write back what the first left in the page cache):

* raw: on every member's node at once, what an operator types there: download the object (a
  process of its own running boto3's ``download_file``, as ``aws s3 cp`` does: parallel ranged
  GETs), ``age -d | zstd -d`` to a snapshot file, ``etcdutl snapshot restore`` (with the same
  --bump-revision/--mark-compacted), start the member; then wait until every member serves;
* etcdguard: ``etcdguard restore --yes --single-member`` on one node (command run mode), or
  ``--plan-only --plan-file`` then every member's part in parallel; the fetch time and each
  part's timeline come from the journals.

Three members: a real deployment runs each part on its own node, and each node fetches its own
copy. On one machine both sequences therefore fetch once per member, side by side, sharing its
cores the same way (the fetch figure is the slowest member's).

Prints wall seconds, the fetch ratio (target < 1.0: download, decryption and decompression
stream to disk in one pass), the whole-command ratio (target <= 1.3, pre-flight and health
waits included), and how busy the whole machine was during each sequence (share of all cores,
from /proc/stat, everything on the machine counted: near 1.0 the CPU ceiling, not the code,
decides the ratio) with the load average. Everything it starts is stopped and removed on exit.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "bench"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from snapshot_pipeline import _busy_seconds  # noqa: E402 - bench/snapshot_pipeline.py
from verify import fill  # noqa: E402 - bench/verify.py

from etcdguard.backup.keys import generate_keys, load_signing_key, parse_recipients  # noqa: E402
from etcdguard.backup.pipeline import BackupRequest, take_backup  # noqa: E402
from etcdguard.config import EtcdConfig, S3StoreConfig  # noqa: E402
from etcdguard.etcd.local import wait_until_serving  # noqa: E402
from etcdguard.etcd.tools import RestoreSpec, SnapshotTool, restore  # noqa: E402
from etcdguard.restore.recommend import bump_amount  # noqa: E402
from etcdguard.storage import open_store  # noqa: E402
from tests.integration.restore_command_nodes import CmdNode, make_nodes, start_all  # noqa: E402
from tests.integration.restore_fixtures import write_config  # noqa: E402
from tests.support.etcd_cluster import installation  # noqa: E402
from tests.support.seaweed import SeaweedS3  # noqa: E402

MB = 1_000_000
CORES = os.cpu_count() or 1


# what `aws s3 cp s3://BUCKET/KEY FILE` does (the AWS CLI is botocore too), as its own process
_DOWNLOAD = ("import sys, boto3; boto3.client('s3', endpoint_url=sys.argv[1])"
             ".download_file(sys.argv[2], sys.argv[3], sys.argv[4])")


def _raw_fetch(endpoint: str, bucket: str, key: str, identity: Path, work: Path) -> Path:
    """Download the object (a command of its own, like ``aws s3 cp``), then ``age -d | zstd -d``
    to a snapshot file."""
    work.mkdir(parents=True, exist_ok=True)
    obj, snap = work / "snapshot.db.zst.age", work / "snapshot.db"
    subprocess.run([sys.executable, "-c", _DOWNLOAD, endpoint, bucket, key, str(obj)], check=True)
    with snap.open("wb") as out:
        age = subprocess.Popen(["age", "-d", "-i", str(identity), str(obj)], stdout=subprocess.PIPE)
        subprocess.run(["zstd", "-d", "-q", "-c"], stdin=age.stdout, stdout=out, check=True)
        assert age.stdout is not None
        age.stdout.close()
        if age.wait() != 0:
            raise RuntimeError("age -d failed")
    return snap


def raw(endpoint: str, bucket: str, key: str, identity: Path, tool: SnapshotTool, nodes: list[CmdNode], bump: int,
        work: Path) -> tuple[float, float]:
    """What an operator types on each node, all nodes at once; returns (fetch seconds, total seconds).

    Every node fetches its own copy, as ``etcdguard restore``'s part does on each node (on one
    machine the members' fetches share its cores in both sequences).
    """
    began = time.monotonic()
    cluster = {n.name: [n.peer_url] for n in nodes}
    fetched: list[float] = []

    marks: dict[str, str] = {}

    def one(n: CmdNode) -> None:
        snap = _raw_fetch(endpoint, bucket, key, identity, work / n.name)
        fetched.append(time.monotonic() - began)
        restore(tool, RestoreSpec(snapshot=snap, data_dir=n.data_dir, name=n.name, initial_cluster=cluster,
                                  token="raw", bump_revision=bump, mark_compacted=True))
        restored = time.monotonic() - began
        n.start()
        marks[n.name] = f"fetch {fetched[-1]:.1f}, restore {restored:.1f}"

    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(one, nodes))
    for n in nodes:
        wait_until_serving(n.client_url, 300, lambda: None)
        marks[n.name] += f", serving {time.monotonic() - began:.1f}"
    for name, line in sorted(marks.items()):
        print(f"  raw {name} done at: {line}", flush=True)
    return max(fetched), time.monotonic() - began


def _journal(state: Path) -> list[dict[str, object]]:
    path = max((state / "journal").glob("restore-*.json"), key=lambda p: p.stat().st_mtime)
    steps: list[dict[str, object]] = json.loads(path.read_text())["steps"]
    return steps


def journal_steps(state: Path) -> dict[str, float]:
    """Seconds per step from a node's newest restore journal."""
    return {str(s["name"]): float(s["seconds"] or 0.0) for s in _journal(state)}  # type: ignore[arg-type]


def timeline(state: Path, began: float) -> str:
    """When (seconds after the command started) a node's part began and finished its main steps."""
    steps = {str(s["name"]): s for s in _journal(state)}
    first = min(float(s["started_at"]) for s in steps.values() if s["started_at"])  # type: ignore[arg-type]
    marks = [f"steps {first - began:.1f}"]
    for name in ("fetch", "restore-snapshot", "fence", "start-etcd", "wait-healthy", "post-checks"):
        end = steps.get(name, {}).get("finished_at")
        if end:
            marks.append(f"{name} {float(end) - began:.1f}")  # type: ignore[arg-type]
    return ", ".join(marks)


def guarded(configs: list[Path], nodes: list[CmdNode], env: dict[str, str], work: Path) -> tuple[float, float]:
    """``etcdguard restore``; returns (fetch seconds, total seconds)."""
    # the installed console script itself (a version manager's shim in front of it would add its own start-up)
    beside = Path(sys.executable).parent / "etcdguard"
    exe = str(beside) if beside.exists() else shutil.which("etcdguard") or "etcdguard"
    began, wall = time.monotonic(), time.time()
    if len(nodes) == 1:
        subprocess.run([exe, "--config", str(configs[0]), "-q", "restore", "--yes", "--backup", "latest",
                        "--single-member"], env=env, check=True)
    else:
        plan = work / "plan.json"
        subprocess.run([exe, "--config", str(configs[0]), "-q", "restore", "--plan-only", "--plan-file", str(plan),
                        "--backup", "latest"], env=env, check=True)
        print(f"  plan written at {time.monotonic() - began:.1f}s", flush=True)
        procs = [subprocess.Popen([exe, "--config", str(c), "-q", "restore", "--plan-file", str(plan), "--member",
                                   n.name, "--yes"], env=env) for c, n in zip(configs, nodes, strict=True)]
        if any(p.wait() != 0 for p in procs):
            raise RuntimeError("a member's restore failed")
    total = time.monotonic() - began
    steps = [journal_steps(n.base / "state") for n in nodes]
    print("  etcdguard steps (s): " + ", ".join(f"{k} {max(s[k] for s in steps):.2f}" for k in steps[0]), flush=True)
    for n in nodes:  # when each part reached its main steps (seconds after the command started)
        print(f"  {n.name} done at: {timeline(n.base / 'state', wall)}", flush=True)
    return max(s["fetch"] for s in steps), total


def run(args: argparse.Namespace, base: Path) -> int:
    # etcdguard as installed: pip compiles a package's bytecode when it installs it, while a source
    # checkout run with PYTHONDONTWRITEBYTECODE would compile every module again at every start
    compileall.compile_dir(REPO / "etcdguard", quiet=1)
    install = installation("3.5.16")
    if install is None:
        print("etcd 3.5.16 is not installed (scripts/install-test-deps.sh)")
        return 2
    tool = SnapshotTool.of(install)
    keys = generate_keys(base / "keys")
    with SeaweedS3(base / "seaweed") as weed:
        bucket = weed.create_bucket("bench-restore")
        os.environ.update({"AWS_ACCESS_KEY_ID": weed.access_key, "AWS_SECRET_ACCESS_KEY": weed.secret_key,
                           "AWS_DEFAULT_REGION": "us-east-1"})
        store = open_store(S3StoreConfig(bucket=bucket, endpoint_url=weed.endpoint_url, addressing_style="path"))
        # the cluster that is lost: three members on fixed ports, filled, backed up, then gone; each
        # three-member round restores it on the same names and ports (the backup records them)
        lost = make_nodes(base / "lost", install, 3)
        print(f"building a {args.size_mb} MB etcd db on a three-member cluster ...", flush=True)
        try:
            start_all(lost)
            count = fill(lost[0].client_url, args.size_mb, args.value_kb, args.threads)
            request = BackupRequest(etcd=EtcdConfig(endpoints=[n.client_url for n in lost]), cluster_name="bench",
                                    recipients=parse_recipients([keys.recipient_text]),
                                    recipient_texts=[keys.recipient_text],
                                    signing_key=load_signing_key(keys.signing_key))
            manifest = take_backup(request, store).manifest
        finally:
            for n in lost:
                n.kill()
        shutil.rmtree(base / "lost", ignore_errors=True)
        print(f"  {count} keys, snapshot {manifest.snapshot.size / MB:.0f} MB, stored "
              f"{manifest.stored.size / MB:.0f} MB", flush=True)
        key = f"bench/{manifest.backup_id}/{manifest.stored.key}"
        bump = bump_amount(manifest.hashkv.revision, manifest.hashkv.revision)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDGUARD_")}
        env["PYTHONPATH"] = str(REPO)
        results = []
        for members in args.members:
            for round_ in range(args.rounds):
                work = base / f"m{members}-r{round_}"
                measured: dict[str, tuple[float, float, float]] = {}

                def run_raw(work: Path = work, members: int = members) -> tuple[float, float]:
                    raw_nodes = make_nodes(work / "raw", install, members)
                    try:
                        return raw(weed.endpoint_url, bucket, key, keys.identity, tool, raw_nodes, bump,
                                   work / "raw")
                    finally:
                        for n in raw_nodes:
                            n.kill()

                def run_guarded(work: Path = work, members: int = members) -> tuple[float, float]:
                    nodes = make_nodes(work / "eg", install, 1) if members == 1 else [
                        CmdNode(n.name, work / "eg" / n.name, install, n.client_port, n.peer_port, n.initial_cluster)
                        for n in lost]
                    for n in nodes:
                        n.base.mkdir(parents=True, exist_ok=True)
                    configs = [write_config(n.base / "etcdguard.yaml", store=bucket, seaweed=weed, keys=keys,
                                            cluster="bench", state_dir=n.base / "state",
                                            etcd={"endpoints": [m.client_url for m in nodes]},
                                            restore={**n.restore_config(), "start_timeout": 600})
                               for n in nodes]
                    for config in configs:  # one etcd installed, as on a node (not every test version)
                        data = yaml.safe_load(config.read_text())
                        data["verify"]["etcd_path"] = [str(install.etcd.parent)]
                        config.write_text(yaml.safe_dump(data))
                    try:
                        return guarded(configs, nodes, env, work)
                    finally:
                        for n in nodes:
                            n.kill()

                # alternate which goes first, and start each from the same state: the other's files
                # removed and nothing left to write back (the second would otherwise pay for the
                # first's writeback in every fsync)
                order = [("raw", run_raw), ("etcdguard", run_guarded)]
                for name, sequence in order if round_ % 2 == 0 else order[::-1]:
                    shutil.rmtree(work, ignore_errors=True)
                    os.sync()
                    busy = _busy_seconds()
                    fetch_s, total_s = sequence()
                    measured[name] = (fetch_s, total_s, _busy_seconds() - busy)
                shutil.rmtree(work, ignore_errors=True)
                (raw_fetch, raw_total, raw_cpu), (eg_fetch, eg_total, eg_cpu) = measured["raw"], measured["etcdguard"]
                results.append({"members": members, "round": round_, "raw_fetch_s": round(raw_fetch, 2),
                                "etcdguard_fetch_s": round(eg_fetch, 2), "raw_total_s": round(raw_total, 2),
                                "etcdguard_total_s": round(eg_total, 2),
                                "fetch_ratio": round(eg_fetch / raw_fetch, 3),
                                "total_ratio": round(eg_total / raw_total, 3),
                                # the share of all cores the machine was busy (everything on it)
                                "first": "raw" if round_ % 2 == 0 else "etcdguard",
                                "raw_busy": round(raw_cpu / raw_total / CORES, 2),
                                "etcdguard_busy": round(eg_cpu / eg_total / CORES, 2),
                                "loadavg_1m": round(os.getloadavg()[0], 1)})
                print(json.dumps(results[-1]), flush=True)
    print(f"{'members':>7} {'raw fetch':>10} {'eg fetch':>9} {'ratio':>6} {'raw total':>10} {'eg total':>9} "
          f"{'ratio':>6} {'busy raw/eg':>12} {'load':>5}  (targets: fetch < 1.0, total <= 1.3)")
    for r in results:
        print(f"{r['members']:>7} {r['raw_fetch_s']:>10} {r['etcdguard_fetch_s']:>9} {r['fetch_ratio']:>6} "
              f"{r['raw_total_s']:>10} {r['etcdguard_total_s']:>9} {r['total_ratio']:>6} "
              f"{r['raw_busy']:>5}/{r['etcdguard_busy']:<6} {r['loadavg_1m']:>5}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=520, help="etcd db size to build (MB)")
    parser.add_argument("--value-kb", type=int, default=100)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--members", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="etcdguard-bench-restore-", dir=args.workdir))
    try:
        return run(args, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
