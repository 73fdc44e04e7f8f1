"""The degradation family of Restorative Flow Matching and the anchors' affine augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from everanimate_core.training.degrade import (
    AffineParams,
    DegradeConfig,
    DegradeParams,
    affine_params,
    apply_affine,
    clahe,
    degrade_latents,
    degrade_pixels,
    degrade_uint8,
    draw_params,
)
from everanimate_core.errors import ConfigError
from everanimate_core.tiny.synthdance import make_sequence


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return make_sequence(0, "test", 64, 64, 8.0).frames(0, 6)


def _unit(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255.0


def test_one_parameter_set_is_applied_to_every_frame_alike(clip):
    p = draw_params(torch.Generator().manual_seed(3))
    together = degrade_uint8(clip, p)
    alone = np.concatenate([degrade_uint8(clip[i : i + 1], p) for i in range(len(clip))])
    assert np.array_equal(together, alone)
    # the same frame twice in a clip is degraded identically
    twice = degrade_uint8(np.stack([clip[2], clip[2]]), p)
    assert np.array_equal(twice[0], twice[1])


def test_draws_are_seeded_and_follow_the_release_probabilities():
    g1, g2 = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    assert draw_params(g1) == draw_params(g2)
    g = torch.Generator().manual_seed(0)
    draws = [draw_params(g) for _ in range(3000)]
    frac = lambda f: np.mean([f(p) for p in draws])  # noqa: E731
    assert frac(lambda p: p.clip_limit is not None) == pytest.approx(0.9, abs=0.03)
    assert frac(lambda p: p.saturation is not None) == pytest.approx(0.3, abs=0.03)
    assert frac(lambda p: p.brightness is not None) == pytest.approx(0.1, abs=0.02)
    assert frac(lambda p: bool(p.rects)) == pytest.approx(0.9, abs=0.03)
    cfg = DegradeConfig()
    for p in draws:
        if p.saturation is not None:
            assert cfg.saturation[0] <= p.saturation <= cfg.saturation[1]
        assert len(p.rects) <= 4
        for y0, x0, rh, rw, f in p.rects:
            assert 0.1 <= rh <= 0.3 and 0.1 <= rw <= 0.3 and 8 <= f <= 32
            assert y0 + rh <= 1.0 + 1e-6 and x0 + rw <= 1.0 + 1e-6


def test_identity_parameters_change_nothing(clip):
    assert DegradeParams().is_identity
    assert np.array_equal(degrade_uint8(clip, DegradeParams()), clip)
    z = torch.randn(16, 3, 8, 8)
    assert torch.equal(degrade_latents(z, DegradeParams()), z)


def test_clahe_keeps_order_and_its_clip_limit_bounds_the_contrast_gain():
    ramp = torch.linspace(0.4, 0.6, 64).view(1, 1, 1, 64).expand(2, 1, 64, 64).contiguous()
    low = clahe(ramp, clip_limit=1.0, tiles=2)
    eq = clahe(ramp, clip_limit=64.0, tiles=2)
    for out in (clahe(ramp, 1.0, 1), clahe(ramp, 64.0, 1)):  # one tile: a global, monotone mapping
        assert bool((out[0, 0, 0, 1:] >= out[0, 0, 0, :-1] - 1e-6).all())
    assert float(ramp.std()) < float(low.std()) < float(eq.std())
    assert float(eq.std()) > 2 * float(ramp.std())
    assert float(eq.min()) >= 0 and float(eq.max()) <= 1
    with pytest.raises(ConfigError):
        clahe(ramp, 2.0, 0)


def test_each_operation_does_what_it_says(clip):
    x = _unit(clip)
    sat = degrade_pixels(x, DegradeParams(saturation=2.0))
    chroma = lambda t: (t - t.mean(dim=1, keepdim=True)).abs().mean()  # noqa: E731
    assert chroma(sat) > 1.3 * chroma(x)
    bri = degrade_pixels(x, DegradeParams(brightness=0.8))
    assert float(bri.mean()) == pytest.approx(0.8 * float(x.mean()), rel=0.02)
    rect = (0.25, 0.25, 0.3, 0.3, 16)
    er = degrade_pixels(x, DegradeParams(rects=(rect,)))
    inside = (slice(16, 35), slice(16, 35))
    outside = torch.ones(64, 64, dtype=torch.bool)
    outside[inside] = False
    assert torch.equal(er[..., outside], x[..., outside])
    grad = lambda t: (t[..., 1:, :] - t[..., :-1, :]).abs().mean()  # noqa: E731
    assert grad(er[..., inside[0], inside[1]]) < 0.5 * grad(x[..., inside[0], inside[1]])


def test_latent_option_degrades_latents_and_keeps_their_shape():
    z = torch.randn(16, 5, 8, 8, generator=torch.Generator().manual_seed(0))
    p = DegradeParams(clip_limit=8.0, tiles=2, saturation=2.0, brightness=1.1, rects=((0.1, 0.1, 0.3, 0.3, 16),))
    d = degrade_latents(z, p)
    assert d.shape == z.shape and not torch.allclose(d, z)
    with pytest.raises(ConfigError):
        degrade_latents(z[0], p)


def test_anchor_affine_is_shared_and_identity_when_not_drawn(clip):
    x = _unit(clip[:3])
    assert torch.equal(apply_affine(x, AffineParams()), x)
    a = AffineParams(scale=1.2, shift_y=0.0, shift_x=0.0)
    zoomed = apply_affine(x, a)
    assert zoomed.shape == x.shape and not torch.allclose(zoomed, x)
    # one transform for all: frame i of the batch equals the frame transformed alone
    assert torch.allclose(zoomed[1:2], apply_affine(x[1:2], a), atol=1e-6)
    shifted = apply_affine(x, AffineParams(1.0, 0.0, 0.1))
    assert torch.allclose(shifted[..., :, :2], torch.full_like(shifted[..., :, :2], 0.5), atol=0.02)  # grey border
    g = torch.Generator().manual_seed(0)
    drawn = [affine_params(g) for _ in range(2000)]
    assert np.mean([not d.is_identity for d in drawn]) == pytest.approx(0.5, abs=0.04)
    assert all(0.8 <= d.scale <= 1.2 and abs(d.shift_x) <= 0.1 for d in drawn)
