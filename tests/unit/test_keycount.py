"""count_keys' prefix skipping agrees with a brute-force grouping of every key."""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from etcdguard.backup.keycount import count_keys, resource_prefix


class FakeKV:
    """Just enough of MemberClient over a sorted key list."""

    def __init__(self, keys: set[bytes]) -> None:
        self.keys = sorted(keys)
        self.requests = 0

    def _range(self, key: bytes, end: bytes) -> list[bytes]:
        lo = bisect.bisect_left(self.keys, key)
        if end == b"":
            return self.keys[lo:lo + 1] if lo < len(self.keys) and self.keys[lo] == key else []
        if end == b"\x00":
            return self.keys[lo:]
        return self.keys[lo:bisect.bisect_left(self.keys, end)]

    def count(self, key: bytes, range_end: bytes, revision: int = 0, **_: Any) -> tuple[int, int]:
        self.requests += 1
        return len(self._range(key, range_end)), revision

    def first_key(self, key: bytes, range_end: bytes, revision: int = 0, **_: Any) -> bytes | None:
        self.requests += 1
        found = self._range(key, range_end)
        return found[0] if found else None


segment = st.sampled_from([b"pods", b"pods-x", b"podsz", b"a.io", b"b.example.com", b"", b"x", b"events"])
keys = st.lists(st.lists(segment, min_size=1, max_size=4).map(lambda p: b"/registry/" + b"/".join(p)),
                max_size=60).map(set)


@settings(max_examples=300, deadline=None)
@given(keys, st.sets(st.sampled_from([b"/other", b"/registry", b"/a", b"/zzz"])))
def test_counts_match_brute_force(registry_keys: set[bytes], other: set[bytes]) -> None:
    kv = FakeKV(registry_keys | other)
    counts = count_keys(kv, 5)  # type: ignore[arg-type]
    expected = Counter(p for k in registry_keys if (p := resource_prefix(k)) is not None)
    assert counts.by_prefix == dict(expected)
    assert counts.total == len(registry_keys | other)


def test_requests_scale_with_resources_not_keys() -> None:
    keys_ = {f"/registry/pods/ns/p{i}".encode() for i in range(5000)}
    keys_ |= {f"/registry/example.com/crontabs/ns/c{i}".encode() for i in range(3000)}
    kv = FakeKV(keys_)
    counts = count_keys(kv, 1)  # type: ignore[arg-type]
    assert counts.by_prefix == {"/registry/pods": 5000, "/registry/example.com/crontabs": 3000}
    assert kv.requests < 20
