"""The steps of a restore that change nothing: fetch the source snapshot (a backup, checked, or a
surviving member's data), the pre-flight checks, and emergency snapshots of answering members.

A bad backup or a failed check stops the restore here, while the node is still as it was. A
fetched backup is staged as ``age -d | zstd -d`` would write it (see
:func:`etcdguard.backup.recover.recover_snapshot`); the signed stored sha256 and age's
authenticated decryption prove every byte. A staged snapshot an earlier, interrupted process left
is checked against etcd's trailer beside ``snapshot restore``, also before anything is changed.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from etcdguard.backup.download import download_backup
from etcdguard.backup.pipeline import request_from_settings, take_backup
from etcdguard.backup.streams import SnapshotReader
from etcdguard.errors import AbortedError, IntegrityError, TransientError
from etcdguard.etcd.binaries import EtcdInstallation
from etcdguard.etcd.client import MemberClient, TLSFiles
from etcdguard.etcd.local import LocalEtcd
from etcdguard.etcd.tools import SnapshotStatus, SnapshotTool, snapshot_status
from etcdguard.restore.discovery import LocalMember
from etcdguard.restore.fencing import port_open
from etcdguard.restore.job import JobParams, Services
from etcdguard.restore.preflight import Check, check_encryption, run_checks
from etcdguard.steps import StepContext
from etcdguard.storage.local import LocalStore


class SourceSteps:
    """fetch, preflight and emergency-snapshot of one node's part (see the module docstring).

    ``fence_others`` probes the old cluster without this node's own member (a one-member restore
    refuses in the pre-flight when another old member still runs).
    """

    def __init__(self, params: JobParams, services: Services, tool: SnapshotTool, local: LocalMember,
                 client_tls: TLSFiles | None, fence_others: Callable[[], str]) -> None:
        self.p = params
        self.s = services
        self.plan = params.plan
        self.tool = tool
        self.local = local
        self.client_tls = client_tls
        self.fence_others = fence_others
        # True once this process staged the snapshot itself: its bytes are proven by the fetch (signed
        # stored sha256, authenticated decryption) or by the survivor stream's trailer check. A staged
        # file left by an earlier, interrupted process is checked against etcd's trailer again.
        self.staged_here = False

    def ensure_staged(self, ctx: StepContext) -> None:
        """Fetch the snapshot again when a stopped run removed it (it takes its decrypted copy
        with it) and a step that reads it is still to run."""
        if not self.p.snapshot_path.is_file():
            record = ctx.journal.record("fetch")
            assert record is not None
            self.fetch(StepContext(ctx.runner, record))

    def fetched(self, ctx: StepContext) -> bool:
        path = self.p.snapshot_path
        return path.is_file() and bool(ctx.result.get("size")) and path.stat().st_size == ctx.result["size"]

    def fetch(self, ctx: StepContext) -> str:
        src = self.plan.source
        dest = self.p.snapshot_path
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if src.kind == "backup":
            if self.s.catalog is None or src.backup_id is None:
                raise AbortedError("the backup store is not configured")
            if self.s.on_fetch_start:
                self.s.on_fetch_start(src.snapshot_bytes)
            got = download_backup(self.s.catalog, src.backup_id, self.s.verify_keys, self.s.identities, dest,
                                  on_bytes=self.s.on_bytes, for_etcdutl=True)
            if src.snapshot_sha256 and got.sha256 != src.snapshot_sha256:
                dest.unlink(missing_ok=True)
                raise IntegrityError(f"backup {src.backup_id} is not the snapshot the plan names "
                                     f"(sha256 {got.sha256[:12]} != {src.snapshot_sha256[:12]})")
            counts = got.manifest.key_counts
            ctx.save(size=got.size, sha256=got.sha256, revision=got.manifest.hashkv.revision,
                     keys=counts.total if counts is not None else None)
            self.staged_here = True
            return f"{got.size:,} bytes, signature, stored sha256 and etcd trailer checked"
        if src.survivor_endpoint:
            size = self._snapshot_member(src.survivor_endpoint, dest)
            ctx.save(size=size)
            self.staged_here = True
            return f"snapshot of {src.survivor} ({size:,} bytes, trailer checked)"
        if not src.survivor_db:
            raise AbortedError("the plan names no survivor endpoint or db file")
        db = Path(src.survivor_db)
        for host, port in self.local.ports:
            if port_open(host, port):
                raise AbortedError(f"{src.survivor}'s etcd still listens on {host}:{port}: its db file cannot "
                                   "be copied while it runs")
        size = self._replay_offline(db.parent.parent.parent, dest)
        ctx.save(size=size, offline=True)
        self.staged_here = True
        return f"snapshot of the stopped member's data ({size:,} bytes, its WAL replayed in an isolated copy)"

    def _replay_offline(self, data_dir: Path, dest: Path) -> int:
        """A stopped member's db lacks what is only in its WAL: start a copy of its data dir alone on
        loopback ports (``--force-new-cluster``, never the real dir) and snapshot that."""
        copy = self.p.work / "survivor-copy"
        shutil.rmtree(copy, ignore_errors=True)  # our own copy from an interrupted attempt
        shutil.copytree(data_dir, copy / "data", symlinks=True)
        if self.local.wal_dir is not None and self.local.wal_dir.is_dir():
            shutil.rmtree(copy / "data" / "member" / "wal", ignore_errors=True)
            shutil.copytree(self.local.wal_dir, copy / "data" / "member" / "wal")
        etcd_bin = self.tool.path.parent / "etcd"
        install = EtcdInstallation(self.tool.version, etcd_bin, None, None)
        isolated = LocalEtcd(install, copy / "data", name=self.local.name, log_path=copy / "etcd.log",
                             extra_args=["--force-new-cluster"])
        try:
            isolated.start(timeout=self.p.start_timeout, error=TransientError)
            with MemberClient(isolated.endpoint, timeout=10) as client:
                return self._stream_snapshot(client, dest)
        finally:
            isolated.stop()
            shutil.rmtree(copy, ignore_errors=True)

    def _snapshot_member(self, endpoint: str, dest: Path) -> int:
        with MemberClient(endpoint, tls=self.client_tls, timeout=10) as client:
            return self._stream_snapshot(client, dest)

    def _stream_snapshot(self, client: MemberClient, dest: Path) -> int:
        tmp = dest.with_name(f".{dest.name}.partial")
        try:
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as out:
                reader = SnapshotReader(client.snapshot(), on_bytes=self.s.on_bytes)
                shutil.copyfileobj(reader, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest.stat().st_size

    def preflight(self, ctx: StepContext) -> str:
        self.ensure_staged(ctx)
        snapshot = self.p.snapshot_path
        status = self._signed_status(ctx, snapshot) or snapshot_status(self.tool, snapshot)
        checks = run_checks(snapshot=snapshot, status=status, data_dir=self.local.data_dir,
                            quota=self.local.quota_backend_bytes, tool=self.tool,
                            server_version=self.p.server_version, bump=self.plan.bump_revision,
                            memory_factor=self.p.memory_factor)
        ctx.save(revision=status.revision, total_keys=status.total_keys, total_size=status.total_size,
                 checks=[c.line() for c in checks])
        if self.plan.single:  # nothing else may still run the old cluster: refuse before any change
            checks.append(Check("fencing (others)", True, self.fence_others()))
        failed = [c for c in checks if not c.ok and (not c.overridable or not self.p.force)]
        if failed:
            raise AbortedError("pre-flight refused the restore, nothing was changed: "
                               + "; ".join(f"{c.name}: {c.detail}" for c in failed))
        forced = [c.name for c in checks if not c.ok]
        note = f"; FORCED past: {', '.join(forced)}" if forced else ""
        return f"revision {status.revision:,}, {status.total_keys:,} keys, all checks passed{note}"

    def encryption_check(self) -> Check:
        """The snapshot's encryption key names against this node's apiserver config (reads the file).

        A node without a kube-apiserver and without ``restore.encryption_provider_config`` (an
        external etcd: the apiservers and their keys are elsewhere) cannot judge them: not checked.
        """
        config = Path(self.p.encryption_config) if self.p.encryption_config else None
        if config is None and self.p.apiserver is None and self.plan.kubernetes:
            return Check("encryption keys", True, "not checked: no kube-apiserver on this node and no "
                         "restore.encryption_provider_config (set it to the apiservers' file to check)")
        return check_encryption(self.p.snapshot_path, config, self.plan.kubernetes)

    def _signed_status(self, ctx: StepContext, snapshot: Path) -> SnapshotStatus | None:
        """``snapshot status`` of a fetched backup from its signed manifest (the fetch proved the file
        is the snapshot it describes: no second full read by etcdutl); None for other sources."""
        fetched = ctx.journal.record("fetch")
        result = fetched.result if fetched is not None else {}
        if self.plan.source.kind != "backup" or not result.get("revision"):
            return None
        return SnapshotStatus(hash=0, revision=int(result["revision"]), total_keys=int(result.get("keys") or 0),
                              total_size=snapshot.stat().st_size)

    def emergency_snapshot(self, ctx: StepContext) -> str:
        if not self.p.answering:
            return "no member answers: nothing to save"
        settings = self.s.settings
        request = request_from_settings(settings)
        if not request.recipients and self.s.identities:
            recipients = [i.to_public() for i in self.s.identities]
            request = dataclasses.replace(request, recipients=recipients,
                                          recipient_texts=[str(r) for r in recipients])
        request = dataclasses.replace(request, allow_unsigned=True, allow_unencrypted=True,
                                      etcd=settings.etcd.model_copy(update={"endpoints": list(self.p.answering)}),
                                      member=None)
        store = LocalStore(Path(self.p.emergency_store))
        saved = []
        for url in self.p.answering:
            if any(url in r for r in ctx.result.get("saved", [])):
                continue
            result = take_backup(dataclasses.replace(request, local_endpoint=url), store)
            saved.append(f"{url} -> {result.manifest.backup_id}")
            ctx.save(saved=[*ctx.result.get("saved", []), saved[-1]])
        return f"saved into {store.url}: " + ", ".join(ctx.result.get("saved", []))

