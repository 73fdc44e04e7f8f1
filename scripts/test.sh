#!/usr/bin/env bash
# Set up with the test extras, then run the test suite (integration tests skip without COMFYUI_PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest -q "$@"
