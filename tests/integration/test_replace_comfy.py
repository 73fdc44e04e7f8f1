"""Replacement mode in a real ComfyUI on tiny random weights (64x64, 9-frame chunks).

1. K = 1, no memory: chunk 0's conditioning, built from ``everanimate_core.replace`` and converted by
   ``ComfyWanBackend.conditioning`` (raw ``concat_latent_image``, ``concat_mask = 1 - mask``), equals
   the stock ``WanAnimateToVideo`` replacement path everywhere except the character-mask rows; those
   equal Wan2.2's causal packing, and the stock rows sit three rows early.
2. K = 4 with a memory from a sampled chunk 0: chunk 1 carries the anchors and the motion latent, and
   its background slots hold the VAE encoding of chunk 1's own background window (read at the pose
   indices with the ping-pong window mode), not chunk 0's.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from everanimate_core.pipeline import AnimationSettings, ChunkLoop, RunInputs
from everanimate_core.plan import ChunkSettings, chunk_driving_indices
from everanimate_core.replace import ReplacementSource, chunk_replacement_condition, mask_rows, pack_causal_mask

pytestmark = pytest.mark.integration

SIZE = 64
CELL = 8  # one latent pixel: masks constant on 8x8 cells sample alike with nearest and nearest-exact


def reference_packing(frames: torch.Tensor) -> torch.Tensor:
    """Wan2.2 get_i2v_mask, written out: frame 0 four times, then frames 1..; row 4g+c -> [c, g]."""
    f, h, w = frames.shape
    g = 1 + (f - 1) // 4
    rows = [frames[0]] * 4 + [frames[i] for i in range(1, f)]
    out = torch.empty(4, g, h, w)
    for lat in range(g):
        for ch in range(4):
            out[ch, lat] = rows[4 * lat + ch]
    return out


def block_masks(n: int, seed: int) -> torch.Tensor:
    """Random character masks [n, 64, 64] (1 = character), constant on 8x8 cells, different per frame."""
    gen = torch.Generator().manual_seed(seed)
    cells = (torch.rand(n, SIZE // CELL, SIZE // CELL, generator=gen) > 0.5).float()
    return cells.repeat_interleave(CELL, 1).repeat_interleave(CELL, 2)


def moving_bar_video(n: int) -> np.ndarray:
    """uint8 background frames that differ per index: a gradient and a bright bar moving 4 px a frame."""
    v = np.zeros((n, SIZE, SIZE, 3), np.uint8)
    ramp = np.linspace(20, 200, SIZE, dtype=np.float32)
    for i in range(n):
        v[i, :, :, 0] = ramp[None, :]
        v[i, :, :, 1] = (37 * i) % 256
        v[i, :, :, 2] = (10 * i) % 250
        x = (4 * i) % (SIZE - 8)
        v[i, :, x : x + 8, :] = 240
    return v


def random_frames(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def wan(pack, tiny_weights):
    import comfy.sd
    import comfy.utils

    torch.set_num_threads(1)
    vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(tiny_weights["vae"])))
    model = comfy.sd.load_diffusion_model(str(tiny_weights["unet"]))
    positive = [[torch.zeros(1, 512, 4096), {}]]
    negative = [[torch.zeros(1, 512, 4096), {}]]
    return {"vae": vae, "model": model, "positive": positive, "negative": negative}


def _image(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).float() / 255.0


def test_k1_chunk0_equals_stock_wan_animate_except_the_mask_rows(pack, wan):
    from comfy_extras.nodes_wan import WanAnimateToVideo

    from everanimate_pack_under_test.nodes.comfy_backend import ComfyWanBackend
    from everanimate_pack_under_test.nodes.wan_patch import with_k_anchor_patch

    frames = 9
    reference = random_frames(1, 1)[0]
    pose = random_frames(frames, 2)
    background = moving_bar_video(frames)
    character = block_masks(frames, 3)

    out = WanAnimateToVideo.execute(
        wan["positive"], wan["negative"], wan["vae"], SIZE, SIZE, frames, 1, 5, 0,
        reference_image=_image(reference[None]), pose_video=_image(pose),
        background_video=_image(background), character_mask=character,
    )
    stock = out.args[0][0][1]

    settings = AnimationSettings(chunk=ChunkSettings(frames=frames, overlap=4, anchors=1), steps=1)
    backend = ComfyWanBackend(with_k_anchor_patch(wan["model"], 1), wan["vae"], wan["positive"], wan["negative"])
    loop = ChunkLoop(backend, settings)
    inputs = RunInputs(reference, pose)
    chunk = loop.plan(inputs)[0]
    memory = loop.start(reference)
    request, _ = loop.request(memory, chunk, inputs)
    source = ReplacementSource(background, character, SIZE, SIZE, driving_frames=frames)
    cond, mask, layout, _ = chunk_replacement_condition(source, memory.anchors, None, chunk, "pingpong", backend.encode_pose)
    request = dataclasses.replace(request, condition=cond, mask=mask, layout=layout)
    ours, _ = backend.conditioning(request)
    ours = ours[0][1]

    # latents: reference slot + encoded background, raw, the same (the round trip through the model
    # space costs float rounding only); the pose latent too
    assert ours["concat_latent_image"].shape == stock["concat_latent_image"].shape == (1, 16, 4, 8, 8)
    assert torch.allclose(ours["concat_latent_image"], stock["concat_latent_image"], atol=1e-5, rtol=1e-5)
    assert torch.allclose(ours["pose_video_latent"], stock["pose_video_latent"], atol=1e-5, rtol=1e-5)
    # the reference slot's mask: known (ComfyUI 0) in both
    assert torch.equal(ours["concat_mask"][0, :, :1], stock["concat_mask"][0, :, :1])
    assert float(ours["concat_mask"][0, :, :1].abs().max()) == 0.0

    # the character-mask rows: ours are Wan's causal packing of the character mask (ComfyUI 1 = generate)
    char_lat = character[:, ::CELL, ::CELL]
    ours_rows = ours["concat_mask"][0, :, 1:]
    stock_rows = stock["concat_mask"][0, :, 1:].float()
    assert torch.equal(ours_rows, reference_packing(char_lat))
    assert torch.equal(1 - mask[:, 1:], pack_causal_mask(char_lat))
    assert not torch.equal(ours_rows, stock_rows), "the stock node packs the mask differently"
    ours_t, stock_t = mask_rows(ours_rows), mask_rows(stock_rows)
    # where the stock rows sit: frame f at row f (ours: f + 3); frame 0 only once; the last three rows
    # keep the default 1 (generate everywhere)
    assert torch.equal(stock_t[:frames], char_lat)
    assert torch.equal(ours_t[4:], stock_t[1:frames]), "stock rows are ours three rows early"
    assert torch.equal(stock_t[frames:], torch.ones(3, 8, 8))
    assert torch.equal(ours_t[:4], char_lat[0].expand(4, -1, -1))


def test_k4_later_chunk_carries_the_memory_and_reads_its_background_window(pack, wan):
    from everanimate_pack_under_test.nodes.comfy_backend import ComfyWanBackend
    from everanimate_pack_under_test.nodes.wan_patch import with_k_anchor_patch

    k, driving, total = 4, 12, 14
    reference = random_frames(1, 11)[0]
    pose = random_frames(driving, 12)
    background = moving_bar_video(driving)
    character = block_masks(driving, 13)
    settings = AnimationSettings(chunk=ChunkSettings(frames=9, overlap=4, anchors=k), steps=2, seed=42)
    backend = ComfyWanBackend(with_k_anchor_patch(wan["model"], k), wan["vae"], wan["positive"], wan["negative"])
    loop = ChunkLoop(backend, settings)
    inputs = RunInputs(reference, pose, total_frames=total)
    plan = loop.plan(inputs)
    assert [(c.start, c.frames) for c in plan] == [(0, 9), (5, 9)]
    window = chunk_driving_indices(plan[1], driving, "pingpong")
    assert window.tolist() == [5, 6, 7, 8, 9, 10, 11, 10, 9], "chunk 1 reads frames 5.. and ping-pongs at 11"
    source = ReplacementSource(background, character, SIZE, SIZE, driving_frames=driving)
    source.check_plan(plan, "pingpong")

    def replacement_request(memory, chunk):
        request, pose_frames = loop.request(memory, chunk, inputs)
        motion = memory.motion if memory.chunk_index > 0 else None
        cond, mask, layout, _ = chunk_replacement_condition(source, memory.anchors, motion, chunk, "pingpong", backend.encode_pose)
        return dataclasses.replace(request, condition=cond, mask=mask, layout=layout), pose_frames

    memory = loop.start(reference)
    request0, pose0 = replacement_request(memory, plan[0])
    generated0 = loop.generated(plan[0], backend.sample(request0))
    memory = loop.advance(memory, generated0, loop.decode(generated0), pose0)
    assert memory.chunk_index == 1 and memory.motion is not None

    request1, _ = replacement_request(memory, plan[1])
    cond, mask = request1.condition, request1.mask
    g = plan[1].latents
    assert cond.shape == (16, k + g, 8, 8) and mask.shape == (4, k + g, 8, 8)
    # the memory: K anchors picked from chunk 0, then chunk 0's last generated latent as the motion slot
    assert torch.equal(cond[:, :k], memory.anchors)
    assert torch.equal(cond[:, k : k + 1], generated0[:, -1:])
    assert torch.equal(mask[:, :k], torch.ones(4, k, 8, 8)) and torch.equal(mask[:, k], torch.zeros(4, 8, 8))

    def encoded(idx):
        raw = wan["vae"].encode(_image(background[idx]))
        return backend.to_model_space(raw)[0]

    def error(idx):
        raw = wan["vae"].encode(_image(background[idx]))
        return float((cond[:, k + 1 :] - backend.to_model_space(raw)[0][:, 1:]).abs().max().detach())

    looped = chunk_driving_indices(plan[1], driving, "loop")
    assert looped.tolist() == [5, 6, 7, 8, 9, 10, 11, 0, 1]
    err_right, err_chunk0, err_loop = error(window), error(np.arange(9)), error(looped)
    print(f"background slots vs the encoding of chunk 1's ping-pong window: {err_right:.3g}; of chunk 0's window: "
          f"{err_chunk0:.3g}; of the loop-mode window: {err_loop:.3g}")
    assert err_right <= 1e-5
    # the tiny random VAE is weakly input-sensitive (the loop window differs in its last latent only),
    # hence a margin relative to the match, measured 0 here
    margin = 10 * max(err_right, 1e-6)
    assert err_chunk0 > margin, "chunk 0's window would differ"
    assert err_loop > margin, "reading the background in loop mode would differ"
    # and the mask rows are the packing of the same window's character mask
    known = 1 - character[window][:, ::CELL, ::CELL]
    assert torch.equal(mask[:, k + 1 :], reference_packing(known)[:, 1:])

    # ComfyUI gets it raw and inverted, and the native model runs on it
    pos, _ = backend.conditioning(request1)
    values = pos[0][1]
    assert torch.allclose(values["concat_latent_image"], backend.to_raw(cond[None]), atol=0)
    assert torch.equal(values["concat_mask"], 1 - mask[None])
    out = backend.sample(request1)
    assert out.shape == (16, k + g, 8, 8) and bool(torch.isfinite(out).all())
