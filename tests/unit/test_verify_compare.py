"""Pure comparisons of the verifier: HashKV proof and key-count differences."""

from __future__ import annotations

from etcdguard.backup.manifest import HashKVRecord, KeyCounts
from etcdguard.etcd.client import HashKV
from etcdguard.verify.compare import diff_key_counts, judge_hash, judge_hash_error, summarize

EXPECTED = HashKVRecord(revision=100, hash=42, compact_revision=50)


def _actual(hash_: int = 42, compact: int = 50) -> HashKV:
    return HashKV(revision=100, hash=hash_, compact_revision=compact, member_id=1)


def test_matching_hash_passes() -> None:
    verdict = judge_hash(EXPECTED, _actual())
    assert verdict.proof == "passed" and "matches" in verdict.detail


def test_different_hash_fails_naming_both() -> None:
    verdict = judge_hash(EXPECTED, _actual(hash_=7))
    assert verdict.proof == "failed"
    assert "manifest 42" in verdict.detail and "restored 7" in verdict.detail


def test_different_compact_revision_is_never_passed() -> None:
    for hash_ in (42, 7):  # even an equal hash over another window proves nothing
        verdict = judge_hash(EXPECTED, _actual(hash_=hash_, compact=60))
        assert verdict.proof == "inconclusive"
        assert "compact revision differs (manifest 50, restored 60)" in verdict.detail


def test_hash_errors() -> None:
    assert judge_hash_error(EXPECTED, "etcdserver: mvcc: required revision has been compacted").proof \
        == "inconclusive"
    assert judge_hash_error(EXPECTED, "mvcc: required revision is a future revision").proof == "failed"
    assert judge_hash_error(EXPECTED, "boom").proof == "failed"


def test_key_count_differences() -> None:
    want = KeyCounts(total=10, by_prefix={"/registry/pods": 4, "/registry/secrets": 2})
    assert diff_key_counts(want, want) == []
    got = KeyCounts(total=9, by_prefix={"/registry/pods": 3, "/registry/a.io/things": 1})
    assert diff_key_counts(want, got) == [
        "total keys: manifest 10, restored 9",
        "/registry/a.io/things: manifest 0, restored 1",
        "/registry/pods: manifest 4, restored 3",
        "/registry/secrets: manifest 2, restored 0",
    ]


def test_summarize_elides() -> None:
    assert summarize(["a", "b"]) == "a; b"
    assert summarize([str(i) for i in range(8)], limit=3) == "0; 1; 2; and 5 more"
