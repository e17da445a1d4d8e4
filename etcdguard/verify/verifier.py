"""The verification pipeline: prove that a backup restores to the keyspace it recorded.

manifest (signature) -> download + decrypt + decompress into a private temp dir (sha256, trailer)
-> snapshot status -> restore + start in the sandbox (no revision bump) -> HashKV and key counts
at the manifest's revision -> write/read smoke test -> tear down -> signed verification.json.
Independent steps overlap: the sandbox is prepared during the download, snapshot status runs
beside the restore, and the key counts beside HashKV.

Every step is recorded in a journal (:mod:`etcdguard.steps`). Outcomes: a
:class:`VerificationReport` whose verdict is passed or failed (a failed one names what differed;
:meth:`VerificationReport.raise_for_result` turns it into VerificationFailedError). Integrity
problems (forged manifest, damaged object) record a failed verdict when possible and raise
IntegrityError. Host problems (sandbox unavailable, store down) raise without a verdict, and so
does SIGINT/SIGTERM: the sandbox and the decrypted data are removed first, and no verdict is
recorded once a stop was requested (not even when it lands during teardown).
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

from etcdguard import __version__, interrupts
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
    OperationInterruptedError,
    VerificationFailedError,
)
from etcdguard.etcd.client import MemberClient
from etcdguard.steps import Journal, StepListener, StepRecord, StepRunner, StepState, prune_journals
from etcdguard.verify.compare import HashProof, diff_key_counts, judge_hash, judge_hash_error, summarize
from etcdguard.verify.hosttools import affected
from etcdguard.verify.sandbox import RunningEtcd, Sandbox, SnapshotStatus
from etcdguard.verify.workdirs import private_tempdir, remove_tree, sweep_stale_workdirs

log = logging.getLogger(__name__)

SMOKE_PREFIX = b"/__etcdguard/verify/"
JOURNALS_KEPT = 20  # verification journals kept in the journal dir


@dataclass
class _Findings:
    """What one verification found while it ran (the verdict is built from it)."""

    backup_id: str
    started_at: datetime
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    hash_proof: HashProof | None = None
    key_counts_match: bool | None = None
    snapshot_revision: int | None = None
    version_used: str = ""
    version_exact: bool = True
    sandbox: str = ""

    def fail(self, reason: str) -> None:
        """Record one thing that differed or broke."""
        self.failures.append(reason)


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
    journal_dir: Path | None = None  # where each run's journal is written (None: memory only)


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
                 *, on_step: StepListener | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> None:
        if options.signing_key is None and not options.allow_unsigned:
            raise ConfigError("no signing key configured for verification verdicts: pass --signing-key; "
                              "refusing to write an unsigned verification.json without --allow-unsigned")
        self.catalog = catalog
        self.sandbox_factory = sandbox_factory
        self.options = options
        self.on_step = on_step
        self.now = now

    def verify(self, backup_id: str) -> VerificationReport:
        """Run every step on ``backup_id`` and record the signed verdict (see the module docstring)."""
        steps = StepRunner(self._journal(backup_id), self.on_step)
        try:
            report = self._verify(steps, _Findings(backup_id, self.now()))
        except BaseException as exc:
            steps.close(exc)
            raise
        steps.close()
        return report

    def _journal(self, backup_id: str) -> Journal:
        run_id = f"{backup_id}-{secrets.token_hex(3)}"
        params: dict[str, object] = {"backup_id": backup_id, "store": self.catalog.store.url,
                                     "cluster": self.catalog.cluster}
        directory = self.options.journal_dir
        if directory is not None:
            try:
                prune_journals(directory, "verify", keep=JOURNALS_KEPT - 1)
                return Journal.create(directory, "verify", run_id, params)
            except (OSError, EtcdGuardError) as exc:
                log.warning("cannot write the verification journal in %s (%s); keeping it in memory only",
                            directory, exc)
        return Journal("verify", run_id, params=params)

    def _verify(self, steps: StepRunner, found: _Findings) -> VerificationReport:
        began = time.monotonic()
        try:
            with steps.step("manifest", "fetch and check the signature"):
                manifest = self.catalog.open(found.backup_id, self.options.trusted_keys)
        except IntegrityError as exc:
            found.fail(str(exc))
            self._finish_quietly(steps, found, None, began)
            raise
        sweep_stale_workdirs(self.options.workdir)
        tmp = private_tempdir(parent=self.options.workdir)
        status: SnapshotStatus | None = None
        running: RunningEtcd | None = None
        try:
            with self.sandbox_factory(found.backup_id) as sandbox, \
                    ThreadPoolExecutor(2, thread_name_prefix="etcdguard-verify") as pool:
                with steps.step("sandbox", f"check the {sandbox.kind} sandbox"):
                    sandbox.check()
                self._download(steps, manifest, sandbox, tmp / "snapshot.db", pool)
                status, running = self._restore_and_check(steps, found, manifest, sandbox, tmp / "snapshot.db",
                                                          pool)
        except IntegrityError as exc:
            found.fail(str(exc))
            self._finish_quietly(steps, found, manifest, began)
            raise
        finally:
            interrupts.run_deferred(lambda: remove_tree(tmp))
        return self._finish(steps, found, manifest, status, running, began)

    # -- steps --------------------------------------------------------------------------------
    def _download(self, steps: StepRunner, manifest: Manifest, sandbox: Sandbox, snapshot: Path,
                  pool: ThreadPoolExecutor) -> None:
        """Download, decrypt and check the snapshot while the sandbox gets ready."""
        version = manifest.source.etcd_version
        prepared = steps.background(pool, "prepare", sandbox.prepare, version,
                                    detail=f"etcd {version} {sandbox.kind} sandbox")
        try:
            with steps.step("download", "download, decrypt, decompress, check sha256 and trailer") as step:
                prefix = self.catalog.prefix(manifest.backup_id)
                recovered = recover_snapshot(self.catalog.store, manifest, prefix, self.options.identities,
                                             snapshot)
                step.note(f"{recovered.size} bytes, sha256 ok")
        except BaseException:
            steps.settle(prepared)
            raise
        steps.join(prepared, lambda _: "ready")

    def _restore_and_check(self, steps: StepRunner, found: _Findings, manifest: Manifest, sandbox: Sandbox,
                           snapshot: Path, pool: ThreadPoolExecutor
                           ) -> tuple[SnapshotStatus | None, RunningEtcd | None]:
        version = manifest.source.etcd_version
        status: SnapshotStatus | None = None
        running: RunningEtcd | None = None
        try:
            pending = steps.background(pool, "snapshot status", sandbox.snapshot_status, snapshot, version)
            try:
                with steps.step("restore", f"etcd {version} in the {sandbox.kind} sandbox") as step:
                    running = sandbox.start(snapshot, version)
                    step.note(f"etcd {running.version} serving at {running.endpoint} (TLS, client cert)"
                              if running.tls is not None else f"etcd {running.version} serving at {running.endpoint}")
            except BaseException:
                steps.settle(pending)
                raise
            status = self._status_result(steps, found, pending)
            found.version_used, found.version_exact, found.sandbox = running.version, running.exact, running.sandbox
            for name, seconds in running.timings.items():
                found.timings[f"restore.{name}"] = round(seconds, 3)
            if not running.exact:
                why = "has a data-inconsistency bug (3.5.0-3.5.2)" if version and affected(version) else "not available"
                found.notes.append(f"etcd {version or '(unknown)'} {why}: verified with etcd {running.version}")
            self._check_restored(steps, found, manifest, running, status, pool)
            with steps.step("teardown"), interrupts.deferred():
                sandbox.stop()
        except VerificationFailedError as exc:  # SandboxRestoreError: does not restore or serve
            found.fail(str(exc))
        except (EtcdUnavailableError, EtcdRequestError) as exc:
            found.fail(f"restored etcd stopped answering: {exc}")
        return status, running

    @staticmethod
    def _status_result(steps: StepRunner, found: _Findings, pending: tuple[StepRecord, Future[SnapshotStatus]]
                       ) -> SnapshotStatus | None:
        """The snapshot status that ran beside the restore; a snapshot the tool cannot read is a
        verification failure (None), host problems raise."""
        try:
            status = steps.join(pending, lambda st: (
                f"revision {st.revision}, {st.total_keys} bbolt keys, {st.total_size} bytes"))
        except VerificationFailedError as exc:
            found.fail(f"snapshot status: {exc}")
            return None
        found.snapshot_revision = status.revision
        return status

    def _client(self, running: RunningEtcd) -> MemberClient:
        return MemberClient(running.endpoint, tls=running.tls, timeout=self.options.client_timeout)

    def _count(self, running: RunningEtcd, revision: int) -> KeyCounts:
        with self._client(running) as client:
            return count_keys(client, revision)

    def _check_restored(self, steps: StepRunner, found: _Findings, manifest: Manifest, running: RunningEtcd,
                        status: SnapshotStatus | None, pool: ThreadPoolExecutor) -> None:
        rev = manifest.hashkv.revision
        expected = manifest.key_counts
        counting = None
        if expected is None:
            steps.skip("key counts", "the manifest recorded no key counts")
        else:
            counting = steps.background(pool, "key counts", self._count, running, rev, detail=f"at revision {rev}")
        with self._client(running) as client:
            try:
                self._check_hash(steps, found, manifest, client, status)
            except BaseException:
                if counting is not None:
                    steps.settle(counting)
                raise
            if counting is not None and expected is not None:
                diff = diff_key_counts(expected, steps.join(counting, lambda c: (
                    f"{c.total} keys in {len(c.by_prefix)} prefixes")))
                found.key_counts_match, found.differences = not diff, diff
                if diff:
                    found.fail(f"key counts differ: {summarize(diff)}")
            with steps.step("smoke test", "write and read a key under a private prefix") as step:
                token = secrets.token_hex(8).encode()
                key = SMOKE_PREFIX + manifest.backup_id.encode() + b"/" + token
                client.put(key, token)
                got = client.get(key)
                if got != token:
                    found.fail(f"smoke test: wrote {token!r} to {key!r}, read back {got!r}")
                step.note("ok" if got == token else "read back something else")

    def _check_hash(self, steps: StepRunner, found: _Findings, manifest: Manifest, client: MemberClient,
                    status: SnapshotStatus | None) -> None:
        rev = manifest.hashkv.revision
        with steps.step("hashkv", f"at revision {rev}") as step:
            # restored without a bump, etcd serves at the snapshot's own revision (snapshot
            # status only sees the newest key, which is lower after deletes + compaction)
            restored_rev = client.status().revision
            found.snapshot_revision = max(restored_rev, status.revision if status else 0)
            if restored_rev < rev:
                found.fail(f"the snapshot is at revision {restored_rev}, older than the manifest's "
                           f"HashKV revision {rev}")
            try:
                # at the current revision HashKV(0) is the same hash, and also answers when
                # the source compacted right up to it (HashKV(rev) refuses rev <= compact rev)
                verdict = judge_hash(manifest.hashkv, client.hash_kv(0 if restored_rev == rev else rev))
            except EtcdRequestError as exc:
                verdict = judge_hash_error(manifest.hashkv, str(exc))
            found.hash_proof = verdict.proof
            step.note(verdict.detail)
            if verdict.proof == "failed" or (verdict.proof == "inconclusive"
                                             and not self.options.accept_inconclusive_hash):
                found.fail(f"hash proof {verdict.proof}: {verdict.detail}")
            elif verdict.proof == "inconclusive":
                found.notes.append(f"hash proof inconclusive: {verdict.detail}")

    def _finish_quietly(self, steps: StepRunner, found: _Findings, manifest: Manifest | None,
                        began: float) -> None:
        """Record a failed verdict for an integrity problem; the original error is what matters."""
        try:
            self._finish(steps, found, manifest, None, None, began)
        except EtcdGuardError as exc:
            log.warning("could not record the failed verification of %s: %s", found.backup_id, exc)

    def _finish(self, steps: StepRunner, found: _Findings, manifest: Manifest | None,
                status: SnapshotStatus | None, running: RunningEtcd | None, began: float) -> VerificationReport:
        if interrupts.stop_requested():  # never a verdict for a run that was told to stop
            raise OperationInterruptedError("verification interrupted; no verdict recorded")
        timings = {r.name: round(r.seconds, 3) for r in steps.journal.steps
                   if r.state in (StepState.done, StepState.failed)}
        timings.update(found.timings)
        timings["total"] = round(time.monotonic() - began, 3)
        reason = "; ".join(found.failures + found.notes)
        key = self.options.signing_key
        verification = Verification(
            backup_id=found.backup_id, result="failed" if found.failures else "passed", reason=reason,
            hash_proof=found.hash_proof, key_counts_match=found.key_counts_match,
            snapshot_revision=found.snapshot_revision, etcd_version_used=found.version_used,
            etcd_version_exact=found.version_exact, sandbox=found.sandbox, steps=timings,
            started_at=found.started_at, finished_at=self.now(),
            signing_key_id=key.key_id if key else None, tool_version=__version__)
        report = VerificationReport(verification, manifest, status, running, found.differences)
        with steps.step("record", "signed verification.json" if key else "UNSIGNED verification.json"):
            self.catalog.write_verification(verification, key, manifest)
        report.recorded = True
        return report
