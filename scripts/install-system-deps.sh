#!/usr/bin/env bash
# System packages the tests need, installed on a fresh Debian/Ubuntu machine when
# missing (as root; otherwise it only says what is missing). One "command package" a line.
set -euo pipefail
NEEDED="
bwrap bubblewrap
redis-server redis-server
"
missing=()
while read -r command package; do
  [ -n "${command:-}" ] || continue
  command -v "$command" >/dev/null 2>&1 || missing+=("$package")
done <<< "$NEEDED"
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "warning: missing system packages (install them as root): ${missing[*]}" >&2
fi
