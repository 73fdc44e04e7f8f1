"""The pack inside a real ComfyUI: registration, the K-anchor patch, the LoRA loader, workflow (a)
through POST /prompt, and resuming an interrupted run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]
NODE_IDS = [
    "EverAnimateLoadLoRA",
    "EverAnimateLatentMemoryInit",
    "EverAnimateChunkSampler",
    "EverAnimateMemoryPropagate",
    "EverAnimateDecodeStitch",
    "EverAnimateLongAnimation",
]
TARGETS = ["self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o", "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2"]

pytestmark = pytest.mark.integration


# --------------------------------------------------------------------------------------------
# registration
# --------------------------------------------------------------------------------------------


def test_pack_imports_and_object_info_lists_every_node(server):
    info = server.get("/object_info")
    for nid in NODE_IDS:
        assert nid in info, f"{nid} missing from /object_info"
        node = info[nid]
        assert node["category"] == "EverAnimate"
        assert node["description"], f"{nid} has no description"
        for section in ("required", "optional"):
            for name, spec in node["input"].get(section, {}).items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{nid}.{name} has no tooltip"
        assert all(node.get("output_tooltips") or [None]), f"{nid} outputs need tooltips"
    log = server.log.read_text()
    assert "IMPORT FAILED" not in "\n".join(l for l in log.splitlines() if "EverAnimate" in l)


def test_schema_snapshot_is_current(server):
    snap = json.loads((REPO / "tests" / "data" / "object_info.json").read_text())
    live = server.get("/object_info")
    for name, spec in snap.items():
        assert name in live, name
        if name.startswith("EverAnimate"):
            assert live[name]["input"] == spec["input"], f"{name} changed: run workflows/build.py --object-info"
            assert live[name]["output"] == spec["output"]


def test_template_browser_lists_each_workflow_once_with_its_thumbnail(server):
    import urllib.request

    listed = server.get("/workflow_templates")["ComfyUI-EverAnimate"]
    shipped = sorted(p.stem for p in (REPO / "example_workflows").glob("*.json"))
    assert sorted(listed) == shipped, "each template once (ComfyUI also lists workflows/*.json)"
    for name in shipped:
        base = f"{server.url}/api/workflow_templates/ComfyUI-EverAnimate/{name}"
        with urllib.request.urlopen(base + ".json", timeout=30) as r:
            assert json.loads(r.read())["nodes"]
        with urllib.request.urlopen(base + ".jpg", timeout=30) as r:
            assert r.headers["Content-Type"] == "image/jpeg" and len(r.read()) > 5000


def test_frontend_extension_is_served(server):
    import urllib.request

    with urllib.request.urlopen(server.url + "/extensions/ComfyUI-EverAnimate/everanimate.js", timeout=30) as r:
        assert b"control_after_generate" in r.read()


# --------------------------------------------------------------------------------------------
# model patch and LoRA (in process)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(comfy, tiny_weights):
    import comfy.sd

    return comfy.sd.load_diffusion_model(str(tiny_weights["unet"]))


def test_k1_anchor_patch_equals_native_after_patch_embedding(pack, tiny_model):
    from everanimate_pack_under_test.nodes.wan_patch import KAnchorPatch

    dm = tiny_model.model.diffusion_model
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, dm.dim, 6, 4, 4, generator=g)
    pose = torch.randn(1, 16, 5, 8, 8, generator=g)
    face = torch.rand(1, 3, 5, 512, 512, generator=g) * 2 - 1
    with torch.no_grad():
        nx, nm = dm.after_patch_embedding(x.clone(), pose, face)
        px, pm = KAnchorPatch(dm, 1)(x.clone(), pose, face)
        ax, am = KAnchorPatch(dm, None)(x.clone(), pose, face)
    assert torch.equal(nx, px) and torch.equal(nm, pm), "K = 1 must be the native computation"
    assert torch.equal(nx, ax) and torch.equal(nm, am), "inferred K is 1 when the pose covers slots 1.."
    with torch.no_grad():
        kx, km = KAnchorPatch(dm, 4)(x.clone(), pose[:, :, :2], face)
        pe = dm.pose_patch_embedding(pose[:, :, :2])
    assert torch.equal(kx[:, :, :4], x[:, :, :4]), "anchors get no pose term"
    assert torch.allclose(kx[:, :, 4:6], x[:, :, 4:6] + pe)
    assert km.shape[1] == 6 and km[:, :4].abs().sum() == 0, "K zero face vectors in front of the anchors"


def _released_lora(dm, rank=4, default=True, prefix="", seed=0):
    g = torch.Generator().manual_seed(seed)
    sd = {}
    mods = dict(dm.named_modules())
    infix = ".default" if default else ""
    for b in range(len(dm.blocks)):
        for t in TARGETS:
            lin = mods[f"blocks.{b}.{t}"]
            sd[f"{prefix}blocks.{b}.{t}.lora_A{infix}.weight"] = torch.randn(rank, lin.in_features, generator=g) * 0.01
            sd[f"{prefix}blocks.{b}.{t}.lora_B{infix}.weight"] = torch.randn(lin.out_features, rank, generator=g) * 0.01
    return sd


@pytest.mark.parametrize("default,prefix", [(True, ""), (False, "pipe.dit."), (True, "dit."), (False, "model.")])
def test_lora_loader_applies_every_module_of_the_released_format(pack, tiny_model, default, prefix):
    from everanimate_pack_under_test.nodes.lora_node import apply_everanimate_lora
    from everanimate_pack_under_test.nodes.wan_patch import PATCH_TARGET

    dm = tiny_model.model.diffusion_model
    sd = _released_lora(dm, default=default, prefix=prefix)
    patched, n = apply_everanimate_lora(tiny_model, sd, 0.7, 5.0)
    assert n == len(dm.blocks) * len(TARGETS)
    assert PATCH_TARGET in patched.object_patches and "model_sampling" in patched.object_patches
    assert abs(patched.get_model_object("model_sampling").shift - 5.0) < 1e-9
    key = "diffusion_model.blocks.1.ffn.0.weight"
    w0 = tiny_model.model.state_dict()[key].float().clone()
    patched.patch_model()
    try:
        w1 = patched.model.state_dict()[key].float()
    finally:
        patched.unpatch_model()
    a = sd[f"{prefix}blocks.1.ffn.0.lora_A{'.default' if default else ''}.weight"]
    b = sd[f"{prefix}blocks.1.ffn.0.lora_B{'.default' if default else ''}.weight"]
    assert torch.allclose(w1 - w0, 0.7 * (b @ a), atol=2e-3), "ComfyUI applied W + strength * B @ A"


def test_lora_loader_refuses_other_models_and_non_loras(pack, tiny_model):
    from everanimate_core.errors import ConfigError
    from everanimate_pack_under_test.nodes.lora_node import apply_everanimate_lora

    other = {"model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(4, 8), "model.layers.0.self_attn.q_proj.lora_B.weight": torch.zeros(8, 4)}
    with pytest.raises(ConfigError, match="layers.0"):
        apply_everanimate_lora(tiny_model, other, 1.0, 5.0)
    with pytest.raises(ConfigError, match="not a LoRA"):
        apply_everanimate_lora(tiny_model, {"blocks.0.self_attn.q.weight": torch.zeros(4, 4)}, 1.0, 5.0)

    class NotAnimate:
        model = type("M", (), {"diffusion_model": torch.nn.Linear(1, 1)})()

    with pytest.raises(ConfigError, match="Wan2.2-Animate"):
        apply_everanimate_lora(NotAnimate(), {}, 1.0, 5.0)


# --------------------------------------------------------------------------------------------
# workflows through POST /prompt
# --------------------------------------------------------------------------------------------

POSE_FRAMES = 23


def _write_inputs(server) -> None:
    from PIL import Image

    from everanimate_core.tiny.synthdance import make_sequence
    from everanimate_core.infra.video import StreamingVideoWriter

    inp = server.base / "input"
    seq = make_sequence(0, "test", 64, 64)
    Image.fromarray(seq.reference()).save(inp / "reference.png")
    if not (inp / "pose.mp4").exists():
        with StreamingVideoWriter(inp / "pose.mp4", 16, crf=0) as w:
            w.write(seq.pose(0, POSE_FRAMES))
    if not (inp / "background.mp4").exists():
        frames, figure = seq.render(0, POSE_FRAMES)
        with StreamingVideoWriter(inp / "background.mp4", 16, crf=0) as w:
            w.write(np.where(figure[..., None], np.uint8(128), frames))
        with StreamingVideoWriter(inp / "mask.mp4", 16, crf=0) as w:
            w.write(np.repeat(figure[..., None], 3, axis=-1).astype(np.uint8) * 255)
        with StreamingVideoWriter(inp / "background_short.mp4", 16, crf=0) as w:
            w.write(frames[:12])
    lora = server.base / "models" / "loras" / "stage2_480p.safetensors"
    if not lora.exists():
        import comfy.sd

        dm = comfy.sd.load_diffusion_model(str(server.base / "models" / "diffusion_models" / "tiny_wan_animate.safetensors")).model.diffusion_model
        save_file(_released_lora(dm), str(lora))


def _tiny_prompt(name: str, **overrides) -> dict:
    """The shipped API workflow with the tiny test models (no text encoder, no CLIP vision, no face)."""
    api = json.loads((REPO / "workflows" / "api" / f"{name}.json").read_text())
    drop = set()
    for nid, node in api.items():
        t = node["class_type"]
        if t == "UNETLoader":
            node["inputs"]["unet_name"] = "tiny_wan_animate.safetensors"
        elif t == "VAELoader":
            node["inputs"]["vae_name"] = "tiny_wan21_vae.safetensors"
        elif t == "CLIPTextEncode":
            api[nid] = {"class_type": "EATestZeroTextConditioning", "inputs": {}}
        elif t in ("CLIPLoader", "CLIPVisionLoader"):
            drop.add(nid)
        elif t == "LoadVideo" and node["inputs"]["file"] == "face.mp4":
            drop.add(nid)
    for nid, node in api.items():
        if node["class_type"] == "GetVideoComponents" and node["inputs"]["video"][0] in drop:
            drop.add(nid)
    for nid in drop:
        api.pop(nid)
    for node in api.values():
        node["inputs"] = {k: v for k, v in node["inputs"].items() if not (isinstance(v, list) and len(v) == 2 and v[0] in drop)}
        if node["class_type"].startswith("EverAnimate") and "width" in node["inputs"]:
            node["inputs"].update(width=64, height=64)
        if node["class_type"] in ("EverAnimateLongAnimation", "EverAnimateChunkSampler"):
            node["inputs"].update(frames_per_chunk=9, overlap=4, steps=2, fps=16.0)
            node["inputs"].update(overrides)
    return api


def _frames_of(path: Path) -> np.ndarray:
    from everanimate_core.infra.video import read_video

    return read_video(path)


def _outputs(hist: dict) -> list[Path]:
    files = []
    for out in hist["outputs"].values():
        for item in out.get("images", []) + out.get("videos", []) + out.get("gifs", []):
            if isinstance(item, dict) and item.get("filename", "").endswith(".mp4"):
                files.append(Path(item["subfolder"]) / item["filename"])
    return files


def test_workflow_a_runs_and_the_video_is_as_long_as_the_pose_video(server, comfy):
    _write_inputs(server)
    api = _tiny_prompt("everanimate_long_animation")
    long_id = next(k for k, v in api.items() if v["class_type"] == "EverAnimateLongAnimation")
    api["999"] = {"class_type": "SaveVideo", "inputs": {"video": [long_id, 0], "filename_prefix": "stock_save", "format": "auto", "codec": "auto"}}
    hist = server.wait(server.queue(api))
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000]
    outs = [server.base / "output" / p for p in _outputs(hist)]
    ours = [p for p in outs if "EverAnimate" in p.name]
    stock = [p for p in outs if p.name.startswith("stock_save")]
    assert ours and stock, outs
    assert len(_frames_of(ours[0])) == POSE_FRAMES
    assert len(_frames_of(stock[0])) == POSE_FRAMES, "the VIDEO output works with the stock Save Video node"


def test_three_chunk_graph_of_granular_nodes(server, comfy):
    _write_inputs(server)
    api = _tiny_prompt("everanimate_three_chunks", total_frames=19)
    hist = server.wait(server.queue(api))
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000]
    outs = [server.base / "output" / p for p in _outputs(hist)]
    assert outs and len(_frames_of(outs[0])) == 19, "3 chunks of 9 frames with overlap 4 give 9 + 5 + 5"


def test_interrupted_run_resumes_to_the_same_video(server, comfy):
    _write_inputs(server)
    reference = _tiny_prompt("everanimate_resume_run", run_name="uninterrupted", filename_prefix="everanimate/uninterrupted", run_folder="keep")
    hist = server.wait(server.queue(reference))
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000]
    expected = _frames_of(server.base / "output" / _outputs(hist)[0])

    api = _tiny_prompt("everanimate_resume_run", run_name="resume_me", filename_prefix="everanimate/resumed", run_folder="keep")
    run_dir = server.base / "output" / "everanimate" / "runs" / "resume_me"
    pid = server.queue(api)
    deadline = time.time() + 900
    while time.time() < deadline:
        p = run_dir / "progress.json"
        if p.exists() and len(json.loads(p.read_text())["finished_chunks"]) >= 1:
            break
        time.sleep(0.2)
    status, _ = server.post("/interrupt", {})
    assert status == 200
    first = server.wait(pid)
    assert first["status"]["status_str"] == "error", "the first attempt was interrupted"
    finished = len(json.loads((run_dir / "progress.json").read_text())["finished_chunks"])
    assert 1 <= finished < 5
    assert list((server.base / "output" / "everanimate").glob("resumed*.partial.mp4")), "frames so far are kept"
    second = server.wait(server.queue(api))
    assert second["status"]["status_str"] == "success", json.dumps(second["status"])[:3000]
    got = _frames_of(server.base / "output" / _outputs(second)[0])
    assert got.shape[0] == POSE_FRAMES
    # Every chunk's lossless FFV1 segment of the resumed run equals the uninterrupted run's, and the
    # MP4s are the same bytes (the writer turns off x264's mbtree, whose AVX-512 code made identical
    # frames encode differently in a long-lived process).
    ref_dir = run_dir.parent / "uninterrupted"
    segments = sorted(p.name for p in ref_dir.glob("frames_*.mkv"))
    assert segments == sorted(p.name for p in run_dir.glob("frames_*.mkv")) and len(segments) >= 2
    for name in segments:
        assert np.array_equal(_frames_of(run_dir / name), _frames_of(ref_dir / name)), f"{name} differs"
    assert np.array_equal(got, expected)
    resumed_mp4 = server.base / "output" / _outputs(second)[0]
    uninterrupted_mp4 = server.base / "output" / _outputs(hist)[0]
    assert resumed_mp4.read_bytes() == uninterrupted_mp4.read_bytes(), "the resumed MP4 is byte-identical"


def test_color_match_changes_only_the_video_and_restitches_a_kept_run_without_sampling(server, comfy):
    from PIL import Image

    from everanimate_core.colour import colour_drift

    _write_inputs(server)
    plain = _tiny_prompt("everanimate_resume_run", run_name="colour", filename_prefix="everanimate/colour_none", run_folder="keep")
    first = server.wait(server.queue(plain))
    assert first["status"]["status_str"] == "success", json.dumps(first["status"])[:3000]
    run_dir = server.base / "output" / "everanimate" / "runs" / "colour"
    stamps = {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    matched = _tiny_prompt("everanimate_resume_run", run_name="colour", filename_prefix="everanimate/colour_mkl", run_folder="keep", color_match="mkl")
    second = server.wait(server.queue(matched))
    assert second["status"]["status_str"] == "success", json.dumps(second["status"])[:3000]
    assert {p.name: p.stat().st_mtime_ns for p in run_dir.iterdir()} == stamps, "nothing was sampled or rewritten"
    a = _frames_of(server.base / "output" / _outputs(first)[0])
    b = _frames_of(server.base / "output" / _outputs(second)[0])
    assert a.shape == b.shape and a.shape[0] == POSE_FRAMES
    ref = np.asarray(Image.open(server.base / "input" / "reference.png").convert("RGB"))
    starts = [0] + [9 + 5 * k for k in range((POSE_FRAMES - 9 + 4) // 5)]  # 9-frame chunks, overlap 4
    drift_a, drift_b = colour_drift(a, ref, chunk_starts=starts), colour_drift(b, ref, chunk_starts=starts)
    assert drift_b.mean() < 0.5 * drift_a.mean(), (drift_a, drift_b)


# --------------------------------------------------------------------------------------------
# any sampler: Chunk Conditioning + stock KSampler, SAMPLER / SIGMAS inputs
# --------------------------------------------------------------------------------------------


def _ksampler_graph(api: dict, session: str, sampler: str = "euler", scheduler: str = "simple") -> dict:
    """The three-chunk graph with every Chunk Sampler replaced by Chunk Conditioning -> KSampler ->
    Memory Propagate(samples), the KSampler's seed linked to the conditioning's chunk seed."""
    api = json.loads(json.dumps(api))
    props = {k: v for k, v in api.items() if v["class_type"] == "EverAnimateMemoryPropagate"}
    stitch = next(k for k, v in api.items() if v["class_type"] == "EverAnimateDecodeStitch")
    for nid in [k for k, v in api.items() if v["class_type"] == "EverAnimateChunkSampler"]:
        node = api[nid]
        keep = ("model", "positive", "negative", "vae", "memory", "pose_video", "frames_per_chunk", "overlap",
                "seed", "seed_policy", "window_mode", "total_frames")
        steps = node["inputs"]["steps"]
        api[nid] = {"class_type": "EverAnimateChunkConditioning", "inputs": {k: v for k, v in node["inputs"].items() if k in keep}}
        ks = f"{nid}ks"
        api[ks] = {"class_type": "KSampler", "inputs": {
            "model": [nid, 0], "positive": [nid, 1], "negative": [nid, 2], "latent_image": [nid, 3], "seed": [nid, 4],
            "steps": steps, "cfg": 1.0, "sampler_name": sampler, "scheduler": scheduler, "denoise": 1.0}}
        users = [k for k, v in props.items() if v["inputs"]["chunk"] == [nid, 0]]
        if users:
            api[users[0]]["inputs"].update(chunk=[nid, 5], samples=[ks, 0])
        else:  # the last chunk: a Memory Propagate of its own feeds Decode & Stitch
            mem = api[nid]["inputs"]["memory"]
            api[f"{nid}mp"] = {"class_type": "EverAnimateMemoryPropagate", "inputs": {
                "memory": mem, "chunk": [nid, 5], "vae": api[stitch]["inputs"]["vae"], "tiled_decode": False, "samples": [ks, 0]}}
            api[stitch]["inputs"]["chunk"] = [f"{nid}mp", 1]
    init = next(k for k, v in api.items() if v["class_type"] == "EverAnimateLatentMemoryInit")
    api[init]["inputs"]["session_name"] = session
    api[stitch]["inputs"]["filename_prefix"] = f"everanimate/{session}"
    return api


def _session_latents(server, prefix: str) -> dict:
    from safetensors.torch import load_file as load

    (folder,) = [p for p in (server.base / "output" / "everanimate").glob(f"{prefix}_*") if p.is_dir()]
    return {p.name: load(str(p))["latents"] for p in sorted(folder.glob("latents_*.safetensors"))}


def test_stock_ksampler_through_chunk_conditioning_gives_the_pack_samplers_chunks(server, comfy):
    _write_inputs(server)
    pack = _tiny_prompt("everanimate_three_chunks", total_frames=19)
    init = next(k for k, v in pack.items() if v["class_type"] == "EverAnimateLatentMemoryInit")
    pack[init]["inputs"]["session_name"] = "pack_sampler"
    hist = server.wait(server.queue(pack))
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000]
    stock = _ksampler_graph(pack, "stock_ksampler")
    hist2 = server.wait(server.queue(stock))
    assert hist2["status"]["status_str"] == "success", json.dumps(hist2["status"])[:3000]
    ours, theirs = _session_latents(server, "pack_sampler"), _session_latents(server, "stock_ksampler")
    assert list(ours) == list(theirs) and len(ours) == 3
    for name in ours:
        assert torch.equal(ours[name], theirs[name]), (name, (ours[name] - theirs[name]).abs().max())
    a = _frames_of(server.base / "output" / _outputs(hist)[0])
    b = _frames_of(server.base / "output" / _outputs(hist2)[0])
    assert a.shape[0] == 19 and np.array_equal(a, b)
    # another stock sampler on the same graph runs and gives other chunks
    other = _ksampler_graph(pack, "stock_dpmpp", sampler="dpmpp_2m", scheduler="beta")
    hist3 = server.wait(server.queue(other))
    assert hist3["status"]["status_str"] == "success", json.dumps(hist3["status"])[:3000]
    c = _frames_of(server.base / "output" / _outputs(hist3)[0])
    assert c.shape == a.shape and not np.array_equal(a, c)


def _with_sampler(api: dict, sampler: str, steps: int, **overrides) -> dict:
    api = json.loads(json.dumps(api))
    long_id = next(k for k, v in api.items() if v["class_type"] == "EverAnimateLongAnimation")
    lora = next(k for k, v in api.items() if v["class_type"] == "EverAnimateLoadLoRA")
    api["900"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler}}
    api["901"] = {"class_type": "BasicScheduler", "inputs": {"model": [lora, 0], "scheduler": "simple", "steps": steps, "denoise": 1.0}}
    api[long_id]["inputs"].update(sampler=["900", 0], sigmas=["901", 0], **overrides)
    return api


def test_long_animation_sampler_and_sigmas_inputs_keep_the_per_chunk_seeds(server, comfy):
    _write_inputs(server)
    plain = _tiny_prompt("everanimate_long_animation", steps=2, filename_prefix="everanimate/plain_euler")
    hist = server.wait(server.queue(plain))
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000]
    # euler on BasicScheduler's simple 2-step list = the release's sampler on the same sigmas and seeds
    same = _with_sampler(_tiny_prompt("everanimate_long_animation", steps=7, filename_prefix="everanimate/select_euler"), "euler", 2)
    hist2 = server.wait(server.queue(same))
    assert hist2["status"]["status_str"] == "success", json.dumps(hist2["status"])[:3000]
    a = _frames_of(server.base / "output" / _outputs(hist)[0])
    b = _frames_of(server.base / "output" / _outputs(hist2)[0])
    assert a.shape[0] == POSE_FRAMES and np.array_equal(a, b), "steps is ignored, the SIGMAS and the chunk seeds are used"
    few = _with_sampler(_tiny_prompt("everanimate_long_animation", filename_prefix="everanimate/few_step"), "dpmpp_2m", 4)
    hist3 = server.wait(server.queue(few))
    assert hist3["status"]["status_str"] == "success", json.dumps(hist3["status"])[:3000]
    c = _frames_of(server.base / "output" / _outputs(hist3)[0])
    assert c.shape == a.shape and not np.array_equal(a, c)
    refused = _with_sampler(_tiny_prompt("everanimate_long_animation", restoration="anchors"), "euler", 2)
    hist4 = server.wait(server.queue(refused))
    assert hist4["status"]["status_str"] == "error"
    assert "cannot be combined with a SAMPLER" in json.dumps(hist4["status"]), json.dumps(hist4["status"])[:2000]



def test_replacement_workflow_runs_and_refuses_half_or_short_inputs(server, comfy):
    _write_inputs(server)
    api = _tiny_prompt("everanimate_replacement", filename_prefix="everanimate/replaced")
    hist = server.wait(server.queue(api))
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000]
    out = _frames_of(server.base / "output" / _outputs(hist)[0])
    assert out.shape[0] == POSE_FRAMES
    plain = _frames_of(server.base / "output" / _outputs(server.wait(server.queue(
        _tiny_prompt("everanimate_long_animation", filename_prefix="everanimate/not_replaced"))))[0])
    assert not np.array_equal(out, plain), "the background and mask reach the model"
    long_id = next(k for k, v in api.items() if v["class_type"] == "EverAnimateLongAnimation")
    half = json.loads(json.dumps(api))
    half[long_id]["inputs"].pop("character_mask")
    status = json.dumps(server.wait(server.queue(half))["status"])
    assert "needs both background_video and character_mask" in status, status[:2000]
    short = json.loads(json.dumps(api))
    bg_id = short[long_id]["inputs"]["background_video"][0]
    short[bg_id]["inputs"]["file"] = "background_short.mp4"
    status = json.dumps(server.wait(server.queue(short))["status"])
    assert "background video has 12 frames" in status and "No chunk had finished" not in status, status[:2000]
