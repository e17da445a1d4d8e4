"""The snapshot pipeline: named steps recorded in a journal (:mod:`etcdguard.steps`).

preflight -> select source -> hashkv -> count keys -> stream (etcd -> zstd -> age -> store)
-> manifest (signed, written last). If the source member fails mid-stream, the upload is
aborted and the next most caught-up member is tried. Any failure leaves no manifest, no
object and no open multipart upload.

The key count (at the HashKV revision) runs in a thread alongside the stream, and the stream
itself in two: one pulls and hashes etcd's chunks, the other compresses, encrypts and writes.
The object is committed only once both the stream and the count have succeeded.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, cast

import pyrage
import zstandard

from etcdguard import __version__, interrupts
from etcdguard.backup.keycount import count_keys
from etcdguard.backup.keys import SigningKey, fingerprint, load_signing_key, parse_recipients, recipient_lines
from etcdguard.backup.manifest import (
    ENCRYPTED_OBJECT,
    MANIFEST_NAME,
    PLAIN_OBJECT,
    ClusterMember,
    ClusterRef,
    HashKVRecord,
    KeyCounts,
    Manifest,
    SnapshotInfo,
    SourceMember,
    StoredObject,
    backup_prefix,
    new_backup_id,
    seal_manifest,
)
from etcdguard.backup.streams import BytePipe, HashingWriter, PipeClosedError, SnapshotReader
from etcdguard.config import EtcdConfig, Settings
from etcdguard.errors import (
    ConfigError,
    EtcdGuardError,
    IntegrityError,
    OperationInterruptedError,
    TransientError,
)
from etcdguard.etcd.channel import CallGroup
from etcdguard.etcd.connect import SourceCandidate, local_source, snapshot_sources
from etcdguard.etcd.connection import open_connection
from etcdguard.etcd.ports import EtcdConnection, EtcdMember
from etcdguard.steps import Journal, StepRecord, StepRunner, StepState, default_journal_dir, prune_journals
from etcdguard.storage.base import BlobStore, BlobWriter

log = logging.getLogger(__name__)
ZSTD_READ_SIZE = 1 << 20
PIPE_BLOCK = 1 << 20   # plaintext handed from the etcd thread to the encoder thread at a time
PIPE_BYTES = 4 << 20   # at most this much plaintext queued between them
SOURCE_ROUNDS = 2
RETRY_ROUND_DELAY = 2.0
JOURNALS_KEPT = 20  # backup journals kept in the journal dir


class Progress:
    """Callbacks the pipeline reports to; the default does nothing."""

    def step(self, status: StepRecord) -> None:
        """A step changed state."""

    def source(self, candidate: SourceCandidate) -> None:
        """Streaming (re)starts from ``candidate``; ``candidate.status.db_size`` is the expected size."""

    def advance(self, plain_bytes: int) -> None:
        """``plain_bytes`` more snapshot bytes were streamed."""


@dataclass(frozen=True)
class BackupRequest:
    """What to back up and how."""

    etcd: EtcdConfig
    cluster_name: str
    recipients: list[pyrage.x25519.Recipient]
    recipient_texts: list[str]
    signing_key: SigningKey | None
    compression_level: int = 3
    compression_threads: int = 0
    member: str | None = None
    count_keys: bool = True
    allow_unencrypted: bool = False
    allow_unsigned: bool = False
    local_endpoint: str | None = None  # emergency: this member only, serializable reads (no quorum needed)
    journal_dir: Path | None = None  # where the run's journal is written (None: memory only)


@dataclass(frozen=True)
class BackupResult:
    """A finished, complete backup and the journal of its steps."""

    manifest: Manifest
    journal: Journal
    store_url: str

    @property
    def sources_tried(self) -> list[str]:
        """Members the snapshot was streamed from, in order (more than one after a failover)."""
        return list(self.journal.params.get("sources_tried", []))


def preflight(request: BackupRequest) -> None:
    """Fail closed before touching etcd: encryption and signing keys must be configured."""
    if not request.recipients and not request.allow_unencrypted:
        raise ConfigError("no age recipient configured: pass --recipient (or recipients_file); "
                          "refusing to write an unencrypted backup without --allow-unencrypted")
    if request.signing_key is None and not request.allow_unsigned:
        raise ConfigError("no signing key configured: pass --signing-key; "
                          "refusing to write an unsigned backup without --allow-unsigned")


def _journal(request: BackupRequest, store: BlobStore, backup_id: str) -> Journal:
    """The run's journal: a file in ``request.journal_dir`` (older ones pruned), else in memory.

    A journal that cannot be written never stops a backup: it falls back to memory with a warning.
    """
    params: dict[str, object] = {"cluster": request.cluster_name, "store": store.url,
                                 "endpoints": list(request.etcd.endpoints), "member": request.member,
                                 "sources_tried": []}
    if request.journal_dir is not None:
        try:
            prune_journals(request.journal_dir, "backup", keep=JOURNALS_KEPT - 1)
            return Journal.create(request.journal_dir, "backup", backup_id, params)
        except (OSError, EtcdGuardError) as exc:
            log.warning("cannot write the backup journal in %s (%s); keeping it in memory only",
                        request.journal_dir, exc)
    return Journal("backup", backup_id, params=params)


def _cancellable(chunks: Iterator[bytes], cancel: threading.Event | None) -> Iterator[bytes]:
    for chunk in chunks:
        if cancel is not None and cancel.is_set():
            raise OperationInterruptedError("backup cancelled; the partial upload was aborted")
        yield chunk


@dataclass(frozen=True)
class _Streamed:
    snapshot: SnapshotInfo
    stored_size: int
    stored_sha256: str


class _Encoder(threading.Thread):
    """The compress + encrypt + store half of the stream, in its own thread.

    Reads plaintext blocks from ``pipe``, zstd-compresses them, age-encrypts them (or not, with
    no recipient) into ``sink``. Its failure is kept in ``error`` (the storage error itself is on
    ``sink.error``); the pipe's reader end is closed whatever happens, so the etcd side never
    blocks on a dead encoder.
    """

    def __init__(self, request: BackupRequest, pipe: BytePipe, sink: HashingWriter) -> None:
        super().__init__(name="snapshot-encoder", daemon=True)
        self.request = request
        self.pipe = pipe
        self.sink = sink
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            compressor = zstandard.ZstdCompressor(level=self.request.compression_level,
                                                  threads=self.request.compression_threads)
            compressed = compressor.stream_reader(cast(BinaryIO, self.pipe), read_size=PIPE_BLOCK,
                                                closefd=False)
            if self.request.recipients:
                pyrage.encrypt_io(compressed, self.sink, self.request.recipients)
            else:
                while block := compressed.read(ZSTD_READ_SIZE):
                    self.sink.write(block)
        except BaseException as exc:  # re-raised by the pipeline's thread
            self.error = exc
        finally:
            self.pipe.close_read()


def _join(thread: threading.Thread, stop: Callable[[], None]) -> None:
    """Join ``thread``. A Ctrl-C meanwhile calls ``stop`` (which makes the thread end soon) and is
    re-raised once the thread has ended, so nothing it uses (the writer) is torn down under it."""
    interrupted: KeyboardInterrupt | None = None
    while thread.is_alive():
        try:
            thread.join()
        except KeyboardInterrupt as exc:
            interrupted = exc
            stop()
    if interrupted is not None:
        raise interrupted


def _pump(reader: SnapshotReader, pipe: BytePipe) -> None:
    """etcd's chunks -> the pipe, in blocks of about PIPE_BLOCK bytes (fewer, larger hand-overs)."""
    parts: list[bytes] = []
    held = 0
    while chunk := reader.read(PIPE_BLOCK):
        parts.append(chunk)
        held += len(chunk)
        if held >= PIPE_BLOCK:
            pipe.put(parts[0] if len(parts) == 1 else b"".join(parts))
            parts, held = [], 0
    if parts:
        pipe.put(b"".join(parts))
    pipe.close_write()


