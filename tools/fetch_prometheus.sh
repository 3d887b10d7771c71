#!/usr/bin/env bash
# Unpacks Debian's `prometheus` package (prometheus 2.42 and promtool) under $1, without
# installing it: its init script would start a server on :9090 (tools/fetch_deb.sh).
set -euo pipefail
"$(dirname "$0")/fetch_deb.sh" "$1" prometheus
"$1/usr/bin/promtool" --version | head -n 1
