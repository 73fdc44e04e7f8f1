"""Host memory of ComfyUI running Long Animation on a 480x832 driving clip: VIDEO vs IMAGE inputs.

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-venv/bin/python tests/integration/bench_video_inputs.py [--chunks 10 40] [--steps 1] [--size 32]

For each clip length (in chunks of 9 frames, overlap 4) and each input path, a fresh ComfyUI is
started, the prompt is queued and the server's resident memory is sampled every 50 ms until it
finishes. VIDEO = Load Video's VIDEO straight into pose_video (read window by window); IMAGE =
Load Video -> Get Video Components -> pose_video (the whole clip as float32 in RAM). The output is
small (--size, default 32x32) so the run stays short on a CPU; the driving clip is decoded and fitted at full size either
way. Streaming holds: the VIDEO path's peak is flat in the clip's length; the IMAGE path grows.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from comfy_server import TINY_UNET, TINY_VAE, start_server, tiny_weight_paths  # noqa: E402


def write_pose_clip(path: Path, frames: int, height: int = 480, width: int = 832) -> None:
    """A SynthDance skeleton clip, rendered at half size and upscaled 2x (rendering is the slow part)."""
    import numpy as np

    from everanimate_core.tiny.synthdance import make_sequence
    from everanimate_core.infra.video import StreamingVideoWriter

    seq = make_sequence(2, "test", height // 2, width // 2)
    with StreamingVideoWriter(path, 16, crf=18, options={"preset": "ultrafast"}) as w:
        for s in range(0, frames, 16):
            small = seq.pose(s, min(frames, s + 16))
            w.write(np.repeat(np.repeat(small, 2, axis=1), 2, axis=2))


def prompt(pose_file: str, image_path: bool, steps: int, size: int) -> dict:
    api = {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": TINY_UNET, "weight_dtype": "default"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": TINY_VAE}},
        "text": {"class_type": "EATestZeroTextConditioning", "inputs": {}},
        "ref": {"class_type": "LoadImage", "inputs": {"image": "reference.png"}},
        "pose": {"class_type": "LoadVideo", "inputs": {"file": pose_file}},
    }
    pose = ["pose", 0]
    if image_path:
        api["parts"] = {"class_type": "GetVideoComponents", "inputs": {"video": ["pose", 0]}}
        pose = ["parts", 0]
    api["long"] = {"class_type": "EverAnimateLongAnimation", "inputs": {
        "model": ["unet", 0], "positive": ["text", 0], "negative": ["text", 0], "vae": ["vae", 0],
        "reference_image": ["ref", 0], "pose_video": pose, "width": size, "height": size, "resize_mode": "crop",
        "duration_seconds": 0.0, "frames_per_chunk": 9, "overlap": 4, "anchors": 4,
        "anchor_policy": "random_plus_reference", "anchor_seed": 12345, "steps": steps, "cfg": 1.0, "shift": 5.0,
        "seed": 42, "seed_policy": "multiply", "window_mode": "pingpong", "restoration": "off",
        "restoration_strength": 1.0, "restoration_schedule": "gaussian_timestep", "tiled_decode": False,
        "run_name": "bench", "run_folder": "remove_when_done", "filename_prefix": "everanimate/bench", "fps": 0.0,
        "return_images": False}}
    return api


def measure(root: Path, weights: dict, clip: Path, image_path: bool, steps: int, size: int) -> dict:
    from PIL import Image

    from everanimate_core.tiny.synthdance import make_sequence
    from everanimate_core.infra.video import count_frames

    with tempfile.TemporaryDirectory() as tmp:
        srv = start_server(root, Path(tmp), weights)
        try:
            Image.fromarray(make_sequence(2, "test", 64, 64).reference()).save(srv.base / "input" / "reference.png")
            os.symlink(clip, srv.base / "input" / clip.name)
            idle = srv.rss_mb()
            samples: list[float] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.is_set():
                    samples.append(srv.rss_mb())
                    time.sleep(0.05)

            t = threading.Thread(target=sample, daemon=True)
            t0 = time.time()
            t.start()
            hist = srv.wait(srv.queue(prompt(clip.name, image_path, steps, size)))
            stop.set()
            t.join()
            wall = time.time() - t0
            status = hist["status"]["status_str"]
            out = next((srv.base / "output" / "everanimate").glob("bench_*.mp4"), None)
            return {
                "path": "IMAGE" if image_path else "VIDEO", "status": status,
                "output_frames": count_frames(out, exact=True) if out else None,
                "rss_idle_mb": round(idle, 1), "rss_peak_mb": round(max(samples), 1), "rss_end_mb": round(samples[-1], 1),
                "prompt_wall_s": round(wall, 1),
            }
        finally:
            srv.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--chunks", type=int, nargs="+", default=[10, 40])
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--size", type=int, default=32, help="output width = height (the driving clip stays 832x480)")
    p.add_argument("--paths", nargs="+", default=["VIDEO", "IMAGE"], choices=["VIDEO", "IMAGE"])
    a = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one torch thread in the server (inherited) and here
    import torch

    torch.set_num_threads(1)
    root = Path(os.environ["COMFYUI_PATH"]).resolve()
    weights = tiny_weight_paths(root)
    from everanimate_core.plan import ChunkSettings, frames_for_chunks

    rows = []
    with tempfile.TemporaryDirectory() as clips:
        for chunks in a.chunks:
            frames = frames_for_chunks(chunks, ChunkSettings(9, 4, 4))
            clip = Path(clips) / f"pose_{chunks}chunks.mp4"
            write_pose_clip(clip, frames)
            for path in a.paths:
                row = {"chunks": chunks, "driving_frames": frames, "driving_size": "832x480",
                       "float32_image_mb": round(frames * 480 * 832 * 3 * 4 / 1e6, 1), "clip_file_mb": round(clip.stat().st_size / 1e6, 2)}
                row.update(measure(root, weights, clip, path == "IMAGE", a.steps, a.size))
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for path in a.paths:
        peaks = [r["rss_peak_mb"] for r in rows if r["path"] == path]
        summary[f"{path}_peak_growth_mb_{a.chunks[0]}_to_{a.chunks[-1]}_chunks"] = round(max(peaks) - min(peaks), 1) if len(peaks) > 1 else None
    print(json.dumps({"runs": rows, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
