#!/usr/bin/env bash
# Installs the trace backends the end-to-end export tests start (Arize Phoenix, and the
# rotel OpenTelemetry collector) into a virtualenv of their own, cached under the user's
# cache directory: the first run downloads about 300 MB (about 1 minute here, 900 MB on
# disk), later runs only check a stamp. Prints the virtualenv's path on its last line.
#
#   scripts/phoenix.sh            # install if needed; print the venv path
#   TCC_PHOENIX_VENV=/some/dir scripts/phoenix.sh
#
# Kept apart from the project's venv: Phoenix pins many packages of its own.
set -euo pipefail
PHOENIX_VERSION="20.26.1"
ROTEL_VERSION="0.0.1a15"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/tcc-plugin"
VENV="${TCC_PHOENIX_VENV:-$CACHE/phoenix-venv}"
PYTHON="${PYTHON:-python3}"
WANT="arize-phoenix==$PHOENIX_VERSION rotel==$ROTEL_VERSION"
STAMP="$VENV/.tcc-installed"

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  mkdir -p "$(dirname "$VENV")"
  # One installer at a time (parallel test runs share the cache).
  exec 9>"$(dirname "$VENV")/.phoenix-venv.lock"
  flock 9
  if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "installing $WANT into $VENV (first run only)" >&2
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check $WANT >&2
    "$VENV/bin/phoenix" --help >/dev/null
    "$VENV/bin/python" -c "import rotel, pathlib; assert (pathlib.Path(rotel.__file__).parent / 'rotel-agent').exists()"
    echo "$WANT" > "$STAMP"
  fi
fi
echo "$VENV"
