"""Pure comparisons between what a manifest recorded and what the restored copy answers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from etcdguard.backup.manifest import HashKVRecord, KeyCounts
from etcdguard.etcd.client import HashKV

HashProof = Literal["passed", "failed", "inconclusive"]
MAX_LISTED = 5


@dataclass(frozen=True)
class HashVerdict:
    """Outcome of the HashKV comparison and a one-line explanation."""

    proof: HashProof
    detail: str


def judge_hash(expected: HashKVRecord, actual: HashKV) -> HashVerdict:
    """Compare HashKV at the manifest's revision; differing compact revisions are never a pass.

    The hash covers the revisions between the compact revision and the hashed one, so two
    hashes over different compaction windows prove nothing either way.
    """
    rev = expected.revision
    if actual.compact_revision != expected.compact_revision:
        return HashVerdict("inconclusive",
                           f"compact revision differs (manifest {expected.compact_revision}, restored "
                           f"{actual.compact_revision}): HashKV at revision {rev} is not comparable")
    if actual.hash == expected.hash:
        return HashVerdict("passed", f"HashKV {actual.hash} at revision {rev} matches")
    return HashVerdict("failed", f"HashKV at revision {rev} differs (manifest {expected.hash}, "
                                 f"restored {actual.hash})")


def judge_hash_error(expected: HashKVRecord, message: str) -> HashVerdict:
    """HashKV on the restored copy refused the manifest's revision."""
    rev = expected.revision
    if "compacted" in message:
        return HashVerdict("inconclusive", f"revision {rev} is compacted on the restored copy "
                                           "(the source compacted between HashKV and the snapshot)")
    if "future revision" in message:
        return HashVerdict("failed", f"the restored copy has no revision {rev} yet: the snapshot is "
                                     "older than the manifest says")
    return HashVerdict("failed", f"HashKV at revision {rev} failed on the restored copy: {message}")


def diff_key_counts(expected: KeyCounts, actual: KeyCounts) -> list[str]:
    """Human-readable differences (``total``, then each differing prefix); [] when equal."""
    out = []
    if expected.total != actual.total:
        out.append(f"total keys: manifest {expected.total}, restored {actual.total}")
    for prefix in sorted(set(expected.by_prefix) | set(actual.by_prefix)):
        want, got = expected.by_prefix.get(prefix, 0), actual.by_prefix.get(prefix, 0)
        if want != got:
            out.append(f"{prefix}: manifest {want}, restored {got}")
    return out


def summarize(differences: list[str], limit: int = MAX_LISTED) -> str:
    """Join differences on one line, eliding after ``limit``."""
    shown = "; ".join(differences[:limit])
    more = len(differences) - limit
    return f"{shown}; and {more} more" if more > 0 else shown