def _voting_members(client: EtcdMember) -> list[ClusterMember] | None:
    """The cluster's voting members for the manifest (None, with a warning, when they cannot be read)."""
    try:
        listed = client.member_list()
    except EtcdGuardError as exc:
        log.warning("the member list could not be read for the manifest: %s", exc)
        return None
    return [ClusterMember(name=m.name, peer_urls=list(m.peer_urls), client_urls=list(m.client_urls))
            for m in listed if not m.is_learner and m.name]


def _stream(request: BackupRequest, client: EtcdMember, writer: BlobWriter,
            progress: Progress, cancel: threading.Event | None) -> _Streamed:
    """etcd snapshot -> zstd -> age -> writer; checks etcd's trailer; returns the digests.

    Two threads overlap the work: this one pulls etcd's chunks and hashes them, an
    :class:`_Encoder` compresses, encrypts and writes; a bounded pipe (PIPE_BYTES) joins them.
    """
    chunks = client.snapshot(idle_timeout=request.etcd.snapshot_idle_timeout)
    reader = SnapshotReader(_cancellable(chunks, cancel), on_bytes=progress.advance)
    sink = HashingWriter(writer.write)
    pipe = BytePipe(PIPE_BYTES)
    encoder = _Encoder(request, pipe, sink)
    encoder.start()
    try:
        try:
            _pump(reader, pipe)
        except BaseException:
            pipe.abort()
            raise
        finally:
            _join(encoder, pipe.abort)
            chunks.close()
    except PipeClosedError as exc:  # the encoder stopped first: its failure is the reason
        raise (sink.error or encoder.error or exc) from None
    except BaseException:
        if reader.error is not None:
            raise reader.error from None
        raise
    if encoder.error is not None:
        raise (sink.error or encoder.error) from None
    if not reader.eof:
        raise IntegrityError("etcd snapshot stream ended early")
    snapshot = SnapshotInfo(size=reader.size, sha256=reader.sha256, trailer_sha256=reader.trailer_hex)
    return _Streamed(snapshot, sink.size, sink.sha256)


