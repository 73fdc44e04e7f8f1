"""Benchmark of the face path in real ComfyUI: encoders at every step vs once per chunk (prints numbers; not a test).

    COMFYUI_PATH=/path/to/ComfyUI nice -n 10 /path/to/comfy-venv/bin/python tests/integration/bench_face.py \\
        [--faces 9 77] [--modes every_step once] [--steps 20] [--threads 2] [--cfg 1.0]

One chunk of the tiny random Wan2.2-Animate (64x64 pixels, K = 4, as many pixel frames as face
frames, 512x512 face crops of random pixels) is sampled through the pack's ComfyUI backend under
torch.inference_mode (as the server runs nodes) and decoded. ``every_step`` is ComfyUI's native
behaviour (``cache_face=False``: motion + face encoders at every model call); ``once`` is the
face-motion cache. Each configuration runs in its own child process, so its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of the child) is its own. Threads are pinned in the
child: OMP_NUM_THREADS = MKL_NUM_THREADS = --threads, torch.set_num_threads(--threads),
torch.set_num_interop_threads(1). The parent checks that both modes give bit-identical latents.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))


def _rss_now_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _import_comfy_and_pack(root: Path):
    import importlib
    import importlib.util

    sys.path.insert(0, str(root))
    argv, sys.argv = sys.argv, [str(root / "main.py"), "--cpu"]
    try:
        import comfy.options

        comfy.options.enable_args_parsing()
        import comfy.cli_args  # noqa: F401
        import comfy.model_management  # noqa: F401
        import comfy.sample  # noqa: F401
        import comfy.samplers  # noqa: F401
        import comfy.sd  # noqa: F401
        import node_helpers  # noqa: F401
    finally:
        sys.argv = argv
    name = "everanimate_pack_under_test"  # ComfyUI's own nodes.py owns the name "nodes"
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return importlib.import_module(f"{name}.nodes.comfy_backend"), importlib.import_module(f"{name}.nodes.wan_patch")


def child(a) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    from comfy_server import TINY_UNET, TINY_VAE

    root = Path(os.environ["COMFYUI_PATH"]).resolve()
    backend_mod, patch_mod = _import_comfy_and_pack(root)
    import comfy.clip_vision
    import comfy.sd
    import comfy.utils

    from everanimate_core.pipeline import AnimationSettings, ChunkLoop, RunInputs
    from everanimate_core.plan import ChunkSettings, plan_chunks

    t_setup = time.perf_counter()
    chunk_settings = ChunkSettings(a.face_frames, 4, 4)
    settings = AnimationSettings(chunk=chunk_settings, steps=a.steps, shift=5.0, seed=42, anchor_seed=12345)
    unet = comfy.sd.load_diffusion_model(str(root / "models" / "diffusion_models" / TINY_UNET))
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(root / "models" / "vae" / TINY_VAE)))
    model = patch_mod.with_k_anchor_patch(unet, 4, cache_face=(a.mode == "once"))
    patch = model.object_patches[patch_mod.PATCH_TARGET]

    class Clip:
        def encode_image(self, image, crop=True):
            out = comfy.clip_vision.Output()
            out["penultimate_hidden_states"] = torch.zeros(1, 257, 1280)
            return out

    rng = np.random.default_rng(0)
    n = a.face_frames
    reference = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    pose = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    face = rng.integers(0, 256, (n, 512, 512, 3), dtype=np.uint8)
    context = [[torch.zeros(1, 512, 4096), {}]]
    backend = backend_mod.ComfyWanBackend(model, vae, context, [[torch.zeros(1, 512, 4096), {}]], Clip(), a.cfg)
    chunk = plan_chunks(n, chunk_settings)[0]
    steps_at = []
    with torch.inference_mode():
        loop = ChunkLoop(backend, settings)
        memory = loop.start(reference)
        setup_s = time.perf_counter() - t_setup
        rss_before, peak_before = _rss_now_mb(), _peak_mb()
        t0 = time.perf_counter()
        generated, _ = loop.sample(
            memory, chunk, RunInputs(reference, pose, face), on_step=lambda i, k, x: steps_at.append(time.perf_counter())
        )
        t1 = time.perf_counter()
        loop.decode(generated)
        t2 = time.perf_counter()
    step_times = [b - a_ for a_, b in zip([t0] + steps_at[:-1], steps_at)]
    return {
        "face_frames": n,
        "mode": a.mode,
        "steps": a.steps,
        "cfg": a.cfg,
        "threads": torch.get_num_threads(),
        "setup_s": round(setup_s, 1),
        "sample_s": round(t1 - t0, 1),
        "decode_s": round(t2 - t1, 1),
        "first_step_s": round(step_times[0], 2),
        "later_step_mean_s": round(sum(step_times[1:]) / max(1, len(step_times) - 1), 2),
        "face_encodes": patch.face_cache.encodes,
        "rss_before_chunk_mb": round(rss_before),
        "peak_rss_before_chunk_mb": round(peak_before),
        "peak_rss_mb": round(_peak_mb()),
        "latents_sha256": hashlib.sha256(generated.contiguous().numpy().tobytes()).hexdigest()[:16],
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--faces", type=int, nargs="+", default=[9, 77], help="face frames per chunk (= pixel frames)")
    p.add_argument("--modes", nargs="+", default=["every_step", "once"], choices=["every_step", "once"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--cfg", type=float, default=1.0)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--face-frames", type=int, help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print("RESULT " + json.dumps(child(a)), flush=True)
        return
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    rows = []
    for faces in a.faces:
        for mode in a.modes:
            cmd = [sys.executable, __file__, "--child", "--face-frames", str(faces), "--mode", mode,
                   "--steps", str(a.steps), "--threads", str(a.threads), "--cfg", str(a.cfg)]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"child {faces} frames / {mode} failed (rc {proc.returncode})")
            r = json.loads(line[len("RESULT "):])
            rows.append(r)
            print(json.dumps(r), flush=True)
    print()
    print(f"threads={a.threads} steps={a.steps} cfg={a.cfg} (64x64 chunk, K=4, 512x512 face crops, tiny random weights)")
    head = f"{'faces':>5} {'mode':>10} {'sample s':>9} {'1st step s':>10} {'later step s':>12} {'decode s':>8} {'encodes':>7} {'RSS pre MB':>10} {'peak RSS MB':>11}  latents"
    print(head)
    for r in rows:
        print(f"{r['face_frames']:>5} {r['mode']:>10} {r['sample_s']:>9} {r['first_step_s']:>10} {r['later_step_mean_s']:>12} "
              f"{r['decode_s']:>8} {r['face_encodes']:>7} {r['rss_before_chunk_mb']:>10} {r['peak_rss_mb']:>11}  {r['latents_sha256']}")
    for faces in a.faces:
        shas = {r["latents_sha256"] for r in rows if r["face_frames"] == faces}
        if len([r for r in rows if r["face_frames"] == faces]) > 1:
            print(f"{faces} face frames: latents {'bit-identical' if len(shas) == 1 else 'DIFFER'} across modes")
    print("(on the tiny random weights the face motion is ~1e-18 and rounded away, so equal latents here do not")
    print(" prove the cache right: tests/integration/test_face_cache_comfy.py checks it on face-sensitive weights)")


if __name__ == "__main__":
    main()
