#!/usr/bin/env bash
# The test command: installs what the tests need, then lint, types and the test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
bash "$ROOT/scripts/install-system-deps.sh"
cd "$ROOT"
echo "== ruff"
ruff check .
echo "== mypy --strict (tcc_plugin, exporters, integrations)"
# Checked as the installed package so the exporters/ and integrations/ mapping resolves.
(cd "$(mktemp -d)" && mypy --strict -p tcc_plugin)
echo "== system packages"
bash "$ROOT/scripts/install-system-deps.sh"
echo "== pytest"
pytest "$@"
