"""The shipped EverAnimate-Tiny: it loads without downloads, animates, and the demo runs."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from everanimate_core.apps.demo import run_demo, thread_candidates
from everanimate_core.tiny.backend import WEIGHTS_DIR, load_tiny
from everanimate_core.tiny.synthdance import make_sequence
from everanimate_core.tiny.vae import frames_to_tensor, tensor_to_frames
from everanimate_core.apps.metrics import psnr
from everanimate_core.infra.video import count_frames, video_info

# The VAE floor sits between a VAE that returns grey blurs (20.7 dB, an early failure) and the
# shipped VAEs (v1 26-27 dB; v2 in docs/tiny_v2.md). The chunk-0 quality floors, which must beat the
# trivial answers, are in test_tiny_v2.py.
VAE_PSNR_FLOOR = 24.0


def test_weights_are_shipped_and_small():
    files = list(WEIGHTS_DIR.glob("*.safetensors"))
    assert len(files) == 2
    assert sum(f.stat().st_size for f in files) <= 20 * 2**20


def test_vae_has_wan_temporal_layout_and_is_lossy():
    be = load_tiny()
    seq = make_sequence(0, "test")
    gt = seq.frames(0, 9)
    with torch.no_grad():
        z = be.vae.encode(frames_to_tensor(gt))
        assert z.shape[2] == 3, "9 frames -> 1 + 2 latents"
        single = be.vae.encode(frames_to_tensor(gt[:1]))
        assert torch.allclose(single[:, :, 0], z[:, :, 0], atol=1e-5), "latent 0 depends on frame 0 only (causal)"
        rec = tensor_to_frames(be.vae.decode(z)).numpy()
    p = psnr(rec, gt)
    assert VAE_PSNR_FLOOR < p < 60, f"VAE PSNR {p:.2f}: should reconstruct well but not perfectly"


def test_chunk0_beats_a_model_without_the_reference():
    """The animation must use the reference: swapping in another dancer's reference hurts PSNR."""
    from everanimate_core.pipeline import AnimationSettings, ChunkLoop, RunInputs
    from everanimate_core.plan import ChunkSettings, plan_chunks

    be = load_tiny()
    mc = be.config
    st = AnimationSettings(chunk=ChunkSettings(mc.frames, mc.overlap, mc.anchors), steps=10)
    chunk = plan_chunks(mc.frames, st.chunk)[0]
    seq, other = make_sequence(1, "test"), make_sequence(2, "test")
    gt = seq.frames(0, mc.frames)
    pose = seq.pose(0, mc.frames)
    scores = []
    for ref in (seq.reference(), other.reference()):
        loop = ChunkLoop(be, st)
        _, frames, _ = loop.generate(loop.start(ref), chunk, RunInputs(ref, pose))
        scores.append(psnr(frames, gt))
    assert scores[0] > scores[1] + 2.0, scores


def test_demo_smoke_run(tmp_path):
    s = run_demo(seconds=5, out_dir=tmp_path, steps=2, quiet=True, world=False)
    n = int(round(5 * s["fps"]))
    assert s["frames"] == n == s["driving_frames"]
    assert count_frames(tmp_path / "everanimate_tiny.mp4", exact=True) == n
    info = video_info(tmp_path / "everanimate_tiny_side_by_side.mp4")
    assert info.frames == n and info.width == 3 * info.height
    assert json.loads((tmp_path / "summary.json").read_text())["frames"] == n
    assert np.isfinite(s["first_10s"]["psnr"])
    assert s["scene"] == "plain" and s["threads"] in thread_candidates()
    assert set(s["thread_timing_s"]) == {str(n) for n in thread_candidates()}


