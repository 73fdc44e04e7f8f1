"""The quality bench against the trivial answers (``python -m everanimate_core bench quality``).

Each floor here fails for a stand-in that copies the reference, ignores the pose or ignores the
motion latent (the stand-ins below prove it). The embedded v2 (attempt 7 of docs/tiny_v2.md) clears
the pose floor and reads its motion latent; it does not beat the copies by the target's margin, and
after three chunks of its own the carried latent costs less than the target when zeroed, so those two
floors are strict expected failures until a model that clears them ships: a pass makes them fail
loudly.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from everanimate_core.apps.quality import (
    chunk0_quality,
    drawn_figure,
    inpaint_rows,
    mask_iou,
    mean_filled,
    motion_probe,
    shifted,
    world_chunk0,
)
from everanimate_core.errors import ConfigError
from everanimate_core.tiny.backend import WEIGHTS_DIR, TinyBackend, load_tiny
from everanimate_core.tiny.synthdance import make_sequence
from everanimate_core.tiny.train_tiny import (
    TrainConfig, _pick, chunk_loss, latent_cells, main as train_main, make_batch, render_bank, v2_config, v2_model,
)  # fmt: skip

# Floors of issue 9's targets, and the pose floor set between the stand-ins (gain 0) and v1
# (IoU gain 0.07 on 8 dancers at 20 steps; docs/tiny_v2.md):
MARGIN_OVER_COPIES = 2.0  # full frame, dB above the better of the reference and the empty scene
POSE_IOU_GAIN = 0.03  # drawn-figure IoU with the true mask, own pose minus another dancer's pose
ZERO_MOTION_COST = 3.0  # world clips: dB lost when the motion latent is replaced by zeros
NOT_YET = "issue 9: the embedded EverAnimate-Tiny v2 (attempt 7) does not clear this floor yet (docs/tiny_v2.md)"


@pytest.fixture(scope="module")
def tiny():
    torch.set_num_threads(1)
    return load_tiny()


@pytest.fixture(scope="module")
def quality(tiny):
    return chunk0_quality(tiny, sequences=2, steps=10)


class CopyReference(TinyBackend):
    """Stand-in that copies the reference: every generated slot is the reference latent, whatever
    the pose or the motion latent say."""

    def __init__(self, be: TinyBackend):
        super().__init__(be.vae, be.dit, be.config)

    def sample(self, request):
        k = request.layout.anchors
        g = request.noise.shape[2] - k
        still = np.repeat(np.asarray(request.clip_image)[None], 1 + 4 * (g - 1), axis=0)
        return torch.cat([request.anchors, self.encode_pose(still)], dim=1)


class IgnoreMotion(TinyBackend):
    """Stand-in that never sees the motion latent (its slot is zeroed before sampling)."""

    def __init__(self, be: TinyBackend):
        super().__init__(be.vae, be.dit, be.config)

    def sample(self, request):
        cond = request.condition.clone()
        k = request.layout.anchors
        cond[:, k : k + 1] = 0.0
        from dataclasses import replace

        return super().sample(replace(request, condition=cond))


@pytest.mark.xfail(strict=True, reason=NOT_YET)
def test_chunk0_beats_copying_the_reference_and_the_empty_scene(quality):
    r = quality
    assert r["model"] > max(r["reference"], r["empty"]) + MARGIN_OVER_COPIES, r


def test_the_quality_and_pose_floors_fail_for_a_model_that_copies_the_reference(tiny):
    r = chunk0_quality(CopyReference(tiny), sequences=2, steps=2)
    assert r["model"] < max(r["reference"], r["empty"]) + MARGIN_OVER_COPIES, r
    assert abs(r["model"] - r["reference"]) < 1.5, r  # the stand-in is a copy (through the VAE)
    # a copy ignores the pose: its figure is the same whichever pose drives it
    assert r["iou"] == pytest.approx(r["wrong_pose_iou"]) and r["iou"] - r["wrong_pose_iou"] < POSE_IOU_GAIN


def test_the_output_follows_the_pose(quality):
    r = quality
    assert r["iou"] > r["wrong_pose_iou"] + POSE_IOU_GAIN, r


@pytest.mark.xfail(strict=True, reason=NOT_YET)
def test_the_motion_latent_matters_on_world_clips(tiny):
    r = motion_probe(tiny, sequences=2, probe_chunk=2, steps=10)
    assert r["zero_motion_cost"] > ZERO_MOTION_COST, r


def test_the_model_reads_the_true_carried_latent_on_world_clips(tiny):
    # Given the true carried latent (the last latent of the true previous chunk, as the memory
    # windows of training carry it), zeros in its place cost the embedded model more than the gate:
    # the model depends on its motion latent. The strict floor above asks the same of the latent the
    # loop carries after chunks of its own, where drift has already set in. A model that never sees
    # the motion latent scores 0 here (the next test), and v1 scored -0.03 dB with its own carry.
    r = motion_probe(tiny, sequences=2, probe_chunk=2, steps=10)
    assert r["true_memory"] - r["zero_motion"] > ZERO_MOTION_COST, r


def test_the_motion_probe_reads_zero_for_a_model_that_never_sees_the_motion_latent(tiny):
    blind = motion_probe(IgnoreMotion(tiny), sequences=1, probe_chunk=1, steps=2)
    assert blind["zero_motion_cost"] == 0.0, blind
    assert blind["true_memory"] == blind["true_motion"] == blind["zero_motion"], blind


def test_the_motion_probe_reports_what_memory_can_give(tiny):
    # no model is needed for these: on world clips the scene has moved on from the first view, so
    # the true frame before the chunk, held, scores well above the reference held
    r = motion_probe(IgnoreMotion(tiny), sequences=2, probe_chunk=2, steps=1)
    assert r["hold_previous"] > r["reference"] + 1.0, r


def test_drawn_figure_and_iou():
    empty = np.zeros((1, 4, 4, 3), np.uint8)
    frames = empty.copy()
    frames[0, 1:3, 1:3] = 200
    fig = drawn_figure(frames, empty)
    assert fig.sum() == 4 and fig[0, 1, 1]
    truth = np.zeros((1, 4, 4), bool)
    truth[0, 1:3, 1:2] = True
    assert mask_iou(fig, truth) == pytest.approx(0.5)
    assert mask_iou(np.zeros_like(truth), np.zeros_like(truth)) == 1.0


def test_the_reference_points_of_chunk_0():
    """The one-pixel shift moves every pixel right and repeats the edge column; the mean fill sets
    only the figure, to its own frame's mean colour; the bench reports both beside the model."""
    frames = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
    moved = shifted(frames)
    assert (moved[:, :, 1:] == frames[:, :, :-1]).all() and (moved[:, :, 0] == frames[:, :, 0]).all()
    fig = np.zeros((2, 3, 4), bool)
    fig[0, 0, :2] = True  # frame 1 has no figure and is left as it is
    filled = mean_filled(frames, fig)
    assert (filled[0, 0, 0] == filled[0, 0, 1]).all()
    assert (filled[0, 0, 0] == frames[0, 0, :2].astype(float).mean(axis=0).round()).all()
    assert (filled[0, 0, 1] != frames[0, 0, 1]).any() and (filled[~fig] == frames[~fig]).all()


