"""Put a kit's files back: planned in full after every check, then applied without losing anything.

Nothing is written until the manifest's signature, the stored object's digest, the tar's digest
and every file's digest have checked (:meth:`KitCatalog.fetch`). Then, per file: identical ->
left alone; missing -> written; different -> the existing one is moved aside with a timestamp
and the kit's file written in its place. Files are written to a dot-named temp file in the
target directory (0600), given their owner and mode, synced, and renamed into place.

A file moved aside from the static pod manifests dir goes to a sibling directory
(``manifests.etcdguard-<time>/``): the kubelet runs every file in the manifests dir whose name
does not start with a dot. Elsewhere it stays beside the file (``ca.key.etcdguard-<time>``).
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import os
import posixpath
import pwd
import secrets
import shlex
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import pyrage

from etcdguard.backup.keys import VerifyKey
from etcdguard.errors import IntegrityError
from etcdguard.files import fsync_dir
from etcdguard.interrupts import deferred
from etcdguard.kit.catalog import KitCatalog
from etcdguard.kit.model import SECRET_ROLES, KitFile, KitManifest

Action = Literal["create", "unchanged", "replace"]
ASIDE_TAG = "etcdguard"


@dataclass(frozen=True)
class FileAction:
    """What restoring one kit entry does."""

    entry: KitFile
    target: Path
    action: Action
    mode: int
    uid: int
    gid: int
    aside: Path | None = None


@dataclass(frozen=True)
class RestorePlan:
    """Every action of a restore, decided before anything is written."""

    manifest: KitManifest
    root: Path
    actions: list[FileAction]
    chown: bool
    data: dict[str, bytes] = field(repr=False)

    def count(self, action: Action) -> int:
        """How many entries take ``action``."""
        return sum(1 for a in self.actions if a.action == action)


def target_path(root: Path, path: str) -> Path:
    """Where a kit path lands under ``root``; IntegrityError for a path that could escape it."""
    if not path.startswith("/") or posixpath.normpath(path) != path or "\x00" in path or path == "/":
        raise IntegrityError(f"kit lists an unsafe path {path!r}")
    return root / path.lstrip("/")


def desired_mode(entry: KitFile) -> int:
    """The mode to restore: the recorded one, never group/other access for keys and secrets."""
    return entry.mode & ~0o077 if entry.role in SECRET_ROLES else entry.mode


def owner_ids(entry: KitFile) -> tuple[int, int]:
    """uid/gid to restore: the recorded names when they exist here (like tar), else the recorded ids."""
    uid, gid = entry.uid, entry.gid
    if entry.user:
        with contextlib.suppress(KeyError):
            uid = pwd.getpwnam(entry.user).pw_uid
    if entry.group:
        with contextlib.suppress(KeyError):
            gid = grp.getgrnam(entry.group).gr_gid
    return uid, gid


def _aside_path(target: Path, manifests_dir: Path, stamp: str) -> Path:
    if target.parent == manifests_dir:
        base = manifests_dir.parent / f"{manifests_dir.name}.{ASIDE_TAG}-{stamp}" / target.name
    else:
        base = target.with_name(f"{target.name}.{ASIDE_TAG}-{stamp}")
    candidate, n = base, 1
    while candidate.exists() or candidate.is_symlink():
        candidate = base.with_name(f"{base.name}-{n}")
        n += 1
    return candidate


def _same(target: Path, entry: KitFile, data: bytes, mode: int, uid: int, gid: int, chown: bool) -> bool:
    if entry.is_dir:
        return target.is_dir()  # an existing directory is kept as it is
    st = target.lstat()
    if not stat.S_ISREG(st.st_mode) or stat.S_IMODE(st.st_mode) != mode:
        return False
    if chown and (st.st_uid, st.st_gid) != (uid, gid):
        return False
    return st.st_size == len(data) and hashlib.sha256(target.read_bytes()).hexdigest() == entry.sha256


def plan_restore(manifest: KitManifest, data: dict[str, bytes], root: Path, *,
                 now: datetime | None = None, chown: bool | None = None) -> RestorePlan:
    """Decide every action (reads the target tree, writes nothing)."""
    chown = os.geteuid() == 0 if chown is None else chown
    stamp = f"{(now or datetime.now(timezone.utc)).astimezone(timezone.utc):%Y%m%dT%H%M%SZ}"
    manifests_dir = target_path(root, manifest.sources.manifests_dir)
    actions = []
    for entry in manifest.files:
        target = target_path(root, entry.path)
        mode = desired_mode(entry)
        uid, gid = owner_ids(entry)
        body = data.get(entry.path, b"")
        if not target.exists() and not target.is_symlink():
            actions.append(FileAction(entry, target, "create", mode, uid, gid))
        elif _same(target, entry, body, mode, uid, gid, chown):
            actions.append(FileAction(entry, target, "unchanged", mode, uid, gid))
        else:
            actions.append(FileAction(entry, target, "replace", mode, uid, gid,
                                      _aside_path(target, manifests_dir, stamp)))
    return RestorePlan(manifest, root, actions, chown, data)


def _write_file(action: FileAction, data: bytes, chown: bool) -> Path:
    """Write ``data`` to a private dot-named temp file beside the target; returns its path."""
    temp = action.target.parent / f".{ASIDE_TAG}-tmp-{secrets.token_hex(6)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if chown:
                os.fchown(f.fileno(), action.uid, action.gid)
            os.fchmod(f.fileno(), action.mode)
            os.fsync(f.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp


def _make_dir(action: FileAction, chown: bool) -> None:
    action.target.parent.mkdir(parents=True, exist_ok=True)
    action.target.mkdir(mode=0o700)
    if chown:
        os.chown(action.target, action.uid, action.gid)
    os.chmod(action.target, action.mode)


def sweep_temp_files(directory: Path, older_than_seconds: float = 60.0) -> int:
    """Remove temp files a killed restore left in ``directory`` (they may hold keys); returns count."""
    removed = 0
    if not directory.is_dir():
        return 0
    cutoff = time.time() - older_than_seconds
    for leftover in directory.glob(f".{ASIDE_TAG}-tmp-*"):
        with contextlib.suppress(FileNotFoundError):
            if leftover.lstat().st_mtime < cutoff:
                leftover.unlink()
                removed += 1
    return removed


def apply_restore(plan: RestorePlan) -> list[FileAction]:
    """Carry out ``plan`` (see the module docstring); returns the actions that changed something."""
    for directory in {a.target.parent for a in plan.actions}:
        sweep_temp_files(directory)
    done = []
    for action in plan.actions:
        if action.action == "unchanged":
            continue
        if action.entry.is_dir:
            if action.action == "replace" and action.aside is not None:
                action.aside.parent.mkdir(parents=True, exist_ok=True)
                action.target.rename(action.aside)
            _make_dir(action, plan.chown)
            done.append(action)
            continue
        action.target.parent.mkdir(parents=True, exist_ok=True)
        temp = _write_file(action, plan.data[action.entry.path], plan.chown)
        try:
            with deferred():  # never stop between moving the old file aside and putting the new one
                if action.action == "replace" and action.aside is not None:
                    action.aside.parent.mkdir(parents=True, exist_ok=True)
                    action.target.rename(action.aside)
                temp.rename(action.target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        fsync_dir(action.target.parent)
        done.append(action)
    return done


def kubeadm_commands(manifest: KitManifest, root: Path) -> list[tuple[str, str]]:
    """The kubeadm commands that regenerate what the kit does not hold, in order, with why."""
    # with --rootfs kubeadm chroots into the root first, so the config path is the one inside it
    config = f" --config {shlex.quote(manifest.sources.kubeadm_config[0])}" if manifest.sources.kubeadm_config else ""
    rootfs = f" --rootfs {shlex.quote(str(root))}" if str(root) != "/" else ""
    return [
        (f"kubeadm init phase certs all{config}{rootfs}",
         "issues the leaf certificates from the restored CAs (existing CAs and keys are kept)"),
        (f"kubeadm init phase kubeconfig all{config}{rootfs}",
         "writes admin.conf, controller-manager.conf, scheduler.conf and kubelet.conf signed by the restored CA"),
        (f"kubeadm init phase control-plane all{config}{rootfs}",
         "rewrites the kube-apiserver, controller-manager and scheduler manifests (skip to keep the restored ones)"),
        (f"kubeadm init phase etcd local{config}{rootfs}",
         "rewrites etcd's manifest (skip to keep the restored one); restore etcd's data first: etcdguard restore"),
    ]


def plan_kit_restore(catalog: KitCatalog, selector: str, keys: Sequence[VerifyKey] | None,
                     identities: list[pyrage.x25519.Identity], root: Path) -> RestorePlan:
    """Resolve ``selector`` (id, prefix or "latest"), check the kit completely and plan its restore
    under ``root``; nothing is written. Apply the plan with :func:`apply_restore`."""
    manifest = catalog.open(catalog.resolve(selector, keys), keys)
    return plan_restore(manifest, catalog.fetch(manifest, identities), root)
