"""Replacement mode: Wan's causal mask packing, the K-anchor replacement layout, mask fitting and the
windows of the background, the restorative background term, and the errors a user can hit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from everanimate_core.errors import ConfigError, DrivingVideoError
from everanimate_core.flow import add_noise, clean_velocity, euler_step
from everanimate_core.layout import build_condition
from everanimate_core.plan import ChunkSettings, chunk_driving_indices, plan_for_driving
from everanimate_core.replace import (
    MOTION_MASKS,
    ReplacementSource,
    as_mask_tensor,
    background_known_weight,
    build_replacement_condition,
    check_mask_size,
    chunk_replacement_condition,
    fit_mask,
    known_from_character,
    mask_rows,
    pack_causal_mask,
    restore_background_in_chunk,
    restore_background_velocity,
)

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------
# Expected values written from first principles (Wan2.2 wan/animate.py get_i2v_mask, in words:
# frame 0 repeated four times, then frames 1..F-1; the 4G rows grouped four per latent, row 4g+c
# into channel c of latent g).
# ----------------------------------------------------------------------------------------------


def reference_packing(frames: torch.Tensor) -> torch.Tensor:
    f, h, w = frames.shape
    g = 1 + (f - 1) // 4
    rows = [frames[0]] * 4 + [frames[i] for i in range(1, f)]
    assert len(rows) == 4 * g
    out = torch.empty(4, g, h, w, dtype=frames.dtype)
    for lat in range(g):
        for ch in range(4):
            out[ch, lat] = rows[4 * lat + ch]
    return out


def stock_placement(frames: torch.Tensor, default: float = 0.0) -> torch.Tensor:
    """ComfyUI v0.3.64 WanAnimateToVideo's placement, in model-side terms: frame f at row f of 4G
    rows, the last three rows left at the default (unknown), then grouped four per latent."""
    f, h, w = frames.shape
    g = 1 + (f - 1) // 4
    rows = [frames[i] for i in range(f)] + [torch.full((h, w), default)] * (4 * g - f)
    out = torch.empty(4, g, h, w, dtype=frames.dtype)
    for lat in range(g):
        for ch in range(4):
            out[ch, lat] = rows[4 * lat + ch]
    return out


def random_mask(f: int, h: int = 3, w: int = 5, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(f, h, w, generator=gen) > 0.5).float()


@pytest.mark.parametrize("g", [1, 2, 3, 5, 20])
def test_packing_equals_the_reference_formula(g):
    f = 1 + 4 * (g - 1)
    m = random_mask(f, seed=g)
    packed = pack_causal_mask(m)
    assert packed.shape == (4, g, 3, 5)
    assert torch.equal(packed, reference_packing(m))
    soft = torch.rand(f, 2, 2)
    assert torch.equal(pack_causal_mask(soft), reference_packing(soft)), "soft values are kept as they are"


def test_packing_by_hand_and_the_stock_rows_three_early():
    frames = torch.tensor([10.0, 11, 12, 13, 14]).view(5, 1, 1)  # G = 2
    ours = mask_rows(pack_causal_mask(frames)).flatten().tolist()
    assert ours == [10, 10, 10, 10, 11, 12, 13, 14]
    stock = mask_rows(stock_placement(frames, default=-1)).flatten().tolist()
    assert stock == [10, 11, 12, 13, 14, -1, -1, -1]


@pytest.mark.parametrize("g", [2, 5, 20])
def test_the_stock_placement_would_fail_the_packing_test(g):
    f = 1 + 4 * (g - 1)
    m = random_mask(f, seed=100 + g)
    stock = stock_placement(m)
    assert not torch.equal(stock, reference_packing(m))
    assert not torch.equal(stock, pack_causal_mask(m))
    ours, theirs = mask_rows(pack_causal_mask(m)), mask_rows(stock)
    # frame f >= 1 sits at row f + 3 in Wan's layout and at row f in the stock node: three rows early
    assert torch.equal(ours[4:], theirs[1:f])
    assert torch.equal(ours[:4], m[0].expand(4, -1, -1))


# ----------------------------------------------------------------------------------------------
# The replacement layout
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("m", [0, 1, 2])
@pytest.mark.parametrize("g", [2, 3, 5])
def test_layout_shapes_slots_and_mask(k, m, g):
    c, h, w = 16, 4, 6
    f = 1 + 4 * (g - 1)
    anchors = torch.randn(c, k, h, w)
    motion = torch.randn(c, m, h, w) if m else None
    bg = torch.randn(c, g, h, w)
    known = random_mask(f, h, w, seed=k * 100 + m * 10 + g)
    latent, mask, layout = build_replacement_condition(anchors, motion, bg, known, g)
    assert latent.shape == (c, k + g, h, w) and mask.shape == (4, k + g, h, w)
    assert (layout.anchors, layout.motion, layout.generated, layout.total) == (k, m, g, k + g)
    assert torch.equal(latent[:, :k], anchors)
    if m:
        assert torch.equal(latent[:, k : k + m], motion)
    assert torch.equal(latent[:, k + m :], bg[:, m:])
    assert torch.equal(mask[:, :k], torch.ones(4, k, h, w))
    assert torch.equal(mask[:, k : k + m], torch.zeros(4, m, h, w)), "motion slot: mask 0 as the animation layout"
    assert torch.equal(mask[:, layout.background_slots], reference_packing(known)[:, m:])


def test_motion_mask_policies():
    c, k, g, h, w = 16, 4, 3, 2, 2
    known = random_mask(9, h, w, seed=7)
    args = (torch.randn(c, k, h, w), torch.randn(c, 1, h, w), torch.randn(c, g, h, w), known, g)
    masks = {p: build_replacement_condition(*args, motion_mask=p)[1] for p in MOTION_MASKS}
    assert torch.equal(masks["unknown"][:, k], torch.zeros(4, h, w))
    assert torch.equal(masks["known"][:, k], torch.ones(4, h, w))
    assert torch.equal(masks["background"][:, k], reference_packing(known)[:, 0])
    for p in MOTION_MASKS:  # only the motion slot differs
        assert torch.equal(masks[p][:, k + 1 :], masks["unknown"][:, k + 1 :])
    with pytest.raises(ConfigError, match="motion mask"):
        build_replacement_condition(*args, motion_mask="half")


def test_k1_without_motion_is_the_native_single_reference_replacement():
    """Wan2.2's replace path for the first clip: y = [mask_ref | ref] ++ [packed(1 - mask) | encode(bg)]
    along time, mask_ref = 1 (get_i2v_mask(1, ..., mask_len=1))."""
    c, g, h, w = 16, 5, 4, 4
    ref = torch.randn(c, 1, h, w)
    bg = torch.randn(c, g, h, w)
    character = random_mask(1 + 4 * (g - 1), h, w, seed=3)
    latent, mask, layout = build_replacement_condition(ref, None, bg, known_from_character(character), g)
    y_ref = torch.cat([torch.ones(4, 1, h, w), ref])
    y_reft = torch.cat([reference_packing(1 - character), bg])
    assert torch.equal(torch.cat([mask, latent]), torch.cat([y_ref, y_reft], dim=1))
    assert layout.background_slots == slice(1, 1 + g)


def test_nothing_known_and_zero_background_is_the_animation_layout():
    c, k, g, h, w = 16, 4, 5, 2, 3
    anchors, motion = torch.randn(c, k, h, w), torch.randn(c, 1, h, w)
    zeros = torch.zeros(c, g, h, w)
    got = build_replacement_condition(anchors, motion, zeros, torch.zeros(17, h, w), g)
    want = build_condition(anchors, motion, g)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_layout_refuses_mismatches():
    c, k, g, h, w = 16, 4, 3, 2, 2
    a, bg, known = torch.randn(c, k, h, w), torch.randn(c, g, h, w), torch.ones(9, h, w)
    with pytest.raises(ConfigError, match="encodes to 3 latents but the chunk has 5"):
        build_replacement_condition(a, None, bg, known, 5)
    with pytest.raises(ConfigError, match="has 5 frames but 3 latents need 9"):
        build_replacement_condition(a, None, bg, torch.ones(5, h, w), g)
    with pytest.raises(ConfigError, match=r"\[F, 2, 2\]"):
        build_replacement_condition(a, None, bg, torch.ones(9, 4, 4), g)
    with pytest.raises(ConfigError, match="do not match anchors"):
        build_replacement_condition(a, None, torch.randn(c, g, 3, 3), known, g)
    with pytest.raises(ConfigError, match="motion latents do not fit"):
        build_replacement_condition(a, torch.randn(c, 4, h, w), bg, known, g)
    with pytest.raises(ConfigError, match="floating point"):
        build_replacement_condition(a, None, bg.to(torch.int32), known, g)
    with pytest.raises(ConfigError, match=r"1 \+ 4\*\(G-1\)"):
        pack_causal_mask(torch.ones(6, 2, 2))
    with pytest.raises(ConfigError, match="floating point"):
        pack_causal_mask(torch.ones(5, 2, 2, dtype=torch.int64))


# ----------------------------------------------------------------------------------------------
# Mask inputs and fitting
# ----------------------------------------------------------------------------------------------


def test_mask_types():
    assert as_mask_tensor(torch.ones(4, 5)).shape == (1, 4, 5)
    assert torch.equal(as_mask_tensor(np.full((2, 4, 5), 255, np.uint8)), torch.ones(2, 4, 5))
    video = np.zeros((2, 4, 5, 3), np.uint8)
    video[..., 0] = 51
    assert torch.allclose(as_mask_tensor(video), torch.full((2, 4, 5), 0.2))
    assert torch.equal(as_mask_tensor(torch.zeros(1, 4, 5, dtype=torch.bool)), torch.zeros(1, 4, 5))
    with pytest.raises(ConfigError, match="dtype torch.int32"):
        as_mask_tensor(torch.ones(1, 4, 5, dtype=torch.int32))
    with pytest.raises(ConfigError, match="Divide it by 255"):
        as_mask_tensor(torch.full((1, 4, 5), 255.0))
    with pytest.raises(ConfigError, match="got a list"):
        as_mask_tensor([[0, 1]])
    with pytest.raises(ConfigError, match="shape"):
        as_mask_tensor(torch.ones(1, 1, 4, 5, 6))


def test_fit_mask_is_the_reference_nearest_at_the_generation_size():
    m = torch.rand(3, 32, 48)
    got = fit_mask(m, 48, 32)
    want = torch.nn.functional.interpolate(m[:, None], size=(4, 6), mode="nearest")[:, 0]
    assert torch.equal(got, want) and torch.equal(got, m[:, ::8, ::8])
    big = torch.rand(2, 64, 96)  # same aspect, twice the size
    assert fit_mask(big, 48, 32).shape == (2, 4, 6)


def test_fit_mask_crop_pad_stretch_geometry():
    wide = torch.zeros(1, 32, 64)
    wide[:, :, 16:48] = 1  # the centre square
    assert torch.equal(fit_mask(wide, 32, 32, "crop"), torch.ones(1, 4, 4))
    padded = fit_mask(torch.ones(1, 32, 64), 32, 32, "pad")  # scaled to 16x32, bars above and below
    assert torch.equal(padded[0, 1:3], torch.ones(2, 4)) and padded[0, 0].sum() == 0 and padded[0, 3].sum() == 0
    assert fit_mask(wide, 32, 32, "stretch").shape == (1, 4, 4)
    with pytest.raises(ConfigError, match="resize mode"):
        fit_mask(wide, 32, 32, "zoom")


def test_mask_size_must_fit_a_video():
    check_mask_size((832, 480), {"generation size": (416, 240)})
    check_mask_size((1920, 1080), {"generation size": (832, 480), "background video": (1280, 720)})
    with pytest.raises(ConfigError, match="fits neither video"):
        check_mask_size((512, 512), {"generation size": (832, 480), "pose video": (1280, 720)})


# ----------------------------------------------------------------------------------------------
# Reading the background and mask windows
# ----------------------------------------------------------------------------------------------

W, H = 32, 16


def bar_video(n: int) -> np.ndarray:
    """uint8 frames whose red channel is the frame index and whose green bar moves with it."""
    v = np.zeros((n, H, W, 3), np.uint8)
    for i in range(n):
        v[i, :, :, 0] = i
        v[i, :, (i % 4) * 8 : (i % 4) * 8 + 8, 1] = 255
    return v


def bar_mask(n: int) -> torch.Tensor:
    m = torch.zeros(n, H, W)
    for i in range(n):
        m[i, :, (i % 4) * 8 : (i % 4) * 8 + 8] = 1
    return m


def test_window_reads_the_pose_indices_with_the_window_mode():
    settings = ChunkSettings(frames=9, overlap=4, anchors=4)
    plan = plan_for_driving(12, settings, total_frames=30, mode="pingpong")
    src = ReplacementSource(bar_video(12), bar_mask(12), W, H, driving_frames=12)
    src.check_plan(plan, "pingpong")
    for chunk in plan:
        idx = chunk_driving_indices(chunk, 12, "pingpong")
        bg, known = src.window(chunk, "pingpong")
        assert bg.shape == (chunk.frames, H, W, 3)
        assert bg[:, 0, 0, 0].tolist() == idx.tolist()
        assert torch.equal(known, 1 - bar_mask(12)[idx][:, ::8, ::8])
    assert any(chunk_driving_indices(c, 12, "pingpong").max() < c.end - 1 for c in plan), "ping-pong was exercised"


def test_one_mask_for_every_frame_and_mask_video_frames():
    chunk = plan_for_driving(9, ChunkSettings(frames=9, overlap=4, anchors=1))[0]
    single = torch.zeros(H, W)
    single[:, :8] = 1
    for mask in (single, single[None], np.repeat((single.numpy() * 255).astype(np.uint8)[None, ..., None], 9, 0).repeat(3, -1)):
        _, known = ReplacementSource(bar_video(9), mask, W, H, driving_frames=9).window(chunk, "strict")
        assert known.shape == (9, 2, 4)
        assert torch.equal(known, (1 - single[::8, ::8]).expand(9, -1, -1))


def test_background_shorter_than_needed_names_the_window_mode():
    plan = plan_for_driving(20, ChunkSettings(frames=9, overlap=4, anchors=4), total_frames=40, mode="loop")
    src = ReplacementSource(bar_video(10), bar_mask(20), W, H, driving_frames=20)
    with pytest.raises(DrivingVideoError, match=r"background video has 10 frames.*window mode 'loop'.*at least"):
        src.check_plan(plan, "loop")
    src.window(plan[0], "loop")  # chunk 0 reads frames 0..8 only


def test_source_refuses_bad_masks_and_frames():
    with pytest.raises(DrivingVideoError, match="fits neither the background video"):
        ReplacementSource(bar_video(12), bar_mask(7), W, H, driving_frames=12)
    with pytest.raises(ConfigError, match="fits neither video"):
        ReplacementSource(bar_video(12), torch.zeros(12, 30, 30), W, H, driving_frames=12, video_sizes={"pose video": (64, 32)})
    with pytest.raises(ConfigError, match="character mask as well"):
        ReplacementSource(bar_video(12), None, W, H, driving_frames=12)
    with pytest.raises(DrivingVideoError, match="background video is empty"):
        ReplacementSource(bar_video(0), bar_mask(1), W, H, driving_frames=12)
    chunk = plan_for_driving(9, ChunkSettings(frames=9, overlap=4, anchors=1))[0]
    wrong = ReplacementSource(bar_video(9).astype(np.float32), bar_mask(9), W, H, driving_frames=9)
    with pytest.raises(ConfigError, match="must be uint8"):
        wrong.window(chunk, "strict")
    bad_dtype = ReplacementSource(bar_video(9), torch.ones(9, H, W, dtype=torch.int16), W, H, driving_frames=9)
    with pytest.raises(ConfigError, match="dtype torch.int16"):
        bad_dtype.window(chunk, "strict")


def test_chunk_replacement_condition_encodes_the_window_as_one_video():
    settings = ChunkSettings(frames=9, overlap=4, anchors=4)
    plan = plan_for_driving(30, settings)
    src = ReplacementSource(bar_video(30), bar_mask(30), W, H, driving_frames=30)
    seen = []

    def encode_video(frames):
        seen.append(frames[:, 0, 0, 0].tolist())
        g = 1 + (len(frames) - 1) // 4
        return torch.arange(g, dtype=torch.float32).view(1, g, 1, 1).expand(16, g, H // 8, W // 8) + float(frames[0, 0, 0, 0])

    anchors, motion = torch.randn(16, 4, H // 8, W // 8), torch.randn(16, 1, H // 8, W // 8)
    cond, mask, layout, bg = chunk_replacement_condition(src, anchors, motion, plan[1], "pingpong", encode_video)
    assert seen == [list(range(5, 14))]
    assert cond.shape == (16, 7, 2, 4) and mask.shape == (4, 7, 2, 4)
    assert torch.equal(cond[:, 5:], encode_video(bg)[:, 1:]), "slots after the motion read this chunk's window"


# ----------------------------------------------------------------------------------------------
# The restorative background term
# ----------------------------------------------------------------------------------------------


def test_known_weight_is_the_minimum_over_the_four_frames():
    packed = torch.ones(4, 2, 1, 2)
    packed[2, 1, 0, 0] = 0  # the character crosses this pixel in one frame of latent 1
    assert background_known_weight(packed).flatten().tolist() == [1, 1, 0, 1]


def test_restoration_pulls_known_background_and_leaves_the_character_alone():
    c, g, h, w = 4, 3, 2, 2
    gen = torch.Generator().manual_seed(5)
    bg = torch.randn(c, g, h, w, generator=gen)
    noise = torch.randn(1, c, g, h, w, generator=gen)
    known = torch.ones(1 + 4 * (g - 1), h, w)
    known[:, 0, 0] = 0  # the character stands on pixel (0, 0) throughout
    packed = pack_causal_mask(known)
    s, s_next, alpha = 0.8, 0.6, 1.5
    deviation = torch.randn(1, c, g, h, w, generator=gen)
    x = add_noise(bg, noise, s) + deviation
    v = clean_velocity(bg, noise)  # the velocity of the background trajectory
    v2 = restore_background_velocity(v, x, noise, bg, packed, s, alpha)
    correction = v2 - v
    assert torch.equal(correction[..., 0, 0], torch.zeros_like(correction[..., 0, 0])), "zero where generate"
    assert torch.allclose(correction[..., 1, 1], alpha * deviation[..., 1, 1])
    assert correction[..., 1, 1].abs().sum() > 0, "a no-op would fail here"
    after = euler_step(x, v2, s, s_next) - add_noise(bg, noise, s_next)
    factor = 1 - alpha * (s - s_next)
    assert torch.allclose(after[..., 1, 1], factor * deviation[..., 1, 1], atol=1e-6), "pulled toward the background"
    assert torch.allclose(after[..., 0, 0], deviation[..., 0, 0], atol=1e-6), "the character is left to the model"


def test_restoration_in_a_chunk_touches_only_background_slots():
    c, k, g, h, w = 4, 4, 3, 2, 2
    anchors, motion, bg = torch.randn(c, k, h, w), torch.randn(c, 1, h, w), torch.randn(c, g, h, w)
    cond, mask, layout = build_replacement_condition(anchors, motion, bg, torch.ones(9, h, w), g, motion_mask="known")
    x, v, noise = torch.randn(1, c, k + g, h, w), torch.randn(1, c, k + g, h, w), torch.randn(1, c, k + g, h, w)
    out = restore_background_in_chunk(v, x, noise, cond, mask, layout, 0.5, 1.0)
    assert torch.equal(out[:, :, : k + 1], v[:, :, : k + 1]), "anchors and the motion slot are left alone"
    want = v[:, :, k + 1 :] + (x[:, :, k + 1 :] - add_noise(bg[:, 1:], noise[:, :, k + 1 :], 0.5))
    assert torch.allclose(out[:, :, k + 1 :], want)
    with pytest.raises(ConfigError, match="must have one shape"):
        restore_background_velocity(v, x[:, :, :2], noise, bg, mask, 0.5, 1.0)


# --------------------------------------------------------------------------- through the chunk loop


def test_the_loop_reads_each_chunks_background_window_and_refuses_a_short_one_before_chunk0():
    from everanimate_core.pipeline import AnimationSettings, ChunkLoop, RunInputs
    from test_pipeline import _random_backend

    rng = np.random.default_rng(0)
    n = 30
    pose = rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    ref = pose[0]
    background = np.stack([np.full((32, 32, 3), 8 * i, np.uint8) for i in range(n)])  # differs per frame
    mask = np.zeros((n, 32, 32), np.float32)
    mask[:, 8:24, 8:24] = 1.0
    settings = AnimationSettings(chunk=ChunkSettings(13, 4, 2), steps=2)
    source = ReplacementSource(background, mask, 32, 32, n)
    loop = ChunkLoop(_random_backend(), settings)
    inputs = RunInputs(ref, pose, replacement=source)
    plan = loop.plan(inputs)
    memory = loop.start(ref)
    for chunk in plan.chunks[:2]:
        request, _ = loop.request(memory, chunk, inputs)
        idx = chunk_driving_indices(chunk, n, settings.window_mode)
        bg = loop.backend.encode_pose(background[idx])
        k, m = settings.chunk.anchors, 0 if chunk.index == 0 else settings.chunk.motion_latents
        assert torch.equal(request.condition[:, k + m:], bg[:, m:]), chunk.index
        assert request.mask[:, :k].eq(1).all() and request.mask[:, k + m:].min() == 0 and request.mask[:, k + m:].max() == 1
        generated, frames, pose_frames = loop.generate(memory, chunk, inputs)
        memory = loop.advance(memory, generated, frames, pose_frames)
    plain, _ = ChunkLoop(_random_backend(), settings).request(ChunkLoop(_random_backend(), settings).start(ref), plan[0], RunInputs(ref, pose))
    assert request.mask.sum() > 0 and not torch.equal(plain.condition, loop.request(loop.start(ref), plan[0], inputs)[0].condition)
    short = RunInputs(ref, pose, replacement=ReplacementSource(background[:20], mask, 32, 32, n))
    with pytest.raises(DrivingVideoError, match="background video has 20 frames"):
        ChunkLoop(_random_backend(), settings).plan(short)


def test_background_restoration_in_the_loop_pulls_the_known_background_only_when_asked():
    from dataclasses import replace as with_

    from everanimate_core.pipeline import AnimationSettings, ChunkLoop, RunInputs
    from everanimate_core.sampler import BackgroundRestoration
    from test_pipeline import _random_backend

    rng = np.random.default_rng(1)
    n = 13
    pose = rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    background = np.repeat(np.linspace(30, 220, 32, dtype=np.float32)[None, None, :, None], 32, 1)
    background = np.repeat(background, 3, -1).astype(np.uint8).repeat(n, 0)
    mask = np.zeros((n, 32, 32), np.float32)
    mask[:, 8:24, 12:20] = 1.0
    base = AnimationSettings(chunk=ChunkSettings(13, 4, 2), steps=6)
    inputs = RunInputs(pose[0], pose, replacement=ReplacementSource(background, mask, 32, 32, n))
    dist = {}
    for strength in (0.0, 4.0):
        s = base if strength == 0 else with_(base, background_restoration=BackgroundRestoration(strength=strength))
        loop = ChunkLoop(_random_backend(), s)
        memory, chunk = loop.start(pose[0]), loop.plan(inputs)[0]
        request, _ = loop.request(memory, chunk, inputs)
        assert (request.background is None) == (strength == 0)
        generated, _ = loop.sample(memory, chunk, inputs)
        k = s.chunk.anchors
        known = background_known_weight(request.mask[:, k:])  # 1 on the background, 0 where the character goes
        gap = (generated - request.condition[:, k:]).abs() * known[None]
        dist[strength] = float(gap.sum() / known.sum() / generated.shape[0])
    assert dist[4.0] < 0.5 * dist[0.0], dist
    with pytest.raises(ConfigError, match="replacement mode"):
        loop = ChunkLoop(_random_backend(), with_(base, background_restoration=BackgroundRestoration()))
        loop.request(loop.start(pose[0]), loop.plan(RunInputs(pose[0], pose))[0], RunInputs(pose[0], pose))
