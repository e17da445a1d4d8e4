#!/usr/bin/env bash
# Fetch Debian's etcd-server/etcd-client .debs for one suite (default: trixie, etcd 3.5.16)
# and extract them under DEST, without touching the system's apt configuration.
#
# The package mirror is taken at run time from this machine's own apt sources, so no
# host name lives in the repository.
#
# ETCD_DEBIAN_VERSION (optional) pins the package version, e.g. 3.5.16-4 (the image build does).
#
# usage: scripts/fetch-etcd-debian.sh [DEST] [SUITE] [EXTRA_PACKAGES...]
set -euo pipefail

dest="${1:-/opt/etcdguard-test/etcd-trixie}"
suite="${2:-trixie}"
shift $(( $# > 2 ? 2 : $# )) || true
pin="${ETCD_DEBIAN_VERSION:+=$ETCD_DEBIAN_VERSION}"
packages=("etcd-server$pin" "etcd-client$pin" "$@")

if [[ -x "$dest/usr/bin/etcd" && -x "$dest/usr/bin/etcdctl" ]]; then
  echo "etcd ($suite) already present in $dest"
  exit 0
fi

uris=""
for f in /etc/apt/sources.list.d/*.sources; do
  [[ -f "$f" ]] || continue
  uris="$(sed -n 's/^URIs:[[:space:]]*//p' "$f" | head -1)"
  [[ -n "$uris" ]] && break
done
if [[ -z "$uris" && -f /etc/apt/sources.list ]]; then
  uris="$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list)"
fi
if [[ -z "$uris" ]]; then
  echo "fetch-etcd-debian: no Debian mirror found in this machine's apt sources" >&2
  exit 1
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$scratch/sources.list.d" "$scratch/lists/partial" "$scratch/cache/archives/partial" "$scratch/debs"
cat > "$scratch/sources.list.d/$suite.sources" <<SRC
Types: deb
URIs: $uris
Suites: $suite
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC

apt_opts=(
  -o "Dir::Etc::sourcelist=/dev/null"
  -o "Dir::Etc::sourceparts=$scratch/sources.list.d"
  -o "Dir::State::Lists=$scratch/lists"
  -o "Dir::Cache=$scratch/cache"
  -o "Dir::State::status=/dev/null"
  -o "APT::Get::List-Cleanup=0"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=root"
)
apt-get "${apt_opts[@]}" -q update >/dev/null
(cd "$scratch/debs" && apt-get "${apt_opts[@]}" -q download "${packages[@]}" >/dev/null)
mkdir -p "$dest"
for deb in "$scratch"/debs/*.deb; do
  dpkg-deb -x "$deb" "$dest"
done
"$dest/usr/bin/etcd" --version | head -1
