#!/usr/bin/env bash
# Installs Debian's `chromium`, the browser the back office's tests drive through Playwright
# (Playwright's own browser download cannot work here), and a font for its screenshots (its
# other recommends, upower, udev and such, are not needed headless). Quiet, non-interactive;
# needs root (or a password-less sudo) and apt's package lists (refreshed once if need be).
set -euo pipefail
as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if ! sudo -n true 2>/dev/null; then
    echo "chromium is missing and installing it needs root: apt-get install chromium" >&2
    exit 1
  fi
  as_root=(sudo -n)
fi
export DEBIAN_FRONTEND=noninteractive
install() { "${as_root[@]}" apt-get install -y -q --no-install-recommends chromium fonts-liberation >/dev/null; }
if ! install 2>/dev/null; then
  "${as_root[@]}" apt-get update -q >/dev/null
  install
fi
chromium --version
