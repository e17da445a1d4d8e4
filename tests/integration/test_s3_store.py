"""S3Store against a real SeaweedFS S3 server: multipart streaming, errors, cleanup, memory bound."""

from __future__ import annotations

import hashlib
import random
import secrets
import time
import tracemalloc
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest
from pydantic import SecretStr

from etcdguard.config import S3StoreConfig
from etcdguard.errors import ConfigError, StorageError, StorageUnavailableError
from etcdguard.etcd.tools import free_port
from etcdguard.storage import S3Store, S3Writer, open_store
from tests.support.seaweed import SeaweedS3
from tests.support.waits import finishes

pytestmark = pytest.mark.integration

MB = 1024 * 1024


def make_store(sw: SeaweedS3, bucket: str, **overrides: Any) -> S3Store:
    settings: dict[str, Any] = {
        "bucket": bucket, "prefix": "backups", "endpoint_url": sw.endpoint_url, "region": "us-east-1",
        "addressing_style": "path", "access_key_id": sw.access_key,
        "secret_access_key": SecretStr(sw.secret_key), "part_size_mb": 5, "max_concurrency": 2,
        "connect_timeout": 2, "read_timeout": 10, "max_attempts": 2,
    }
    settings.update(overrides)
    store = open_store(S3StoreConfig(**settings))
    assert isinstance(store, S3Store)
    return store


def stream(w: S3Writer | Any, total: int, chunk: int = MB, seed: int = 1) -> str:
    """Write ``total`` pseudo-random bytes in ``chunk``s; returns their sha256."""
    rng = random.Random(seed)
    digest = hashlib.sha256()
    left = total
    while left:
        data = rng.randbytes(min(chunk, left))
        digest.update(data)
        w.write(data)
        left -= len(data)
    return digest.hexdigest()


def read_sha256(store: S3Store, key: str) -> str:
    digest = hashlib.sha256()
    with store.open_reader(key) as f:
        while block := f.read(MB):
            digest.update(block)
    return digest.hexdigest()


