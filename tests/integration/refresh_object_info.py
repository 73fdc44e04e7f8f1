"""Refresh tests/data/object_info.json (the schema snapshot) from a real ComfyUI with this pack.

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-venv/bin/python tests/integration/refresh_object_info.py

Starts a headless ComfyUI on the tiny weights (as the integration tests do), asks it for
/object_info, and runs ``workflows/build.py --object-info`` so the workflow files follow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from comfy_server import start_server, tiny_weight_paths  # noqa: E402


def main() -> int:
    root = Path(os.environ["COMFYUI_PATH"]).resolve()
    weights = tiny_weight_paths(root)
    missing = [str(p) for p in weights.values() if not p.exists()]
    if missing:
        print(f"missing tiny weights {missing}: run the integration tests once to build them", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as base:
        srv = start_server(root, Path(base), weights)
        try:
            return subprocess.call([sys.executable, str(HERE.parents[1] / "workflows" / "build.py"), "--object-info", srv.url])
        finally:
            srv.proc.terminate()
            srv.proc.wait(30)


if __name__ == "__main__":
    sys.exit(main())