def test_demo_threads_can_be_chosen_and_the_world_is_the_default(tmp_path):
    s = run_demo(seconds=2, out_dir=tmp_path, steps=1, quiet=True, threads=1)
    assert s["scene"] == "world" and s["threads"] == 1 and s["thread_timing_s"] == {}
    with pytest.raises(ValueError, match="--threads must be at least 1"):
        run_demo(seconds=2, out_dir=tmp_path, steps=1, quiet=True, threads=0)
    with pytest.raises(ValueError, match="gives no frame"):
        run_demo(seconds=0, out_dir=tmp_path, steps=1, quiet=True, threads=1)


def test_the_demo_command_runs_the_world_unless_told_still(tmp_path):
    import json

    from everanimate_core.apps.demo import main as demo_main

    common = ["--seconds", "2", "--steps", "1", "--threads", "1"]
    demo_main(common + ["--out", str(tmp_path / "default")])
    demo_main(common + ["--out", str(tmp_path / "still"), "--still"])
    demo_main(common + ["--out", str(tmp_path / "world"), "--world"])
    scene = {k: json.loads((tmp_path / k / "summary.json").read_text())["scene"] for k in ("default", "still", "world")}
    assert scene == {"default": "world", "still": "plain", "world": "world"}


def test_an_x0_head_is_sampled_through_its_velocity():
    """A DiT whose head predicts x0 (the v2 candidate) reaches its x0 in one Euler step from any sigma."""
    from everanimate_core.sampler import ChunkCondition, sample_chunk
    from everanimate_core.tiny.backend import TinyDenoiser, TinyModelConfig, build_models

    mc = TinyModelConfig(dim=32, depth=1, heads=2, vae_width=8, vae_feat=16, output="x0")
    _, dit = build_models(mc)
    target = torch.randn(1, 16, 3, 4, 4)
    dit.forward = lambda x, t, y, pose, k: target.expand_as(x)  # a head that always says "target"
    den = TinyDenoiser(dit)
    x = torch.randn(1, 16, 3, 4, 4)
    cond = ChunkCondition(y=torch.zeros(1, 20, 3, 4, 4), pose=None, anchors=1, extras={})
    assert torch.allclose(den(x, 0.5, cond), (x - target) / 0.5)
    out = sample_chunk(den, x, cond, torch.tensor([0.7, 0.0]))
    assert torch.allclose(out, target, atol=1e-5)
    with pytest.raises(Exception, match="output must be one of"):
        build_models(TinyModelConfig(dim=32, depth=1, heads=2, vae_width=8, vae_feat=16, output="eps"))


def test_the_skip_head_passes_x_through_at_low_sigma_and_predicts_x0_at_sigma_one():
    """x0_skip: x0 = c_skip x_t + c_out F. At sigma 1 it is F; as sigma -> 0 it is x_t; its training
    target (x0 - c_skip x_t) / c_out has unit variance for unit-variance data at every sigma."""
    from everanimate_core.flow import add_noise
    from everanimate_core.tiny.dit import skip_scalings

    c_skip, c_out = skip_scalings(torch.tensor([1.0, 1e-4]))
    assert torch.allclose(c_skip, torch.tensor([0.0, 1.0]), atol=1e-3)
    assert torch.allclose(c_out, torch.tensor([1.0, 0.0]), atol=1e-3)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(200_000, generator=g), torch.randn(200_000, generator=g)
    for s in (0.05, 0.3, 0.5, 0.8, 0.99):
        c_skip, c_out = skip_scalings(torch.tensor(s))
        target = (x0 - c_skip * add_noise(x0, eps, s)) / c_out
        assert abs(float(target.std()) - 1.0) < 0.02, s