def open_uploads(sw: SeaweedS3, bucket: str) -> list[str]:
    return [u["Key"] for u in sw.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def test_small_object_single_put(s3_bucket: tuple[SeaweedS3, str]) -> None:
    sw, bucket = s3_bucket
    store = make_store(sw, bucket)
    with store.open_writer("c1/b1/small") as w:
        sha = stream(w, 3 * MB + 17, chunk=100_000)
        assert store.stat("c1/b1/small") is None  # not visible before commit
        info = w.commit()
    assert info.size == 3 * MB + 17
    assert read_sha256(store, "c1/b1/small") == sha
    head = sw.client().head_object(Bucket=bucket, Key="backups/c1/b1/small")
    assert "-" not in head["ETag"]  # a plain PutObject, not a multipart upload
    assert open_uploads(sw, bucket) == []


def test_multipart_round_trip(s3_bucket: tuple[SeaweedS3, str]) -> None:
    sw, bucket = s3_bucket
    store = make_store(sw, bucket)
    size = int(3.5 * 5 * MB)
    with store.open_writer("c1/b1/snapshot.db.zst.age") as w:
        sha = stream(w, size, chunk=777_777)
        assert store.stat("c1/b1/snapshot.db.zst.age") is None
        info = w.commit()
    assert info.size == size
    st = store.stat("c1/b1/snapshot.db.zst.age")
    assert st is not None and st.size == size and st.modified is not None
    assert read_sha256(store, "c1/b1/snapshot.db.zst.age") == sha
    head = sw.client().head_object(Bucket=bucket, Key="backups/c1/b1/snapshot.db.zst.age")
    assert head["ETag"].strip('"').endswith("-4")
    assert open_uploads(sw, bucket) == []


def test_exact_part_multiple_and_empty(s3_bucket: tuple[SeaweedS3, str]) -> None:
    sw, bucket = s3_bucket
    store = make_store(sw, bucket)
    with store.open_writer("exact") as w:
        sha = stream(w, 10 * MB)
        w.commit()
    assert read_sha256(store, "exact") == sha
    with store.open_writer("empty") as w:
        w.commit()
    assert store.get_bytes("empty") == b""


def test_abort_leaves_nothing(s3_bucket: tuple[SeaweedS3, str]) -> None:
    sw, bucket = s3_bucket
    store = make_store(sw, bucket)
    w = store.open_writer("c/b/obj")
    stream(w, 12 * MB)
    assert open_uploads(sw, bucket) == ["backups/c/b/obj"]
    w.abort()
    w.abort()
    assert open_uploads(sw, bucket) == []
    assert store.stat("c/b/obj") is None
    assert list(store.list()) == []
    with pytest.raises(StorageError):
        w.write(b"x")


def test_exception_in_with_aborts(s3_bucket: tuple[SeaweedS3, str]) -> None:
    sw, bucket = s3_bucket
    store = make_store(sw, bucket)
    with pytest.raises(RuntimeError), store.open_writer("c/b/obj") as w:
        stream(w, 11 * MB)
        raise RuntimeError("pipeline failed")
    assert open_uploads(sw, bucket) == []
    assert store.stat("c/b/obj") is None


def test_small_api(s3_bucket: tuple[SeaweedS3, str]) -> None:
    sw, bucket = s3_bucket
    store = make_store(sw, bucket)
    store.check()
    assert store.url == f"s3://{bucket}/backups"
    for key in ["c1/b2/manifest.json", "c1/b1/manifest.json", "c1/b1/snap", "c2/x/y", "c1-z"]:
        store.put_bytes(key, key.encode())
    sw.client().put_object(Bucket=bucket, Key="elsewhere/k", Body=b"not ours")
    assert store.get_bytes("c1/b1/snap") == b"c1/b1/snap"
    assert [i.key for i in store.list()] == sorted(["c1/b2/manifest.json", "c1/b1/manifest.json",
                                                    "c1/b1/snap", "c2/x/y", "c1-z"])
    assert [i.key for i in store.list("c1/")] == ["c1/b1/manifest.json", "c1/b1/snap", "c1/b2/manifest.json"]
    assert store.list_children("c1") == ["b1", "b2"]
    assert store.list_children("") == ["c1", "c2"]
    assert store.stat("missing") is None
    with pytest.raises(KeyError):
        store.get_bytes("missing")
    with pytest.raises(KeyError):
        store.open_reader("c1/missing")
    store.delete("c1/b1/snap")
    store.delete("c1/b1/snap")
    assert store.stat("c1/b1/snap") is None
    with pytest.raises(ValueError):
        store.put_bytes("../escape", b"x")


def test_cleanup_incomplete(s3_bucket: tuple[SeaweedS3, str]) -> None:
    sw, bucket = s3_bucket
    store = make_store(sw, bucket)
    client = sw.client()
    client.create_multipart_upload(Bucket=bucket, Key="backups/c1/b1/snap")
    client.create_multipart_upload(Bucket=bucket, Key="backups/c2/b1/snap")
    client.create_multipart_upload(Bucket=bucket, Key="unrelated/snap")
    assert store.cleanup_incomplete("c1/", older_than_seconds=3600) == 0
    time.sleep(1.1)  # Initiated has one-second resolution
    assert store.cleanup_incomplete("c1/", older_than_seconds=0) == 1
    assert sorted(open_uploads(sw, bucket)) == ["backups/c2/b1/snap", "unrelated/snap"]
    assert store.cleanup_incomplete() == 1
    assert open_uploads(sw, bucket) == ["unrelated/snap"]


def test_sse_and_object_lock(seaweed: SeaweedS3) -> None:
    bucket = seaweed.create_bucket("lock-" + secrets.token_hex(6), object_lock=True)
    store = make_store(seaweed, bucket, sse="AES256", object_lock_days=2)
    store.put_bytes("c/b/manifest.json", b"{}")
    with store.open_writer("c/b/snap") as w:
        stream(w, 6 * MB)
        w.commit()
    client = seaweed.client()
    for key in ("backups/c/b/manifest.json", "backups/c/b/snap"):
        retention = client.get_object_retention(Bucket=bucket, Key=key)["Retention"]
        assert retention.get("Mode") == "GOVERNANCE"
        until = retention.get("RetainUntilDate")
        assert until is not None and until.timestamp() > time.time() + 86400
        assert client.head_object(Bucket=bucket, Key=key).get("ServerSideEncryption") == "AES256"


def test_wrong_credentials(s3_bucket: tuple[SeaweedS3, str]) -> None:
    sw, bucket = s3_bucket
    secret = "wrong-" + secrets.token_hex(8)
    store = make_store(sw, bucket, secret_access_key=SecretStr(secret))
    assert secret not in repr(store)
    for action in (store.check, lambda: store.put_bytes("k", b"x")):
        with pytest.raises(StorageError) as info:
            action()
        assert not isinstance(info.value, StorageUnavailableError)
        assert secret not in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(StorageError, match="SignatureDoesNotMatch"), store.open_writer("big") as w:
        stream(w, 11 * MB)
        w.commit()
    bad_key = make_store(sw, bucket, access_key_id="NOSUCHKEY")
    with pytest.raises(StorageError, match="InvalidAccessKeyId"):
        bad_key.put_bytes("k", b"x")
    with pytest.raises(StorageError, match=f"access denied to bucket {bucket}"):
        bad_key.check()


def test_missing_bucket(seaweed: SeaweedS3) -> None:
    store = make_store(seaweed, "no-such-bucket-" + secrets.token_hex(4))
    with pytest.raises(StorageError, match="does not exist"):
        store.check()
    with pytest.raises(StorageError, match="does not exist"):
        store.put_bytes("k", b"x")
    with pytest.raises(StorageError, match="does not exist"), store.open_writer("k") as w:
        stream(w, 6 * MB)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="both access_key_id and secret_access_key"):
        open_store(S3StoreConfig.model_validate({"bucket": "b", "access_key_id": "a"}))
    with pytest.raises(ConfigError, match="profile 'no-such-profile' not found"):
        open_store(S3StoreConfig.model_validate({"bucket": "b", "profile": "no-such-profile"}))


