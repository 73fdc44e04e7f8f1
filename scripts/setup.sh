#!/usr/bin/env bash
# Create .venv (once) and install the package with the given extras, pinning the CPU torch
# from constraints-dev.txt. Usage: bash scripts/setup.sh [extras]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
extras="${1:-}"
target="."
[ -n "$extras" ] && target=".[$extras]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints-dev.txt torch -e "$target"