def test_a_skip_head_is_sampled_through_its_velocity():
    """A DiT with the x0_skip head whose network returns the exact target F lands on x0 in one step."""
    from everanimate_core.flow import add_noise
    from everanimate_core.sampler import ChunkCondition, sample_chunk
    from everanimate_core.tiny.backend import TinyDenoiser, TinyModelConfig, build_models
    from everanimate_core.tiny.dit import skip_scalings

    mc = TinyModelConfig(dim=32, depth=1, heads=2, vae_width=8, vae_feat=16, output="x0_skip")
    _, dit = build_models(mc)
    x0, eps = torch.randn(1, 16, 3, 4, 4), torch.randn(1, 16, 3, 4, 4)

    def exact(x, t, y, pose, k):  # the F that makes c_skip x + c_out F equal x0
        c_skip, c_out = skip_scalings(t.view(-1, 1, 1, 1, 1) / 1000.0)
        return (x0 - c_skip * x) / c_out

    dit.forward = exact
    den = TinyDenoiser(dit)
    cond = ChunkCondition(y=torch.zeros(1, 20, 3, 4, 4), pose=None, anchors=1, extras={})
    x = add_noise(x0, eps, 0.6)
    assert torch.allclose(den(x, 0.6, cond), eps - x0, atol=1e-4)  # the flow velocity
    out = sample_chunk(den, x, cond, torch.tensor([0.6, 0.0]))
    assert torch.allclose(out, x0, atol=1e-4)


def test_the_motion_head_predicts_over_the_carried_latent_and_is_plain_velocity_without_one():
    """velocity_motion: the DiT's velocity is F - prior, the prior being the motion latent (condition
    slot K) on slots K+1.. when one is carried, zeros otherwise (chunk 0, or zeros in its place).
    A network returning the exact F samples x0; the prior is what makes the motion latent matter."""
    from everanimate_core.flow import add_noise
    from everanimate_core.layout import build_condition, model_input_condition
    from everanimate_core.sampler import ChunkCondition, sample_chunk
    from everanimate_core.tiny.backend import TinyDenoiser, TinyModelConfig, build_models
    from everanimate_core.errors import ConfigError
    from everanimate_core.tiny.dit import head_prior

    g = torch.Generator().manual_seed(0)
    k, n = 2, 4
    anchors, motion = torch.randn(16, k, 4, 4, generator=g), torch.randn(16, 1, 4, 4, generator=g)
    y = model_input_condition(*build_condition(anchors, motion, n)[:2])[None]
    prior = head_prior(y, k, 4)
    assert prior.shape == (1, 16, k + n, 4, 4)
    assert torch.equal(prior[:, :, : k + 1], torch.zeros(1, 16, k + 1, 4, 4))  # anchors and slot K
    assert torch.equal(prior[0, :, k + 1 :], motion.expand(-1, n - 1, -1, -1))
    y0 = model_input_condition(*build_condition(anchors, torch.zeros_like(motion), n)[:2])[None]
    assert torch.equal(head_prior(y0, k, 4), torch.zeros_like(prior))  # zeros carried: no prior
    both = head_prior(torch.cat([y, y0]), k, 4)  # decided per sample
    assert torch.equal(both[0], prior[0]) and not both[1].any()
    # velocity_prior: the carried latent on every generated slot, else the reference (last anchor)
    full = head_prior(torch.cat([y, y0]), k, 4, "velocity_prior")
    assert not full[:, :, :k].any()
    assert torch.equal(full[0, :, k:], motion.expand(-1, n, -1, -1))
    assert torch.equal(full[1, :, k:], anchors[:, k - 1 :].expand(-1, n, -1, -1))
    with pytest.raises(ConfigError, match="not a prior head"):
        head_prior(y, k, 4, "velocity")

    mc = TinyModelConfig(dim=32, depth=1, heads=2, vae_width=8, vae_feat=16, output="velocity_motion")
    _, dit = build_models(mc)
    x0, eps = torch.randn(1, 16, k + n, 4, 4, generator=g), torch.randn(1, 16, k + n, 4, 4, generator=g)
    dit.forward = lambda x, t, y_, pose, kk: eps - x0 + prior  # the exact F for this sample
    den = TinyDenoiser(dit)
    cond = ChunkCondition(y=y, pose=None, anchors=k, extras={})
    x = add_noise(x0, eps, 0.6)
    assert torch.allclose(den(x, 0.6, cond), eps - x0, atol=1e-5)
    assert torch.allclose(sample_chunk(den, x, cond, torch.tensor([0.6, 0.0])), x0, atol=1e-5)
    # the same network output read with zeros in place of the motion latent is off by the prior
    cond0 = ChunkCondition(y=y0, pose=None, anchors=k, extras={})
    assert torch.allclose(den(x, 0.6, cond0) - den(x, 0.6, cond), prior, atol=1e-5)


