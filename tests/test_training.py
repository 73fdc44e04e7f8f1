"""LoRA post-training: the RFM objective, resumable training, export in the released key format."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from everanimate_core.errors import ConfigError, ResumeStateError
from everanimate_core.flow import AlphaSchedule, training_weight
from everanimate_core.infra.lora import parse_lora_state_dict, to_comfy_keys
from everanimate_core.sampler import ChunkCondition
from everanimate_core.tiny.backend import TinyDenoiser, TinyModelConfig
from everanimate_core.tiny.dit import TinyAnimateDiT
from everanimate_core.training.trainer import (
    LoopConfig,
    LoraSpec,
    RFMObjective,
    TrainingBatch,
    add_lora,
    export_released,
    load_lora_weights,
    merge_lora,
    rfm_loss,
    train_lora,
)

TINY_TARGETS = ("qkv", "o", "ffn.0", "ffn.2")
K, G = 2, 3


def small_dit(seed: int = 0) -> TinyAnimateDiT:
    torch.manual_seed(seed)
    dit = TinyAnimateDiT(latent_channels=4, mask_channels=4, dim=32, depth=2, heads=2)
    with torch.no_grad():  # the zero-initialised output head would hide every LoRA effect
        for p in dit.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return dit.eval()


def make_batch(gen: torch.Generator, b: int = 4, degraded: bool = True) -> TrainingBatch:
    x0 = torch.randn(b, 4, K + G, 4, 4, generator=gen)
    xd = x0.clone()
    xd[:, :, K:] += 0.5 * torch.randn(b, 4, G, 4, 4, generator=gen)
    y = torch.randn(b, 8, K + G, 4, 4, generator=gen)
    pose = torch.randn(b, 4, G, 4, 4, generator=gen)
    return TrainingBatch(x0=x0, cond=ChunkCondition(y, pose, K, {}), x0_degraded=xd if degraded else None)


def _spy(expected_target):
    """A denoiser that returns ``expected_target(x_in, sigma)``: the loss is 0 iff the objective's
    input/target pair is the one the formula says."""
    calls = {}

    def den(x, sigma, cond):
        calls["x"], calls["sigma"] = x, sigma
        return expected_target(x, sigma)

    return den, calls


@pytest.mark.parametrize("schedule", ["gaussian_timestep", "fixed", "sigma_ramp", "scheduler_weight"])
def test_stage2_target_is_clean_velocity_plus_alpha_times_the_drift(schedule):
    batch = make_batch(torch.Generator().manual_seed(1))
    sched = AlphaSchedule(schedule, 0.7)
    obj = RFMObjective(stage=2, schedule=sched, degrade_p=1.0, draws=1, sigma_gate=0.0)
    x0, xd = batch.x0, batch.x0_degraded

    def right(x, sigma):
        s = sigma.view(-1, 1, 1, 1, 1)
        eps = (x - (1 - s) * xd) / s  # the input must be the DEGRADED path with the shared eps
        alpha = sched.values(sigma).view(-1, 1, 1, 1, 1)
        return (eps - x0) + alpha * (1 - s) * (xd - x0)

    den, calls = _spy(right)
    loss, info = rfm_loss(den, batch, obj, torch.Generator().manual_seed(5))
    assert info["degraded"] == 1.0
    assert float(loss) < 1e-8

    def without_alpha(x, sigma):
        s = sigma.view(-1, 1, 1, 1, 1)
        return (x - (1 - s) * xd) / s - x0

    den, _ = _spy(without_alpha)
    loss, _ = rfm_loss(den, batch, obj, torch.Generator().manual_seed(5))
    assert float(loss) > 1e-4


def test_augmented_velocity_and_stage1_targets():
    batch = make_batch(torch.Generator().manual_seed(2))
    x0 = batch.x0
    obj = RFMObjective(stage=2, schedule=AlphaSchedule("augmented_velocity"), degrade_p=1.0, draws=1, sigma_gate=0.0)
    den, _ = _spy(lambda x, s: (x - x0) / s.view(-1, 1, 1, 1, 1))
    assert float(rfm_loss(den, batch, obj, torch.Generator().manual_seed(0))[0]) < 1e-8
    # stage 1: plain flow matching on the clean path, even when a degraded latent is given
    obj1 = RFMObjective(stage=1, degrade_p=1.0, draws=1, sigma_gate=0.0)

    def clean(x, sigma):
        s = sigma.view(-1, 1, 1, 1, 1)
        return (x - (1 - s) * x0) / s - x0

    den, _ = _spy(clean)
    loss, info = rfm_loss(den, batch, obj1, torch.Generator().manual_seed(0))
    assert info["degraded"] == 0.0 and float(loss) < 1e-8


def test_the_sigma_gate_and_the_two_draws_set_how_often_the_degraded_pair_is_used():
    gen = torch.Generator().manual_seed(0)
    batch = make_batch(gen, b=512)
    den = lambda x, s, c: torch.zeros_like(x)  # noqa: E731
    _, info = rfm_loss(den, batch, RFMObjective(stage=2, sigma_gate=1.01), gen)
    assert info["degraded"] == 0.0
    fr = [rfm_loss(den, batch, RFMObjective(stage=2), gen)[1]["degraded"] for _ in range(8)]
    from everanimate_core.flow import training_sigmas

    gate = float((training_sigmas(5.0) >= 0.5).float().mean())
    assert sum(fr) / len(fr) == pytest.approx(0.64 * gate, abs=0.03)


def test_loss_is_weighted_by_the_release_timestep_weight():
    batch = make_batch(torch.Generator().manual_seed(3), degraded=False)
    den = lambda x, s, c: torch.zeros_like(x)  # noqa: E731
    w, _ = rfm_loss(den, batch, RFMObjective(stage=1), torch.Generator().manual_seed(4))
    u, _ = rfm_loss(den, batch, RFMObjective(stage=1, weighting=False), torch.Generator().manual_seed(4))
    assert float(w) != pytest.approx(float(u))
    sig = torch.tensor([0.2, 0.5, 0.9])
    wt = training_weight(sig)
    assert float(wt[1]) > float(wt[0]) and float(wt[1]) > float(wt[2])


def test_the_loss_can_cover_the_generated_slots_only_as_the_tiny_base_was_trained():
    batch = make_batch(torch.Generator().manual_seed(6), degraded=False)

    def den(x, s, c):  # exact on the generated slots, wrong on the anchor slots
        sv = s.view(-1, 1, 1, 1, 1)
        v = (x - (1 - sv) * batch.x0) / sv - batch.x0
        v[:, :, :K] += 3.0
        return v

    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    full, _ = rfm_loss(den, batch, RFMObjective(stage=1, weighting=False), gen())
    ours, _ = rfm_loss(den, batch, RFMObjective(stage=1, weighting=False, slots="generated"), gen())
    assert float(full) == pytest.approx(9.0 * K / (K + G), rel=1e-4)
    assert float(ours) < 1e-8
    assert "slots" not in RFMObjective().as_dict()  # the release default keeps old fingerprints
    assert RFMObjective(slots="generated").as_dict()["slots"] == "generated"
    with pytest.raises(ConfigError, match="slots must be one of"):
        RFMObjective(slots="anchors")


def test_add_lora_leaves_the_output_unchanged_and_refuses_what_does_not_fit():
    dit = small_dit()
    x = torch.randn(1, 4, K + G, 4, 4)
    y = torch.randn(1, 8, K + G, 4, 4)
    pose = torch.randn(1, 4, G, 4, 4)
    t = torch.tensor([500.0])
    before = dit(x, t, y, pose, K)
    add_lora(dit, LoraSpec(rank=4, targets=TINY_TARGETS))
    assert torch.allclose(dit(x, t, y, pose, K), before, atol=1e-6)
    trainable = [n for n, p in dit.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    assert len(trainable) == 2 * 4 * 2  # A and B, 4 targets, 2 blocks
    with pytest.raises(ConfigError, match="matches no Linear"):
        add_lora(small_dit(), LoraSpec(rank=4, targets=("q", "k", "v")))
    with pytest.raises(ConfigError, match="does not fit"):
        add_lora(small_dit(), LoraSpec(rank=64, targets=TINY_TARGETS))


def _trained_lora_model(seed: int = 0) -> TinyAnimateDiT:
    dit = small_dit()
    add_lora(dit, LoraSpec(rank=4, targets=TINY_TARGETS))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in dit.named_parameters():
            if ".lora_" in n:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return dit


def test_export_is_in_the_released_format_and_has_the_same_effect_through_the_node_converter_and_peft(tmp_path):
    from peft import set_peft_model_state_dict

    trained = _trained_lora_model()
    sd = export_released(trained, tmp_path / "lora.safetensors")
    keys = sorted(load_file(str(tmp_path / "lora.safetensors")))
    assert keys == sorted(sd)
    assert all(k.endswith((".lora_A.default.weight", ".lora_B.default.weight")) for k in keys)
    assert "blocks.0.qkv.lora_A.default.weight" in keys and "blocks.1.ffn.2.lora_B.default.weight" in keys
    assert not any("alpha" in k for k in keys)

    x = torch.randn(2, 4, K + G, 4, 4)
    y = torch.randn(2, 8, K + G, 4, 4)
    pose = torch.randn(2, 4, G, 4, 4)
    t = torch.tensor([300.0, 800.0])
    with torch.no_grad():
        want = trained(x, t, y, pose, K)
        base = small_dit()(x, t, y, pose, K)
    assert (want - base).abs().max() > 1e-3  # the LoRA does something

    # 1) the node pack's converter: parse -> ComfyUI keys -> W += strength * B @ A (no alpha: scale 1)
    comfy = to_comfy_keys(parse_lora_state_dict(load_file(str(tmp_path / "lora.safetensors"))))
    assert all(k.startswith("diffusion_model.") for k in comfy)
    patched = small_dit()
    params = dict(patched.named_parameters())
    with torch.no_grad():
        for k in comfy:
            if k.endswith(".lora_A.weight"):
                mod = k[len("diffusion_model.") : -len(".lora_A.weight")]
                a, b = comfy[k], comfy[f"diffusion_model.{mod}.lora_B.weight"]
                params[f"{mod}.weight"].add_(b @ a)
        got = patched(x, t, y, pose, K)
    assert torch.allclose(got, want, atol=1e-5)
    # the core's merge (what the tiny backend and the benchmark use) agrees
    merged = small_dit()
    merge_lora(merged, load_file(str(tmp_path / "lora.safetensors")))
    with torch.no_grad():
        assert torch.allclose(merged(x, t, y, pose, K), want, atol=1e-5)

    # 2) PEFT: a fresh model with the adapter, the file's keys without the adapter infix
    fresh = small_dit()
    add_lora(fresh, LoraSpec(rank=4, targets=TINY_TARGETS))
    peft_sd = {k.replace(".default.", "."): v for k, v in load_file(str(tmp_path / "lora.safetensors")).items()}
    res = set_peft_model_state_dict(fresh, peft_sd)
    assert not [k for k in res.unexpected_keys if "lora" in k]
    with torch.no_grad():
        assert torch.allclose(fresh(x, t, y, pose, K), want, atol=1e-5)
    # and the core's loader into PEFT layers
    again = small_dit()
    add_lora(again, LoraSpec(rank=4, targets=TINY_TARGETS))
    load_lora_weights(again, load_file(str(tmp_path / "lora.safetensors")))
    with torch.no_grad():
        assert torch.allclose(again(x, t, y, pose, K), want, atol=1e-5)


def test_a_lora_for_another_model_is_refused():
    other = {"blocks.0.self_attn.q.lora_A.default.weight": torch.zeros(4, 32),
             "blocks.0.self_attn.q.lora_B.default.weight": torch.zeros(32, 4)}
    with pytest.raises(ConfigError, match="another model"):
        merge_lora(small_dit(), other)
    trained = _trained_lora_model()
    from everanimate_core.training.trainer import lora_pairs
    from everanimate_core.infra.lora import to_released_keys

    wrong_rank = small_dit()
    add_lora(wrong_rank, LoraSpec(rank=2, targets=TINY_TARGETS))
    with pytest.raises(ConfigError, match="another rank"):
        load_lora_weights(wrong_rank, to_released_keys(lora_pairs(trained)))


def _run(tmp_path, name, steps=6, stop_after=None, lr=1e-2, seed=0):
    dit = small_dit()
    add_lora(dit, LoraSpec(rank=4, targets=TINY_TARGETS))
    res = train_lora(
        dit, TinyDenoiser(dit), lambda g: make_batch(g), RFMObjective(stage=2),
        LoopConfig(steps=steps, lr=lr, warmup=2, seed=seed, checkpoint_every=2), tmp_path / name,
        {"model": "small"}, progress=False, log=lambda m: None, stop_after=stop_after,
    )
    return dit, res


def _lora_state(dit):
    return {n: p.detach().clone() for n, p in dit.named_parameters() if ".lora_" in n}


def test_training_is_reproducible_and_resuming_equals_an_uninterrupted_run(tmp_path):
    full, res = _run(tmp_path, "full")
    assert res.steps_done == 6 and res.losses[-1] < res.losses[0] * 10  # finite, ran
    again, _ = _run(tmp_path, "again")
    for k, v in _lora_state(full).items():
        assert torch.equal(v, _lora_state(again)[k]), k
    _, part = _run(tmp_path, "split", stop_after=3)
    assert part.steps_done == 3
    resumed, res2 = _run(tmp_path, "split")
    assert res2.resumed_from == 3 and res2.steps_done == 6
    for k, v in _lora_state(full).items():
        assert torch.equal(v, _lora_state(resumed)[k]), k
    assert any(v.abs().sum() > 0 for k, v in _lora_state(full).items() if "lora_B" in k)  # B left zero-init


def test_a_checkpoint_from_another_configuration_is_refused(tmp_path):
    _run(tmp_path, "run", steps=4, stop_after=2)
    with pytest.raises(ResumeStateError, match="another configuration") as e:
        _run(tmp_path, "run", steps=4, lr=5e-3)
    assert "lr" in str(e.value)


def test_tiny_training_data_follows_the_release_windows(tmp_path):
    from everanimate_core.tiny.backend import load_tiny
    from everanimate_core.tiny.rfm_data import DataConfig, TinyRFMData, check_sequence_length

    be = load_tiny()
    mc = be.config
    with pytest.raises(ConfigError, match="needs 62 frames"):
        check_sequence_length(40, mc)
    with pytest.raises(ConfigError, match="needs 62 frames"):
        TinyRFMData(be.vae, mc, DataConfig(sequences=1, batch=2), length=50)
    data = TinyRFMData(be.vae, mc, DataConfig(sequences=2, batch=6, degrade_draws=2, affine_draws=1))
    b = data.next_batch(torch.Generator().manual_seed(0))
    g = 1 + (mc.frames - 1) // 4
    side = mc.height // mc.vae_factor
    assert b.x0.shape == (6, mc.latent_channels, mc.anchors + g, side, side)
    assert b.cond.y.shape == (6, 4 + mc.latent_channels, mc.anchors + g, side, side)
    assert b.cond.pose.shape == (6, mc.latent_channels, g, side, side)
    assert torch.equal(b.x0_degraded[:, :, : mc.anchors], b.x0[:, :, : mc.anchors])  # anchors stay clean
    assert (b.x0_degraded[:, :, mc.anchors :] - b.x0[:, :, mc.anchors :]).abs().mean() > 0.05
    # mask = 1 on the anchor slots only; y's anchor slots hold the x0 anchors
    assert torch.all(b.cond.y[:, :4, : mc.anchors] == 1) and torch.all(b.cond.y[:, :4, mc.anchors :] == 0)
    assert torch.equal(b.cond.y[:, 4:, : mc.anchors], b.x0[:, :, : mc.anchors])


def test_tiny_training_data_takes_world_clips_and_never_puts_a_moved_view_in_the_first_chunk_layout():
    """World clips start past the reference's view, so each of their windows is a memory window:
    the motion slot holds the previous chunk's last latent. Plain banks keep their old fingerprint."""
    from dataclasses import replace as dc_replace

    from everanimate_core.tiny.backend import load_tiny
    from everanimate_core.tiny.rfm_data import DataConfig, TinyRFMData

    be = load_tiny()
    mc = dc_replace(be.config, frames=9)  # short windows: a small bank
    plain = DataConfig(sequences=1, batch=64, degrade_draws=1, affine_draws=1, first_chunk_p=0.5)
    assert "world_sequences" not in plain.as_dict()
    cfg = dc_replace(plain, world_sequences=2)
    assert cfg.as_dict()["world_sequences"] == 2
    with pytest.raises(ConfigError, match="world_sequences"):
        DataConfig(world_sequences=-1)
    data = TinyRFMData(be.vae, mc, cfg)
    assert data.data["a"].shape[0] == 3 and data.fresh.tolist() == [True, False, False]
    k = mc.anchors
    b = data.next_batch(torch.Generator().manual_seed(0))
    motion = b.cond.y[:, 4:, k]  # the motion slot's condition
    firsts = motion.flatten(1).abs().amax(1) == 0
    world = torch.stack([data.data["b"][1], data.data["b"][2]])
    is_world = [any(torch.equal(x, w) for w in world) for x in b.x0[:, :, k:]]
    assert any(is_world) and firsts.any()
    assert not any(f and w for f, w in zip(firsts.tolist(), is_world))


