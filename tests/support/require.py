"""One rule for missing test prerequisites: skip locally, fail in CI (``ETCDGUARD_REQUIRE_ALL=1``)."""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

REQUIRE_ALL = os.environ.get("ETCDGUARD_REQUIRE_ALL") == "1"


def missing(what: str) -> NoReturn:
    """A prerequisite is missing: fail under ETCDGUARD_REQUIRE_ALL=1, else skip the test."""
    if REQUIRE_ALL:
        pytest.fail(f"{what} (ETCDGUARD_REQUIRE_ALL=1: nothing may be skipped)")
    pytest.skip(what)


def require_tool(name: str) -> str:
    """Path of a command on PATH, or :func:`missing`."""
    path = shutil.which(name)
    if path is None:
        missing(f"{name} not installed (scripts/install-test-deps.sh)")
    return path
