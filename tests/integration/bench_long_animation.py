"""Benchmark of the Long Animation node inside a real ComfyUI (prints numbers; not a test).

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-venv/bin/python tests/integration/bench_long_animation.py [--chunks 12]

Runs the tiny random Wan2.2-Animate through POST /prompt for N chunks and reports: the node's loop
overhead (time outside model and VAE calls), VAE encode calls after chunk 0 (only the pose windows
should be encoded), and the ComfyUI process's resident memory after every chunk.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from comfy_server import start_server, tiny_weight_paths  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--chunks", type=int, default=12)
    p.add_argument("--steps", type=int, default=4)
    a = p.parse_args()
    root = Path(os.environ["COMFYUI_PATH"]).resolve()
    weights = tiny_weight_paths(root)
    from everanimate_core.plan import ChunkSettings, frames_for_chunks
    from everanimate_core.tiny.synthdance import make_sequence
    from everanimate_core.infra.video import StreamingVideoWriter, count_frames
    from PIL import Image

    frames = frames_for_chunks(a.chunks, ChunkSettings(9, 4, 4))
    with tempfile.TemporaryDirectory() as tmp:
        srv = start_server(root, Path(tmp), weights)
        try:
            seq = make_sequence(3, "test", 64, 64)
            Image.fromarray(seq.reference()).save(srv.base / "input" / "reference.png")
            with StreamingVideoWriter(srv.base / "input" / "pose.mp4", 16, crf=0) as w:
                w.write(seq.pose(0, frames))
            api = json.loads((HERE.parents[1] / "workflows" / "api" / "everanimate_long_animation.json").read_text())
            sys.path.insert(0, str(HERE))
            from test_comfy_nodes import _tiny_prompt  # the same substitutions as the tests

            api = _tiny_prompt("everanimate_long_animation", steps=a.steps, run_name="bench")
            # no LoRA file in this benchmark: feed the UNET straight to the node
            lora = next(k for k, v in api.items() if v["class_type"] == "EverAnimateLoadLoRA")
            unet = api[lora]["inputs"]["model"]
            for v in api.values():
                for k, x in list(v["inputs"].items()):
                    if x == [lora, 0]:
                        v["inputs"][k] = unet
            api.pop(lora)
            rss, seen = [], -1
            pid = srv.queue(api)
            progress = srv.base / "output" / "everanimate" / "runs" / "bench" / "progress.json"
            t0 = time.time()
            while True:
                h = srv.get(f"/history/{pid}")
                if progress.exists():
                    n = len(json.loads(progress.read_text())["finished_chunks"])
                    if n != seen:
                        seen = n
                        rss.append((n, round(srv.rss_mb(), 1)))
                if pid in h:
                    break
                time.sleep(0.05)
            wall = time.time() - t0
            status = h[pid]["status"]["status_str"]
            stats = json.loads(re.findall(r"EverAnimate stats: (\{.*\})", srv.log.read_text())[-1])
            out = next((srv.base / "output" / "everanimate").glob("EverAnimate_*.mp4"))
            after = [r for n, r in rss if n >= 2]
            print(json.dumps({
                "status": status, "chunks": a.chunks, "steps": a.steps, "frames": frames,
                "output_frames": count_frames(out, exact=True), "prompt_wall_s": round(wall, 1), "node_stats": stats,
                "rss_mb_by_finished_chunks": rss, "rss_growth_mb_chunk2_to_last": round(max(after) - min(after), 1) if after else None,
            }, indent=1))
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
