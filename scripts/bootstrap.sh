# Sourced by the other scripts: a project virtualenv with every extra installed.
# The install is redone only when pyproject.toml changes (or the venv is missing).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TCC_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.tcc-installed"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)-$(cd "$ROOT" && git ls-files tcc_plugin exporters integrations 2>/dev/null | sha256sum | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  # Strict editable mode: the top-level exporters/ and integrations/ folders are
  # installed as tcc_plugin.exporters and tcc_plugin.integrations (a link tree), which
  # mypy and IDEs can follow.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
    -e "$ROOT[all,dev]" --config-settings editable_mode=strict
  echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
