"""etcdguard's exception hierarchy and the exit codes it maps to.

Every error etcdguard raises on purpose derives from :class:`EtcdGuardError` and is either
:class:`TransientError` (worth retrying: a member was down, S3 timed out) or
:class:`PermanentError` (retrying will not help: bad config, corrupt backup). Each concrete
class carries the process exit code documented in the README and ``etcdguard --help``.
The message is one line meant for a human at 3 a.m.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Documented process exit codes (``check`` uses the monitoring-plugin codes instead)."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    CONFIG = 3
    ETCD = 4
    STORAGE = 5
    INTEGRITY = 6
    VERIFICATION_FAILED = 7
    NOT_FOUND = 8
    SANDBOX = 9
    ABORTED = 10
    INTERRUPTED = 130


EXIT_CODE_HELP: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.FAILURE: "unexpected internal error",
    ExitCode.USAGE: "bad command-line usage",
    ExitCode.CONFIG: "invalid configuration, or a required key or recipient is missing",
    ExitCode.ETCD: "etcd unreachable, TLS failure, or etcd refused the request",
    ExitCode.STORAGE: "backup store unreachable, bucket missing, access denied, or upload failed",
    ExitCode.INTEGRITY: "backup failed an integrity check: digest, signature, or decryption",
    ExitCode.VERIFICATION_FAILED: "the restored backup does not match its manifest",
    ExitCode.NOT_FOUND: "no such backup",
    ExitCode.SANDBOX: "the verification sandbox (Docker or local etcd) is unavailable",
    ExitCode.ABORTED: "the operator declined a confirmation, or a guardrail refused the action",
    ExitCode.INTERRUPTED: "interrupted (SIGINT/SIGTERM); nothing partial was left behind",
}


class EtcdGuardError(Exception):
    """Root of every error etcdguard raises deliberately."""

    exit_code: ExitCode = ExitCode.FAILURE
    transient: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class TransientError(EtcdGuardError):
    """A failure that may go away on retry (network, a member restarting, throttling)."""

    transient = True


class PermanentError(EtcdGuardError):
    """A failure that retrying will not fix (bad input, corrupt data, missing keys)."""

    transient = False


class UsageError(PermanentError):
    """The command line is wrong: an unknown option, a bad flag value, a missing argument."""

    exit_code = ExitCode.USAGE


class ConfigError(PermanentError):
    """Configuration is invalid, or a required key, recipient or file is missing."""

    exit_code = ExitCode.CONFIG


class EtcdUnavailableError(TransientError):
    """No etcd member answered (down, wrong endpoint, timeout)."""

    exit_code = ExitCode.ETCD


class EtcdRequestError(PermanentError):
    """etcd answered but refused the request (TLS, auth, invalid argument, compacted)."""

    exit_code = ExitCode.ETCD


class StorageUnavailableError(TransientError):
    """The backup store could not be reached or failed mid-transfer."""

    exit_code = ExitCode.STORAGE


class StorageError(PermanentError):
    """The backup store refused the request (no such bucket, access denied)."""

    exit_code = ExitCode.STORAGE


class BackupNotFoundError(PermanentError):
    """No complete backup has the requested id."""

    exit_code = ExitCode.NOT_FOUND


class IntegrityError(PermanentError):
    """A backup failed a digest, signature, trailer or decryption check."""

    exit_code = ExitCode.INTEGRITY


class VerificationFailedError(PermanentError):
    """A restored backup does not match what its manifest recorded."""

    exit_code = ExitCode.VERIFICATION_FAILED


class SandboxUnavailableError(PermanentError):
    """The verification sandbox (Docker daemon, etcd binaries) is not available."""

    exit_code = ExitCode.SANDBOX


class AbortedError(PermanentError):
    """The operator declined, or a safety guardrail refused the action."""

    exit_code = ExitCode.ABORTED


class OperationInterruptedError(TransientError):
    """The run was interrupted by a signal; partial work was cleaned up."""

    exit_code = ExitCode.INTERRUPTED
