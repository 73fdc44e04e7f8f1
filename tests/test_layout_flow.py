"""Conditioning layout, sigma schedule, Euler and the restorative term."""

from __future__ import annotations

import json

import pytest
import torch

from everanimate_core.errors import ConfigError
from everanimate_core.flow import (
    AlphaSchedule,
    add_noise,
    clean_velocity,
    deviation_factor,
    euler_step,
    restorative_velocity,
    rfm_target,
    sampling_sigmas,
)
from everanimate_core.layout import build_condition, model_input_condition
from everanimate_core.sampler import AnchorRestoration, ChunkCondition, chunk_noise, chunk_seed, sample_chunk

RELEASE_SIGMAS_20_SHIFT5 = [
    1.0, 0.9895833134651184, 0.97826087474823, 0.9659090638160706, 0.9523810148239136, 0.9375,
    0.9210526347160339, 0.9027777910232544, 0.882352888584137, 0.859375, 0.8333333134651184,
    0.8035714030265808, 0.7692307829856873, 0.7291666269302368, 0.6818181872367859, 0.625,
    0.5555555820465088, 0.46875, 0.3571428656578064, 0.2083333283662796,
]


def test_layout_anchors_motion_padding_and_mask():
    c, k, g, h, w = 16, 4, 20, 8, 8
    anchors = torch.randn(c, k, h, w)
    motion = torch.randn(c, 1, h, w)
    latent, mask, layout = build_condition(anchors, motion, g)
    assert latent.shape == (c, k + g, h, w) and mask.shape == (4, k + g, h, w)
    assert torch.equal(latent[:, :k], anchors)
    assert torch.equal(latent[:, k : k + 1], motion)
    assert torch.count_nonzero(latent[:, k + 1 :]) == 0, "padding is normalized zero"
    assert mask[:, :k].eq(1).all() and mask[:, k:].eq(0).all(), "mask 1 on anchors only, 0 on the motion slot"
    y = model_input_condition(latent, mask)
    assert y.shape[0] == 20 and torch.equal(y[:4], mask)


def test_layout_chunk_zero_has_no_motion():
    latent, mask, layout = build_condition(torch.ones(16, 4, 2, 2), None, 5)
    assert layout.motion == 0 and torch.count_nonzero(latent[:, 4:]) == 0


def test_layout_matches_parity_fixture(parity_dir):
    from safetensors.torch import load_file

    c1 = load_file(str(parity_dir / "chunk_001.safetensors"))
    c0 = load_file(str(parity_dir / "chunk_000.safetensors"))
    anchors = c0["state_out_anchor_latents"]
    motion = c0["trimmed_latents"][:, -1:]
    latent, mask, _ = build_condition(anchors, motion, 20)
    y = model_input_condition(latent, mask)[None]
    assert torch.equal(y[:, :4], c1["y"][:, :4])
    assert torch.allclose(y[:, 4:], c1["y"][:, 4:], atol=1e-6)


def test_layout_refuses_mismatched_motion():
    with pytest.raises(ConfigError):
        build_condition(torch.zeros(16, 4, 8, 8), torch.zeros(16, 1, 4, 4), 20)


def test_sigmas_equal_the_release():
    s = sampling_sigmas(20, 5.0)
    assert len(s) == 21 and s[-1] == 0
    assert torch.allclose(s[:-1], torch.tensor(RELEASE_SIGMAS_20_SHIFT5), atol=1e-7)


def test_sigmas_equal_parity_meta(parity_dir):
    meta = json.loads((parity_dir / "meta.json").read_text())
    assert torch.allclose(sampling_sigmas(20, 5.0)[:-1], torch.tensor(meta["scheduler"]["sigmas"]), atol=1e-7)


def test_euler_integrates_the_straight_path_exactly():
    x0, eps = torch.randn(3, 5), torch.randn(3, 5)
    x = eps.clone()
    sig = sampling_sigmas(7, 3.0)
    for i in range(7):
        x = euler_step(x, clean_velocity(x0, eps), float(sig[i]), float(sig[i + 1]))
    assert torch.allclose(x, x0, atol=1e-5)


@pytest.mark.parametrize("name", ["fixed", "sigma_ramp", "gaussian_timestep", "scheduler_weight"])
def test_restorative_term_shrinks_deviation_by_one_minus_alpha_d(name):
    sched = AlphaSchedule(name, weight=1.0)
    x0, eps = torch.randn(4, 6), torch.randn(4, 6)
    delta = torch.randn(4, 6)
    sig = sampling_sigmas(20, 5.0)
    for i in range(19):
        s, sn = float(sig[i]), float(sig[i + 1])
        ref = add_noise(x0, eps, s)
        drifted = ref + delta
        v = restorative_velocity(clean_velocity(x0, eps), drifted, ref, sched(s))
        new_dev = euler_step(drifted, v, s, sn) - euler_step(ref, clean_velocity(x0, eps), s, sn)
        factor = deviation_factor(sched(s), s, sn)
        assert torch.allclose(new_dev, delta * factor, atol=1e-5)
        if sched(s) > 0:
            assert abs(factor) < 1


