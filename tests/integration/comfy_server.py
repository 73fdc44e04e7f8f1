"""A headless ComfyUI on loopback for the integration tests and benchmarks (private base dir)."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TINY_UNET = "tiny_wan_animate.safetensors"
TINY_VAE = "tiny_wan21_vae.safetensors"


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

    def rss_mb(self) -> float:
        """Resident memory of the ComfyUI process (Linux)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_server(comfy_root: Path, base: Path, tiny_weights: dict) -> ComfyServer:
    """Start ComfyUI with this pack, the test pack and the tiny weights in a fresh base directory."""
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
            return srv
        except Exception:
            if proc.poll() is not None:
                raise RuntimeError("ComfyUI failed to start:\n" + log.read_text()[-4000:])
            time.sleep(1)
    proc.kill()
    raise TimeoutError("ComfyUI did not answer within 180 s")
