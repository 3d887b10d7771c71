#!/usr/bin/env bash
# Unpacks Debian's `pgbouncer` package (1.18) and the one library it needs that a Debian base
# may lack (libc-ares2) under $1, without installing them (the package's init script would
# start a pooler on :6432). Run it as `LD_LIBRARY_PATH=$1/usr/lib/x86_64-linux-gnu
# $1/usr/sbin/pgbouncer` (tests/support/pgbouncer.py does). Needs apt's package lists (an
# `apt-get update` if the first download fails) and dpkg-deb; no root for the download itself.
set -euo pipefail
dest=$(realpath -m "$1")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod a+rwx "$work"  # apt's _apt user downloads into it
cd "$work"
if ! apt-get download -q pgbouncer libc-ares2 >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
  apt-get download -q pgbouncer libc-ares2 >/dev/null
fi
mkdir -p "$dest"
for deb in pgbouncer_*.deb libc-ares2_*.deb; do dpkg-deb -x "$deb" "$dest"; done
libs=$(dirname "$(find "$dest/usr/lib" -name 'libcares.so.2' | head -n 1)")
LD_LIBRARY_PATH="$libs" "$dest/usr/sbin/pgbouncer" --version | head -n 1
