#!/usr/bin/env bash
# The main job: installs the project (first run only), then runs the demo.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
# bubblewrap for the code verifier's sandbox (as root; otherwise a warning and the
# verifier falls back to a weaker mode, saying so once)
bash "$ROOT/scripts/install-system-deps.sh"
cd "$(mktemp -d)"  # the repository root is not an import root (see the README)
if python -c "import tcc_plugin.app.demo" 2>/dev/null; then
  exec tcc demo --traces "$ROOT/tcc-traces.jsonl" "$@"
fi
exec python "$ROOT/examples/budgeted_agent.py" --traces "$ROOT/tcc-traces.jsonl" "$@"
