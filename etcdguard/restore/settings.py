"""The ``restore:`` configuration section: how this node's etcd and kube-apiserver run.

Three run modes: ``kubeadm`` (static pods in a manifests dir, the default when ``etcd.yaml`` is
there), ``systemd`` (units started and stopped with ``systemctl``) and ``command`` (any start/stop
commands: Docker containers, k3s-style and custom setups). In ``command`` mode the member's
settings (name, data dir, URLs) come from ``restore.member``, since no manifest says them; in
``systemd`` mode they are read from the unit and ``restore.member`` fields, when given, override.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_MANIFESTS_DIR = Path("/etc/kubernetes/manifests")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _split_list(v: Any) -> Any:
    return [e.strip() for e in v.split(",") if e.strip()] if isinstance(v, str) else v


class RestoreMemberConfig(_Section):
    """The local member's settings when no kubeadm manifest describes them (systemd mode: overrides
    of what the unit says; command mode: name, data_dir, peer_urls and client_urls are required)."""

    name: str | None = None
    data_dir: Path | None = None
    wal_dir: Path | None = None
    peer_urls: list[str] = Field(default_factory=list)
    client_urls: list[str] = Field(default_factory=list)
    initial_cluster: str | None = None
    quota_backend_bytes: int | None = Field(None, gt=0)
    cert_file: Path | None = None
    key_file: Path | None = None
    trusted_ca_file: Path | None = None
    owner: str | None = None  # user[:group] the data dir belongs to (default: the old data dir's)

    _split = field_validator("peer_urls", "client_urls", mode="before")(_split_list)


class RestoreConfig(_Section):
    """``etcdguard restore``: run mode, where its state lives, and what must be fenced off."""

    run_mode: Literal["auto", "kubeadm", "systemd", "command"] = "auto"
    manifests_dir: Path = DEFAULT_MANIFESTS_DIR
    state_dir: Path | None = None
    etcd_unit: str = "etcd.service"
    apiserver_unit: str | None = None
    # command mode: shell commands (run with /bin/sh -c; ETCDGUARD_MEMBER_NAME, ETCDGUARD_DATA_DIR,
    # ETCDGUARD_INITIAL_CLUSTER and ETCDGUARD_INITIAL_CLUSTER_TOKEN are set for them)
    start_etcd: str | None = None
    stop_etcd: str | None = None
    start_apiserver: str | None = None
    stop_apiserver: str | None = None
    member: RestoreMemberConfig | None = None
    apiserver_endpoints: list[str] = Field(default_factory=list)
    encryption_provider_config: Path | None = None
    stop_timeout: float = Field(90.0, gt=0)
    start_timeout: float = Field(180.0, gt=0)
    min_free_memory_factor: float = Field(1.0, ge=0)

    _split = field_validator("apiserver_endpoints", mode="before")(_split_list)

    def state_dir_or_default(self) -> Path:
        """Where journals, staged snapshots, moved-aside manifests and the lock live."""
        if self.state_dir is not None:
            return self.state_dir
        if os.geteuid() == 0:
            return Path("/var/lib/etcdguard/restore")
        base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(base) / "etcdguard" / "restore"
