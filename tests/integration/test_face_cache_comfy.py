"""The face-motion cache inside real ComfyUI sampling: a chunk equals the every-step encoder's chunk.

The tiny random weights' motion encoder (StyleGAN-style EqualConv layers, drawn with std 0.02 and
scaled again by 1/sqrt(fan_in) at run time) shrinks every face to a motion of ~1e-18, whose effect on
the latents is rounded away: on those weights ANY face motion, stale or not, gives the same chunk.
So these tests first redraw the motion encoder's weights with std 1 (the StyleGAN convention the
run-time scale assumes) and check that the face frames do change the chunk.

One short chunk (5 pixel frames, K = 4, 3 steps) of the tiny random Wan2.2-Animate with real
512x512 face crops, sampled through the pack's ComfyUI backend under inference mode (as the server
runs nodes), once with the cache and once with the encoders forced at every model call
(``cache_face=False``). At cfg > 1 ComfyUI either batches cond and uncond (a fresh torch.cat of both
face tensors at every step; 2 x 5 frames, so one encoder batch of 8 mixes them) or, when it decides
the batch does not fit, runs them one after the other: both are covered. Slow: the motion encoder
takes ~2.5 s per 512x512 frame on 2 CPU cores, and the forced runs pay it at every call (~7 minutes in all).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from everanimate_core.pipeline import AnimationSettings, ChunkLoop, RunInputs
from everanimate_core.plan import ChunkSettings, frames_for_chunks, plan_chunks

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHUNK = ChunkSettings(5, 4, 4)
SETTINGS = AnimationSettings(chunk=CHUNK, steps=3, shift=5.0, seed=7, anchor_seed=12345)


class _ClipStandIn:
    """An image-independent CLIP vision output of the right shape (the model needs one for i2v)."""

    def __init__(self):
        self.hidden = torch.randn(1, 257, 1280, generator=torch.Generator().manual_seed(3)) * 0.1

    def encode_image(self, image, crop=True):
        import comfy.clip_vision

        out = comfy.clip_vision.Output()
        out["penultimate_hidden_states"] = self.hidden.clone()
        return out


def _face_sensitive(model):
    """The tiny model with motion-encoder weights of std 1, so that the face reaches the latents."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in model.model.diffusion_model.motion_encoder.parameters():
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float32).to(p.dtype))
    return model


@pytest.fixture(scope="module")
def parts(pack, tiny_weights):
    import comfy.sd
    import comfy.utils

    rng = np.random.default_rng(11)
    frames = frames_for_chunks(1, CHUNK)
    return {
        "model": _face_sensitive(comfy.sd.load_diffusion_model(str(tiny_weights["unet"]))),
        "vae": comfy.sd.VAE(sd=comfy.utils.load_torch_file(str(tiny_weights["vae"]))),
        "clip": _ClipStandIn(),
        "reference": rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        "pose": rng.integers(0, 256, (frames, 64, 64, 3), dtype=np.uint8),
        "face": rng.integers(0, 256, (frames, 512, 512, 3), dtype=np.uint8),
        "other_face": rng.integers(0, 256, (frames, 512, 512, 3), dtype=np.uint8),
        "chunk": plan_chunks(frames, CHUNK)[0],
    }


def _patched(parts, cache_face: bool):
    from everanimate_pack_under_test.nodes.wan_patch import with_k_anchor_patch

    return with_k_anchor_patch(parts["model"], CHUNK.anchors, cache_face=cache_face)


def _sample(parts, model, cfg: float, face="face"):
    """(generated latents, frames the motion encoder saw, face batch sizes the patch got)."""
    from everanimate_pack_under_test.nodes.comfy_backend import ComfyWanBackend
    from everanimate_pack_under_test.nodes.wan_patch import PATCH_TARGET

    patch = model.object_patches[PATCH_TARGET]
    encoder = patch.diffusion_model.motion_encoder
    seen_frames, face_batches = [], []
    native_get_motion, native_face_motion = encoder.get_motion, patch.face_motion

    def counting_get_motion(x):
        seen_frames.append(x.shape[0])
        return native_get_motion(x)

    def recording_face_motion(face):
        face_batches.append(face.shape[0])
        return native_face_motion(face)

    encoder.get_motion, patch.face_motion = counting_get_motion, recording_face_motion
    try:
        negative = [[torch.zeros(1, 512, 4096), {}]]
        positive = [[torch.zeros(1, 512, 4096), {}]]
        backend = ComfyWanBackend(model, parts["vae"], positive, negative, parts["clip"], cfg)
        with torch.inference_mode():
            loop = ChunkLoop(backend, SETTINGS)
            generated, _ = loop.sample(
                loop.start(parts["reference"]), parts["chunk"], RunInputs(parts["reference"], parts["pose"], parts.get(face))
            )
    finally:
        del encoder.get_motion, patch.face_motion  # back to the class methods
    assert len(patch.face_cache) == 0 and not patch.face_cache.active, "the cache is emptied after the run"
    return generated, sum(seen_frames), face_batches


@pytest.mark.parametrize(
    "cfg,batched",
    [(1.0, None), (3.0, True), (3.0, False)],
    ids=["cfg1", "cfg3-cond-uncond-batched", "cfg3-cond-uncond-separate"],
)
def test_cached_chunk_equals_the_every_step_encoder(parts, monkeypatch, cfg, batched):
    import comfy.samplers

    if batched is False:  # what ComfyUI does when cond + uncond do not fit in one batch
        monkeypatch.setattr(comfy.samplers, "can_concat_cond", lambda c1, c2: c1 is c2)
    t = CHUNK.frames
    forced, forced_frames, forced_batches = _sample(parts, _patched(parts, False), cfg)
    cached_model = _patched(parts, True)
    cached, cached_frames, cached_batches = _sample(parts, cached_model, cfg)
    assert cached_batches == forced_batches
    if cfg == 1.0:
        assert forced_batches == [1] * SETTINGS.steps
        inputs = 1
    elif batched:
        assert forced_batches == [2] * SETTINGS.steps, "ComfyUI batches cond and uncond on a CPU"
        inputs = 1
    else:
        assert forced_batches == [1] * (2 * SETTINGS.steps)
        inputs = 2
    assert forced_frames == SETTINGS.steps * 2 * t if cfg > 1 else SETTINGS.steps * t
    assert cached_frames == inputs * (2 if batched else 1) * t, "the encoder runs once per distinct face input"
    assert torch.isfinite(cached).all()
    assert torch.equal(cached, forced), f"cached chunk differs by {(cached - forced).abs().max().item()}"
    if cfg == 1.0:
        # not vacuous: the face frames change the chunk
        assert not torch.equal(cached, _sample(parts, cached_model, cfg, face=None)[0])
        # the next chunk's face window through the same patched MODEL: encoded, never the last one's
        other, other_frames, _ = _sample(parts, cached_model, cfg, face="other_face")
        assert other_frames == t and not torch.equal(other, cached)
        assert torch.equal(other, _sample(parts, _patched(parts, False), cfg, face="other_face")[0])