class _KeyCounter(threading.Thread):
    """Counts keys at a revision (see :func:`count_keys`) while the snapshot streams.

    Its calls share the member's channel but form their own group, so :meth:`cancel` aborts the
    call in flight at once and leaves the channel to the stream.
    """

    def __init__(self, request: BackupRequest, client: EtcdMember, revision: int) -> None:
        super().__init__(name="count-keys", daemon=True)
        self.calls = CallGroup()
        self.client = client.in_group(self.calls)
        self.revision = revision
        self.serializable = request.local_endpoint is not None
        self.counts: KeyCounts | None = None
        self.error: BaseException | None = None
        self.finished_at: float | None = None

    def run(self) -> None:
        try:
            self.counts = count_keys(self.client, self.revision, serializable=self.serializable)
        except BaseException as exc:  # re-raised by the pipeline's thread
            self.error = exc
        finally:
            self.finished_at = time.monotonic()

    def result(self) -> KeyCounts:
        """Wait for the counts; raises what counting raised."""
        _join(self, self.calls.cancel)
        if self.error is not None:
            raise self.error
        assert self.counts is not None
        return self.counts

    def cancel(self) -> None:
        """Stop counting (the stream failed) and wait for the thread."""
        self.calls.cancel()
        _join(self, self.calls.cancel)


