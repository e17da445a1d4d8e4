"""Verification with the process sandbox against real etcd 3.4 / 3.5 backups."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from etcdguard.backup.keys import load_verify_key
from etcdguard.backup.manifest import ENCRYPTED_OBJECT, MANIFEST_NAME, VERIFICATION_NAME
from etcdguard.backup.signed import VERIFICATION, Expect, open_record
from etcdguard.errors import ConfigError, IntegrityError, VerificationFailedError
from etcdguard.steps import StepRecord, StepState
from tests.integration.verify_fixtures import (  # noqa: F401 - fixtures
    Backups,
    assert_port_closed,
    backups,
    make_backup,
    no_leftovers,
    source_cluster,
    workdir,
)

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_leftovers")]

ALL_STEPS = {"manifest", "sandbox", "download", "snapshot status", "restore", "hashkv", "key counts",
             "smoke test", "teardown"}


def _recorded(b: Backups, backup_id: str) -> dict[str, object]:
    raw = b.store.get_bytes(f"{b.catalog.prefix(backup_id)}/{VERIFICATION_NAME}")
    expect = Expect(VERIFICATION, b.cluster, backup_id)
    return open_record(raw, expect, [load_verify_key(b.keys.signing_pub)], "verdict").record


@pytest.mark.parametrize("version", ["3.4.23", "3.5.1", "3.5.16"])
def test_good_backup_passes(tmp_path: Path, backups: Backups, workdir: Path, version: str) -> None:
    with source_cluster(tmp_path / "src", version) as cluster, cluster.client() as client:
        manifest = make_backup(backups, client)
    events: list[tuple[str, str]] = []
    report = backups.verifier("process", workdir, on_step=lambda r: events.append((r.name, r.state.value))
                              ).verify(manifest.backup_id)
    v = report.verification
    assert v.result == "passed", v.reason
    assert (v.hash_proof, v.key_counts_match) == ("passed", True)
    assert v.snapshot_revision is not None and v.snapshot_revision >= manifest.hashkv.revision
    if version == "3.5.1":  # 3.5.0-3.5.2 are never a sandbox: the newest 3.5 verifies it
        assert (v.etcd_version_used, v.etcd_version_exact) == ("3.5.16", False)
        assert "etcd 3.5.1 has a data-inconsistency bug" in v.reason
    else:
        assert (v.etcd_version_used, v.etcd_version_exact) == (version, True) and v.reason == ""
    assert v.sandbox.startswith("process:")
    assert set(v.steps) >= ALL_STEPS and v.steps["total"] > 0
    assert {state for _, state in events} == {"running", "done"}
    assert report.recorded and _recorded(backups, manifest.backup_id)["result"] == "passed"
    assert backups.catalog.entry(manifest.backup_id).verification_state == "verified"
    assert report.running is not None
    assert_port_closed(report.running.endpoint)
    report.raise_for_result()


def test_content_not_matching_manifest_fails_with_reason(tmp_path: Path, backups: Backups,
                                                        workdir: Path) -> None:
    with source_cluster(tmp_path / "a", "3.5.16", objects=120, seed=1) as a, \
            source_cluster(tmp_path / "b", "3.5.16", objects=160, seed=2) as b, \
            a.client() as ca, b.client() as cb:
        forged = make_backup(backups, cb, manifest_from=ca)  # B's snapshot, A's numbers, validly signed
    report = backups.verifier("process", workdir).verify(forged.backup_id)
    v = report.verification
    assert v.result == "failed"
    assert v.hash_proof == "failed" and "HashKV at revision" in v.reason
    assert v.key_counts_match is False and "key counts differ" in v.reason
    # at the manifest's revision B holds as many keys as A did, but not the same resources
    assert report.differences and all(d.startswith("/registry/") for d in report.differences)
    print(v.reason)
    assert _recorded(backups, forged.backup_id)["result"] == "failed"
    assert backups.catalog.entry(forged.backup_id).verification_state == "failed"
    with pytest.raises(VerificationFailedError, match="HashKV"):
        report.raise_for_result()


def test_truncated_object_is_refused_before_download_and_recorded(tmp_path: Path, backups: Backups,
                                                                 workdir: Path) -> None:
    with source_cluster(tmp_path / "src", "3.5.16") as cluster, cluster.client() as client:
        manifest = make_backup(backups, client)
    path = backups.store.path_of(f"{backups.catalog.prefix(manifest.backup_id)}/{ENCRYPTED_OBJECT}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    events: list[tuple[str, str]] = []
    with pytest.raises(IntegrityError, match=f"the stored object is {len(data) // 2} bytes, its manifest says "
                                             f"{len(data)}"):
        backups.verifier("process", workdir, on_step=lambda r: events.append((r.name, r.state.value))
                         ).verify(manifest.backup_id)
    assert ("download", "failed") in events
    recorded = _recorded(backups, manifest.backup_id)
    assert recorded["result"] == "failed" and "refusing it before download" in str(recorded["reason"])


def test_edited_manifest_is_refused_and_recorded(tmp_path: Path, backups: Backups, workdir: Path) -> None:
    with source_cluster(tmp_path / "src", "3.4.23") as cluster, cluster.client() as client:
        manifest = make_backup(backups, client)
    key = f"{backups.catalog.prefix(manifest.backup_id)}/{MANIFEST_NAME}"
    raw = backups.store.get_bytes(key).replace(f'"hash": {manifest.hashkv.hash}'.encode(), b'"hash": 1')
    backups.store.put_bytes(key, raw)
    with pytest.raises(IntegrityError, match="signature"):
        backups.verifier("process", workdir).verify(manifest.backup_id)
    assert _recorded(backups, manifest.backup_id)["result"] == "failed"


def test_differing_compact_revision_is_inconclusive_never_passed(tmp_path: Path, backups: Backups,
                                                                 workdir: Path) -> None:
    with source_cluster(tmp_path / "src", "3.5.16") as cluster, cluster.client() as client:
        manifest = make_backup(backups, client, hashkv_overrides={"compact_revision": 5})
    report = backups.verifier("process", workdir).verify(manifest.backup_id)
    v = report.verification
    assert (v.result, v.hash_proof) == ("failed", "inconclusive")
    assert "compact revision differs" in v.reason and v.key_counts_match is True
    lenient = backups.verifier("process", workdir, accept_inconclusive_hash=True).verify(manifest.backup_id)
    assert (lenient.verification.result, lenient.verification.hash_proof) == ("passed", "inconclusive")
    assert "inconclusive" in lenient.verification.reason


def test_nearest_version_is_used_and_said(tmp_path: Path, backups: Backups, workdir: Path) -> None:
    with source_cluster(tmp_path / "src", "3.5.16") as cluster, cluster.client() as client:
        manifest = make_backup(backups, client, etcd_version="3.5.9")
    v = backups.verifier("process", workdir).verify(manifest.backup_id).verification
    assert v.result == "passed", v.reason
    assert (v.etcd_version_used, v.etcd_version_exact) == ("3.5.16", False)
    assert "etcd 3.5.9 not available: verified with etcd 3.5.16" in v.reason


def test_ctrl_c_mid_verification_leaves_nothing(tmp_path: Path, backups: Backups, workdir: Path) -> None:
    with source_cluster(tmp_path / "src", "3.5.1") as cluster, cluster.client() as client:
        manifest = make_backup(backups, client)
    seen: dict[str, str] = {}

    def on_step(record: StepRecord) -> None:
        seen[record.name] = record.detail
        if (record.name, record.state) == ("hashkv", StepState.running):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        backups.verifier("process", workdir, on_step=on_step).verify(manifest.backup_id)
    found = re.search(r"https://127\.0\.0\.1:\d+", seen["restore"])
    assert found is not None, seen["restore"]
    assert_port_closed(found.group(0))
    assert backups.catalog.entry(manifest.backup_id).verification is None


def test_unsigned_verdicts_fail_closed(tmp_path: Path, backups: Backups, workdir: Path) -> None:
    with pytest.raises(ConfigError, match="--allow-unsigned"):
        backups.verifier("process", workdir, signing_key=None)
    with source_cluster(tmp_path / "src", "3.5.16") as cluster, cluster.client() as client:
        manifest = make_backup(backups, client)
    report = backups.verifier("process", workdir, signing_key=None, allow_unsigned=True).verify(
        manifest.backup_id)
    assert report.passed and report.verification.signing_key_id is None
    raw = backups.store.get_bytes(f"{backups.catalog.prefix(manifest.backup_id)}/{VERIFICATION_NAME}")
    assert b'"signature"' not in raw


@pytest.mark.parametrize("version", ["3.4.23", "3.5.16"])
def test_compacted_keyspace_with_deletes_passes(tmp_path: Path, backups: Backups, workdir: Path,
                                                version: str) -> None:
    with source_cluster(tmp_path / "src", version) as cluster, cluster.client() as client:
        client.delete(b"/registry/pods/", b"/registry/pods0")
        client.compact(client.status().revision)
        manifest = make_backup(backups, client)
    assert manifest.hashkv.compact_revision > 0
    v = backups.verifier("process", workdir).verify(manifest.backup_id).verification
    assert (v.result, v.hash_proof, v.key_counts_match) == ("passed", "passed", True), v.reason
    assert v.snapshot_revision == manifest.hashkv.revision


def test_empty_keyspace_passes(tmp_path: Path, backups: Backups, workdir: Path) -> None:
    from tests.support.etcd_cluster import etcd_cluster

    with etcd_cluster(tmp_path / "src", "3.5.16") as cluster, cluster.client() as client:
        manifest = make_backup(backups, client)
    v = backups.verifier("process", workdir).verify(manifest.backup_id).verification
    assert v.result == "passed", v.reason
    assert v.snapshot_revision == manifest.hashkv.revision == 1