def test_a_still_group_vae_gives_a_still_scene_the_code_of_one_frame():
    """vae_group="still": four equal frames encode to exactly the single-frame latent of that frame
    (so the reference's code is the code of a still background); frames that move do not, and the
    free group (v1) gives no such guarantee. An unknown setting is refused by name."""
    from everanimate_core.errors import ConfigError
    from everanimate_core.tiny.backend import TinyModelConfig, build_models

    torch.manual_seed(0)
    frame = torch.rand(2, 3, 1, 16, 16) * 2 - 1
    still = frame.repeat(1, 1, 9, 1, 1)
    moving = torch.rand(2, 3, 9, 16, 16) * 2 - 1
    moving[:, :, :1] = frame
    codes = {}
    for group in ("still", "free"):
        vae, _ = build_models(TinyModelConfig(vae_width=16, vae_feat=8, vae_factor=4, vae_blocks=1, vae_group=group))
        with torch.no_grad():
            z = vae.encode(still)
            codes[group] = float((z[:, :, 1:] - z[:, :, :1]).abs().max())
            if group == "still":
                zm = vae.encode(moving)
                assert float((zm[:, :, 1:] - zm[:, :, :1]).abs().max()) > 1e-3
                assert torch.allclose(zm[:, :, :1], z[:, :, :1])  # the single-frame code is the same head
    assert codes["still"] < 1e-5 and codes["free"] > 1e-3, codes
    with pytest.raises(ConfigError, match="vae_group must be one of"):
        build_models(TinyModelConfig(vae_width=16, vae_feat=8, vae_group="mean"))


def _share_weights_and_open_gates(plain, extended, new: str) -> None:
    """Give ``extended`` (the plain DiT plus modules whose names contain ``new``) the plain model's
    weights, then open the zero-initialised gates and head of both alike, leaving the new modules'
    zero gates shut, so both must compute the same until those are opened."""
    extended.load_state_dict({**plain.state_dict(), **{k: v for k, v in extended.state_dict().items() if new in k}})
    for m in (plain, extended):
        for name, p in m.named_parameters():
            if p.dim() and not p.abs().sum() and new not in name:
                torch.manual_seed(len(name))
                torch.nn.init.normal_(p, std=0.1)


def test_pose_blocks_start_as_the_plain_dit_and_feed_the_pose_to_every_block():
    """pose_blocks adds the pose tokens again before every block through a zero-initialised linear
    layer: a fresh model gives the plain model's output, and once trained the layers carry the pose
    into every block. The plain model's weights are the posed model's, less those layers."""
    from everanimate_core.tiny.backend import TinyModelConfig, build_models

    torch.manual_seed(0)
    mc = TinyModelConfig(dim=32, depth=2, heads=2, vae_width=8, vae_feat=16, attention="factorized")
    _, plain = build_models(mc)
    _, posed = build_models(replace(mc, pose_blocks=True))
    assert plain.pose_in is None and len(posed.pose_in) == 2
    assert set(posed.state_dict()) - set(plain.state_dict()) == {f"pose_in.{i}.{w}" for i in range(2) for w in ("weight", "bias")}
    _share_weights_and_open_gates(plain, posed, "pose_in")
    x, y, pose = torch.randn(1, 16, 5, 4, 4), torch.randn(1, 20, 5, 4, 4), torch.randn(1, 16, 3, 4, 4)
    t = torch.tensor([500.0])
    with torch.no_grad():
        assert torch.allclose(plain(x, t, y, pose, 2), posed(x, t, y, pose, 2), atol=1e-6)
        for lin in posed.pose_in:
            torch.nn.init.normal_(lin.weight, std=0.2)
        out = posed(x, t, y, pose, 2)
        assert (out - plain(x, t, y, pose, 2)).abs().amax() > 1e-3  # the pose now enters every block
        assert torch.allclose(posed(x, t, y, None, 2), plain(x, t, y, None, 2), atol=1e-6)  # no pose, no term