def take_backup(
    request: BackupRequest,
    store: BlobStore,
    *,
    connection: EtcdConnection | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> BackupResult:
    """Take one complete backup into ``store`` (see the module docstring).

    Every etcd call goes through ``connection`` (one opened from ``request.etcd`` and closed
    afterwards when none is given).
    """
    if connection is None:
        with open_connection(request.etcd) as owned:
            return take_backup(request, store, connection=owned, progress=progress, cancel=cancel, now=now)
    progress = progress or Progress()
    preflight(request)
    created_at = now()
    backup_id = new_backup_id(created_at)
    journal = _journal(request, store, backup_id)
    steps = StepRunner(journal, progress.step)
    try:
        result = _take_backup(request, store, connection, steps, progress, cancel, backup_id, created_at, now)
    except BaseException as exc:
        steps.close(exc)
        where = f"; its journal: {journal.path}" if journal.path is not None else ""
        log.warning("backup %s failed at step %r: %s%s", backup_id, journal.failed_step or "-",
                    journal.error, where)
        raise
    steps.close()
    return result


def _take_backup(request: BackupRequest, store: BlobStore, connection: EtcdConnection, steps: StepRunner,
                 progress: Progress, cancel: threading.Event | None, backup_id: str, created_at: datetime,
                 now: Callable[[], datetime]) -> BackupResult:
    prefix = backup_prefix(request.cluster_name, backup_id)
    object_name = ENCRYPTED_OBJECT if request.recipients else PLAIN_OBJECT

    with steps.step("check store", store.url):
        store.check()

    with steps.step("select source", ", ".join(request.etcd.endpoints)) as step:
        if request.local_endpoint:
            candidates = [local_source(connection, request.local_endpoint)]
        else:
            candidates = snapshot_sources(connection, request.member)
        step.note(" > ".join(f"{c.name}{' (leader)' if c.is_leader else ''}" for c in candidates))

    tried: list[str] = steps.journal.params["sources_tried"]
    last_error: EtcdGuardError | None = None
    for round_number in range(SOURCE_ROUNDS):
        if round_number:
            # every member failed transiently (e.g. an election after the leader died): wait for
            # the cluster to settle, then ask again who can serve
            time.sleep(RETRY_ROUND_DELAY)
            try:
                candidates = ([local_source(connection, request.local_endpoint)] if request.local_endpoint
                              else snapshot_sources(connection, request.member))
            except TransientError as exc:
                last_error = exc
                continue
        for candidate in candidates:
            tried.append(candidate.name)
            try:
                return _backup_from(request, store, connection.client(candidate.endpoint), candidate, steps,
                                    progress, cancel, backup_id, prefix, object_name, created_at, now)
            except TransientError as exc:
                if isinstance(exc, OperationInterruptedError):
                    raise
                log.warning("backup from %s failed, trying the next member: %s", candidate.name, exc)
                last_error = exc
    assert last_error is not None
    raise last_error


def _backup_from(request: BackupRequest, store: BlobStore, client: EtcdMember, candidate: SourceCandidate,
                 steps: StepRunner, progress: Progress, cancel: threading.Event | None, backup_id: str,
                 prefix: str, object_name: str, created_at: datetime,
                 now: Callable[[], datetime]) -> BackupResult:
    # From the object's commit until its manifest is written, SIGTERM/SIGINT wait (seconds at
    # most): an interrupt in between would leave an object without a manifest.
    with contextlib.ExitStack() as sealing:
        return _backup_into(request, store, client, candidate, steps, progress, cancel, backup_id, prefix,
                            object_name, created_at, now, sealing)


def _backup_into(request: BackupRequest, store: BlobStore, client: EtcdMember, candidate: SourceCandidate,
                 steps: StepRunner, progress: Progress, cancel: threading.Event | None, backup_id: str,
                 prefix: str, object_name: str, created_at: datetime,
                 now: Callable[[], datetime], sealing: contextlib.ExitStack) -> BackupResult:
    with steps.step("hashkv", candidate.name) as step:
        hashkv = client.hash_kv(0)
        step.note(f"revision {hashkv.revision}, hash {hashkv.hash}")

    # Keys are counted at the HashKV revision while the snapshot streams (both only read etcd;
    # the counts wait for the stream, and the stream's object is committed only with them).
    counter: _KeyCounter | None = None
    counting: StepRecord | None = None
    if request.count_keys:
        counting = steps.begin("count keys", f"at revision {hashkv.revision}")
        counter = _KeyCounter(request, client, hashkv.revision)
        counter.start()

    with steps.step("stream", f"from {candidate.name} ({candidate.endpoint})") as step:
        progress.source(candidate)
        counts: KeyCounts | None = None
        with store.open_writer(f"{prefix}/{object_name}") as writer:
            try:
                streamed = _stream(request, client, writer, progress, cancel)
            except BaseException:
                if counter is not None and counting is not None:
                    counter.cancel()
                    steps.end(counting, StepState.failed, "cancelled: the stream failed",
                              error="cancelled: the stream failed", at=counter.finished_at)
                raise
            if counter is not None and counting is not None:
                try:
                    counts = counter.result()
                except BaseException as exc:
                    steps.fail(counting, exc, at=counter.finished_at)
                    raise
                steps.end(counting, StepState.done, f"{counts.total} keys", at=counter.finished_at)
            sealing.enter_context(interrupts.deferred())
            info = writer.commit()
        step.note(f"{streamed.snapshot.size} bytes -> {streamed.stored_size} stored")

    with steps.step("manifest") as step:
        manifest = Manifest(
            backup_id=backup_id,
            cluster=ClusterRef(name=request.cluster_name, cluster_id=f"{candidate.status.cluster_id:x}"),
            source=SourceMember(name=candidate.name, member_id=f"{candidate.member_id:x}",
                                endpoint=candidate.endpoint, etcd_version=candidate.status.version),
            hashkv=HashKVRecord(revision=hashkv.revision, hash=hashkv.hash,
                                compact_revision=hashkv.compact_revision),
            key_counts=counts,
            members=_voting_members(client),
            snapshot=streamed.snapshot,
            stored=StoredObject(key=object_name, size=streamed.stored_size, sha256=streamed.stored_sha256,
                                compression_level=request.compression_level,
                                encryption="age-x25519" if request.recipients else "none",
                                recipients=[fingerprint(r) for r in request.recipient_texts]),
            signing_key_id=request.signing_key.key_id if request.signing_key else None,
            created_at=created_at,
            finished_at=now(),
            tool_version=__version__,
        )
        if info.size != streamed.stored_size:
            store.delete(f"{prefix}/{object_name}")
            raise IntegrityError(f"store reports {info.size} bytes for {object_name}, "
                                 f"{streamed.stored_size} were written")
        try:
            store.put_bytes(f"{prefix}/{MANIFEST_NAME}", seal_manifest(manifest, request.signing_key))
        except BaseException:
            store.delete(f"{prefix}/{object_name}")
            raise
        step.note(f"{prefix}/{MANIFEST_NAME}")
    return BackupResult(manifest, steps.journal, store.url)


def request_from_settings(settings: Settings) -> BackupRequest:
    """Build a BackupRequest from configuration (loads recipients and the signing key)."""
    enc = settings.encryption
    texts = recipient_lines(list(enc.recipients), [enc.recipients_file] if enc.recipients_file else [])
    parsed = parse_recipients(texts)
    key_file = settings.signing.key_file
    return BackupRequest(
        etcd=settings.etcd,
        cluster_name=settings.backup.cluster_name,
        recipients=parsed,
        recipient_texts=texts,
        signing_key=load_signing_key(key_file) if key_file else None,
        compression_level=settings.backup.compression_level,
        compression_threads=settings.backup.compression_threads,
        member=settings.etcd.member,
        count_keys=settings.backup.count_keys,
        allow_unencrypted=enc.allow_unencrypted,
        allow_unsigned=settings.signing.allow_unsigned,
        journal_dir=default_journal_dir(),
    )