def test_gaussian_schedule_shape():
    a = AlphaSchedule("gaussian_timestep", 1.0)
    assert a(0.5) == pytest.approx(1.0, abs=1e-3)
    assert a(1.0) == pytest.approx(0.0, abs=1e-6)
    assert a(0.0) < 0.05
    assert AlphaSchedule("scheduler_weight")(0.5) == pytest.approx(2.08, abs=0.01)


def test_rfm_target_uses_shared_noise_and_reduces_to_clean_without_degradation():
    x0, eps = torch.randn(2, 3), torch.randn(2, 3)
    inp, tgt = rfm_target(x0, x0.clone(), eps, 0.7, AlphaSchedule("fixed", 2.0))
    assert torch.allclose(tgt, eps - x0) and torch.allclose(inp, add_noise(x0, eps, 0.7))
    deg = x0 + 1.0
    inp, tgt = rfm_target(x0, deg, eps, 0.7, AlphaSchedule("fixed", 2.0))
    assert torch.allclose(tgt, (eps - x0) + 2.0 * 0.3 * (deg - x0), atol=1e-6)
    inp, tgt = rfm_target(x0, deg, eps, 0.5, AlphaSchedule("augmented_velocity"))
    assert torch.allclose(tgt, (inp - x0) / 0.5)


def test_unknown_schedule_is_refused():
    with pytest.raises(ConfigError, match="alpha schedule"):
        AlphaSchedule("cosine")


class _OracleDenoiser:
    """Knows the clean x0; returns the exact velocity or x0 for any x."""

    def __init__(self, x0, prediction):
        self.x0, self.prediction = x0, prediction

    def __call__(self, x, sigma, cond):
        if self.prediction == "x0":
            return self.x0.expand_as(x)
        return (x - self.x0) / sigma


@pytest.mark.parametrize("prediction", ["velocity", "x0"])
def test_sampler_reaches_the_oracle_target_for_both_predictions(prediction):
    x0 = torch.randn(1, 4, 6, 2, 2)
    cond = ChunkCondition(y=torch.zeros(1, 8, 6, 2, 2), pose=None, anchors=2, extras={})
    out = sample_chunk(_OracleDenoiser(x0, prediction), chunk_noise(x0.shape, 3), cond, sampling_sigmas(20, 5.0))
    assert torch.allclose(out, x0, atol=1e-4)


def test_anchor_restoration_pulls_anchor_slots_to_the_anchors_and_leaves_others():
    k = 2
    target = torch.randn(1, 4, 6, 2, 2)
    anchors = torch.randn(1, 4, k, 2, 2)

    class Biased:
        prediction = "velocity"

        def __call__(self, x, sigma, cond):
            return (x - target) / sigma  # drives every slot to `target`, anchors included

    cond = ChunkCondition(y=torch.zeros(1, 8, 6, 2, 2), pose=None, anchors=k, extras={})
    noise = chunk_noise(target.shape, 1)
    sig = sampling_sigmas(20, 5.0)
    plain = sample_chunk(Biased(), noise, cond, sig)
    restored = sample_chunk(Biased(), noise, cond, sig, anchors, AnchorRestoration(AlphaSchedule("fixed", 3.0)))
    err_plain = (plain[:, :, :k] - anchors).abs().mean()
    err_rest = (restored[:, :, :k] - anchors).abs().mean()
    assert err_rest < 0.8 * err_plain
    assert torch.allclose(plain[:, :, k:], restored[:, :, k:]), "restoration touches the anchor slots only"


def test_noise_is_the_comfy_and_release_stream():
    n = chunk_noise((1, 16, 24, 8, 8), 42)
    torch.manual_seed(42)
    assert torch.equal(n, torch.randn(1, 16, 24, 8, 8))


def test_noise_equals_parity_fixture(parity_dir):
    from safetensors.torch import load_file

    for c in range(3):
        fx = load_file(str(parity_dir / f"chunk_{c:03d}.safetensors"))
        assert torch.equal(chunk_noise(tuple(fx["noise"].shape), chunk_seed(42, c)), fx["noise"])


def test_seed_policies():
    assert [chunk_seed(42, c) for c in range(3)] == [0, 42, 84]
    assert chunk_seed(7, 3, "increment") == 10 and chunk_seed(7, 3, "fixed") == 7
    with pytest.raises(ConfigError):
        chunk_seed(1, 1, "random")


@pytest.mark.parametrize("name", ["fixed", "sigma_ramp", "gaussian_timestep", "scheduler_weight"])
def test_alpha_for_a_batch_of_sigmas_equals_alpha_of_each(name):
    sched = AlphaSchedule(name, weight=0.8)
    sig = torch.tensor([0.03, 0.2, 0.5, 0.77, 0.999])
    vals = sched.values(sig)
    assert vals.shape == (5,)
    for s, v in zip(sig.tolist(), vals.tolist()):
        assert v == pytest.approx(sched(s), abs=1e-7)
    # a batched stage-2 target equals the per-sample one
    x0, deg, eps = torch.randn(5, 3, 2), torch.randn(5, 3, 2), torch.randn(5, 3, 2)
    inp, tgt = rfm_target(x0, deg, eps, sig, sched)
    for i, s in enumerate(sig.tolist()):
        inp_i, tgt_i = rfm_target(x0[i], deg[i], eps[i], s, sched)
        assert torch.allclose(inp[i], inp_i, atol=1e-6) and torch.allclose(tgt[i], tgt_i, atol=1e-5)
