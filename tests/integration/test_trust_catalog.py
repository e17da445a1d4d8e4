"""Records planted in the bucket by someone without the signing key count for nothing.

Real etcd, real SeaweedFS, the real CLI: decoy manifests (unsigned, no object, dated after the real
backups and in 2099) and a verdict copied from another backup against prune, check's freshness,
"latest" and `backups list/show/delete`.
"""

from __future__ import annotations

import json

import pytest

from tests.integration.snapshot_fixtures import assert_one_line_error
from tests.integration.trust_fixtures import FAR_FUTURE_ID, Bucket, bucket  # noqa: F401 - fixture

pytestmark = pytest.mark.integration
KEEP_TWO = ["--keep-last", "2", "--hourly", "0", "--daily", "0", "--weekly", "0", "--monthly", "0",
            "--min-count", "2"]


def test_decoys_take_no_retention_slot_and_are_never_pruned(bucket: Bucket) -> None:
    decoys = bucket.plant_decoys()
    result = bucket.cli("backups", "prune", "--yes", "-o", "json", *KEEP_TWO, env=bucket.env)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["deleted"] == [] and plan["delete"] == []
    assert set(bucket.ids()) == set(bucket.real) | set(decoys)  # nothing deleted, real or planted
    reasons = {b["backup_id"]: b["reasons"] for b in plan["backups"]}
    assert all("untrusted" in " ".join(reasons[d]) for d in decoys)
    assert reasons[bucket.real[-1]] == ["last 2"] and reasons[bucket.real[0]] == ["last 2"]
    # a third real backup: now retention deletes the oldest real one, still never a decoy
    third = bucket.cli(*bucket.snapshot_args(), env=bucket.env)
    assert third.returncode == 0, third.stderr
    result = bucket.cli("backups", "prune", "--yes", "-o", "json", *KEEP_TWO, env=bucket.env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["deleted"] == [bucket.real[0]]
    assert set(decoys) <= set(bucket.ids())


def test_decoys_are_listed_as_untrusted_and_removed_only_by_an_explicit_delete(bucket: Bucket) -> None:
    decoys = bucket.plant_decoys(2)
    listed = bucket.cli("backups", "list", "-o", "json", env=bucket.env)
    assert listed.returncode == 0, listed.stderr
    trust = {b["backup_id"]: b["trust"] for b in json.loads(listed.stdout)}
    assert trust == {**{i: "trusted" for i in bucket.real}, **{d: "untrusted" for d in decoys}}
    table = bucket.cli("backups", "list", env=bucket.env)
    assert "UNTRUSTED" in table.stdout and "3 untrusted backup(s)" in table.stderr
    shown = bucket.cli("backups", "show", FAR_FUTURE_ID, env=bucket.env)
    assert shown.returncode == 0 and "UNTRUSTED" in shown.stdout and "not signed" in shown.stdout
    deleted = bucket.cli("backups", "delete", FAR_FUTURE_ID, "--yes", env=bucket.env)
    assert deleted.returncode == 0, deleted.stderr
    assert FAR_FUTURE_ID not in bucket.ids()


def test_latest_is_the_newest_trusted_backup(bucket: Bucket, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bucket.plant_decoys()
    out = tmp_path / "latest.db"
    result = bucket.cli("backups", "download", "latest", "-o", str(out), "--identity", str(bucket.keys.identity),
                        env=bucket.env)
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size == bucket.manifest(bucket.real[-1]).snapshot.size
    assert bucket.catalog().resolve("latest") == bucket.real[-1]
    assert_one_line_error(bucket.cli("backups", "download", "latest-verified", "-o", str(tmp_path / "v.db"),
                                     "--identity", str(bucket.keys.identity), env=bucket.env),
                          8, "no trusted verified backup")
    bucket.sign_verdict(bucket.real[0])
    assert bucket.catalog().resolve("latest-verified") == bucket.real[0]


def _check(bucket: Bucket) -> dict[str, dict[str, str]]:
    env = {**bucket.env, "ETCDGUARD_MONITOR__MAX_BACKUP_AGE_HOURS": "0.0001"}  # real backups are "too old"
    result = bucket.cli("check", "--endpoints", ",".join(bucket.cluster.endpoints), "-o", "json", env=env)
    assert result.returncode in (0, 1, 2), result.stderr
    return {c["name"]: c for c in json.loads(result.stdout)["checks"]}


def test_a_decoy_dated_2099_earns_no_freshness_credit(bucket: Bucket) -> None:
    assert _check(bucket)["backup_age"]["severity"] == "CRITICAL"
    bucket.plant_decoys(1)
    checks = _check(bucket)
    assert checks["backup_age"]["severity"] == "CRITICAL", checks["backup_age"]
    assert "future" not in checks["backup_age"]["summary"]


@pytest.mark.parametrize("edit_id", [False, True], ids=["copied", "copied-and-relabelled"])
def test_a_verdict_copied_from_another_backup_counts_for_nothing(bucket: Bucket, edit_id: bool) -> None:
    older, newer = bucket.real
    bucket.sign_verdict(older)
    assert _check(bucket)["verification"]["severity"] == "OK"
    bucket.copy_verdict(older, newer, edit_id=edit_id)
    checks = _check(bucket)
    assert checks["verification"]["severity"] == "WARNING", checks["verification"]
    assert "no backup has been verified" in checks["verification"]["summary"]
    entry = bucket.catalog().entry(newer)
    assert entry.trusted and entry.verification is None and entry.verification_problem
    listed = json.loads(bucket.cli("backups", "list", "-o", "json", env=bucket.env).stdout)
    assert {b["backup_id"]: b["verification"] for b in listed} == {older: "never", newer: "never"}


def test_without_trusted_keys_nothing_counts(bucket: Bucket) -> None:
    env = {k: v for k, v in bucket.env.items() if k != "ETCDGUARD_SIGNING_PUBLIC_KEYS"}
    listed = bucket.cli("backups", "list", "-o", "json", env=env)
    assert {b["trust"] for b in json.loads(listed.stdout)} == {"untrusted"}
    pruned = bucket.cli("backups", "prune", "--yes", "-o", "json", "--keep-last", "0", "--min-count", "1",
                        env=env)
    assert pruned.returncode == 0 and json.loads(pruned.stdout)["deleted"] == []
    assert set(bucket.ids()) == set(bucket.real)


def test_planted_strings_are_shown_not_obeyed(bucket: Bucket) -> None:
    """A manifest whose member name and version carry Rich markup and terminal escapes."""
    from etcdguard.backup.manifest import MANIFEST_NAME, seal_manifest

    hostile = "[red]evil[/red]\x1b[2J"
    m = bucket.manifest(bucket.real[-1])
    decoy_id = "20261129T000000Z-bad001"
    decoy = m.model_copy(update={"backup_id": decoy_id, "source": m.source.model_copy(
        update={"name": hostile, "etcd_version": hostile})})
    bucket.store().put_bytes(f"default/{decoy_id}/{MANIFEST_NAME}", seal_manifest(decoy, None))
    for args in (["backups", "list"], ["backups", "show", decoy_id]):
        result = bucket.cli(*args, env=bucket.env)
        assert result.returncode == 0, result.stderr
        assert "[red]evil[/red]" in result.stdout and "\\x1b[2J" in result.stdout, result.stdout
        assert "\x1b" not in result.stdout + result.stderr


def test_a_genuine_record_replayed_under_another_id_cluster_or_type_fails(bucket: Bucket, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Copies of real signed records, moved by a bucket writer, are refused by download (exit 6)
    and counted as untrusted by the catalog."""
    from etcdguard.backup.manifest import ENCRYPTED_OBJECT, MANIFEST_NAME, VERIFICATION_NAME

    store, (older, newer) = bucket.store(), bucket.real
    bucket.sign_verdict(newer)
    replays = {
        "another id": ("default", "20261129T235959Z-0c0c0c", MANIFEST_NAME),
        "another cluster": ("staging", newer, MANIFEST_NAME),
        "another type": ("default", "20261129T235958Z-0d0d0d", VERIFICATION_NAME),
    }
    for cluster, backup_id, source in replays.values():
        for name in (ENCRYPTED_OBJECT, source):
            data = store.get_bytes(f"default/{newer}/{name}")
            store.put_bytes(f"{cluster}/{backup_id}/{MANIFEST_NAME if name == source else name}", data)
    for what, (cluster, backup_id, _) in replays.items():
        result = bucket.cli("backups", "download", backup_id, "--cluster-name", cluster, "-o",
                            str(tmp_path / f"{backup_id}.db"), "--identity", str(bucket.keys.identity), env=bucket.env)
        assert_one_line_error(result, 6, "manifest of")
        assert not (tmp_path / f"{backup_id}.db").exists(), what
    listed = json.loads(bucket.cli("backups", "list", "-o", "json", env=bucket.env).stdout)
    trust = {b["backup_id"]: b["trust"] for b in listed}
    assert trust == {older: "trusted", newer: "trusted", "20261129T235959Z-0c0c0c": "untrusted",
                     "20261129T235958Z-0d0d0d": "unreadable"}
    staging = json.loads(bucket.cli("backups", "list", "--cluster-name", "staging", "-o", "json",
                                    env=bucket.env).stdout)
    assert [(b["backup_id"], b["trust"]) for b in staging] == [(newer, "untrusted")]
