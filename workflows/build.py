"""Regenerate the shipped workflows from the node schemas: the drag-and-drop UI files in
example_workflows/ (what ComfyUI's template browser lists, with a same-name .jpg thumbnail) and
their API-format twins in workflows/api/.

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
sys.path.insert(0, str(HERE.parent))

from schema import TITLE_HEIGHT, Graph  # noqa: E402

from everanimate_core import defaults  # noqa: E402
from everanimate_core.plan import ChunkSettings, frames_for_chunks  # noqa: E402

SNAPSHOT = HERE.parent / "tests" / "data" / "object_info.json"
# The UI files live only in example_workflows/: ComfyUI's template browser lists every *.json of
# example_workflows/ AND of workflows/ (and three other names), so a copy here would show twice.
EXAMPLES = HERE.parent / "example_workflows"
UNET = "Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors"
TEXT_ENCODER = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
CLIP_VISION = "clip_vision_h.safetensors"
VAE = "wan_2.1_vae.safetensors"
LORA = "stage2_480p.safetensors"
POSITIVE = "The character is dancing in the room"
NEGATIVE = "blurry, low quality, static, distorted face, extra fingers, deformed, watermark, subtitles"
DISTILL_LORA = "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"
FEW_STEPS = 6

USED_NODES = [
    "UNETLoader", "CLIPLoader", "CLIPTextEncode", "VAELoader", "CLIPVisionLoader", "LoadImage", "LoadVideo",
    "GetVideoComponents", "SaveVideo", "EverAnimateLoadLoRA", "EverAnimateLatentMemoryInit",
    "EverAnimateChunkSampler", "EverAnimateChunkConditioning", "EverAnimateMemoryPropagate", "EverAnimateDecodeStitch",
    "EverAnimateLongAnimation", "KSampler", "KSamplerSelect", "BasicScheduler", "LoraLoaderModelOnly",
]

# Public download addresses and model folders (the frontend's Missing Models dialog offers them).
MODELS = {
    UNET: ("https://huggingface.co/Kijai/WanVideo_comfy_fp8_scaled/resolve/main/Wan22Animate/Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors", "diffusion_models"),
    TEXT_ENCODER: ("https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors", "text_encoders"),
    CLIP_VISION: ("https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/clip_vision/clip_vision_h.safetensors", "clip_vision"),
    VAE: ("https://huggingface.co/Comfy-Org/Wan_2.2_ComfyUI_Repackaged/resolve/main/split_files/vae/wan_2.1_vae.safetensors", "vae"),
    LORA: ("https://huggingface.co/epfl-vita/everanimate/resolve/main/ckpts/everanimate-v1-lora32/stage2_480p.safetensors", "loras"),
    DISTILL_LORA: ("https://huggingface.co/Kijai/WanVideo_comfy/resolve/main/Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors", "loras"),
}

COLUMN = 460  # node width 400 + gutter
GAP = 60


def model(name: str) -> list[dict]:
    url, directory = MODELS[name]
    return [{"name": name, "url": url, "directory": directory}]


def stack(g: Graph, nodes: list, x: int, y: int, gap: int = GAP) -> int:
    """Place nodes top to bottom in one column from y; returns the y below the last one."""
    for n in nodes:
        n.pos = (x, y + TITLE_HEIGHT)
        y += TITLE_HEIGHT + g.size_of(n)[1] + gap
    return y


MODELS_NOTE = (
    "## Models\n\n"
    "The same files as ComfyUI's own Wan 2.2 Animate template, plus the EverAnimate LoRA. "
    "When one is missing, ComfyUI offers its download when the workflow opens.\n\n"
    "| file | folder |\n|---|---|\n"
    + "".join(f"| [{name}]({url}) | `models/{folder}` |\n" for name, (url, folder) in MODELS.items())
    + "\nThe LoRA is the release's stage-2 480p checkpoint (restorative flow matching). "
    "Load EverAnimate LoRA also reads `stage1_480p` and `stage3_720p_beta` as downloaded; ComfyUI's stock "
    "LoRA loader would silently load none of their keys."
)

VIDEOS_NOTE = (
    "## The driving videos\n\n"
    "**Pose video** (required): rendered skeletons of the performer, one per frame, at the frame rate of the "
    "dance. ComfyUI's Wan 2.2 Animate template makes it with the **DWPose Estimator** node (DWPreprocessor, "
    "from the comfyui_controlnet_aux pack): body and hands enabled, face disabled, resolution 512, after an "
    "Image Scale of the dance video. Save it with Create Video + Save Video and pick the file here.\n\n"
    "**Face video** (optional): the performer's face, 512x512, one frame per pose frame (the release uses face "
    "crops; the ComfyUI template feeds a second DWPose Estimator with only the face enabled). Delete this "
    "node to animate without it.\n\n"
    "Both are read straight from the files, one chunk's window at a time, so a long video never sits "
    "whole in memory (an IMAGE batch is accepted too). A video of another shape than width x height is "
    "fitted by `resize_mode` (crop fills and cuts the edges, pad keeps all of it). The output is as long "
    "as the pose video and has its frame rate (fps 0).\n\n"
    "**Sound**: the pose video's own audio track is muxed into the MP4 when it has one. A rendered pose "
    "video usually has none: add Load Video (the original dance) -> Get Video Components and connect its "
    "audio to the EverAnimate node's `audio` input."
)

SETTINGS_NOTE = (
    "## EverAnimate settings\n\n"
    "Defaults are the release's; change them only for a reason.\n\n"
    "- **frames_per_chunk 77, overlap 4**: one model call makes 77 frames; the next starts 4 frames "
    "earlier and drops them, so N chunks give 77 + 73(N-1) frames.\n"
    "- **anchors 4**: latent slots in front of every chunk that hold the reference and 3 frames of chunk 0, "
    "carried as latents (never through the VAE). They keep the character and the background from drifting. "
    "1 = the native one-reference layout.\n"
    "- **anchor_policy, anchor_seed**: which frames of chunk 0 become anchors.\n"
    "- **steps 20, shift 5, cfg 1**: the sampler the LoRA was trained for.\n"
    "- **seed 42, seed_policy multiply**: chunk c uses seed x c. The seed's control is *fixed* so that "
    "queueing again continues the same run.\n"
    "- **window_mode**: how a pose video shorter than the requested duration is read.\n"
    "- **restoration**: off = the release (the restoration is in the LoRA); anchors = experimental.\n"
    "- **duration_seconds 0, fps 0**: as long as the pose video, at its frame rate.\n"
    "- **run_name**: every chunk is checkpointed; after Cancel or a crash, queue again to resume.\n"
    "- **run_folder**: remove_when_done deletes the checkpoints once the MP4 is written; keep leaves them "
    "for re-stitching."
)

RESUME_NOTE = (
    "## Resuming an interrupted run\n\n"
    "This graph names its run folder (`run_name` = `my_long_run`, under `output/everanimate/runs/`).\n"
    "Every finished chunk is checkpointed there (latent memory + lossless frames).\n\n"
    "If you press **Cancel**, ComfyUI restarts, or a chunk fails, just **queue the same workflow again**: "
    "the node replays the finished chunks into the new MP4 and continues after the last one. "
    "The result is the same video as an uninterrupted run. Keep the seed's control on *fixed*.\n\n"
    "Changing a setting that affects the output makes the node refuse this folder and say which "
    "setting differs: pick another `run_name` (or empty it) to start a new run."
)

GRANULAR_NOTE = (
    "## The chunked loop, node by node\n\n"
    "Latent Memory Init encodes the reference. Each Chunk Sampler makes one chunk from the memory and "
    "its window of the pose video; Memory Propagate carries the last latent (and, after chunk 0, the "
    "anchors) to the next chunk in latent space. Decode & Stitch decodes every chunk of the session once, "
    "drops the overlaps and writes one MP4.\n\n"
    "To make a longer video, copy a Chunk Sampler + Memory Propagate pair and raise `total_frames` "
    "(77 + 73(N-1) for N chunks), or use the Long Animation node, which does any number of chunks."
)


def common(g: Graph, face: bool, x: int = 0):
    """Steps 1-4, shared by every workflow: models, prompt, reference image, driving videos."""
    unet = g.add("UNETLoader", "Load Wan2.2-Animate", unet_name=UNET, weight_dtype="default", models=model(UNET))
    lora = g.add("EverAnimateLoadLoRA", model=(unet, 0), lora_name=LORA, strength=1.0, shift=defaults.SHIFT, models=model(LORA))
    vae = g.add("VAELoader", vae_name=VAE, models=model(VAE))
    cv = g.add("CLIPVisionLoader", clip_name=CLIP_VISION, models=model(CLIP_VISION))
    clip = g.add("CLIPLoader", clip_name=TEXT_ENCODER, type="wan", device="default", models=model(TEXT_ENCODER))
    y_end = stack(g, [unet, lora, vae, cv, clip], x, 0)
    g.group("Step 1 - Load models", [unet, lora, vae, cv, clip])

    pos = g.add("CLIPTextEncode", "Positive prompt", clip=(clip, 0), text=POSITIVE, size=(400, 180))
    neg = g.add("CLIPTextEncode", "Negative prompt", clip=(clip, 0), text=NEGATIVE, size=(400, 180))
    y = stack(g, [pos, neg], x + COLUMN, 0)
    g.group("Step 2 - Prompt", [pos, neg])
    # Load Image / Load Video grow to their preview's shape once a file is shown: room for a
    # portrait (9:16) preview at the node's width, so a tall pose video covers nothing.
    ref = g.add("LoadImage", "Reference image", image="reference.png", size=(400, 800))
    stack(g, [ref], x + COLUMN, y + 40)
    g.group("Step 3 - Reference image (the character)", [ref])

    pose = g.add("LoadVideo", "Pose video", file="pose.mp4", size=(400, 800))
    videos = [pose]
    face_video = None
    if face:
        face_video = g.add("LoadVideo", "Face video (512x512, optional)", file="face.mp4", size=(400, 520))
        videos.append(face_video)
    stack(g, videos, x + 2 * COLUMN, 0)
    g.group("Step 4 - Driving videos", videos)
    return lora, pos, neg, vae, cv, ref, pose, face_video, max(y_end, y)


def notes_column(g: Graph, texts: list[tuple[str, str, int]], x: int, y: int = 0) -> None:
    notes = [g.add("MarkdownNote", title, text=text, size=(520, h)) for title, text, h in texts]
    stack(g, notes, x, y, gap=40)


def long_animation(schemas: dict, run_name: str = "", resume_note: bool = False) -> Graph:
    g = Graph(schemas)
    model_, pos, neg, vae, cv, ref, pose, face, _ = common(g, face=True)
    long = g.add(
        "EverAnimateLongAnimation", model=(model_, 0), positive=(pos, 0), negative=(neg, 0), vae=(vae, 0),
        reference_image=(ref, 0), pose_video=(pose, 0), face_video=(face, 0), clip_vision=(cv, 0),
        run_name=run_name, filename_prefix="everanimate/EverAnimate",
    )
    stack(g, [long], 3 * COLUMN, 0)
    g.group("Step 5 - EverAnimate: the whole video, chunk by chunk", [long])
    notes = [("About the driving videos", VIDEOS_NOTE, 420), ("EverAnimate settings", SETTINGS_NOTE, 560)]
    if resume_note:
        notes.insert(0, ("How resuming works", RESUME_NOTE, 300))
    notes_column(g, notes, 4 * COLUMN + 40)
    notes_column(g, [("Model links", MODELS_NOTE, 420)], -600)
    return g


FEW_STEP_NOTE = (
    "## Few steps with a distilled LoRA\n\n"
    "The lightx2v step-distill LoRA (the one ComfyUI's own Wan 2.2 Animate template uses) is stacked "
    "after the EverAnimate LoRA with the stock **LoraLoaderModelOnly**. Its users sample 4-8 steps at "
    f"cfg 1; this graph uses {FEW_STEPS} steps of euler on the simple schedule (**KSamplerSelect** + "
    "**BasicScheduler**, connected to Long Animation's `sampler` and `sigmas`). The `steps` widget is then "
    "ignored; the latent memory, the K anchors and the per-chunk seeds are those of the release.\n\n"
    "Any other SAMPLER / SIGMAS node works the same way. Keep `restoration` off: the anchor restoration "
    "runs inside the pack's own Euler and is refused with a SAMPLER input."
)


def long_with_step5(g: Graph, parts: tuple, step5: list, title: str, note: tuple[str, str, int], **long_inputs) -> Graph:
    """A Long Animation workflow whose step 5 adds nodes (``step5``) feeding ``long_inputs``."""
    model_, pos, neg, vae, cv, ref, pose, face, _ = parts
    stack(g, step5, 3 * COLUMN, 0)
    g.group(title, step5)
    inputs = dict(model=(model_, 0), positive=(pos, 0), negative=(neg, 0), vae=(vae, 0), reference_image=(ref, 0),
                  pose_video=(pose, 0), face_video=(face, 0), clip_vision=(cv, 0))
    long = g.add("EverAnimateLongAnimation", **{**inputs, **long_inputs})
    stack(g, [long], 4 * COLUMN, 0)
    g.group("Step 6 - EverAnimate: the whole video, chunk by chunk", [long])
    notes_column(g, [note, ("About the driving videos", VIDEOS_NOTE, 420)], 5 * COLUMN + 40)
    notes_column(g, [("Model links", MODELS_NOTE, 420)], -600)
    return g


def few_step(schemas: dict) -> Graph:
    g = Graph(schemas)
    parts = common(g, face=True)
    distill = g.add("LoraLoaderModelOnly", "Distilled LoRA (few steps)", model=(parts[0], 0), lora_name=DISTILL_LORA, strength_model=1.0, models=model(DISTILL_LORA))
    select = g.add("KSamplerSelect", sampler_name="euler")
    sched = g.add("BasicScheduler", model=(distill, 0), scheduler="simple", steps=FEW_STEPS, denoise=1.0)
    return long_with_step5(
        g, parts, [distill, select, sched], "Step 5 - Few-step sampling", ("Few-step sampling", FEW_STEP_NOTE, 380),
        model=(distill, 0), sampler=(select, 0), sigmas=(sched, 0), filename_prefix="everanimate/EverAnimate_few_step",
    )


REPLACE_NOTE = (
    "## Replacement mode\n\n"
    "The character goes into the driving video's own scene instead of the reference's background. "
    "Two more videos, frame for frame with the pose video:\n\n"
    "- **background video**: the driving video with the person removed (Wan's preprocessing greys the "
    "person out: frame x (1 - mask));\n"
    "- **character mask**: white where the new character goes (a mask video, or a MASK batch from a "
    "segmentation node such as SAM 2; one mask for all frames works too).\n\n"
    "Both are read chunk by chunk with the pose video's window, like the pose. The mask is packed with "
    "Wan2.2's causal temporal layout (frame 0 four times, then four frames per latent). ComfyUI's stock "
    "WanAnimateToVideo places it three rows early, which shows as colour drift growing per segment in "
    "chained runs. Disconnect both inputs for animation mode."
)


def replacement(schemas: dict) -> Graph:
    g = Graph(schemas)
    parts = common(g, face=True)
    bg = g.add("LoadVideo", "Background video (person removed)", file="background.mp4", size=(400, 800))
    mask = g.add("LoadVideo", "Character mask video (white = character)", file="mask.mp4", size=(400, 800))
    return long_with_step5(
        g, parts, [bg, mask], "Step 5 - Scene and character mask", ("Replacement mode", REPLACE_NOTE, 420),
        background_video=(bg, 0), character_mask=(mask, 0), filename_prefix="everanimate/EverAnimate_replacement",
    )


def three_chunks(schemas: dict) -> Graph:
    g = Graph(schemas)
    model_, pos, neg, vae, cv, ref, pose, _, _ = common(g, face=False)
    mem = g.add("EverAnimateLatentMemoryInit", vae=(vae, 0), reference_image=(ref, 0), session_name="three_chunks")
    stack(g, [mem], 3 * COLUMN, 0)
    g.group("Step 5 - Latent memory", [mem])
    x = 4 * COLUMN
    chunk = None
    for c in range(3):
        chunk = g.add(
            "EverAnimateChunkSampler", f"Chunk {c}", model=(model_, 0), positive=(pos, 0), negative=(neg, 0),
            vae=(vae, 0), memory=(mem, 0), pose_video=(pose, 0), clip_vision=(cv, 0), total_frames=frames_for_chunks(3, ChunkSettings()),
        )
        column = [chunk]
        if c < 2:
            mem = g.add("EverAnimateMemoryPropagate", f"Propagate after chunk {c}", memory=(mem, 0), chunk=(chunk, 0), vae=(vae, 0))
            column.append(mem)
        stack(g, column, x, 0)
        g.group(f"Step {6 + c} - Chunk {c}", column)
        x += COLUMN
    stitch = g.add("EverAnimateDecodeStitch", chunk=(chunk, 0), vae=(vae, 0), filename_prefix="everanimate/three_chunks")
    stack(g, [stitch], x, 0)
    g.group("Step 9 - Decode & Stitch", [stitch])
    notes_column(g, [("How this graph works", GRANULAR_NOTE, 330), ("About the pose video", VIDEOS_NOTE, 420)], x + COLUMN + 40)
    notes_column(g, [("Model links", MODELS_NOTE, 420)], -600)
    return g


def build(schemas: dict) -> dict[str, Graph]:
    graphs = {
        "everanimate_long_animation": long_animation(schemas),
        "everanimate_three_chunks": three_chunks(schemas),
        "everanimate_resume_run": long_animation(schemas, run_name="my_long_run", resume_note=True),
        "everanimate_few_step": few_step(schemas),
        "everanimate_replacement": replacement(schemas),
    }
    for name, g in graphs.items():
        if g.overlaps():
            raise ValueError(f"{name}: nodes overlap: {g.overlaps()}")
    return graphs


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--object-info", help="URL of a running ComfyUI (with this pack) to refresh the schema snapshot")
    p.add_argument("--schemas", help="read the schemas from this object_info JSON instead of the snapshot")
    p.add_argument("--thumbnails", help="folder of the browser test's screenshots: write example_workflows/<name>.jpg")
    a = p.parse_args(argv)
    if a.object_info:
        with urllib.request.urlopen(a.object_info.rstrip("/") + "/object_info") as r:
            full = json.loads(r.read())
        missing = [n for n in USED_NODES if n not in full]
        if missing:
            raise SystemExit(f"the server lacks {missing}; is the pack installed?")
        SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
        SNAPSHOT.write_text(json.dumps({n: full[n] for n in USED_NODES}, indent=1, sort_keys=True) + "\n")
    schemas = json.loads((Path(a.schemas) if a.schemas else SNAPSHOT).read_text())
    EXAMPLES.mkdir(exist_ok=True)
    (HERE / "api").mkdir(exist_ok=True)
    for name, g in build(schemas).items():
        (EXAMPLES / f"{name}.json").write_text(json.dumps(g.ui(), indent=1, ensure_ascii=False) + "\n")
        (HERE / "api" / f"{name}.json").write_text(json.dumps(g.api(), indent=1, ensure_ascii=False) + "\n")
        print(f"wrote example_workflows/{name}.json and workflows/api/{name}.json")
    if a.thumbnails:
        write_thumbnails(Path(a.thumbnails))


def write_thumbnails(shots: Path) -> None:
    """example_workflows/<name>.jpg (ComfyUI's template browser shows it) from the browser test's
    screenshots ``<name>__<frontend>.png``: the newest frontend's, 640 px wide."""
    from PIL import Image

    for ui in sorted(EXAMPLES.glob("*.json")):
        candidates = sorted(shots.glob(f"{ui.stem}__*.png"))
        if not candidates:
            raise SystemExit(f"no screenshot of {ui.stem} in {shots}: run tests/integration/test_browser_workflows.py first")
        img = Image.open(candidates[-1]).convert("RGB")
        img.thumbnail((640, 640))
        img.save(EXAMPLES / f"{ui.stem}.jpg", quality=85)
        print(f"wrote example_workflows/{ui.stem}.jpg from {candidates[-1].name}")


if __name__ == "__main__":
    main()