def test_train_cli_writes_a_released_lora_and_refuses_other_settings_in_the_same_folder(tmp_path, capsys):
    from everanimate_core.__main__ import main

    out = tmp_path / "run"
    main(["train", "--out", str(out), "--steps", "2", "--sequences", "2", "--batch", "2", "--rank", "4", "--no-progress"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps_done"] == 2 and summary["lora_file"] == "lora.safetensors"
    lora = parse_lora_state_dict(load_file(str(out / "lora.safetensors")))
    from everanimate_core.tiny.backend import load_tiny

    # every qkv, o, ffn.0 and ffn.2 Linear of every block (both attentions when they are factorized)
    targets = {n for n, m in load_tiny().dit.named_modules() if isinstance(m, torch.nn.Linear)
               and n.endswith((".qkv", ".o", ".ffn.0", ".ffn.2"))}
    assert len(targets) >= 4 * TinyModelConfig().depth
    assert lora.format == "released" and set(lora.modules) == set(targets) and lora.ranks == {4}
    # one seeded command reproduces the file bit for bit (bank rendering, degradations, steps)
    main(["train", "--out", str(tmp_path / "again"), "--steps", "2", "--sequences", "2", "--batch", "2", "--rank", "4",
          "--no-progress"])
    first, second = load_file(str(out / "lora.safetensors")), load_file(str(tmp_path / "again" / "lora.safetensors"))
    assert sorted(first) == sorted(second)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert (out / "lora.safetensors").read_bytes() == (tmp_path / "again" / "lora.safetensors").read_bytes()
    with pytest.raises(ResumeStateError):
        main(["train", "--out", str(out), "--steps", "2", "--sequences", "2", "--batch", "2", "--rank", "4",
              "--lr", "1e-3", "--no-progress"])
    with pytest.raises(ConfigError, match="matches no Linear"):
        main(["train", "--out", str(tmp_path / "bad"), "--steps", "1", "--sequences", "1", "--targets", "q,k,v",
              "--no-progress"])
