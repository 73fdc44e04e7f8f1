"""Integration tests against a real ComfyUI checkout (path in COMFYUI_PATH).

Run them with the Python environment ComfyUI runs in, e.g.
    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-venv/bin/python -m pytest tests/integration
They skip, saying why, when COMFYUI_PATH is unset. The tiny random Wan2.2-Animate weights are built
with ComfyUI's own classes by ../shared/fixtures/parity/make_tiny_weights.py when missing.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from comfy_server import TINY_UNET, TINY_VAE, start_server  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("EVERANIMATE_SHARED", REPO.parent / "shared"))


def comfy_path() -> Path:
    p = os.environ.get("COMFYUI_PATH")
    if not p:
        pytest.skip("COMFYUI_PATH is not set: integration tests need a real ComfyUI checkout (see tests/integration/conftest.py)")
    path = Path(p).resolve()
    if not (path / "main.py").exists():
        pytest.skip(f"COMFYUI_PATH={p} is not a ComfyUI checkout (no main.py)")
    return path


@pytest.fixture(scope="session")
def comfy_root() -> Path:
    return comfy_path()


@pytest.fixture(scope="session")
def tiny_weights(comfy_root) -> dict[str, Path]:
    """Paths of the tiny Wan-Animate model and the Wan 2.1 VAE (built with ComfyUI's classes)."""
    unet = comfy_root / "models" / "diffusion_models" / TINY_UNET
    vae = comfy_root / "models" / "vae" / TINY_VAE
    if not (unet.exists() and vae.exists()):
        script = SHARED / "fixtures" / "parity" / "make_tiny_weights.py"
        if not script.exists():
            pytest.skip(f"tiny Wan weights missing and {script} not found to build them")
        subprocess.run([sys.executable, str(script), "--comfy", str(comfy_root)], check=True, capture_output=True)
    return {"unet": unet, "vae": vae}


@pytest.fixture(scope="session")
def comfy(comfy_root):
    """ComfyUI imported in this process (CPU), plus this pack imported as a package."""
    if str(comfy_root) not in sys.path:
        sys.path.insert(0, str(comfy_root))
    argv = sys.argv
    sys.argv = [str(comfy_root / "main.py"), "--cpu"]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401
        import comfy.model_management  # noqa: F401
        import comfy.sd
        import comfy.sample  # noqa: F401
        import comfy.samplers  # noqa: F401
        import folder_paths  # noqa: F401
        import node_helpers  # noqa: F401
    finally:
        sys.argv = argv
    return comfy


@pytest.fixture(scope="session")
def pack(comfy):
    """This repository imported the way ComfyUI imports a custom node pack."""
    name = "everanimate_pack_under_test"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    import importlib as il

    mod.nodes = il.import_module(f"{name}.nodes")
    return mod


@pytest.fixture(scope="session")
def server(comfy_root, tiny_weights, tmp_path_factory):
    srv = start_server(comfy_root, tmp_path_factory.mktemp("comfy_base"), tiny_weights)
    yield srv
    srv.stop()
