"""Benchmark: one chunk's time through Chunk Conditioning + stock KSampler against the pack's own
Chunk Sampler, in ONE ComfyUI process (prints numbers; not a test).

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-venv/bin/python tests/integration/bench_any_sampler.py [--rounds 4] [--steps 20]

Both graphs are the shipped three-chunk workflow on the tiny random Wan2.2-Animate (64x64, 9-frame
chunks; ModelSamplingSD3 shift 5 in place of the LoRA loader); one uses the Chunk Sampler, the other
Chunk Conditioning -> KSampler (euler, simple, cfg 1, seed linked) -> Memory Propagate(samples).
Rounds alternate the two with a new seed each (so nothing is cached); the time of a run is
ComfyUI's own execution_start -> execution_success. Reports each graph's median and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

from comfy_server import start_server, tiny_weight_paths  # noqa: E402


def _run_seconds(hist: dict) -> float:
    stamps = {m[0]: m[1]["timestamp"] for m in hist["status"]["messages"]}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000.0


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    a = p.parse_args()
    root = Path(os.environ["COMFYUI_PATH"]).resolve()
    weights = tiny_weight_paths(root)
    from test_comfy_nodes import _ksampler_graph, _tiny_prompt, _write_inputs  # the tests' graph builders

    with tempfile.TemporaryDirectory() as base:
        srv = start_server(root, Path(base), weights)
        try:
            class _Server:  # what _write_inputs needs, without the LoRA (ModelSamplingSD3 replaces the loader)
                pass

            s = _Server()
            s.base = Path(base)
            (s.base / "models" / "loras" / "stage2_480p.safetensors").write_bytes(b"unused")
            _write_inputs(s)
            pack = _tiny_prompt("everanimate_three_chunks", total_frames=19, steps=a.steps)
            for nid, node in pack.items():
                if node["class_type"] == "EverAnimateLoadLoRA":
                    pack[nid] = {"class_type": "ModelSamplingSD3", "inputs": {"model": node["inputs"]["model"], "shift": 5.0}}
            times: dict[str, list[float]] = {"chunk_sampler": [], "conditioning_ksampler": []}
            for r in range(a.rounds + 1):  # round 0 warms up (model loading) and is not counted
                for name in times:
                    api = json.loads(json.dumps(pack))
                    for node in api.values():
                        if node["class_type"] == "EverAnimateChunkSampler":
                            node["inputs"]["seed"] = 100 + r
                    if name == "conditioning_ksampler":
                        api = _ksampler_graph(api, f"bench_ks_{r}")
                    else:
                        init = next(k for k, v in api.items() if v["class_type"] == "EverAnimateLatentMemoryInit")
                        api[init]["inputs"]["session_name"] = f"bench_cs_{r}"
                    hist = srv.wait(srv.queue(api))
                    if hist["status"]["status_str"] != "success":
                        raise SystemExit(json.dumps(hist["status"])[:3000])
                    if r:
                        times[name].append(_run_seconds(hist))
            med = {k: statistics.median(v) for k, v in times.items()}
            print(json.dumps({
                "rounds": a.rounds, "steps": a.steps, "chunks_per_run": 3, "threads": os.environ.get("OMP_NUM_THREADS", "default"),
                "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
                "median_s": {k: round(v, 3) for k, v in med.items()},
                "ratio_conditioning_ksampler_over_chunk_sampler": round(med["conditioning_ksampler"] / med["chunk_sampler"], 4),
            }, indent=1))
        finally:
            srv.stop()


if __name__ == "__main__":
    main()
