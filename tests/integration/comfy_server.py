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


def tiny_weight_paths(root: Path) -> dict[str, Path]:
    """Where the tiny random Wan weights sit in the ComfyUI checkout ``root`` (``start_server``'s
    ``weights``)."""
    return {"unet": root / "models" / "diffusion_models" / TINY_UNET, "vae": root / "models" / "vae" / TINY_VAE}


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

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

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


def start_server(
    comfy_root: Path,
    base: Path,
    tiny_weights: dict,
    *,
    front_end_root: Path | None = None,
    user_directory: Path | None = None,
    database_url: str | None = None,
    settings: dict | None = None,
    extra_args: tuple[str, ...] = (),
) -> ComfyServer:
    """Start ComfyUI with this pack, the test pack and the tiny weights in a fresh base directory.

    ``front_end_root`` serves another frontend build (a comfyui-frontend-package ``static/`` folder);
    ``user_directory`` and ``database_url`` (e.g. ``sqlite:///:memory:``) keep the user's settings
    and the database private to the test; ``settings`` are written as the default user's
    comfy.settings.json before the start (e.g. ``{"Comfy.TutorialCompleted": True}``)."""
    for sub in ("custom_nodes", "models/diffusion_models", "models/vae", "models/loras", "input", "output", "temp", "user"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    (base / "custom_nodes" / "ComfyUI-EverAnimate").symlink_to(REPO, target_is_directory=True)
    shutil.copytree(REPO / "tests" / "integration" / "testpack", base / "custom_nodes" / "everanimate_testpack")
    (base / "models" / "diffusion_models" / TINY_UNET).symlink_to(tiny_weights["unet"])
    (base / "models" / "vae" / TINY_VAE).symlink_to(tiny_weights["vae"])
    args = ["--base-directory", str(base), "--disable-auto-launch"]
    if front_end_root is not None:
        args += ["--front-end-root", str(front_end_root)]
    if user_directory is not None:
        user_directory.mkdir(parents=True, exist_ok=True)
        args += ["--user-directory", str(user_directory)]
    if database_url is not None:
        args += ["--database-url", database_url]
    if settings:
        user_dir = user_directory if user_directory is not None else base / "user"
        (user_dir / "default").mkdir(parents=True, exist_ok=True)
        (user_dir / "default" / "comfy.settings.json").write_text(json.dumps(settings, indent=2))
    port = _free_port()
    log = base / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port), *args, *extra_args],
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