def test_unreachable_endpoint(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    store = open_store(S3StoreConfig.model_validate({
        "bucket": "b", "endpoint_url": f"http://user:pw@127.0.0.1:{port}", "access_key_id": "a",
        "secret_access_key": "s", "connect_timeout": 1, "max_attempts": 1}))
    with pytest.raises(StorageUnavailableError, match="cannot reach S3 endpoint") as info:
        finishes(store.check)
    assert "pw" not in str(info.value)


@pytest.mark.timeout(240)
def test_server_dies_mid_upload(tmp_path: Path, weed_binary: str) -> None:
    with SeaweedS3(tmp_path / "sw", weed=weed_binary) as sw:
        bucket = sw.create_bucket("dying")
        store = make_store(sw, bucket, connect_timeout=1, read_timeout=5, max_attempts=2)
        w = store.open_writer("c/b/snap")
        rng = random.Random(7)
        written = 0
        killed = False

        def upload() -> None:
            nonlocal written, killed
            while written < 500 * MB:
                w.write(rng.randbytes(MB))
                written += MB
                if written == 12 * MB:  # two parts sent, the third is filling
                    sw.kill()
                    killed = True
            w.commit()

        with pytest.raises(StorageUnavailableError) as info:
            finishes(upload)
        assert killed
        assert "s3://dying/backups/c/b/snap" in str(info.value)
        assert "\n" not in str(info.value)
        w.abort()  # the server is gone: must not raise
        with pytest.raises(StorageError):
            w.commit()
        sw.start()  # same data dir and ports
        assert store.stat("c/b/snap") is None
        assert sw.client().list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
        # The abort could not reach the dead server; the upload it left is found and removed later.
        left = open_uploads(sw, bucket)
        assert left in ([], ["backups/c/b/snap"])
        assert store.cleanup_incomplete() == len(left)
        assert open_uploads(sw, bucket) == []


def test_memory_bound(s3_bucket: tuple[SeaweedS3, str]) -> None:
    sw, bucket = s3_bucket
    store = make_store(sw, bucket, max_concurrency=2)
    part = 5 * MB
    bound = (2 + 1) * part
    tracemalloc.start()
    try:
        w = store.open_writer("big")
        assert isinstance(w, S3Writer)
        sha = stream(w, 60 * MB, chunk=256 * 1024)
        w.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 0 < w.peak_buffered_bytes <= bound
    assert w.peak_buffered_bytes > 2 * part  # the pool really ran parts in parallel
    assert peak < bound + 8 * MB, f"peak traced memory {peak / MB:.1f} MiB"
    assert read_sha256(store, "big") == sha


def test_reprs_hide_secrets(s3_bucket: tuple[SeaweedS3, str]) -> None:
    sw, bucket = s3_bucket
    store = make_store(sw, bucket, session_token=SecretStr("tok-" + sw.secret_key))
    w = store.open_writer("k")
    for text in (repr(store), repr(w), repr(store.config), str(store.config)):
        assert sw.secret_key not in text
    w.abort()


def test_client_error_mapping_table() -> None:
    from etcdguard.storage.s3_errors import map_error

    def client_error(code: str, status: int) -> botocore.exceptions.ClientError:
        return botocore.exceptions.ClientError(
            {"Error": {"Code": code, "Message": "m"},
             "ResponseMetadata": {"HTTPStatusCode": status}},  # type: ignore[typeddict-item]
            "Op")

    for code, status in (("SlowDown", 503), ("Weird", 502), ("Weird", 429), ("RequestTimeout", 400)):
        assert isinstance(map_error(client_error(code, status), "upload of", "b", "k", "e"),
                          StorageUnavailableError)
    assert type(map_error(client_error("Weird", 400), "upload of", "b", "k", "e")) is StorageError
    err = map_error(client_error("AccessDenied", 403), "upload of", "b", "k", "e")
    assert type(err) is StorageError and "access denied to bucket b" in str(err)
    err = map_error(client_error("NoSuchBucket", 404), "upload of", "b", "k", "e")
    assert type(err) is StorageError and "bucket b does not exist" in str(err)
    down = botocore.exceptions.EndpointConnectionError(endpoint_url="http://x")
    err = map_error(down, "check of", "b", None, "http://x")
    assert isinstance(err, StorageUnavailableError) and "cannot reach S3 endpoint http://x" in str(err)
