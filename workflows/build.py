"""Regenerate the shipped workflows (UI format + API twin) from the node schemas.

    python workflows/build.py                      # from tests/data/object_info.json
    python workflows/build.py --object-info http://127.0.0.1:8188   # refresh the snapshot first

Model file names are the ones ComfyUI's own Wan 2.2 Animate template loads, plus the released
EverAnimate LoRA; pose and face videos are plain Load Video inputs (core nodes only).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from schema import Graph  # noqa: E402

SNAPSHOT = HERE.parent / "tests" / "data" / "object_info.json"
UNET = "Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors"
TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
CLIP_VISION = "clip_vision_h.safetensors"
VAE = "wan_2.1_vae.safetensors"
LORA = "stage2_480p.safetensors"
POSITIVE = "The character is dancing in the room"
NEGATIVE = "blurry, low quality, static, distorted face, extra fingers, deformed, watermark, subtitles"
USED_NODES = [
    "UNETLoader", "CLIPLoader", "CLIPTextEncode", "VAELoader", "CLIPVisionLoader", "LoadImage", "LoadVideo",
    "GetVideoComponents", "SaveVideo", "EverAnimateLoadLoRA", "EverAnimateLatentMemoryInit",
    "EverAnimateChunkSampler", "EverAnimateMemoryPropagate", "EverAnimateDecodeStitch", "EverAnimateLongAnimation",
]


def common(g: Graph, face: bool):
    """Loaders shared by every workflow: model + LoRA, text, VAE, CLIP vision, reference, videos."""
    unet = g.add("UNETLoader", pos=(0, 0), unet_name=UNET, weight_dtype="default")
    model = g.add("EverAnimateLoadLoRA", pos=(420, 0), model=(unet, 0), lora_name=LORA, strength=1.0, shift=5.0)
    clip = g.add("CLIPLoader", pos=(0, 260), clip_name=TEXT_ENCODER, type="wan", device="default")
    pos = g.add("CLIPTextEncode", "Positive prompt", pos=(420, 260), clip=(clip, 0), text=POSITIVE)
    neg = g.add("CLIPTextEncode", "Negative prompt", pos=(420, 480), clip=(clip, 0), text=NEGATIVE)
    vae = g.add("VAELoader", pos=(0, 700), vae_name=VAE)
    cv = g.add("CLIPVisionLoader", pos=(0, 820), clip_name=CLIP_VISION)
    ref = g.add("LoadImage", "Reference image", pos=(0, 940), image="reference.png")
    pose_file = g.add("LoadVideo", "Pose video", pos=(0, 1300), file="pose.mp4")
    pose = g.add("GetVideoComponents", pos=(420, 1300), video=(pose_file, 0))
    face_frames = None
    if face:
        face_file = g.add("LoadVideo", "Face video (512x512 crops)", pos=(0, 1650), file="face.mp4")
        face_frames = g.add("GetVideoComponents", pos=(420, 1650), video=(face_file, 0))
    return model, pos, neg, vae, cv, ref, pose, face_frames


def long_animation(schemas: dict, run_name: str = "", note: str | None = None) -> Graph:
    g = Graph(schemas)
    model, pos, neg, vae, cv, ref, pose, face = common(g, face=True)
    g.add(
        "EverAnimateLongAnimation", pos=(900, 200), model=(model, 0), positive=(pos, 0), negative=(neg, 0), vae=(vae, 0),
        reference_image=(ref, 0), pose_video=(pose, 0), face_video=(face, 0), clip_vision=(cv, 0),
        run_name=run_name, filename_prefix="everanimate/EverAnimate",
    )
    if note:
        g.add("MarkdownNote", "How resuming works", pos=(900, -300), text=note)
    return g


def three_chunks(schemas: dict) -> Graph:
    g = Graph(schemas)
    model, pos, neg, vae, cv, ref, pose, _ = common(g, face=False)
    mem = g.add("EverAnimateLatentMemoryInit", pos=(900, 700), vae=(vae, 0), reference_image=(ref, 0), session_name="three_chunks")
    x = 1350
    for c in range(3):
        chunk = g.add(
            "EverAnimateChunkSampler", f"Chunk {c}", pos=(x, 100), model=(model, 0), positive=(pos, 0), negative=(neg, 0),
            vae=(vae, 0), memory=(mem, 0), pose_video=(pose, 0), clip_vision=(cv, 0), total_frames=77 + 73 * 2,
        )
        if c < 2:
            mem = g.add("EverAnimateMemoryPropagate", f"Propagate after chunk {c}", pos=(x, 900), memory=(mem, 0), chunk=(chunk, 0), vae=(vae, 0))
        x += 450
    g.add("EverAnimateDecodeStitch", pos=(x, 300), chunk=(chunk, 0), vae=(vae, 0), filename_prefix="everanimate/three_chunks")
    return g


RESUME_NOTE = (
    "## Resuming an interrupted run\n\n"
    "This graph names its run folder (`run_name` = `my_long_run`, under `output/everanimate/runs/`).\n"
    "Every finished chunk is checkpointed there (latent memory + lossless frames).\n\n"
    "If you press **Cancel**, ComfyUI restarts, or a chunk fails, just **queue the same prompt again**: "
    "the node replays the finished chunks into the new MP4 and continues after the last one. "
    "The result is the same video as an uninterrupted run.\n\n"
    "Changing a setting that affects the output makes the node refuse this folder and say which "
    "setting differs: pick another `run_name` (or empty it) to start a new run."
)


def build(schemas: dict) -> dict[str, Graph]:
    return {
        "everanimate_long_animation": long_animation(schemas),
        "everanimate_three_chunks": three_chunks(schemas),
        "everanimate_resume_run": long_animation(schemas, run_name="my_long_run", note=RESUME_NOTE),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--object-info", help="URL of a running ComfyUI (with this pack) to refresh the schema snapshot")
    a = p.parse_args(argv)
    if a.object_info:
        with urllib.request.urlopen(a.object_info.rstrip("/") + "/object_info") as r:
            full = json.loads(r.read())
        missing = [n for n in USED_NODES if n not in full]
        if missing:
            raise SystemExit(f"the server lacks {missing}; is the pack installed?")
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(json.dumps({n: full[n] for n in USED_NODES}, indent=1, sort_keys=True) + "\n")
    schemas = json.loads(SNAPSHOT.read_text())
    for name, g in build(schemas).items():
        (HERE / f"{name}.json").write_text(json.dumps(g.ui(), indent=1, ensure_ascii=False) + "\n")
        (HERE / "api").mkdir(exist_ok=True)
        (HERE / "api" / f"{name}.json").write_text(json.dumps(g.api(), indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {name}.json and api/{name}.json")


if __name__ == "__main__":
    main()