def test_rows_are_inpainted_between_the_scene_either_side():
    img = np.zeros((3, 6, 3), np.uint8)
    img[:, :, 0] = np.arange(0, 60, 10, dtype=np.uint8)  # a horizontal ramp
    img[:, :, 1] = 200
    mask = np.zeros((3, 6), bool)
    mask[0, 2:4] = True  # inside a row: linear between its neighbours
    mask[1, 4:] = True  # at the edge: the nearest kept colour
    mask[2, :] = True  # a whole row: left as it is
    dirty = img.copy()
    dirty[mask] = 255
    dirty[2] = img[2]
    out = inpaint_rows(dirty, mask)
    assert (out[0] == img[0]).all()
    assert (out[1, 4:, 0] == 30).all() and (out[1, :4] == img[1, :4]).all()
    assert (out[2] == img[2]).all() and (out[:, :, 1] == 200).all()


def test_chunk0_reports_the_reference_points_and_the_regions(quality):
    # in the figure, a perfect silhouette without detail scores below a perfect dancer one pixel
    # off and above the empty scene; the regions are scored (finite: none of them is empty)
    assert quality["mean_fill_figure"] < quality["shifted_figure"], quality
    assert quality["empty_figure"] < quality["mean_fill_figure"], quality
    for key in ("model_background", "model_ref_place", "shifted", "mean_fill", "model_one_step", "model_one_step_figure"):
        assert np.isfinite(quality[key]), (key, quality)
    # the scene behind the reference's dancer is smooth enough that filling it from either side
    # beats keeping the dancer there, and falls short of the empty scene itself (infinite there)
    assert quality["reference_ref_place"] + 5 < quality["inpainted_ref_place"] < 60, quality


