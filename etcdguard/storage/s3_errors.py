"""How S3 failures become etcdguard's errors: one mapping for every S3 call, with messages that
name the bucket, key and endpoint (never credentials) and a transient/permanent split the
retry policy acts on."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import botocore.exceptions as bex

from etcdguard.errors import StorageError, StorageUnavailableError

# Refusals worth a specific message; the mapping itself is in map_error().
_REFUSALS: dict[str, str] = {
    "NoSuchBucket": "bucket {bucket} does not exist",
    "404": "bucket {bucket} does not exist",  # HeadBucket answers without an error body
    "AccessDenied": "access denied to bucket {bucket}",
    "AllAccessDisabled": "access denied to bucket {bucket}",
    "403": "access denied to bucket {bucket}",
    "InvalidAccessKeyId": "S3 does not know the access key id (bucket {bucket})",
    "SignatureDoesNotMatch": "S3 rejected the signature: wrong secret key? (bucket {bucket})",
    "ExpiredToken": "the S3 session token has expired (bucket {bucket})",
    "RequestTimeTooSkewed": "the local clock is too far from S3's (bucket {bucket})",
}
# Codes that are transient whatever their HTTP status (5xx and 429 always are).
_TRANSIENT = frozenset({"RequestTimeout", "SlowDown", "Throttling", "ThrottlingException",
                        "RequestLimitExceeded", "TooManyRequestsException", "InternalError",
                        "ServiceUnavailable"})


def safe_endpoint(url: str | None) -> str:
    """The endpoint URL without any userinfo, for messages."""
    if not url:
        return "the default AWS S3 endpoint"
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def map_error(exc: BaseException, action: str, bucket: str, key: str | None,
              endpoint: str) -> StorageError | StorageUnavailableError:
    """The one place that turns a boto3/botocore/socket failure into etcdguard's error classes."""
    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if isinstance(exc, bex.ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code") or "")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        transient = code in _TRANSIENT or status >= 500 or status == 429
        template = _REFUSALS.get(code, "S3 is unavailable" if transient else "S3 refused the request")
        what = template.format(bucket=bucket)
        cls = StorageUnavailableError if transient else StorageError
        return cls(f"{action} {where} failed: {what} ({code or 'no code'}, HTTP {status})")
    if isinstance(exc, bex.SSLError):
        return StorageError(f"{action} {where} failed: TLS error talking to S3 endpoint {endpoint}")
    if isinstance(exc, (bex.ConnectionError, bex.HTTPClientError)):
        return StorageUnavailableError(
            f"{action} {where} failed: cannot reach S3 endpoint {endpoint} ({type(exc).__name__})")
    if isinstance(exc, (bex.NoCredentialsError, bex.PartialCredentialsError)):
        return StorageError(f"{action} {where} failed: no usable S3 credentials (config, env, profile)")
    if isinstance(exc, (bex.CredentialRetrievalError, bex.ProfileNotFound, bex.ParamValidationError)):
        return StorageError(f"{action} {where} failed: {type(exc).__name__}")
    if isinstance(exc, (bex.BotoCoreError, OSError, TimeoutError)):
        return StorageUnavailableError(f"{action} {where} failed: {type(exc).__name__}")
    return StorageError(f"{action} {where} failed: unexpected {type(exc).__name__}")


def is_missing(exc: bex.ClientError) -> bool:
    """True for 'no such key' (not 'no such bucket')."""
    code = exc.response.get("Error", {}).get("Code")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("NoSuchKey", "NotFound") or (status == 404 and code != "NoSuchBucket")
