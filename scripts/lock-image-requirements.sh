#!/usr/bin/env bash
# Regenerate requirements/image.txt: every runtime dependency of etcdguard (pyproject.toml's
# [project] dependencies) and the build backend, pinned with sha256 hashes, for the image's
# Python (3.11, Linux). The Dockerfile installs it with `pip install --require-hashes`.
#
# Needs pip-tools (installed into a scratch virtualenv) and the package index; the machine's
# pip configuration (local wheel dirs, constraints) is ignored so the hashes are the index's.
#
# usage: scripts/lock-image-requirements.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export PIP_CONFIG_FILE=/dev/null
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_CONSTRAINT PIP_INDEX_URL || true

python3 -m venv "$scratch/venv"
"$scratch/venv/bin/pip" install -q pip-tools
# The build backend (pyproject's [build-system] requires) is installed from the same lock.
printf 'setuptools>=68\nwheel\n' > "$scratch/build.in"
"$scratch/venv/bin/pip-compile" -q --generate-hashes --allow-unsafe --strip-extras --no-emit-index-url \
  --output-file requirements/image.txt.new pyproject.toml "$scratch/build.in"
sed -e "s|$scratch/build.in|build backend (setuptools, wheel)|" \
    -e 's|pip-compile .*|scripts/lock-image-requirements.sh|' \
  requirements/image.txt.new > requirements/image.txt
rm -f requirements/image.txt.new
echo "wrote requirements/image.txt"
