"""One node's part of a restore, as saved in the journal: the plan, the local member, the options.

Everything a resumed or rolled-back run needs is in :class:`JobParams` (written to the journal
before the first step), so ``--resume`` and ``--rollback`` work after the manifests were moved
away and without diagnosing again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from etcdguard.backup.catalog import Catalog
from etcdguard.backup.keys import VerifyKey
from etcdguard.config import Settings
from etcdguard.etcd.client import TLSFiles
from etcdguard.restore.discovery import ApiServer, LocalMember
from etcdguard.restore.plan import RestorePlan

JOURNAL_KIND = "restore"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MemberParams(_Model):
    """The local member (host paths), as discovered when the restore began."""

    name: str
    data_dir: str
    peer_urls: list[str]
    client_urls: list[str]
    source: str
    wal_dir: str | None = None
    listen_client_urls: list[str] = Field(default_factory=list)
    listen_peer_urls: list[str] = Field(default_factory=list)
    initial_cluster: str | None = None
    quota_backend_bytes: int | None = None
    cert_file: str | None = None
    key_file: str | None = None
    trusted_ca_file: str | None = None
    image: str | None = None
    owner: str | None = None

    @classmethod
    def of(cls, m: LocalMember) -> MemberParams:
        """Serialize a LocalMember."""
        def s(p: Path | None) -> str | None:
            return str(p) if p is not None else None
        return cls(name=m.name, data_dir=str(m.data_dir), peer_urls=list(m.peer_urls),
                   client_urls=list(m.client_urls), source=m.source, wal_dir=s(m.wal_dir),
                   listen_client_urls=list(m.listen_client_urls), listen_peer_urls=list(m.listen_peer_urls),
                   initial_cluster=m.initial_cluster, quota_backend_bytes=m.quota_backend_bytes,
                   cert_file=s(m.cert_file), key_file=s(m.key_file), trusted_ca_file=s(m.trusted_ca_file),
                   image=m.image, owner=m.owner)

    def member(self) -> LocalMember:
        """The LocalMember back."""
        def p(s: str | None) -> Path | None:
            return Path(s) if s else None
        return LocalMember(name=self.name, data_dir=Path(self.data_dir), peer_urls=tuple(self.peer_urls),
                           client_urls=tuple(self.client_urls), source=self.source, wal_dir=p(self.wal_dir),
                           listen_client_urls=tuple(self.listen_client_urls),
                           listen_peer_urls=tuple(self.listen_peer_urls), initial_cluster=self.initial_cluster,
                           quota_backend_bytes=self.quota_backend_bytes, cert_file=p(self.cert_file),
                           key_file=p(self.key_file), trusted_ca_file=p(self.trusted_ca_file), image=self.image,
                           owner=self.owner)


class ApiServerParams(_Model):
    """The local kube-apiserver, as discovered."""

    manifest: str
    secure_port: int
    host: str = "127.0.0.1"
    encryption_provider_config: str | None = None

    @property
    def url(self) -> str:
        """Where it listens."""
        return f"https://{self.host}:{self.secure_port}"

    @classmethod
    def of(cls, a: ApiServer) -> ApiServerParams:
        """Serialize an ApiServer."""
        return cls(manifest=str(a.manifest), secure_port=a.secure_port, host=a.advertise_address or "127.0.0.1",
                   encryption_provider_config=str(a.encryption_provider_config)
                   if a.encryption_provider_config else None)


class TLSParams(_Model):
    """Client TLS files for talking to the restored member (paths only)."""

    cacert: str | None = None
    cert: str | None = None
    key: str | None = None

    def files(self) -> TLSFiles | None:
        """As TLSFiles (None when empty)."""
        if not (self.cacert or self.cert or self.key):
            return None
        return TLSFiles(cacert=Path(self.cacert) if self.cacert else None,
                        cert=Path(self.cert) if self.cert else None, key=Path(self.key) if self.key else None)

    @classmethod
    def of(cls, tls: TLSFiles | None) -> TLSParams:
        """Serialize TLSFiles."""
        if tls is None:
            return cls()
        return cls(cacert=str(tls.cacert) if tls.cacert else None, cert=str(tls.cert) if tls.cert else None,
                   key=str(tls.key) if tls.key else None)


class JobParams(_Model):
    """This node's part of a restore (saved in the journal's parameters)."""

    plan: RestorePlan
    member_name: str
    stamp: str
    work_dir: str
    run_mode: Literal["kubeadm", "systemd", "command"]
    manifests_dir: str
    local: MemberParams
    apiserver: ApiServerParams | None = None
    etcdutl: str
    etcdutl_version: str
    etcdutl_is_etcdutl: bool
    server_version: str | None = None
    client_tls: TLSParams = TLSParams()
    peer_tls: TLSParams = TLSParams()
    answering: list[str] = Field(default_factory=list)  # client URLs to snapshot before any change
    force: bool = False
    encryption_config: str | None = None
    memory_factor: float = 1.0
    start_timeout: float = 180.0
    stop_timeout: float = 90.0
    emergency_store: str

    @property
    def work(self) -> Path:
        """The restore's private directory (staged snapshot, moved-aside manifests)."""
        return Path(self.work_dir)

    @property
    def snapshot_path(self) -> Path:
        """Where the fetched (checked) snapshot is staged."""
        return self.work / "snapshot.db"

    @property
    def manifests_aside(self) -> Path:
        """Where manifests wait while their pods must not run (outside the manifests dir)."""
        return self.work / "manifests"


def new_stamp(now: datetime | None = None) -> str:
    """``20261129T101500Z``: the suffix of everything this restore moves aside."""
    return (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")


@dataclass
class Services:
    """What the steps use but the journal does not hold: the store, keys, settings, callbacks."""

    settings: Settings
    catalog: Catalog | None = None
    verify_keys: list[VerifyKey] | None = None
    identities: list[Any] = field(default_factory=list)
    on_bytes: Callable[[int], None] | None = None
    on_fetch_start: Callable[[int | None], None] | None = None
    on_wait: Callable[[str], None] | None = None
