#!/usr/bin/env bash
# `buf breaking`: do the protos of the working tree break the contracts published at a git
# ref (default HEAD~1, main's previous commit; or a release tag)?
#   tools/buf_breaking.sh [REF]
# The ref's proto/ is compared with today's buf.yaml and third_party/googleapis, so a change
# of buf's configuration or of the vendored protos at that ref can never fail the check.
set -euo pipefail
cd "$(dirname "$0")/.."
against="${1:-HEAD~1}"
buf="${BUF:-.venv/bin/buf}"

if ! git rev-parse -q --verify "$against^{commit}" >/dev/null \
    && [ "$(git rev-parse --is-shallow-repository)" = true ]; then
  git fetch -q --deepen=1 origin 2>/dev/null || true  # a shallow clone (CI): one more commit
fi
if ! git rev-parse -q --verify "$against^{commit}" >/dev/null; then
  if [ $# -gt 0 ]; then
    echo "buf breaking: no commit $against in this clone" >&2
    exit 1
  fi
  echo "buf breaking: SKIPPED, no previous commit in this clone (first commit, or shallow" \
    "with no origin to deepen from)" >&2
  exit 0
fi
if ! git cat-file -e "$against:proto" 2>/dev/null; then
  echo "buf breaking: $against has no proto/, nothing published to break" >&2
  exit 0
fi

base="$(mktemp -d)"
trap 'rm -rf "$base"' EXIT
git archive "$against" proto | tar -x -C "$base"
cp -R buf.yaml third_party "$base/"
"$buf" breaking --against "$base"
echo "buf breaking: no breaking change against $against"
