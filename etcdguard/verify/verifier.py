"""The verification pipeline: prove that a backup restores to the keyspace it recorded.

manifest (signature) -> download + decrypt + decompress into a private temp dir (sha256, trailer)
-> snapshot status -> restore + start in the sandbox (no revision bump) -> HashKV and key counts
at the manifest's revision -> write/read smoke test -> tear down -> signed verification.json.
Independent steps overlap: the sandbox is prepared during the download, snapshot status runs
beside the restore, and the key counts beside HashKV.

Outcomes: a :class:`VerificationReport` whose verdict is passed or failed (a failed one names what
differed; :meth:`VerificationReport.raise_for_result` turns it into VerificationFailedError).
Integrity problems (forged manifest, damaged object) record a failed verdict when possible and
raise IntegrityError. Host problems (sandbox unavailable, store down) raise without a verdict.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from etcdguard import __version__
from etcdguard.backup.catalog import Catalog
from etcdguard.backup.keycount import count_keys
from etcdguard.backup.keys import SigningKey, VerifyKey
from etcdguard.backup.manifest import KeyCounts, Manifest, Verification
from etcdguard.backup.recover import recover_snapshot
from etcdguard.errors import (
    ConfigError,
    EtcdGuardError,
    EtcdRequestError,
    EtcdUnavailableError,
    IntegrityError,
    VerificationFailedError,
)
from etcdguard.etcd.client import MemberClient
from etcdguard.verify.compare import diff_key_counts, judge_hash, judge_hash_error, summarize
from etcdguard.verify.sandbox import RunningEtcd, Sandbox, SnapshotStatus, private_tempdir, remove_tree
from etcdguard.verify.steps import RunState, StepCallback

log = logging.getLogger(__name__)

SMOKE_PREFIX = b"/__etcdguard/verify/"


@dataclass(frozen=True)
class VerifyOptions:
    """Keys and policy for a verification run."""

    identities: list[Any]
    trusted_keys: list[VerifyKey] | None  # None: the operator explicitly skips signature checks
    signing_key: SigningKey | None
    allow_unsigned: bool = False
    accept_inconclusive_hash: bool = False
    workdir: Path | None = None
    client_timeout: float = 30.0


@dataclass
class VerificationReport:
    """The verdict plus what was measured on the way."""

    verification: Verification
    manifest: Manifest | None = None
    snapshot_status: SnapshotStatus | None = None
    running: RunningEtcd | None = None
    differences: list[str] = field(default_factory=list)
    recorded: bool = False

    @property
    def passed(self) -> bool:
        """True when the verdict is passed."""
        return self.verification.result == "passed"

    def raise_for_result(self) -> None:
        """Raise VerificationFailedError naming what differed unless the verdict passed."""
        if not self.passed:
            raise VerificationFailedError(
                f"backup {self.verification.backup_id} failed verification: {self.verification.reason}")

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        st = self.snapshot_status
        return {
            "verification": self.verification.model_dump(mode="json"),
            "recorded": self.recorded,
            "differences": self.differences,
            "endpoint": self.running.endpoint if self.running else None,
            "snapshot_status": None if st is None else {
                "revision": st.revision, "total_keys": st.total_keys, "total_size": st.total_size,
                "hash": st.hash},
        }


class Verifier:
    """Verifies backups of one catalog in sandboxes made by ``sandbox_factory(backup_id)``."""

    def __init__(self, catalog: Catalog, sandbox_factory: Callable[[str], Sandbox], options: VerifyOptions,
                 *, on_step: StepCallback | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        if options.signing_key is None and not options.allow_unsigned:
            raise ConfigError("no signing key configured for verification verdicts: pass --signing-key; "
                              "refusing to write an unsigned verification.json without --allow-unsigned")
        self.catalog = catalog
        self.sandbox_factory = sandbox_factory
        self.options = options
        self.on_step = on_step or (lambda name, state, detail: None)
        self.now = now

    def verify(self, backup_id: str) -> VerificationReport:
        """Run every step on ``backup_id`` and record the signed verdict (see the module docstring)."""
        run = RunState(backup_id, self.on_step, self.now())
        began = time.monotonic()
        try:
            with run.step("manifest", "fetch and check the signature"):
                manifest = self.catalog.open(backup_id, self.options.trusted_keys)
        except IntegrityError as exc:
            run.fail(str(exc))
            self._finish_quietly(run, None, began)
            raise
        tmp = private_tempdir(parent=self.options.workdir)
        status: SnapshotStatus | None = None
        running: RunningEtcd | None = None
        try:
            with self.sandbox_factory(backup_id) as sandbox, \
                    ThreadPoolExecutor(2, thread_name_prefix="etcdguard-verify") as pool:
                with run.step("sandbox", f"check the {sandbox.kind} sandbox"):
                    sandbox.check()
                self._download(run, manifest, sandbox, tmp / "snapshot.db", pool)
                status, running = self._restore_and_check(run, manifest, sandbox, tmp / "snapshot.db", pool)
        except IntegrityError as exc:
            run.fail(str(exc))
            self._finish_quietly(run, manifest, began)
            raise
        finally:
            remove_tree(tmp)
        return self._finish(run, manifest, status, running, began)

    # -- steps --------------------------------------------------------------------------------
    def _download(self, run: RunState, manifest: Manifest, sandbox: Sandbox, snapshot: Path,
                  pool: ThreadPoolExecutor) -> None:
        """Download, decrypt and check the snapshot while the sandbox gets ready."""
        version = manifest.source.etcd_version
        prepared = run.background(pool, "prepare", sandbox.prepare, version,
                                  detail=f"etcd {version} {sandbox.kind} sandbox")
        try:
            with run.step("download", "download, decrypt, decompress, check sha256 and trailer") as out:
                prefix = self.catalog.prefix(manifest.backup_id)
                recovered = recover_snapshot(self.catalog.store, manifest, prefix, self.options.identities,
                                             snapshot)
                out.append(f"{recovered.size} bytes, sha256 ok")
        except BaseException:
            run.settle("prepare", prepared)
            raise
        run.join("prepare", prepared, lambda _: "ready")

    def _restore_and_check(self, run: RunState, manifest: Manifest, sandbox: Sandbox, snapshot: Path,
                           pool: ThreadPoolExecutor) -> tuple[SnapshotStatus | None, RunningEtcd | None]:
        version = manifest.source.etcd_version
        status: SnapshotStatus | None = None
        running: RunningEtcd | None = None
        try:
            pending = run.background(pool, "snapshot status", sandbox.snapshot_status, snapshot, version)
            try:
                with run.step("restore", f"etcd {version} in the {sandbox.kind} sandbox") as out:
                    running = sandbox.start(snapshot, version)
                    out.append(f"etcd {running.version} serving at {running.endpoint}")
            except BaseException:
                run.settle("snapshot status", pending)
                raise
            status = self._status_result(run, pending)
            run.version_used, run.version_exact, run.sandbox = running.version, running.exact, running.sandbox
            for name, seconds in running.timings.items():
                run.steps[f"restore.{name}"] = round(seconds, 3)
            if not running.exact:
                run.notes.append(f"etcd {version or '(unknown)'} not available: verified with "
                                 f"etcd {running.version}")
            self._check_restored(run, manifest, running, status, pool)
            with run.step("teardown"):
                sandbox.stop()
        except VerificationFailedError as exc:  # RestoreError: the snapshot does not restore or serve
            run.fail(str(exc))
        except (EtcdUnavailableError, EtcdRequestError) as exc:
            run.fail(f"restored etcd stopped answering: {exc}")
        return status, running

    @staticmethod
    def _status_result(run: RunState, pending: Future[SnapshotStatus]) -> SnapshotStatus | None:
        """The snapshot status that ran beside the restore; a snapshot the tool cannot read is a
        verification failure (None), host problems raise."""
        try:
            status = run.join("snapshot status", pending, lambda st: (
                f"revision {st.revision}, {st.total_keys} bbolt keys, {st.total_size} bytes"))
        except VerificationFailedError as exc:
            run.fail(f"snapshot status: {exc}")
            return None
        run.snapshot_revision = status.revision
        return status

    def _count(self, endpoint: str, revision: int) -> KeyCounts:
        with MemberClient(endpoint, timeout=self.options.client_timeout) as client:
            return count_keys(client, revision)

    def _check_restored(self, run: RunState, manifest: Manifest, running: RunningEtcd,
                        status: SnapshotStatus | None, pool: ThreadPoolExecutor) -> None:
        rev = manifest.hashkv.revision
        expected = manifest.key_counts
        counting = None
        if expected is None:
            run.on_step("key counts", "skipped", "the manifest recorded no key counts")
        else:
            counting = run.background(pool, "key counts", self._count, running.endpoint, rev,
                                      detail=f"at revision {rev}")
        with MemberClient(running.endpoint, timeout=self.options.client_timeout) as client:
            try:
                self._check_hash(run, manifest, client, status)
            except BaseException:
                if counting is not None:
                    run.settle("key counts", counting)
                raise
            if counting is not None and expected is not None:
                diff = diff_key_counts(expected, run.join("key counts", counting, lambda c: (
                    f"{c.total} keys in {len(c.by_prefix)} prefixes")))
                run.key_counts_match, run.differences = not diff, diff
                if diff:
                    run.fail(f"key counts differ: {summarize(diff)}")
            with run.step("smoke test", "write and read a key under a private prefix") as out:
                token = secrets.token_hex(8).encode()
                key = SMOKE_PREFIX + manifest.backup_id.encode() + b"/" + token
                client.put(key, token)
                got = client.get(key)
                if got != token:
                    run.fail(f"smoke test: wrote {token!r} to {key!r}, read back {got!r}")
                out.append("ok" if got == token else "read back something else")

    def _check_hash(self, run: RunState, manifest: Manifest, client: MemberClient,
                    status: SnapshotStatus | None) -> None:
        rev = manifest.hashkv.revision
        with run.step("hashkv", f"at revision {rev}") as out:
            # restored without a bump, etcd serves at the snapshot's own revision (snapshot
            # status only sees the newest key, which is lower after deletes + compaction)
            restored_rev = client.status().revision
            run.snapshot_revision = max(restored_rev, status.revision if status else 0)
            if restored_rev < rev:
                run.fail(f"the snapshot is at revision {restored_rev}, older than the manifest's "
                         f"HashKV revision {rev}")
            try:
                # at the current revision HashKV(0) is the same hash, and also answers when
                # the source compacted right up to it (HashKV(rev) refuses rev <= compact rev)
                verdict = judge_hash(manifest.hashkv, client.hash_kv(0 if restored_rev == rev else rev))
            except EtcdRequestError as exc:
                verdict = judge_hash_error(manifest.hashkv, str(exc))
            run.hash_proof = verdict.proof
            out.append(verdict.detail)
            if verdict.proof == "failed" or (verdict.proof == "inconclusive"
                                             and not self.options.accept_inconclusive_hash):
                run.fail(f"hash proof {verdict.proof}: {verdict.detail}")
            elif verdict.proof == "inconclusive":
                run.notes.append(f"hash proof inconclusive: {verdict.detail}")

    def _finish_quietly(self, run: RunState, manifest: Manifest | None, began: float) -> None:
        """Record a failed verdict for an integrity problem; the original error is what matters."""
        try:
            self._finish(run, manifest, None, None, began)
        except EtcdGuardError as exc:
            log.warning("could not record the failed verification of %s: %s", run.backup_id, exc)

    def _finish(self, run: RunState, manifest: Manifest | None, status: SnapshotStatus | None,
                running: RunningEtcd | None, began: float) -> VerificationReport:
        run.steps["total"] = round(time.monotonic() - began, 3)
        reason = "; ".join(run.failures + run.notes)
        key = self.options.signing_key
        verification = Verification(
            backup_id=run.backup_id, result="failed" if run.failures else "passed", reason=reason,
            hash_proof=run.hash_proof, key_counts_match=run.key_counts_match,
            snapshot_revision=run.snapshot_revision, etcd_version_used=run.version_used,
            etcd_version_exact=run.version_exact, sandbox=run.sandbox, steps=dict(run.steps),
            started_at=run.started_at, finished_at=self.now(),
            signing_key_id=key.key_id if key else None, tool_version=__version__)
        report = VerificationReport(verification, manifest, status, running, run.differences)
        with run.step("record", "signed verification.json" if key else "UNSIGNED verification.json"):
            self.catalog.write_verification(verification, key, manifest)
        report.recorded = True
        return report
