"""The restore plan: one source, one token, one initial cluster, and each member's part.

A plan is written once (``--plan-only --plan-file``) and run on every node (``--plan-file
--member NAME``); a single-node restore builds the same plan in memory. The plan is bound to its
cluster (name and id) and signed when a signing key is configured, so a plan for one cluster is
never run against another.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import struct
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from etcdguard.backup.keys import SigningKey, VerifyKey
from etcdguard.backup.signed import RESTORE_PLAN, Expect, Subject, check_record, parse_record, seal_record
from etcdguard.errors import ConfigError, IntegrityError
from etcdguard.restore.discovery import format_initial_cluster

PLAN_FORMAT = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanMember(_Model):
    """One member of the restored cluster."""

    name: str
    peer_urls: list[str]
    client_urls: list[str]


class OldMember(_Model):
    """A member of the old cluster: its ports must be down before a restored member starts."""

    name: str
    member_id: str = ""
    peer_urls: list[str] = Field(default_factory=list)
    client_urls: list[str] = Field(default_factory=list)


class PlanSource(_Model):
    """Where the restored data comes from."""

    kind: Literal["backup", "survivor"]
    revision: int
    backup_id: str | None = None
    snapshot_sha256: str | None = None
    snapshot_bytes: int | None = None
    survivor: str | None = None
    survivor_endpoint: str | None = None
    survivor_db: str | None = None


class RestorePlan(_Model):
    """What every node needs to run its part of one restore."""

    format_version: int = PLAN_FORMAT
    restore_id: str
    created_at: datetime
    cluster_name: str
    cluster_id: str  # the old cluster (hex)
    new_cluster_id: str  # what the restored members will report (hex)
    path: Literal["a", "b", "c", "d"]
    source: PlanSource
    token: str
    initial_cluster: str
    members: list[PlanMember]
    bump_revision: int = 0
    kubernetes: bool = False
    old_members: list[OldMember] = Field(default_factory=list)
    apiserver_endpoints: list[str] = Field(default_factory=list)
    signing_key_id: str | None = None

    def member(self, name: str) -> PlanMember:
        """The part of member ``name`` (ConfigError naming the plan's members otherwise)."""
        for m in self.members:
            if m.name == name:
                return m
        names = ", ".join(m.name for m in self.members)
        raise ConfigError(f"member {name!r} is not in the plan {self.restore_id} (members: {names})")

    @property
    def single(self) -> bool:
        """True for a one-member restore."""
        return len(self.members) == 1


def new_restore_id(now: datetime | None = None) -> str:
    """``20261129T101500Z-1a2b3c``: sorts by time, unique."""
    now = now or datetime.now(timezone.utc)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def new_token(cluster_name: str, restore_id: str) -> str:
    """A unique initial-cluster token for one restore (never reused: fencing against the old cluster)."""
    return f"{cluster_name}-restore-{restore_id.lower()}"


def member_id(peer_urls: Iterable[str], token: str) -> int:
    """The member id etcd derives for a new member: sha1(sorted peer URLs + token), first 8 bytes."""
    data = "".join(sorted(peer_urls)).encode() + token.encode()
    return int(struct.unpack(">Q", hashlib.sha1(data, usedforsecurity=False).digest()[:8])[0])


def cluster_id(members: Iterable[PlanMember], token: str) -> int:
    """The cluster id etcd derives from the sorted member ids (sha1, first 8 bytes)."""
    ids = sorted(member_id(m.peer_urls, token) for m in members)
    data = b"".join(struct.pack(">Q", i) for i in ids)
    return int(struct.unpack(">Q", hashlib.sha1(data, usedforsecurity=False).digest()[:8])[0])


def build_plan(*, cluster_name: str, old_cluster_id: str, path: Literal["a", "b", "c", "d"], source: PlanSource,
               members: list[PlanMember], bump_revision: int, kubernetes: bool,
               old_members: list[OldMember], apiserver_endpoints: list[str],
               now: datetime | None = None) -> RestorePlan:
    """A new plan with a fresh restore id, token and the derived cluster id."""
    if not members:
        raise ConfigError("a restore plan needs at least one member")
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise ConfigError(f"member names in a plan must be unique: {', '.join(names)}")
    now = now or datetime.now(timezone.utc)
    restore_id = new_restore_id(now)
    token = new_token(cluster_name, restore_id)
    return RestorePlan(
        restore_id=restore_id, created_at=now, cluster_name=cluster_name, cluster_id=old_cluster_id,
        new_cluster_id=f"{cluster_id(members, token):x}", path=path,
        source=source, token=token,
        initial_cluster=format_initial_cluster({m.name: m.peer_urls for m in members}),
        members=members, bump_revision=bump_revision, kubernetes=kubernetes,
        old_members=old_members, apiserver_endpoints=apiserver_endpoints)


def plan_bytes(plan: RestorePlan, key: SigningKey | None) -> bytes:
    """The plan as a signed record (signed when ``key`` is given) bound to its cluster and id."""
    if key is not None:
        plan = plan.model_copy(update={"signing_key_id": key.key_id})
    subject = Subject(cluster=plan.cluster_name, cluster_id=plan.cluster_id, id=plan.restore_id)
    return seal_record(RESTORE_PLAN, subject, plan, key)


def write_plan(path: Path, plan: RestorePlan, key: SigningKey | None) -> None:
    """Write the plan file atomically (0644: it holds no secret)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(plan_bytes(plan, key))
    tmp.replace(path)


def read_plan(path: Path, keys: list[VerifyKey] | None, cluster_name: str) -> RestorePlan:
    """Read a plan file, check its signature (``keys=None``: not checked) and its cluster binding."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read plan file {path}: {exc.strerror or exc}") from None
    what = f"plan file {path}"
    record = parse_record(data, what)
    if record.type == RESTORE_PLAN and record.subject.cluster != cluster_name:
        raise ConfigError(f"{what} is for cluster {record.subject.cluster!r}, not {cluster_name!r}; "
                          "refusing to run it here")
    check_record(record, Expect(RESTORE_PLAN, cluster_name, record.subject.id), keys, what)
    try:
        plan = RestorePlan.model_validate(record.record)
    except ValidationError:
        raise IntegrityError(f"{what} is not a valid etcdguard restore plan") from None
    if (plan.restore_id, plan.cluster_name, plan.cluster_id) != (
            record.subject.id, record.subject.cluster, record.subject.cluster_id):
        raise IntegrityError(f"{what}: its content does not match the signed subject")
    if plan.format_version != PLAN_FORMAT:
        raise IntegrityError(f"plan file {path}: unsupported format version {plan.format_version}")
    return plan


def plan_from_json(text: str) -> RestorePlan:
    """Parse a plan as stored in a journal (already trusted: written by this node)."""
    return RestorePlan.model_validate(json.loads(text))
