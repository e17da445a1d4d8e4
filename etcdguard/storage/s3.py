"""BlobStore adapter for S3 and S3-compatible stores (boto3).

Keys live under ``<prefix>/`` in the bucket. Writers stream a multipart upload with at most
``max_concurrency`` parts in flight (memory <= part size x (concurrency + 1)); objects smaller than
one part are sent with a single PutObject. Every part and PutObject carries a Content-MD5, and
botocore only adds its flexible checksums where an operation requires them, which keeps the
adapter working against S3-compatible servers (SeaweedFS, MinIO, Ceph) as well as AWS.

With ``object_lock_days`` set, objects are written with ``ObjectLockMode=GOVERNANCE`` and a
retain-until date ``days`` from the start of the upload: GOVERNANCE (not COMPLIANCE) so that an
administrator holding ``s3:BypassGovernanceRetention`` can still remove a backup written by
mistake, while retention and ordinary credentials (including the service's own) cannot.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import hashlib
import io
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

import botocore.exceptions as bex

from etcdguard import interrupts
from etcdguard.config import S3StoreConfig
from etcdguard.errors import ConfigError, StorageError, StorageUnavailableError
from etcdguard.storage.base import BlobInfo, BlobStore, BlobWriter, IncompleteWrite
from etcdguard.storage.local import validate_key, validate_prefix
from etcdguard.storage.s3_errors import is_missing, map_error, safe_endpoint

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_MB = 1024 * 1024
_ABORT_TRIES = 3

def _md5(data: bytes | bytearray) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class _BodyReader(io.RawIOBase):
    """Raw stream over a get_object StreamingBody; maps mid-stream failures."""

    def __init__(self, body: Any, store: S3Store, key: str) -> None:
        self._body = body
        self._store = store
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        try:
            data = self._body.read(len(view))
        except Exception as exc:
            raise self._store.error(exc, "download of", self._key) from exc
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(Exception):
                self._body.close()
        super().close()


class S3Writer(BlobWriter):
    """A streaming multipart upload with bounded memory (see the module docstring).

    Parts are assembled in buffers of exactly ``part_size`` bytes, allocated when first needed
    (at most ``max_concurrency + 1``) and reused once their part is uploaded, so memory stays
    flat (no reallocation, no allocator fragmentation) whatever the object's size.
    """

    def __init__(self, store: S3Store, key: str) -> None:
        self.key = key
        self._store = store
        self._full = store.full_key(key)
        self._part_size = store.config.part_size_mb * _MB
        self._concurrency = store.config.max_concurrency
        self._extra = store.write_args()
        self._buf: bytearray | None = None  # the part being filled ...
        self._fill = 0                      # ... up to here
        self._spare: list[bytearray] = []   # buffers of uploaded parts, for reuse
        self._pool: ThreadPoolExecutor | None = None
        self._upload_id: str | None = None
        # future -> (part number, size, buffer)
        self._pending: dict[Future[str], tuple[int, int, bytearray]] = {}
        self._etags: dict[int, str] = {}
        self._failure: StorageError | StorageUnavailableError | None = None
        self._size = 0
        self._state = "open"
        self.peak_buffered_bytes = 0

    def __repr__(self) -> str:
        return (f"S3Writer(s3://{self._store.config.bucket}/{self._full}, state={self._state}, "
                f"size={self._size}, parts={len(self._etags) + len(self._pending)})")

    @property
    def buffered_bytes(self) -> int:
        """Bytes held by this writer right now: the current buffer plus parts in flight."""
        return self._fill + sum(size for _, size, _ in self._pending.values())

    def _require_open(self) -> None:
        if self._failure is not None and self._state == "failed":
            raise self._failure
        if self._state != "open":
            raise StorageError(f"upload of s3://{self._store.config.bucket}/{self._full} is {self._state}")

    @contextlib.contextmanager
    def _failing(self) -> Iterator[None]:
        """Any exception in the block leaves the writer 'failed' (only abort() is left to do)."""
        self._require_open()
        try:
            yield
        except BaseException:
            self._state = "failed"
            raise

    def _wait(self, max_pending: int) -> None:
        """Collect finished parts, blocking until at most ``max_pending`` are in flight."""
        while self._pending:
            done = {f for f in self._pending if f.done()}
            if not done and len(self._pending) <= max_pending:
                return
            for fut in done or wait(self._pending, return_when=FIRST_COMPLETED)[0]:
                number, _, buf = self._pending.pop(fut)
                if len(buf) == self._part_size:
                    self._spare.append(buf)
                exc = fut.exception()
                if exc is not None:
                    self._failure = self._failure or self._store.error(exc, "upload of", self.key)
                else:
                    self._etags[number] = fut.result()
            if self._failure is not None:
                raise self._failure

    def _upload_part(self, number: int, data: bytearray) -> str:
        assert self._upload_id is not None
        resp = self._store.client.upload_part(
            Bucket=self._store.config.bucket, Key=self._full, UploadId=self._upload_id,
            PartNumber=number, Body=data,  # type: ignore[arg-type]  # botocore accepts bytearray
            ContentMD5=_md5(data))
        return resp["ETag"]

    def _submit_part(self) -> None:
        self._wait(self._concurrency - 1)  # a free slot before the buffer is handed over
        if self._upload_id is None:
            with interrupts.deferred():  # an upload created must be known, so that abort() ends it
                self._upload_id = self._store.call(self._store.client.create_multipart_upload, "upload of",
                                                   self.key, Key=self._full, **self._extra)["UploadId"]
            self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="s3-part")
        assert self._pool is not None
        part = self._take_buffer()
        number = len(self._etags) + len(self._pending) + 1
        self._pending[self._pool.submit(self._upload_part, number, part)] = (number, len(part), part)

    def _take_buffer(self) -> bytearray:
        """Hand over the current buffer holding exactly the bytes written to it."""
        part, self._buf, filled, self._fill = self._buf or bytearray(), None, self._fill, 0
        if filled < len(part):  # the last, short part: its buffer is not reused
            del part[filled:]
        return part

    def write(self, data: bytes) -> None:
        """Buffer ``data``; each full part is uploaded in the background (blocks when all slots are busy)."""
        with self._failing():
            self._wait(self._concurrency)  # surface failures of finished parts early
            view = memoryview(data).cast("B")
            while view:
                if self._buf is None:
                    self._buf = self._spare.pop() if self._spare else bytearray(self._part_size)
                n = min(len(view), self._part_size - self._fill)
                self._buf[self._fill:self._fill + n] = view[:n]
                self._fill += n
                view = view[n:]
                self.peak_buffered_bytes = max(self.peak_buffered_bytes, self.buffered_bytes)
                if self._fill == self._part_size:
                    self._submit_part()
            self._size += len(data)

    def commit(self) -> BlobInfo:
        """PutObject for small objects, else upload the last part and complete the multipart upload.

        SIGTERM/SIGINT wait until it is done: an object that became visible is reported as committed.
        """
        with self._failing(), interrupts.deferred():
            client = self._store.client
            if self._upload_id is None:
                body = self._take_buffer()
                self._store.call(client.put_object, "upload of", self.key, Key=self._full, Body=body,
                                 ContentMD5=_md5(body), **self._extra)
            else:
                if self._fill:
                    self._submit_part()
                self._wait(0)
                parts: list[CompletedPartTypeDef] = [
                    {"PartNumber": n, "ETag": self._etags[n]} for n in sorted(self._etags)]
                self._store.call(client.complete_multipart_upload, "upload of", self.key, Key=self._full,
                                 UploadId=self._upload_id, MultipartUpload={"Parts": parts})
        self._state = "committed"
        self._release()
        self._shutdown()
        return BlobInfo(self.key, self._size, datetime.now(timezone.utc))

    def _release(self) -> None:
        self._buf, self._fill = None, 0
        self._spare.clear()

    def _shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()

    def abort(self) -> None:
        """Stop part uploads and abort the multipart upload (retried); never raises."""
        if self._state in ("committed", "aborted"):
            return
        self._state = "aborted"
        self._release()
        self._shutdown()  # in-flight parts finish first, or they could outlive the abort
        for attempt in range(_ABORT_TRIES if self._upload_id else 0):
            try:
                self._store.call(self._store.client.abort_multipart_upload, "abort of", self.key,
                                 Key=self._full, UploadId=self._upload_id)
                return
            except (StorageError, StorageUnavailableError) as exc:
                if "NoSuchUpload" in str(exc):
                    return
                if attempt + 1 == _ABORT_TRIES:
                    log.warning("%s; backups prune (and the service) remove the open upload once it has been "
                                "idle for retention.incomplete_grace_minutes", exc)
                else:
                    time.sleep(0.5 * (attempt + 1))


class S3Store(BlobStore):
    """Objects in an S3 bucket under an optional prefix."""

    def __init__(self, config: S3StoreConfig) -> None:
        self.config = config
        self.endpoint = safe_endpoint(config.endpoint_url)
        if (config.access_key_id is None) != (config.secret_access_key is None):
            raise ConfigError("S3 store: set both access_key_id and secret_access_key, or neither")
        # Imported here: boto3 costs ~0.2 s and ~20 MB, which processes without an S3 store
        # (the local store, most commands) need not pay.
        import boto3
        from botocore.config import Config

        try:
            session = boto3.Session(
                profile_name=config.profile,
                aws_access_key_id=config.access_key_id,
                aws_secret_access_key=(config.secret_access_key.get_secret_value()
                                       if config.secret_access_key else None),
                aws_session_token=config.session_token.get_secret_value() if config.session_token else None,
                region_name=config.region)
        except bex.ProfileNotFound as exc:
            profile = exc.kwargs.get("profile", config.profile)
            raise ConfigError(f"S3 store: AWS profile {profile!r} not found") from None
        boto_config = Config(
            connect_timeout=config.connect_timeout, read_timeout=config.read_timeout,
            retries={"max_attempts": config.max_attempts, "mode": "standard"},
            s3={"addressing_style": config.addressing_style},
            max_pool_connections=config.max_concurrency + 4,
            request_checksum_calculation="when_required",
            user_agent_extra="etcdguard")
        self.client: S3Client = session.client("s3", endpoint_url=config.endpoint_url, config=boto_config)

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint={self.endpoint!r})"

    @property
    def url(self) -> str:
        """``s3://bucket/prefix``."""
        return f"s3://{self.config.bucket}/{self.config.prefix}"

    def full_key(self, key: str) -> str:
        """The object key in the bucket for store key ``key``."""
        validate_key(key)
        return f"{self.config.prefix}/{key}" if self.config.prefix else key

    def error(self, exc: BaseException, action: str,
              key: str | None = None) -> StorageError | StorageUnavailableError:
        """Map ``exc`` (see :func:`map_error`) naming this store's bucket and ``key``."""
        full = (f"{self.config.prefix}/{key}" if self.config.prefix else key) if key else self.config.prefix
        return map_error(exc, action, self.config.bucket, full or None, self.endpoint)

    def call(self, fn: Callable[..., _T], action: str, key: str | None = None,
             missing: bool = False, **kwargs: Any) -> _T:
        """``fn(Bucket=bucket, **kwargs)`` with errors mapped; KeyError for a missing key if ``missing``."""
        try:
            return fn(Bucket=self.config.bucket, **kwargs)
        except bex.ClientError as exc:
            if missing and is_missing(exc):
                raise KeyError(key) from None
            raise self.error(exc, action, key) from exc
        except Exception as exc:
            raise self.error(exc, action, key) from exc

    def write_args(self) -> dict[str, Any]:
        """SSE, storage class and object-lock arguments for PutObject / CreateMultipartUpload."""
        cfg = self.config
        args: dict[str, Any] = {}
        if cfg.sse:
            args["ServerSideEncryption"] = cfg.sse
            if cfg.sse == "aws:kms" and cfg.sse_kms_key_id:
                args["SSEKMSKeyId"] = cfg.sse_kms_key_id
        if cfg.storage_class:
            args["StorageClass"] = cfg.storage_class
        if cfg.object_lock_days:
            args["ObjectLockMode"] = "GOVERNANCE"
            args["ObjectLockRetainUntilDate"] = (datetime.now(timezone.utc)
                                                 + timedelta(days=cfg.object_lock_days))
        return args

    def check(self) -> None:
        """HeadBucket: raises StorageError (missing, denied) or StorageUnavailableError (unreachable)."""
        self.call(self.client.head_bucket, "access to")

    def open_writer(self, key: str) -> BlobWriter:
        """Start a streaming upload of ``key``; nothing is sent until the first part is full."""
        return S3Writer(self, key)

    def open_reader(self, key: str) -> BinaryIO:
        """A buffered stream over GetObject; KeyError if ``key`` does not exist."""
        full = self.full_key(key)
        body = self.call(self.client.get_object, "download of", key, missing=True, Key=full)["Body"]
        return io.BufferedReader(_BodyReader(body, self, key), buffer_size=_MB)

    def put_bytes(self, key: str, data: bytes) -> BlobInfo:
        """A single PutObject (atomic in S3)."""
        full = self.full_key(key)
        self.call(self.client.put_object, "upload of", key, Key=full, Body=data, ContentMD5=_md5(data),
                  **self.write_args())
        return BlobInfo(key, len(data), datetime.now(timezone.utc))

    def get_bytes(self, key: str) -> bytes:
        """GetObject, read whole; KeyError if ``key`` does not exist."""
        with self.open_reader(key) as f:
            return f.read()

    def stat(self, key: str) -> BlobInfo | None:
        """HeadObject, or None when ``key`` does not exist."""
        full = self.full_key(key)
        try:
            head = self.call(self.client.head_object, "stat of", key, missing=True, Key=full)
        except KeyError:
            return None
        return BlobInfo(key, head["ContentLength"], head.get("LastModified"))

    def _bucket_prefix(self, prefix: str) -> str:
        validate_prefix(prefix)
        return f"{self.config.prefix}/{prefix}" if self.config.prefix else prefix

    def list(self, prefix: str = "") -> Iterator[BlobInfo]:
        """ListObjectsV2 under ``prefix``, sorted here: not every S3-compatible server lists in
        key order (SeaweedFS walks its directory tree, so ``a/b`` comes before ``a-b``)."""
        full = self._bucket_prefix(prefix)
        strip = len(self.config.prefix) + 1 if self.config.prefix else 0
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.config.bucket, Prefix=full)
        found: list[BlobInfo] = []
        try:
            for page in pages:
                for obj in page.get("Contents", []):
                    if len(obj["Key"]) <= strip:
                        continue  # a "directory" marker equal to the store prefix itself
                    found.append(BlobInfo(obj["Key"][strip:], obj["Size"], obj.get("LastModified")))
        except Exception as exc:
            raise self.error(exc, "listing of", prefix or None) from exc
        found.sort(key=lambda info: info.key)
        yield from found

    def delete(self, key: str) -> None:
        """DeleteObject (S3 treats a missing key as success)."""
        full = self.full_key(key)
        self.call(self.client.delete_object, "delete of", key, Key=full)

    def _open_uploads(self, prefix: str) -> Iterator[dict[str, Any]]:
        """ListMultipartUploads under ``prefix`` (errors mapped)."""
        full = self._bucket_prefix(prefix)
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.config.bucket, Prefix=full)
            for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Key"].startswith(full):
                        yield dict(upload)
        except Exception as exc:
            raise self.error(exc, "listing uploads of", prefix or None) from exc

    def _upload_activity(self, upload: dict[str, Any]) -> tuple[datetime, int]:
        """(newest part's LastModified, or the initiation; bytes uploaded so far) of an open upload."""
        newest: datetime = upload["Initiated"]
        size = 0
        try:
            pages = self.client.get_paginator("list_parts").paginate(
                Bucket=self.config.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            for page in pages:
                for part in page.get("Parts", []):
                    size += int(part.get("Size", 0))
                    if part.get("LastModified") and part["LastModified"] > newest:
                        newest = part["LastModified"]
        except bex.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise self.error(exc, "listing parts of", upload["Key"]) from exc
        except Exception as exc:
            raise self.error(exc, "listing parts of", upload["Key"]) from exc
        return newest, size

    def _store_key(self, bucket_key: str) -> str:
        return bucket_key[len(self.config.prefix) + 1:] if self.config.prefix else bucket_key

    def list_incomplete(self, prefix: str = "") -> builtins.list[IncompleteWrite]:
        """Open multipart uploads under ``prefix``, each with the time of its newest part."""
        found = []
        for upload in self._open_uploads(prefix):
            activity, size = self._upload_activity(upload)
            found.append(IncompleteWrite(self._store_key(upload["Key"]), "multipart upload", activity, size))
        return found

    def cleanup_incomplete(self, prefix: str = "", older_than_seconds: float = 0.0) -> int:
        """Abort multipart uploads under ``prefix`` whose newest part (or start) is older than the threshold.

        An upload that is still receiving parts, however long ago it started, is left alone.
        """
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=older_than_seconds)
        aborted = 0
        for upload in self._open_uploads(prefix):
            if upload["Initiated"] > cutoff or self._upload_activity(upload)[0] > cutoff:
                continue
            try:
                self.client.abort_multipart_upload(
                    Bucket=self.config.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
            except bex.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "NoSuchUpload":
                    raise self.error(exc, "abort of", self._store_key(upload["Key"])) from exc
            except Exception as exc:
                raise self.error(exc, "abort of", self._store_key(upload["Key"])) from exc
            aborted += 1
        return aborted
