"""The restore as journaled steps: each idempotent, with a done-check and an undo where it changes
something. Old data and manifests are moved aside with a timestamp, never deleted.

Order: fetch (checked) -> pre-flight -> snapshot restore into a new dir beside the old one (encryption
keys checked meanwhile, and a resumed run's staged body against etcd's trailer) -> emergency snapshots
-> stop kube-apiserver -> stop etcd -> move the old data aside -> swap the restored dir in -> fencing -> start etcd ->
remove the staged snapshot (while etcd starts) -> wait until healthy -> post-restore checks ->
clean stale master leases -> start kube-apiserver. Nothing is changed before "stop
kube-apiserver": a bad backup or a failed pre-flight check leaves the node as it was, and the
cluster's downtime is only the stop-to-start part. The fetch, pre-flight and emergency snapshots
are in :mod:`etcdguard.restore.source`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from etcdguard.backup.streams import trailer_matches
from etcdguard.errors import AbortedError, EtcdGuardError, IntegrityError, TransientError
from etcdguard.etcd.binaries import EtcdVersion
from etcdguard.etcd.client import MemberClient, MemberInfo
from etcdguard.etcd.datadir import wal_ids
from etcdguard.etcd.tools import RestoreSpec, SnapshotTool, child_env, restore
from etcdguard.restore import crictl
from etcdguard.restore.discovery import parse_initial_cluster, url_port
from etcdguard.restore.fencing import check_fence, fence_targets, port_open, wait_ports_closed
from etcdguard.restore.job import JobParams, Services
from etcdguard.restore.plan import member_id
from etcdguard.restore.preflight import owner_of, parse_owner, selinux_enabled
from etcdguard.restore.runmode import KubeadmStaticPods, RunMode, run_mode_for
from etcdguard.restore.source import SourceSteps
from etcdguard.steps import Step, StepContext

MASTERLEASES = b"/registry/masterleases/"
CHANGING_STEPS = ("stop-apiserver", "stop-etcd", "move-aside", "swap-in", "start-etcd",
                  "clean-masterleases", "start-apiserver")


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with ``prefix``."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


def hash_partners(own: str, plan_order: Sequence[str], listed: Sequence[MemberInfo]) -> list[tuple[str, str]]:
    """(name, client URL) of the members whose HashKV a part compares: its own member and the next
    one after it in the plan (wrapping around) that has a client URL. Each part comparing with its
    successor, the parts together compare every member, at two HashKV computations per member
    instead of one per part. Fewer than two listed members: none; its own not listed: all."""
    urls = {m.name: m.client_urls[0] for m in listed if m.client_urls}
    if len(listed) < 2:
        return []
    if own not in urls:
        return list(urls.items())
    ring = [n for n in plan_order if n in urls] + [n for n in urls if n not in plan_order]
    at = ring.index(own)
    successor = next((ring[(at + k) % len(ring)] for k in range(1, len(ring))), None)
    return [(own, urls[own])] + ([(successor, urls[successor])] if successor else [])


def _times(n: int) -> str:
    return f"{n} time" if n == 1 else f"{n} times"


class RestoreJob:
    """Builds the steps of one node's part of a restore (see the module docstring)."""

    def __init__(self, params: JobParams, services: Services, mode: RunMode | None = None) -> None:
        self.p = params
        self.s = services
        self.plan = params.plan
        self.member = self.plan.member(params.member_name)
        self.local = params.local.member()
        self.mode = mode or self._mode()
        self.tool = SnapshotTool(Path(params.etcdutl), EtcdVersion.parse(params.etcdutl_version),
                                 params.etcdutl_is_etcdutl)
        self.client_tls = params.client_tls.files()
        data_dir = self.local.data_dir
        self.aside_data = data_dir.with_name(f"{data_dir.name}.etcdguard-old-{params.stamp}")
        self.new_data = data_dir.with_name(f"{data_dir.name}.etcdguard-new-{params.stamp}")
        self.restored_aside = data_dir.with_name(f"{data_dir.name}.etcdguard-restored-{params.stamp}")
        wal = self.local.wal_dir
        self.aside_wal = wal.with_name(f"{wal.name}.etcdguard-old-{params.stamp}") if wal else None
        self.new_wal = wal.with_name(f"{wal.name}.etcdguard-new-{params.stamp}") if wal else None
        self.restored_wal = wal.with_name(f"{wal.name}.etcdguard-restored-{params.stamp}") if wal else None
        self.expected_member_id = member_id(self.member.peer_urls, self.plan.token)
        self.source = SourceSteps(params, services, self.tool, self.local, self.client_tls,
                                  lambda: self._fence(remote_only=True))

    def _mode(self) -> RunMode:
        return run_mode_for(self.s.settings.restore, Path(self.p.manifests_dir), self.p.run_mode)

    @property
    def endpoint(self) -> str:
        """The restored member's client URL etcdguard talks to (loopback first)."""
        urls = [*self.local.listen_client_urls, *self.member.client_urls, *self.local.client_urls]
        loop = [u for u in urls if "127.0.0.1" in u or "localhost" in u]
        return (loop or urls)[0]

    def _wait(self, text: str) -> None:
        if self.s.on_wait is not None:
            self.s.on_wait(text)

    # -- the plan ----------------------------------------------------------------------------
    def steps(self) -> list[Step]:
        """Every step of this node's part, in order."""
        p = self.plan
        source = (f"backup {p.source.backup_id}" if p.source.kind == "backup"
                  else f"survivor {p.source.survivor}")
        steps = [
            Step("fetch", self.source.fetch, check=self.source.fetched, detail=f"fetch and check {source}"),
            Step("preflight", self.source.preflight, detail="disk, memory, quota, tool"),
            Step("restore-snapshot", self.restore_snapshot, check=self.prepared, undo=self.undo_prepare,
                 detail="snapshot restore into a new dir; encryption keys (and a resumed run's trailer) meanwhile"),
            Step("emergency-snapshot", self.source.emergency_snapshot, detail="snapshot answering members"),
            Step("stop-apiserver", self.stop_apiserver, undo=self.undo_stop_apiserver,
                 detail="kubeadm: manifest out of the manifests dir; port closed"),
            Step("stop-etcd", self.stop_etcd, undo=self.undo_stop_etcd, detail="client and peer ports closed"),
            Step("move-aside", self.move_aside, check=self.moved_aside, undo=self.undo_move_aside,
                 detail="old data (and wal) dir renamed with a timestamp"),
            Step("swap-in", self.swap_in, check=self.restored, undo=self.undo_restore,
                 detail="the restored data (and wal) dir takes the old one's place"),
            Step("fence", self.fence, detail="old members and apiservers must be down"),
            Step("start-etcd", self.start_etcd, undo=self.undo_start_etcd, detail="start the restored member"),
            Step("clean-staging", self.clean_staging, detail="remove the decrypted snapshot while etcd starts"),
            Step("wait-healthy", self.wait_healthy, detail="leader elected, linearizable read"),
            Step("post-checks", self.post_checks, detail="alarms, HashKV of this member and the next, revision"),
            Step("clean-masterleases", self.clean_masterleases, detail="stale /registry/masterleases/ entries"),
            Step("start-apiserver", self.start_apiserver, undo=self.undo_start_apiserver,
                 detail="and wait until it listens"),
        ]
        return steps

    # -- stop ----------------------------------------------------------------------------------
    def _wait_closed(self, ports: list[tuple[str, int]], what: str) -> None:
        self._wait(f"waiting for {what} to stop")
        still = wait_ports_closed(ports, self.p.stop_timeout)
        if still:
            raise TransientError(f"{what} still listens on {', '.join(f'{h}:{p}' for h, p in still)} after "
                                 f"{self.p.stop_timeout:g}s")
        if isinstance(self.mode, KubeadmStaticPods):  # the ports can close before the runtime is done
            name = "kube-apiserver" if "apiserver" in what else "etcd"
            if crictl.wait_gone(name, self.p.stop_timeout):
                raise TransientError(f"crictl still lists a running {name} container after {self.p.stop_timeout:g}s")

    def _apiserver_ports(self) -> list[tuple[str, int]]:
        a = self.p.apiserver
        return [(a.host, a.secure_port)] if a else []

    def stop_apiserver(self, ctx: StepContext) -> str:
        if not self.mode.has_apiserver and self.p.apiserver is None:
            return "no kube-apiserver on this node"
        detail = self.mode.stop_apiserver(self.p.manifests_aside)
        self._wait_closed(self._apiserver_ports(), "kube-apiserver")
        return detail

    def undo_stop_apiserver(self, ctx: StepContext) -> str:
        return self.mode.start_apiserver(self.p.manifests_aside)

    def stop_etcd(self, ctx: StepContext) -> str:
        detail = self.mode.stop_etcd(self.p.manifests_aside)
        self._wait_closed(self.local.ports, "etcd")
        return detail + "; its ports are closed"

    def undo_stop_etcd(self, ctx: StepContext) -> str:
        detail = self.mode.restore_original_etcd(self.p.manifests_aside)
        host, port = url_port(self.endpoint)
        deadline = time.monotonic() + self.p.start_timeout
        while not port_open(host, port) and time.monotonic() < deadline:
            time.sleep(0.2)
        return detail + ("; the old member listens again" if port_open(host, port) else "")

    # -- data --------------------------------------------------------------------------------
    def moved_aside(self, ctx: StepContext) -> bool:
        return not self.local.data_dir.exists() and (self.aside_data.exists() or ctx.result.get("nothing") is True)

    def move_aside(self, ctx: StepContext) -> str:
        moved = list(ctx.result.get("moved", []))
        data = self.local.data_dir
        if data.exists():
            owner = owner_of(data)
            ctx.save(owner=list(owner) if owner else None)
            data.rename(self.aside_data)
            moved.append(str(self.aside_data))
            ctx.save(moved=moved)
        wal = self.local.wal_dir
        if wal is not None and self.aside_wal is not None and wal.exists() and data not in wal.parents:
            wal.rename(self.aside_wal)
            moved.append(str(self.aside_wal))
            ctx.save(moved=moved)
        if not moved:
            ctx.save(nothing=True)
            return f"{data} did not exist: nothing to move"
        return "kept " + ", ".join(moved)

    def undo_move_aside(self, ctx: StepContext) -> str:
        back = []
        for aside, original in ((self.aside_data, self.local.data_dir), (self.aside_wal, self.local.wal_dir)):
            if aside is None or original is None or not aside.exists():
                continue
            if original.exists():
                original.rename(original.with_name(f"{original.name}.etcdguard-rolledback-{self.p.stamp}"))
            aside.rename(original)
            back.append(str(original))
        return "put back " + ", ".join(back) if back else "nothing was moved"

    def _restored_id(self) -> int | None:
        wal = self.local.wal_dir or self.local.data_dir / "member" / "wal"
        try:
            return wal_ids(wal)[0]
        except (OSError, ValueError):
            return None

    def restored(self, ctx: StepContext) -> bool:
        return self.local.data_dir.is_dir() and self._restored_id() == self.expected_member_id

    def prepared(self, ctx: StepContext) -> bool:
        """The new dir holds this plan's member (or it was swapped in already)."""
        wal = self.new_wal or self.new_data / "member" / "wal"
        try:
            return wal_ids(wal)[0] == self.expected_member_id or self.restored(ctx)
        except (OSError, ValueError):
            return self.restored(ctx)

    def restore_snapshot(self, ctx: StepContext) -> str:
        """``snapshot restore`` into a new dir beside the data dir: the live member is not touched.

        Beside it, on the other cores, the checks that read the snapshot: the encryption key names,
        and, for a snapshot an earlier process staged (a resumed run), its body against etcd's sha256
        trailer (etcdutl's own hash check, done here so it overlaps the restore). A snapshot this
        process fetched needs no second pass: the fetch proved every byte. Either refusal removes
        the new dir: nothing was changed.
        """
        self.discard_new()  # our own partial output from an interrupted attempt
        self.source.ensure_staged(ctx)
        bump = self.plan.bump_revision or None
        spec = RestoreSpec(snapshot=self.p.snapshot_path, data_dir=self.new_data, name=self.member.name,
                           initial_cluster=parse_initial_cluster(self.plan.initial_cluster),
                           token=self.plan.token, wal_dir=self.new_wal, skip_hash_check=True,
                           bump_revision=bump, mark_compacted=bump is not None)
        proven = self.source.staged_here
        with ThreadPoolExecutor(2) as pool:
            body = None if proven else pool.submit(trailer_matches, self.p.snapshot_path)
            scan = pool.submit(self.source.encryption_check)
            try:
                restore(self.tool, spec, timeout=max(600.0, self.p.start_timeout))
            except BaseException:
                self.discard_new()
                raise
            finally:
                intact, encryption = body.result() if body else True, scan.result()
        if not intact:
            self.discard_new()
            raise IntegrityError(f"the staged snapshot {self.p.snapshot_path} does not match etcd's sha256 "
                                 "trailer (damaged since the fetch); nothing was changed")
        ctx.save(encryption=encryption.line())
        if not encryption.ok and (not encryption.overridable or not self.p.force):
            self.discard_new()
            raise AbortedError(f"pre-flight refused the restore, nothing was changed: {encryption.name}: "
                               f"{encryption.detail}")
        self._own(self.new_data)
        if self.new_wal is not None:
            self._own(self.new_wal)
        bumped = f", revisions bumped by {bump:,} (marked compacted)" if bump else ", revisions kept"
        forced = "FORCED past " if not encryption.ok else ""
        how = "proven by this run's fetch" if proven else "matches etcd's trailer"
        return (f"{self.new_data} as member {self.member.name} ({self.expected_member_id:x}), body {how}"
                f"{bumped}; {forced}{encryption.name}: {encryption.detail}")

    def discard_new(self) -> list[str]:
        """Remove the restored dirs that were never swapped in (etcdguard's own output, not data)."""
        removed = []
        for leftover in (self.new_data, self.new_wal):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover)
                removed.append(str(leftover))
        return removed

    def undo_prepare(self, ctx: StepContext) -> str:
        removed = self.discard_new()
        return "removed " + ", ".join(removed) if removed else "no restored dir left to remove"

    def swap_in(self, ctx: StepContext) -> str:
        wal = self.local.wal_dir
        if self.local.data_dir.exists():
            raise AbortedError(f"{self.local.data_dir} exists again (recreated by someone else?); "
                               "move it away and --resume")
        if not self.new_data.exists():
            raise AbortedError(f"the restored dir {self.new_data} is gone: run 'etcdguard restore --rollback' "
                               "and restore again")
        if self.new_wal is not None and wal is not None:
            if self.new_wal.exists():
                if wal.exists():
                    raise AbortedError(f"{wal} exists again (recreated by someone else?); move it away and --resume")
                wal.parent.mkdir(parents=True, exist_ok=True)
                self.new_wal.rename(wal)
            elif self._restored_id() != self.expected_member_id:  # else: moved in before an interruption
                raise AbortedError(f"the restored wal dir {self.new_wal} is gone: run 'etcdguard restore "
                                   "--rollback' and restore again")
        self.new_data.rename(self.local.data_dir)
        return f"{self.local.data_dir} is member {self.member.name} ({self.expected_member_id:x})"

    def _own(self, path: Path) -> None:
        os.chmod(path, 0o700)
        owner = parse_owner(self.local.owner) if self.local.owner else None
        if owner is None:
            owner = owner_of(self.local.data_dir) or owner_of(self.aside_data)
        if owner is not None and os.geteuid() == 0:
            for root, dirs, files in os.walk(path):
                for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                    os.chown(name, *owner)
        if selinux_enabled() and shutil.which("restorecon"):
            subprocess.run(["restorecon", "-R", str(path)], capture_output=True, timeout=120, check=False,
                           env=child_env())

    def undo_restore(self, ctx: StepContext) -> str:
        if self._restored_id() != self.expected_member_id:
            return "no restored data in place"
        moved = []
        for there, aside in ((self.local.data_dir, self.restored_aside), (self.local.wal_dir, self.restored_wal)):
            if there is not None and aside is not None and there.exists():
                there.rename(aside)
                moved.append(str(aside))
        return "moved the restored data to " + ", ".join(moved)

    # -- start -------------------------------------------------------------------------------
    def _fence(self, *, remote_only: bool) -> str:
        """Probe the old world; ``remote_only`` leaves out this node's own member and apiserver
        (they are stopped by later steps)."""
        api = self.p.apiserver
        apis = [*self.plan.apiserver_endpoints, *([api.url] if api is not None and not remote_only else [])]
        mine: set[tuple[str, int]] = set()
        if remote_only:
            mine = {url_port(u) for u in (*self.local.client_urls, *self.local.peer_urls,
                                          *self.local.listen_client_urls, *self.local.listen_peer_urls)}
            mine |= {(api.host, api.secure_port)} if api is not None else set()
        targets = fence_targets(self.plan.old_members, apis, leave_out=mine)
        result = check_fence(targets, self.plan.new_cluster_id, peer_tls=self.p.peer_tls.files(),
                             client_tls=self.client_tls)
        if not result.ok:
            if not self.p.force:
                raise AbortedError("fencing: the old cluster still answers; the restored data must never meet "
                                   f"it: {', '.join(result.alive)}. Stop them (or pass --force)"
                                   + ("" if remote_only else " and --resume"))
            return f"FORCED although still answering: {', '.join(result.alive)}"
        return f"{result.checked} old ports and apiservers are down"

    def fence(self, ctx: StepContext) -> str:
        return self._fence(remote_only=False)

    def start_etcd(self, ctx: StepContext) -> str:
        # the restored cluster's token (etcd reads it only when bootstrapping): a kubeadm manifest
        # then differs from the crash-looping one, so the kubelet starts a new pod at once instead
        # of inheriting its restart back-off (up to five minutes)
        flags: dict[str, str] = {"initial-cluster-token": self.plan.token}
        if self.local.initial_cluster != self.plan.initial_cluster:
            flags["initial-cluster"] = self.plan.initial_cluster
        env = {"ETCDGUARD_MEMBER_NAME": self.member.name, "ETCDGUARD_DATA_DIR": str(self.local.data_dir),
               "ETCDGUARD_INITIAL_CLUSTER": self.plan.initial_cluster,
               "ETCDGUARD_INITIAL_CLUSTER_TOKEN": self.plan.token}
        return self.mode.start_etcd(self.p.manifests_aside, flags, env)

    def undo_start_etcd(self, ctx: StepContext) -> str:
        if isinstance(self.mode, KubeadmStaticPods):
            detail = self.mode.stop_restored_etcd(self.p.manifests_aside)
        else:
            detail = self.mode.stop_etcd(self.p.manifests_aside)
        self._wait_closed(self.local.ports, "the restored etcd")
        return detail

    def wait_healthy(self, ctx: StepContext) -> str:
        deadline = time.monotonic() + self.p.start_timeout
        last, began, restarts, asked = "no answer", time.monotonic(), 0, 0.0
        while True:
            try:
                with MemberClient(self.endpoint, tls=self.client_tls, timeout=2.0) as client:
                    st = client.status()
                    if st.leader:
                        client.get(b"/__etcdguard/ready")
                        if f"{st.cluster_id:x}" != self.plan.new_cluster_id:
                            raise AbortedError(f"{self.endpoint} reports cluster {st.cluster_id:x}, not the restored "
                                               f"cluster {self.plan.new_cluster_id}")
                        restarts = max(restarts, self.mode.etcd_restarts() or 0)
                        ctx.save(revision=st.revision, version=st.version, restarts=restarts)
                        rebuilt = f"; etcd restarted {_times(restarts)} while it rebuilt" if restarts else ""
                        return (f"serving: cluster {self.plan.new_cluster_id}, revision {st.revision:,}, "
                                f"etcd {st.version}{rebuilt}")
                    last = "no leader yet"
            except AbortedError:
                raise
            except EtcdGuardError as exc:
                last = str(exc)
            waited = time.monotonic() - began
            need = len(self.plan.members) // 2 + 1
            extra = f"; a quorum of {need} of {len(self.plan.members)} members must run their part" \
                if not self.plan.single else ""
            if time.monotonic() - asked >= 1.0:  # the supervisor is asked once a second, not at every poll
                restarts, asked = max(restarts, self.mode.etcd_restarts() or 0), time.monotonic()
            restarted = f" (etcd restarted {_times(restarts)})" if restarts else ""
            self._wait(f"waiting for etcd ({waited:.0f}s){restarted}: {last}{extra}")
            if time.monotonic() >= deadline:
                raise TransientError(f"the restored member did not become healthy in {self.p.start_timeout:g}s "
                                     f"({last}{restarted}){extra}; fix it and run etcdguard restore --resume")
            # every 50 ms at first (a restored member usually serves within a second), then calmer
            time.sleep(0.05 if waited < 5 else 0.5)

    def post_checks(self, ctx: StepContext) -> str:
        notes = []
        with MemberClient(self.endpoint, tls=self.client_tls, timeout=10) as client:
            alarms = client.alarms()
            status = client.status()
            members = client.member_list()
        if alarms:
            notes.append("ALARMS: " + ", ".join(f"{a.alarm} on {a.member_id:x}" for a in alarms))
        rev = status.revision
        def hash_of(url: str) -> int | None:
            with contextlib.suppress(EtcdGuardError), MemberClient(url, tls=self.client_tls, timeout=10) as c:
                return c.hash_kv(rev).hash
            return None

        asked = hash_partners(self.member.name, [m.name for m in self.plan.members], members)
        with ThreadPoolExecutor(max(1, len(asked))) as pool:  # one member: nothing to compare
            answers = list(pool.map(hash_of, [url for _, url in asked]))
        hashes = {name: h for (name, _), h in zip(asked, answers, strict=True) if h is not None}
        if len(set(hashes.values())) > 1:
            raise IntegrityError(f"HashKV at revision {rev} differs between members: {hashes}")
        pre = ctx.journal.record("preflight")
        source_rev = int(pre.result.get("revision", 0)) if pre else 0
        if self.plan.bump_revision and rev < source_rev + self.plan.bump_revision:
            raise IntegrityError(f"revision {rev:,} is below the bumped revision "
                                 f"{source_rev + self.plan.bump_revision:,}")
        ctx.save(revision=rev, hashes={k: f"{v:x}" for k, v in hashes.items()}, members=len(members))
        agree = f"HashKV agrees on {', '.join(hashes)}" if hashes else "one member, no HashKV to compare"
        notes.append(f"{len(members)} member(s), revision {rev:,}, {agree}")
        return "; ".join(notes)

    def clean_masterleases(self, ctx: StepContext) -> str:
        if not self.plan.kubernetes:
            return "not Kubernetes data"
        with MemberClient(self.endpoint, tls=self.client_tls, timeout=10) as client:
            deleted = client.delete(MASTERLEASES, prefix_end(MASTERLEASES))
        return f"deleted {deleted} stale /registry/masterleases/ entries"

    def start_apiserver(self, ctx: StepContext) -> str:
        if self.p.apiserver is None and not self.mode.has_apiserver:
            return "no kube-apiserver on this node"
        detail = self.mode.start_apiserver(self.p.manifests_aside)
        ports = self._apiserver_ports()
        deadline = time.monotonic() + self.p.start_timeout
        while ports and not all(port_open(*p) for p in ports):
            if time.monotonic() >= deadline:
                raise TransientError(f"kube-apiserver does not listen on {ports[0][0]}:{ports[0][1]} after "
                                     f"{self.p.start_timeout:g}s")
            self._wait("waiting for kube-apiserver to listen")
            time.sleep(0.3)
        return detail + ("; listening" if ports else "")

    def undo_start_apiserver(self, ctx: StepContext) -> str:
        detail = self.mode.stop_apiserver(self.p.manifests_aside)
        self._wait_closed(self._apiserver_ports(), "kube-apiserver")
        return detail

    def clean_staging(self, ctx: StepContext) -> str:
        self.p.snapshot_path.unlink(missing_ok=True)
        return f"removed the staged snapshot from {self.p.work}"
