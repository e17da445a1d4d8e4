#!/usr/bin/env bash
# Install what the tests need (scripts/install-test-deps.sh), then run lint, types and the tests.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh
export ETCDGUARD_REQUIRE_ALL="${ETCDGUARD_REQUIRE_ALL:-1}"
echo "==> ruff"
python3 -m ruff check etcdguard tests bench
echo "==> mypy --strict"
python3 -m mypy etcdguard
echo "==> pytest"
python3 -m pytest -q -p no:cacheprovider "$@"
