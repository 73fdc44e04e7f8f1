"""Integration tests against a real ComfyUI checkout (path in COMFYUI_PATH).

Run them with the Python environment ComfyUI runs in, e.g.
    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-venv/bin/python -m pytest tests/integration
They skip, saying why, when COMFYUI_PATH is unset. The tiny random Wan2.2-Animate weights are built
with ComfyUI's own classes by ../shared/fixtures/parity/make_tiny_weights.py when missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("EVERANIMATE_SHARED", REPO.parent / "shared"))
TINY_UNET = "tiny_wan_animate.safetensors"
TINY_VAE = "tiny_wan21_vae.safetensors"


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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """A headless ComfyUI on loopback with a private base directory (models, input, output)."""

    def __init__(self, root: Path, base: Path, port: int, proc: subprocess.Popen, log: Path):
        self.root, self.base, self.port, self.proc, self.log = root, base, port, proc, log
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return json.loads(r.read())

    def post(self, path: str, payload: dict):
        req = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                body = r.read()
                return r.status, (json.loads(body) if body else {})
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def queue(self, prompt: dict) -> str:
        status, body = self.post("/prompt", {"prompt": prompt, "client_id": "everanimate-tests"})
        assert status == 200, body
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 1800) -> dict:
        end = time.time() + timeout
        while time.time() < end:
            h = self.get(f"/history/{prompt_id}")
            if prompt_id in h:
                return h[prompt_id]
            if self.proc.poll() is not None:
                raise RuntimeError("ComfyUI exited:\n" + self.log.read_text()[-4000:])
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")


@pytest.fixture(scope="session")
def server(comfy_root, tiny_weights, tmp_path_factory):
    base = tmp_path_factory.mktemp("comfy_base")
    for sub in ("custom_nodes", "models/diffusion_models", "models/vae", "models/loras", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / "ComfyUI-EverAnimate").symlink_to(REPO, target_is_directory=True)
    shutil.copytree(REPO / "tests" / "integration" / "testpack", base / "custom_nodes" / "everanimate_testpack")
    (base / "models" / "diffusion_models" / TINY_UNET).symlink_to(tiny_weights["unet"])
    (base / "models" / "vae" / TINY_VAE).symlink_to(tiny_weights["vae"])
    port = _free_port()
    log = base / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), "--base-directory", str(base), "--disable-auto-launch"],
        cwd=comfy_root, stdout=open(log, "w"), stderr=subprocess.STDOUT,
    )
    srv = ComfyServer(comfy_root, base, port, proc, log)
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            srv.get("/object_info/EverAnimateLongAnimation")
            break
        except Exception:
            if proc.poll() is not None:
                raise RuntimeError("ComfyUI failed to start:\n" + log.read_text()[-4000:])
            time.sleep(1)
    else:
        proc.kill()
        raise TimeoutError("ComfyUI did not answer within 180 s")
    yield srv
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
