"""e2e tests share the integration fixtures (SeaweedFS)."""

from tests.integration.conftest import s3_bucket, seaweed, weed_binary  # noqa: F401
