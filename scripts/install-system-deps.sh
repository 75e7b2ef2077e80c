#!/usr/bin/env bash
# System packages the tests need (Debian), installed only when missing. One line per
# package: the command that shows it is there, then the package that provides it.
set -euo pipefail
PACKAGES=(
  "redis-server redis-server"  # the shared-ledger tests start their own on loopback
)
missing=()
for entry in "${PACKAGES[@]}"; do
  read -r command package <<<"$entry"
  command -v "$command" >/dev/null 2>&1 || missing+=("$package")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: missing ${missing[*]} (needs root and apt-get); the tests that need them skip" >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
