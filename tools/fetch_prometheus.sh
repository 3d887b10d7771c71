#!/usr/bin/env bash
# Unpacks Debian's `prometheus` package (prometheus 2.42 and promtool) under $1, without
# installing it: the package ships an init script that dpkg runs wherever no policy-rc.d
# forbids it, which would start a server on :9090. Needs apt's package lists (an
# `apt-get update` if the first download fails) and dpkg-deb; no root for the download itself.
set -euo pipefail
dest=$(realpath -m "$1")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod a+rwx "$work"  # apt's _apt user downloads into it
cd "$work"
if ! apt-get download -q prometheus >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  apt-get download -q prometheus >/dev/null
fi
mkdir -p "$dest"
dpkg-deb -x prometheus_*.deb "$dest"
"$dest/usr/bin/promtool" --version | head -n 1