def test_factorized_attention_keeps_the_interface_and_reads_across_time():
    """The factorized DiT takes the same inputs (any K + G, pose on slots K..) and a generated slot
    depends on the anchor slot's condition at its own position."""
    from everanimate_core.tiny.backend import TinyModelConfig, build_models

    torch.manual_seed(0)
    mc = TinyModelConfig(dim=32, depth=2, heads=2, vae_width=8, vae_feat=16, attention="factorized")
    _, dit = build_models(mc)
    for p in dit.parameters():  # leave the zero-initialised gates and head open
        if p.dim() and not p.abs().sum():
            torch.nn.init.normal_(p, std=0.1)
    x, y = torch.randn(1, 16, 5, 4, 4), torch.randn(1, 20, 5, 4, 4)
    pose = torch.randn(1, 16, 3, 4, 4)
    out = dit(x, torch.tensor([500.0]), y, pose, 2)
    assert out.shape == x.shape
    y2 = y.clone()
    y2[:, 4:, 0] += 1.0  # the condition of anchor slot 0 only
    out2 = dit(x, torch.tensor([500.0]), y2, pose, 2)
    assert (out2[:, :, 2:] - out[:, :, 2:]).abs().amax() > 1e-3
    with pytest.raises(Exception, match="attention must be one of"):
        build_models(TinyModelConfig(dim=32, depth=1, heads=2, vae_width=8, vae_feat=16, attention="sparse"))


def test_ref_attention_starts_as_the_plain_dit_and_reads_every_anchor_token():
    """ref_attention adds to every factorized block a cross-attention from every token to all anchor
    tokens, gated from zero: a fresh model gives the plain model's output; once its gate is open, a
    generated token reads an anchor token at another place even with the attention along time
    closed (the only other way between slots). It needs factorized blocks."""
    from everanimate_core.errors import ConfigError
    from everanimate_core.tiny.backend import TinyModelConfig, build_models

    torch.manual_seed(0)
    mc = TinyModelConfig(dim=32, depth=1, heads=2, vae_width=8, vae_feat=16, attention="factorized")
    _, plain = build_models(mc)
    _, ref = build_models(replace(mc, ref_attention=True))
    extra = set(ref.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("blocks.0.anchor_attention.") for k in extra)
    _share_weights_and_open_gates(plain, ref, "anchor_attention")
    x, y, pose = torch.randn(1, 16, 5, 8, 8), torch.randn(1, 20, 5, 8, 8), torch.randn(1, 16, 3, 8, 8)
    t = torch.tensor([500.0])
    with torch.no_grad():
        assert torch.allclose(plain(x, t, y, pose, 2), ref(x, t, y, pose, 2), atol=1e-6)
        for m in (plain, ref):  # close the attention along time
            torch.nn.init.zeros_(m.blocks[0].temporal.o.weight)
            torch.nn.init.zeros_(m.blocks[0].temporal.o.bias)
        torch.nn.init.normal_(ref.blocks[0].anchor_attention.modulation.weight, std=0.2)
        y2 = y.clone()
        y2[:, 4:, 0, :2, :2] += 3.0  # anchor slot 0, the top-left token only
        for m, reads in ((plain, False), (ref, True)):
            change = (m(x, t, y2, pose, 2) - m(x, t, y, pose, 2))[:, :, 2:, 4:, 4:]  # generated slots, bottom right
            assert (change.abs().amax() > 1e-4) == reads
    with pytest.raises(ConfigError, match="ref_attention needs attention='factorized'"):
        build_models(TinyModelConfig(dim=32, depth=1, heads=2, vae_width=8, vae_feat=16, ref_attention=True))
