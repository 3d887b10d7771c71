#!/usr/bin/env bash
# Unpacks Debian's `pgbouncer` package (1.18) and the one library it needs that a Debian base
# may lack (libc-ares2) under $1, without installing them: the package's init script would
# start a pooler on :6432 (tools/fetch_deb.sh). Run it as
# `LD_LIBRARY_PATH=$1/usr/lib/x86_64-linux-gnu $1/usr/sbin/pgbouncer` (tests/support/pgbouncer.py
# does).
set -euo pipefail
"$(dirname "$0")/fetch_deb.sh" "$1" pgbouncer libc-ares2
libs=$(dirname "$(find "$1/usr/lib" -name 'libcares.so.2' | head -n 1)")
LD_LIBRARY_PATH="$libs" "$1/usr/sbin/pgbouncer" --version | head -n 1
