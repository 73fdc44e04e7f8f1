#!/usr/bin/env bash
# The main job: set up, then render a minute of animation with the embedded EverAnimate-Tiny.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m everanimate_core demo "$@"
