"""The loop's own memory as LoRA training windows (tiny/loop_bank.py, docs/drift.md)."""

from __future__ import annotations

import json

import pytest
import torch

from everanimate_core.errors import ConfigError


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    from everanimate_core.tiny.loop_bank import RolloutConfig, make_rollouts

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("rollouts")
    make_rollouts(out, RolloutConfig(clips=1, chunks=2, steps=1), workers=1, log=lambda *_: None)
    return out


def test_the_rollout_bank_keeps_the_loops_own_memory_beside_the_true_chunk(bank):
    from everanimate_core.tiny.backend import WEIGHTS_DIR, load_tiny
    from everanimate_core.tiny.loop_bank import load_rollouts
    from everanimate_core.tiny.world import make_world_sequence
    from everanimate_core.tiny.vae import frames_to_tensor

    be = load_tiny()
    mc = be.config
    L = load_rollouts(bank, mc.__dict__, WEIGHTS_DIR)
    g, side = 1 + (mc.frames - 1) // 4, mc.height // mc.vae_factor
    assert L["chunk"].tolist() == [1, 2]
    assert L["x0"].shape == (2, mc.latent_channels, g, side, side)
    assert L["anchors"].shape == (2, mc.latent_channels, mc.anchors, side, side)
    assert L["motion"].shape == (2, mc.latent_channels, 1, side, side)
    assert L["x0_aug"].shape == (2, 3, mc.latent_channels, g, side, side)
    seq = make_world_sequence(0, "train", mc.height, mc.width, mc.fps)
    stride = mc.chunk_settings.stride
    with torch.no_grad():
        true0 = be.vae.encode(frames_to_tensor(seq.frames(0, mc.frames)))[0]
        true1 = be.vae.encode(frames_to_tensor(seq.frames(stride, stride + mc.frames)))[0]
    # the target is the true chunk; the carried memory is the loop's own, not the true latent
    assert (L["x0"][0] - true1).abs().max() < 1e-4
    assert (L["motion"][0] - true0[:, -1:]).abs().mean() > 0.02
    assert not torch.equal(L["motion"][0], L["motion"][1])
    # the anchors the loop carries: reference + chunk-0 frames, the same for both chunks
    assert torch.equal(L["anchors"][0], L["anchors"][1])
    assert (L["x0_aug"][:, 0] - L["x0"]).abs().mean() > 0.02


def test_a_rollout_bank_resumes_and_refuses_what_does_not_belong(bank, tmp_path):
    import shutil

    from everanimate_core.tiny.backend import WEIGHTS_DIR, load_tiny
    from everanimate_core.tiny.loop_bank import RolloutConfig, load_rollouts, make_rollouts

    said = []
    make_rollouts(bank, RolloutConfig(clips=1, chunks=2, steps=1), workers=1, log=said.append)
    assert "0 to go" in said[0]
    with pytest.raises(ConfigError, match="other settings"):
        make_rollouts(bank, RolloutConfig(clips=1, chunks=3, steps=1), workers=1, log=said.append)
    mc = load_tiny().config.__dict__
    with pytest.raises(ConfigError, match="another base model"):
        load_rollouts(bank, {**mc, "depth": mc["depth"] + 1}, WEIGHTS_DIR)
    with pytest.raises(ConfigError, match="not a rollout bank"):
        load_rollouts(tmp_path, mc, WEIGHTS_DIR)
    half = tmp_path / "half"
    shutil.copytree(bank, half)
    meta = json.loads((half / "rollouts.json").read_text())
    meta["config"]["clips"] = 2
    (half / "rollouts.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="unfinished"):
        load_rollouts(half, mc, WEIGHTS_DIR)


def test_loop_windows_enter_the_batch_at_their_share_with_the_loops_memory(bank):
    from everanimate_core.tiny.backend import WEIGHTS_DIR, load_tiny
    from everanimate_core.tiny.loop_bank import load_rollouts
    from everanimate_core.tiny.rfm_data import DataConfig, TinyRFMData

    with pytest.raises(ConfigError, match="go together"):
        DataConfig(loop_p=0.5)
    with pytest.raises(ConfigError, match="go together"):
        DataConfig(loop_bank=str(bank))
    with pytest.raises(ConfigError, match="probability"):
        DataConfig(loop_bank=str(bank), loop_p=1.5)
    assert "loop_bank" not in DataConfig().as_dict()  # earlier run folders keep their fingerprint
    be = load_tiny()
    mc, k = be.config, be.config.anchors
    cfg = DataConfig(sequences=1, batch=64, degrade_draws=1, affine_draws=1, loop_bank=str(bank), loop_p=0.5)
    assert cfg.as_dict()["loop_p"] == 0.5
    data = TinyRFMData(be.vae, mc, cfg)
    L = load_rollouts(bank, mc.__dict__, WEIGHTS_DIR)
    b = data.next_batch(torch.Generator().manual_seed(0))
    loop_rows = []
    for r in range(64):
        w = [i for i in range(L["x0"].shape[0]) if torch.equal(b.x0[r, :, k:], L["x0"][i])]
        if not w:
            continue
        loop_rows.append(r)
        i = w[0]
        assert torch.equal(b.x0[r, :, :k], L["anchors"][i])  # the loop's anchors
        assert torch.equal(b.cond.y[r, 4:, k : k + 1], L["motion"][i])  # the loop's motion latent
        assert any(torch.equal(b.x0_degraded[r, :, k:], a) for a in L["x0_aug"][i])
        assert torch.equal(b.cond.pose[r], L["pose"][i])
    assert 20 <= len(loop_rows) <= 44, len(loop_rows)
