"""The service's HTTP router and catalog cache (no sockets)."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from etcdguard.service.http import CachedValue, Endpoints, Request, Router, parse_head

TOKEN = b"t" * 32


def _endpoints(calls: list[bool]) -> Endpoints:
    def view(auth: bool) -> tuple[int, Any]:
        calls.append(auth)
        return 200, {"detail": auth}

    def broken(auth: bool) -> tuple[int, dict[str, Any]]:
        raise RuntimeError("boom password=hunter2 /var/lib/etcdguard/backups")

    return Endpoints(healthz=lambda: (200, {"ok": True}), readyz=broken, metrics=lambda: b"m 1\n",
                     backups=view, status=view)


def _status_and_body(raw: bytes) -> tuple[int, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body) if body.startswith(b"{") else body


def test_api_detail_only_with_the_right_bearer_token() -> None:
    calls: list[bool] = []
    router = Router(_endpoints(calls), TOKEN)
    get = lambda headers: _status_and_body(router.handle(Request("GET", "/api/v1/status", headers)))  # noqa: E731
    assert get({}) == (200, {"detail": False})
    assert get({"authorization": "Bearer " + TOKEN.decode()}) == (200, {"detail": True})
    assert get({"authorization": "Bearer nope"})[0] == 401
    assert get({"authorization": "Basic " + TOKEN.decode()})[0] == 401
    assert _status_and_body(Router(_endpoints(calls), None).handle(
        Request("GET", "/api/v1/backups", {"authorization": "Bearer x"})))[0] == 401
    assert calls == [False, True]


def test_errors_are_one_scrubbed_line_and_never_reach_the_client(caplog: pytest.LogCaptureFixture) -> None:
    router = Router(_endpoints([]), None)
    with caplog.at_level(logging.ERROR):
        status, body = _status_and_body(router.handle(Request("GET", "/readyz", {})))
    assert status == 500 and "boom" not in json.dumps(body) and "/var/lib" not in json.dumps(body)
    (record,) = caplog.records
    assert record.exc_info is None and "hunter2" not in record.getMessage()
    assert _status_and_body(router.handle(Request("POST", "/healthz", {})))[0] == 405
    assert _status_and_body(router.handle(Request("GET", "/nope", {})))[0] == 404


def test_parse_head() -> None:
    req = parse_head(b"GET /api/v1/status/?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer abc")
    assert req == Request("GET", "/api/v1/status", {"host": "a", "authorization": "Bearer abc"})
    assert parse_head(b"garbage") is None and parse_head(b"GET / SMTP") is None


def test_cached_value_loads_once_per_max_age() -> None:
    loads: list[int] = []
    cache = CachedValue(lambda: loads.append(1) or len(loads), max_age=3600)
    assert cache.get() == 1 and cache.get() == 1 and loads == [1]
    cache.invalidate()
    assert cache.get() == 2


def test_readyz_shows_error_texts_only_with_the_token() -> None:
    from etcdguard.service.daemon import Dependency

    seen: list[bool] = []

    def readyz(detail: bool) -> tuple[int, dict[str, Any]]:
        seen.append(detail)
        return 503, {"store": Dependency(False, "cannot reach http://10.1.2.3:8333/bucket").as_dict(detail)}

    endpoints = Endpoints(healthz=lambda: (200, {}), readyz=readyz, metrics=lambda: b"", backups=lambda a: (200, {}),
                          status=lambda a: (200, {}))
    router = Router(endpoints, TOKEN)
    anonymous = _status_and_body(router.handle(Request("GET", "/readyz", {})))
    wrong = _status_and_body(router.handle(Request("GET", "/readyz", {"authorization": "Bearer nope"})))
    full = _status_and_body(router.handle(Request("GET", "/readyz", {"authorization": "Bearer " + TOKEN.decode()})))
    assert anonymous[0] == wrong[0] == full[0] == 503  # probes without a token still see readiness
    assert "10.1.2.3" not in json.dumps(anonymous[1]) and "10.1.2.3" not in json.dumps(wrong[1])
    assert anonymous[1]["store"]["up"] is False and anonymous[1]["store"]["error"]
    assert "10.1.2.3" in full[1]["store"]["error"]
    assert seen == [False, False, True]