def test_bad_requests_are_refused(tiny):
    with pytest.raises(ConfigError, match="--sequences must be between 1"):
        chunk0_quality(tiny, sequences=0)
    with pytest.raises(ConfigError, match="held-out split's size"):
        motion_probe(tiny, sequences=2, offset=199)
    with pytest.raises(ConfigError, match="--probe-chunk must be at least 1"):
        motion_probe(tiny, sequences=1, probe_chunk=0)


def test_weights_of_another_configuration_are_refused(tmp_path):
    import shutil

    for f in WEIGHTS_DIR.iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    cfg = json.loads((tmp_path / "tiny_config.json").read_text())
    # v1's VAE against v2's files, or the other way round: the config no longer fits the weights
    cfg["vae_factor"], cfg["vae_blocks"] = (8, 2) if cfg.get("vae_factor", 8) == 4 else (4, 1)
    (tmp_path / "tiny_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="does not fit the model described by"):
        load_tiny(tmp_path)


def test_world_clips_only_enter_the_first_chunk_layout_from_the_reference_view():
    mc = v2_model()
    mc.frames = 9  # a small bank: 9-frame chunks, windows of 9 + 5 frames
    cfg = TrainConfig(sequences=2, world_sequences=6, world_fresh_p=0.5)
    bank = render_bank(cfg, mc, length=14)
    assert bank["frames"].shape[0] == 8 and bank["world"].sum() == 6
    fresh_world = bank["fresh"] & bank["world"]
    assert 0 < fresh_world.sum() < 6, bank["fresh"]
    data = {k: torch.as_tensor(bank[k]) for k in ("fresh", "world")}
    data["a"] = torch.zeros(8, 1)
    gen = torch.Generator().manual_seed(0)
    firsts = {_pick(data, True, cfg, gen) for _ in range(200)}
    assert all(bank["fresh"][i] for i in firsts) and len(firsts) == int(bank["fresh"].sum())
    windows = [_pick(data, False, cfg, gen) for _ in range(400)]
    share = np.mean([bank["world"][i] for i in windows])
    assert abs(share - cfg.world_p) < 0.1


def test_latent_cells_follow_the_causal_layout():
    m = np.zeros((9, 16, 16), bool)  # 1 + 4 + 4 frames -> 3 slots
    m[0, 0, 0] = True  # frame 0 alone -> slot 0
    m[4, 5, 9] = True  # frames 1-4 -> slot 1, pixel (5, 9) -> cell (1, 2) at factor 4
    m[8, 15, 15] = True  # frames 5-8 -> slot 2
    cells = latent_cells(m, 4)
    assert cells.shape == (3, 4, 4) and cells.sum() == 3
    assert cells[0, 0, 0] == 1 and cells[1, 1, 2] == 1 and cells[2, 3, 3] == 1
    with pytest.raises(ValueError, match="1 \\+ 4"):
        latent_cells(m[:8], 4)


def test_figure_weight_weighs_the_dancer_and_keeps_the_loss_scale():
    mc = v2_model()
    mc.frames = 9
    cfg = TrainConfig(sequences=2, world_sequences=2, world_fresh_p=1.0, figure_weight=4.0, batch=3)
    bank = render_bank(cfg, mc, length=14)
    assert bank["figure"].shape == bank["frames"].shape[:4] and bank["figure"].any()
    for i in range(2):  # on the plain clips the mask is where the frames leave the empty scene
        plate = make_sequence(i, "train", mc.height, mc.width, mc.fps).plate().astype(int)
        diff = np.abs(bank["frames"][i].astype(int) - plate).max(-1)
        fig = bank["figure"][i]
        assert diff[fig].mean() > 40 and diff[~fig].mean() < 5, (diff[fig].mean(), diff[~fig].mean())
        assert not (fig & (diff <= 2)).any()  # a mask one frame off covers pixels of the bare scene
    d = {k: torch.zeros(4, 16, 3, 16, 16) for k in ("a", "b", "pose_a", "pose_b")}
    d.update(ref=torch.zeros(4, 16, 1, 16, 16), singles_a=torch.zeros(4, 9, 16, 16, 16))
    d.update(fresh=torch.as_tensor(bank["fresh"]), world=torch.as_tensor(bank["world"]))
    d["figure_a"] = torch.stack([latent_cells(bank["figure"][i][:9], 4) for i in range(4)])
    d["figure_b"] = torch.stack([latent_cells(bank["figure"][i][5:14], 4) for i in range(4)])
    x0, y, pose, w = make_batch(d, mc, cfg, False, torch.Generator().manual_seed(0))
    assert w.shape == (3, 1, 3, 16, 16) and set(torch.unique(w).tolist()) <= {1.0, 5.0} and (w == 5.0).any()
    # each window takes its own masks: chunk A's for the first-chunk layout, chunk B's for memory windows
    only_b = {**d, "figure_a": torch.zeros_like(d["figure_a"])}
    assert (make_batch(only_b, mc, cfg, False, torch.Generator().manual_seed(0))[3] == 1.0).all()
    memory = make_batch(only_b, mc, replace(cfg, first_chunk_p=0.0), True, torch.Generator().manual_seed(0))[3]
    assert (memory == 5.0).any()
    # the same draws without the weight: the batch is the same and the weight is None
    x0b, _, _, none = make_batch(d, mc, replace(cfg, figure_weight=0.0), False, torch.Generator().manual_seed(0))
    assert none is None and torch.equal(x0, x0b)
    # the loss: an error on the dancer costs 5x one on the background; a uniform error keeps its value
    pred, goal = torch.zeros(1, 1, 5, 2, 2), torch.zeros(1, 1, 5, 2, 2)
    weight = torch.ones(1, 1, 1, 2, 2)
    weight[..., 0, 0] = 5.0
    on, off = pred.clone(), pred.clone()
    on[:, :, 4, 0, 0], off[:, :, 4, 1, 1] = 1.0, 1.0
    assert torch.isclose(chunk_loss(on, goal, 4, weight), 5 * chunk_loss(off, goal, 4, weight))
    assert torch.isclose(chunk_loss(pred + 1, goal, 4, weight), chunk_loss(pred + 1, goal, 4, None))
    # a bank without masks cannot be trained with the weight
    with pytest.raises(ConfigError, match="no figure masks"):
        make_batch({k: v for k, v in d.items() if not k.startswith("figure")}, mc, cfg, False, torch.Generator())
    assert v2_config().figure_weight == 4.0 and TrainConfig().figure_weight == 0.0


@pytest.mark.slow
def test_the_v2_training_command_runs_and_writes_a_loadable_model(tmp_path):
    train_main(["--v2", "--quick", "--out", str(tmp_path)])
    be = load_tiny(tmp_path)
    assert be.config.vae_factor == 4 and be.config.vae_blocks == 1
    assert be.config.height // (be.config.vae_factor * be.config.patch) == 8  # 8x8 tokens per frame (v1: 4x4)
    assert be.config.attention == "factorized" and be.denoiser.dit.attention == "factorized"
    assert be.config.vae_group == "still" and be.vae.group == "still" and be.config.output == "velocity_prior"
    summary = json.loads((tmp_path / "training_summary.json").read_text())
    assert summary["train_config"]["world_sequences"] == 8 and summary["train_config"]["figure_weight"] == 4.0
    # the attempts' variants: another head on the same VAE
    train_main(["--v2", "--quick", "--vae-from", str(tmp_path), "--head", "x0_skip", "--lr", "1e-3", "--pose-blocks", "--out", str(tmp_path / "skip")])
    skip = load_tiny(tmp_path / "skip")
    assert skip.config.output == "x0_skip" and skip.denoiser.dit.output == "x0_skip"
    assert skip.config.pose_blocks and len(skip.dit.pose_in) == skip.config.depth and not be.config.pose_blocks
    skip_summary = json.loads((tmp_path / "skip" / "training_summary.json").read_text())
    assert skip_summary["vae_from"] == str(tmp_path) and skip_summary["train_config"]["lr"] == 1e-3
    # a VAE of other settings is refused before anything is trained, naming the setting
    with pytest.raises(ConfigError, match="vae_group 'still' there, 'free' here"):
        train_main(["--v2", "--quick", "--vae-from", str(tmp_path), "--vae-group", "free", "--out", str(tmp_path / "free")])
    assert not (tmp_path / "free").exists()


@pytest.mark.slow
def test_a_v2_run_stopped_in_the_dit_stage_resumes_from_its_own_vae(tmp_path, monkeypatch):
    """The VAE is written as soon as its stage ends and the DiT stage writes checkpoints; a run
    stopped before the DiT stage, then stopped again inside it, continued with ``--vae-from`` its
    own folder gives the weights an uninterrupted run gives, bit for bit."""
    from safetensors.torch import load_file

    from everanimate_core.tiny import train_tiny as tt

    monkeypatch.setattr(tt, "CHECKPOINT_EVERY", 3)  # --quick trains 10 DiT steps
    train_main(["--v2", "--quick", "--out", str(tmp_path / "whole")])
    assert not list((tmp_path / "whole").glob(tt.CHECKPOINT + ".*"))  # removed once the weights are written
    real_dit, real_save = tt.train_dit, tt._save_checkpoint

    def stopped(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(tt, "train_dit", stopped)
    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train_main(["--v2", "--quick", "--out", str(cut)])
    assert (cut / tt.VAE_FILE).exists() and not (cut / tt.DIT_FILE).exists()
    monkeypatch.setattr(tt, "train_dit", real_dit)
    saved = []

    def save_then_stop(path, step, *a, **kw):
        real_save(path, step, *a, **kw)
        saved.append(step)
        if step == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr(tt, "_save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_main(["--v2", "--quick", "--vae-from", str(cut), "--out", str(cut)])
    assert saved == [3, 6] and (cut / f"{tt.CHECKPOINT}.json").exists() and not (cut / tt.DIT_FILE).exists()
    saved.clear()
    train_main(["--v2", "--quick", "--vae-from", str(cut), "--out", str(cut)])
    assert saved == [9], saved  # it went on from step 6, not from the start
    summary = json.loads((cut / "training_summary.json").read_text())
    assert any("continued" in line and "at step 6 of 10" in line for line in summary["log"]), summary["log"]
    assert not list(cut.glob(tt.CHECKPOINT + ".*"))
    for name in (tt.VAE_FILE, tt.DIT_FILE):
        whole, resumed = load_file(str(tmp_path / "whole" / name)), load_file(str(cut / name))
        assert whole.keys() == resumed.keys()
        assert all(torch.equal(whole[k], resumed[k]) for k in whole), name


def test_a_dit_checkpoint_of_another_run_is_refused_before_any_stage(tmp_path, monkeypatch):
    from everanimate_core.errors import ResumeStateError
    from everanimate_core.infra.checkpoint import save_state
    from everanimate_core.tiny import train_tiny as tt

    def never(*a, **kw):
        raise AssertionError("a stage ran before the checkpoint was checked")

    monkeypatch.setattr(tt, "render_bank", never)
    other = tt._settings(v2_model(), replace(v2_config(0), lr=5e-4))
    save_state(tmp_path, tt.CHECKPOINT, {"x": torch.zeros(1)},
               {"fingerprint": tt.config_fingerprint(other), "config": other, "data": "x", "step": 200})
    with pytest.raises(ResumeStateError, match=r"different settings.*train\.lr.*new run folder"):
        train_main(["--v2", "--out", str(tmp_path)])
    (tmp_path / f"{tt.CHECKPOINT}.json").write_text("{not json")
    with pytest.raises(ResumeStateError, match="not valid JSON.*start over"):
        train_main(["--v2", "--out", str(tmp_path)])


def test_a_dit_checkpoint_of_other_clips_is_refused(tmp_path):
    """Same settings, other training windows (another VAE or world): refused, not continued."""
    from everanimate_core.errors import ResumeStateError
    from everanimate_core.tiny import train_tiny as tt
    from everanimate_core.tiny.backend import build_models

    mc, cfg = v2_model(), replace(v2_config(0), base_steps=2, memory_steps=0, batch=1)
    _, dit = build_models(mc)
    opt = torch.optim.AdamW(dit.parameters())
    gen = torch.Generator().manual_seed(0)
    data = {"x": torch.zeros(3)}
    tt._save_checkpoint(tmp_path, 1, tt._settings(mc, cfg), tt.data_digest(data), dit, opt, gen)
    assert tt._load_checkpoint(tmp_path, tt._settings(mc, cfg), tt.data_digest(data), dit, opt, gen) == 1
    with pytest.raises(ResumeStateError, match="other clips or another VAE"):
        tt._load_checkpoint(tmp_path, tt._settings(mc, cfg), tt.data_digest({"x": torch.ones(3)}), dit, opt, gen)


def test_world_chunk0_scores_a_copy_as_a_copy_that_ignores_the_pose(tiny):
    r = world_chunk0(CopyReference(tiny), sequences=2, steps=2)
    assert abs(r["model"] - r["reference"]) < 1.5, r  # the stand-in is the reference through the VAE
    assert r["iou"] == pytest.approx(r["wrong_pose_iou"]), r
    assert r["vae"] > r["empty"] > r["reference"], r  # the ceilings sit above the copy
    assert r["empty"] > r["first_view"], r  # the camera pans in chunk 0: the first view held falls behind


def test_world_chunk0_takes_the_other_pose_inside_the_split(tiny):
    r = world_chunk0(CopyReference(tiny), sequences=1, steps=1, offset=199)  # the other pose is clip 0
    assert r["offset"] == 199 and r["iou"] == pytest.approx(r["wrong_pose_iou"]), r
    with pytest.raises(ConfigError, match="between 1 and 200"):
        world_chunk0(tiny, sequences=2, offset=199)


def test_the_output_follows_the_pose_on_world_clips(tiny):
    # v2 on these 4 clips at 10 steps: IoU 0.137 with its own pose, 0.060 with another's
    r = world_chunk0(tiny, sequences=4, steps=10)
    assert r["iou"] > r["wrong_pose_iou"] + POSE_IOU_GAIN, r
    assert r["model_figure"] > r["empty_figure"] + 1.0, r  # it draws a dancer where the dancer is


def test_bench_quality_merges_a_lora_and_says_so(capsys):
    from everanimate_core.apps.quality import apply_lora, main
    from everanimate_core.tiny.backend import WEIGHTS_DIR, load_tiny

    lora = WEIGHTS_DIR / "lora" / "rfm.safetensors"
    be = load_tiny()
    before = {n: p.detach().clone() for n, p in be.dit.named_parameters()}
    assert apply_lora(be, lora) == str(lora)
    changed = [n for n, p in be.dit.named_parameters() if not torch.equal(p, before[n])]
    assert changed and all(any(t in n for t in ("qkv", ".o.", "ffn")) for n in changed), changed[:5]
    with pytest.raises(ConfigError, match="No LoRA file"):
        apply_lora(be, lora.with_name("none.safetensors"))
    main(["--lora", str(lora), "--sequences", "0", "--world", "0"])
    assert json.loads(capsys.readouterr().out) == {"lora": str(lora)}
