#!/usr/bin/env bash
# Unpacks Debian packages under $1 without installing them (a package's init script would
# start its server wherever no policy-rc.d forbids it): `tools/fetch_deb.sh DEST PACKAGE...`.
# Needs apt's package lists (an `apt-get update` if the first download fails) and dpkg-deb;
# no root for the download itself.
set -euo pipefail
dest=$(realpath -m "$1")
shift
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod a+rwx "$work"  # apt's _apt user downloads into it
cd "$work"
if ! apt-get download -q "$@" >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  apt-get download -q "$@" >/dev/null
fi
mkdir -p "$dest"
for package in "$@"; do dpkg-deb -x "${package}"_*.deb "$dest"; done
