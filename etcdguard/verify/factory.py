"""Verification from configuration: the options and the sandbox factory."""

from __future__ import annotations

from collections.abc import Callable

from etcdguard.backup.keys import VerifyKey, load_identities, load_signing_key
from etcdguard.config import Settings, VerifyConfig
from etcdguard.steps import default_journal_dir
from etcdguard.verify.docker import DockerSandbox
from etcdguard.verify.process import ProcessSandbox
from etcdguard.verify.sandbox import Sandbox
from etcdguard.verify.verifier import VerifyOptions


def options_from_settings(settings: Settings, trusted_keys: list[VerifyKey] | None) -> VerifyOptions:
    """VerifyOptions from configuration: identity, signing key and policy (``trusted_keys`` as given)."""
    identity, key_file = settings.encryption.identity_file, settings.signing.key_file
    return VerifyOptions(identities=load_identities(identity) if identity else [],
                         trusted_keys=trusted_keys,
                         signing_key=load_signing_key(key_file) if key_file else None,
                         allow_unsigned=settings.signing.allow_unsigned,
                         accept_inconclusive_hash=settings.verify.accept_inconclusive_hash,
                         workdir=settings.verify.workdir, journal_dir=default_journal_dir())


def sandbox_factory(config: VerifyConfig, kind: str | None = None) -> Callable[[str], Sandbox]:
    """A ``backup_id -> Sandbox`` factory for ``kind`` (default ``config.sandbox``)."""
    chosen = kind or config.sandbox

    def make(backup_id: str) -> Sandbox:
        if chosen == "process":
            return ProcessSandbox(start_timeout=config.start_timeout, etcd_path=config.etcd_path,
                                  workdir=config.workdir)
        return DockerSandbox(backup_id=backup_id, image=config.image, memory_limit=config.memory_limit,
                             start_timeout=config.start_timeout, pull=config.pull,
                             pull_timeout=config.pull_timeout, stale_after=config.stale_sandbox_seconds,
                             etcd_path=config.etcd_path, data_mode=config.docker_data_mode,
                             workdir=config.workdir)

    if chosen not in ("docker", "process"):
        raise ValueError(f"unknown sandbox {chosen!r}: use docker or process")
    return make
