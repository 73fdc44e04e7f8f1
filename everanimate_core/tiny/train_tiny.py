"""Train EverAnimate-Tiny on SynthDance, on the CPU, from one seeded command.

    python -m everanimate_core train-tiny --v2   # v2, the embedded default  -> runs/tiny_v2 (docs/tiny_v2.md)
    python -m everanimate_core train-tiny        # v1, its predecessor        -> runs/tiny_v1

Neither overwrites the shipped weights unless told to: ``--out everanimate_core/tiny/weights``.

v2 (docs/tiny_v2.md) trains on plain clips and clips of the stateful world (tiny/world.py) with a
VAE of factor 4; v1 on plain clips with a VAE of factor 8.

Stages:
1. TinyVAE: reconstruct 5-frame clips (1 + 4, the causal layout) of dancers and pose skeletons.
   Then the per-channel latent mean/std are measured so the model space is normalized (zero =
   mean), as with Wan.
2. Base DiT: animate ONE chunk from the reference + pose (first-chunk layout: reference x K anchors,
   no motion latent), as Wan-Animate does.
3. Latent-memory stage (the release's training windows): the motion latent comes from the previous
   REAL chunk's last latent, anchors from random frames of that chunk (p 0.95, each encoded on its
   own) plus the reference, and the first-chunk layout with p 0.2.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .. import defaults
from ..errors import ConfigError, ResumeStateError
from ..flow import add_noise, clean_velocity, training_sigmas
from ..layout import build_condition, model_input_condition
from ..infra.checkpoint import START_OVER, load_state, save_state
from ..infra.identity import array_digest, config_fingerprint
from ..training.trainer import opt_tensors, restore_opt, warmup_cosine_lr
from .backend import CONFIG_FILE, DIT_FILE, VAE_FILE, TinyModelConfig, build_models
from .dit import ATTENTION, OUTPUTS, PRIOR_HEADS, head_prior, skip_scalings
from .synthdance import training_render
from .vae import GROUPS, frames_to_tensor

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover
    tqdm = None


@dataclass
class TrainConfig:
    seed: int = 0
    sequences: int = 192
    vae_steps: int = 2500
    vae_batch: int = 8
    vae_lr: float = 1e-3
    vae_clip: float = 0.0  # gradient-norm clip of the VAE stage (0: none, as v1 was trained)
    base_steps: int = 1000
    memory_steps: int = 1400
    batch: int = 16
    lr: float = 3e-4
    first_chunk_p: float = 0.2
    anchor_from_prev_p: float = 0.95
    # v2: clips of the stateful world (tiny/world.py) beside the plain ones. A world clip starts at
    # frame 0 with probability world_fresh_p (the first-chunk layout may use it: its reference shows
    # that view), else at a random frame below world_span_s seconds (memory windows only).
    world_sequences: int = 0
    world_fresh_p: float = 0.3
    world_span_s: float = 80.0
    world_p: float = 0.6  # share of memory-stage windows drawn from world clips
    # DiT loss weight 1 + figure_weight on latent cells the dancer covers (the frame's figure mask,
    # max over each slot's frames and over each cell's pixels); 0: the plain mean, as v1 and
    # attempts 1-6 were trained.
    figure_weight: float = 0.0


def v2_config(seed: int = 0) -> TrainConfig:
    """The training of EverAnimate-Tiny v2 (the command in docs/tiny_v2.md)."""
    return TrainConfig(
        seed=seed, sequences=256, world_sequences=256, vae_steps=2500, vae_batch=8, vae_lr=1.5e-3, vae_clip=1.0,
        base_steps=1200, memory_steps=2400, batch=8, lr=1e-3, figure_weight=4.0,
    )  # fmt: skip


def v2_model() -> TinyModelConfig:
    """EverAnimate-Tiny v2: 64x64, VAE factor 4 (16x16 latents, one residual block), patch 2, so 8x8
    tokens per frame (v1: 4x4), and factorized attention (within each latent slot, then along time
    at each position), so a generated token reads the anchors and the motion slot at its own place
    in one step (docs/tiny_v2.md, attempt 3). The VAE's four-frame latents share the single-frame
    code on a still scene (``vae_group="still"``), and the head predicts the velocity over the
    carried latent, or over the reference in chunk 0 (``velocity_prior``): the next attempt's design
    (docs/tiny_v2.md, attempt 5 and the pilots after it)."""
    return TinyModelConfig(
        vae_width=128, vae_factor=4, vae_blocks=1, vae_group="still", patch=2, attention="factorized", output="velocity_prior"
    )


def _progress(total: int, desc: str):
    if tqdm is None:
        return None
    return tqdm(total=total, desc=desc, dynamic_ncols=True, mininterval=1.0)


def _lr(step: int, total: int, base: float, warmup: int = 100) -> float:
    return warmup_cosine_lr(step, total, base, warmup)


def render_bank(cfg: TrainConfig, mc: TinyModelConfig, length: int) -> dict[str, np.ndarray]:
    """Pre-render training sequences (frames, pose, reference) of ``length`` frames: the plain clips,
    then the world clips. ``fresh`` marks the clips whose first frame is the reference's view."""
    frames, poses, refs, fresh, world, figures = [], [], [], [], [], []
    for i in range(cfg.sequences):
        seq, fr, fig, po = training_render(i, "train", length, mc.height, mc.width, mc.fps)
        frames.append(fr)
        poses.append(po)
        refs.append(seq.reference())
        if cfg.figure_weight:
            figures.append(fig)
    fresh += [True] * cfg.sequences
    world += [False] * cfg.sequences
    if cfg.world_sequences:
        from .world import make_world_sequence

        rng = np.random.default_rng([cfg.seed, 0x3011D])
        span = max(1, int(cfg.world_span_s * mc.fps))
        for i in range(cfg.world_sequences):
            seq = make_world_sequence(i, "train", mc.height, mc.width, mc.fps)
            start = 0 if rng.random() < cfg.world_fresh_p else int(rng.integers(1, span))
            fr, fig = seq.render(start, start + length)
            frames.append(fr)
            poses.append(seq.pose(start, start + length))
            refs.append(seq.reference())
            fresh.append(start == 0)
            world.append(True)
            if cfg.figure_weight:
                figures.append(fig)
    bank = {
        "frames": np.stack(frames), "pose": np.stack(poses), "reference": np.stack(refs),
        "fresh": np.asarray(fresh), "world": np.asarray(world),
    }  # fmt: skip
    if cfg.figure_weight:
        bank["figure"] = np.stack(figures)
    return bank


def train_vae(vae, bank: dict[str, np.ndarray], cfg: TrainConfig, gen: torch.Generator, log) -> None:
    """Reconstruction training of the causal VAE on 5-frame clips of frames and pose videos."""
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    n, length = bank["frames"].shape[:2]
    bar = _progress(cfg.vae_steps, "vae")
    for step in range(cfg.vae_steps):
        for g in opt.param_groups:
            g["lr"] = _lr(step, cfg.vae_steps, cfg.vae_lr)
        clips = []
        for b in range(cfg.vae_batch):
            i = int(torch.randint(n, (1,), generator=gen))
            o = int(torch.randint(length - 5, (1,), generator=gen))
            src = bank["pose"] if b % 4 == 3 else bank["frames"]
            clips.append(frames_to_tensor(src[i, o : o + 5]))
        x = torch.cat(clips)
        z = vae.encode_raw(x)
        z = z + 0.01 * torch.randn(z.shape, generator=gen)
        rec = vae.decode_raw(z)
        loss = (rec - x).abs().mean() + ((rec - x) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.vae_clip:
            torch.nn.utils.clip_grad_norm_(vae.parameters(), cfg.vae_clip)
        opt.step()
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % 250 == 0:
            log(f"vae step {step} loss {loss.item():.4f}")
    if bar:
        bar.close()


@torch.no_grad()
def set_latent_stats(vae, bank: dict[str, np.ndarray]) -> None:
    """Measure per-channel mean/std of raw latents so model space is normalized."""
    zs = []
    for i in range(0, len(bank["frames"]), 8):
        for j in range(i, min(i + 8, len(bank["frames"]))):
            zs.append(vae.encode_raw(frames_to_tensor(bank["frames"][j, :33]))[0].flatten(1))
    z = torch.cat(zs, dim=1)
    vae.latents_mean.copy_(z.mean(dim=1))
    vae.latents_std.copy_(z.std(dim=1).clamp_min(1e-3))


def latent_cells(mask: np.ndarray, factor: int) -> torch.Tensor:
    """A figure mask bool [1 + 4(G-1), H, W] on the latent grid, float [G, H/factor, W/factor]: a
    cell is 1 where the dancer covers any of its pixels in any frame of its slot (the causal layout:
    the first frame alone, then groups of four)."""
    m = torch.as_tensor(np.asarray(mask)).float()
    if (m.shape[0] - 1) % 4:
        raise ValueError(f"a mask of {m.shape[0]} frames is not 1 + 4(G-1) frames")
    slots = torch.cat([m[:1], m[1:].reshape(-1, 4, *m.shape[1:]).amax(1)])
    return torch.nn.functional.max_pool2d(slots[None], factor)[0]


@torch.no_grad()
def encode_windows(vae, bank: dict[str, np.ndarray], mc: TinyModelConfig) -> dict[str, torch.Tensor]:
    """Model-space latents of two consecutive chunk windows per sequence (A, then B = next chunk)."""
    f, stride = mc.frames, mc.chunk_settings.stride
    out: dict[str, list] = {k: [] for k in ("a", "b", "pose_a", "pose_b", "singles_a", "ref")}
    flags = {k: torch.as_tensor(bank[k]) for k in ("fresh", "world") if k in bank}
    for i in range(len(bank["frames"])):
        fr, po = bank["frames"][i], bank["pose"][i]
        out["a"].append(vae.encode(frames_to_tensor(fr[:f]))[0])
        out["b"].append(vae.encode(frames_to_tensor(fr[stride : stride + f]))[0])
        out["pose_a"].append(vae.encode(frames_to_tensor(po[:f]))[0])
        out["pose_b"].append(vae.encode(frames_to_tensor(po[stride : stride + f]))[0])
        singles = vae.encode(frames_to_tensor(fr[:f]).permute(2, 1, 0, 3, 4))  # each frame alone
        out["singles_a"].append(singles[:, :, 0])
        out["ref"].append(vae.encode(frames_to_tensor(bank["reference"][i][None]))[0])
        if "figure" in bank:
            out.setdefault("figure_a", []).append(latent_cells(bank["figure"][i][:f], mc.vae_factor))
            out.setdefault("figure_b", []).append(latent_cells(bank["figure"][i][stride : stride + f], mc.vae_factor))
    return {**{k: torch.stack(v) for k, v in out.items()}, **flags}


def _has_world(data: dict[str, torch.Tensor]) -> bool:
    return "world" in data and bool(data["world"].any())


def _pick(data: dict[str, torch.Tensor], first: bool, cfg: TrainConfig, gen: torch.Generator) -> int:
    """A clip index: the first-chunk layout only takes clips that start at the reference's view;
    memory windows come from world clips with probability world_p."""
    if first:
        pool = torch.nonzero(data["fresh"]).flatten()
    else:
        use_world = float(torch.rand(1, generator=gen)) < cfg.world_p
        pool = torch.nonzero(data["world"] == use_world).flatten()
    return int(pool[torch.randint(len(pool), (1,), generator=gen)])


def make_batch(data: dict[str, torch.Tensor], mc: TinyModelConfig, cfg: TrainConfig, memory_stage: bool, gen: torch.Generator):
    """A batch of (x0, y, pose, weight) in the EverAnimate layout, with the release's training
    windows. weight [B, 1, G, h, w] is the loss weight of the generated slots (1 + figure_weight
    where the dancer is), None when ``cfg.figure_weight`` is 0."""
    k, f = mc.anchors, mc.frames
    weighted = bool(cfg.figure_weight)
    if weighted and "figure_a" not in data:
        raise ConfigError("figure_weight is set but the encoded windows carry no figure masks; render the bank with it set.")
    xs, ys, poses, weights = [], [], [], []
    for _ in range(cfg.batch):
        if _has_world(data):
            first = (not memory_stage) or float(torch.rand(1, generator=gen)) < cfg.first_chunk_p
            i = _pick(data, first, cfg, gen)
        else:  # v1's order of draws, so its weights retrain bit for bit
            i = int(torch.randint(data["a"].shape[0], (1,), generator=gen))
            first = (not memory_stage) or float(torch.rand(1, generator=gen)) < cfg.first_chunk_p
        ref = data["ref"][i]  # [C, 1, h, w]
        if weighted:
            weights.append(1.0 + cfg.figure_weight * data["figure_a" if first else "figure_b"][i][None])
        if first:
            anchors, motion, x0, pose = ref.repeat(1, k, 1, 1), None, data["a"][i], data["pose_a"][i]
        else:
            if float(torch.rand(1, generator=gen)) < cfg.anchor_from_prev_p:
                idx = torch.randperm(f - 1, generator=gen)[: k - 1] + 1
                picks = data["singles_a"][i][idx].permute(1, 0, 2, 3)  # [C, K-1, h, w]
                anchors = torch.cat([picks, ref], dim=1)
            else:
                anchors = ref.repeat(1, k, 1, 1)
            motion = data["a"][i][:, -1:]
            x0, pose = data["b"][i], data["pose_b"][i]
        cond, mask, _ = build_condition(anchors, motion, x0.shape[1])
        y = model_input_condition(cond, mask)
        # x0 over all K+G slots: anchor slots are denoised too; their clean value is the anchors.
        xs.append(torch.cat([anchors, x0], dim=1))
        ys.append(y)
        poses.append(pose)
    return torch.stack(xs), torch.stack(ys), torch.stack(poses), (torch.stack(weights) if weighted else None)


def chunk_loss(pred: torch.Tensor, goal: torch.Tensor, anchors: int, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean squared error over the generated slots; with a weight, its weighted mean (normalized by
    the weight's mean, so the loss keeps its scale and the learning rate its meaning)."""
    err = ((pred - goal) ** 2)[:, :, anchors:]
    if weight is None:
        return err.mean()
    return (err * weight).mean() / weight.mean()


CHECKPOINT = "dit_checkpoint"  # dit_checkpoint.safetensors + .json (infra.checkpoint)
CHECKPOINT_EVERY = 200  # DiT steps between checkpoints (v2: about 4-7 min on 2 cores)


def _settings(mc: TinyModelConfig, cfg: TrainConfig) -> dict:
    return {"train": dict(cfg.__dict__), "model": dict(mc.__dict__)}


def data_digest(data: dict[str, torch.Tensor]) -> str:
    """The encoded training windows' identity: they carry the VAE, the clips and their world."""
    return array_digest(*(data[k].detach().cpu().numpy() for k in sorted(data)))


def _has_checkpoint(out: Path) -> bool:
    return (out / f"{CHECKPOINT}.json").exists()  # infra.checkpoint: it exists once its JSON does


def check_checkpoint_settings(out: Path, mc: TinyModelConfig, cfg: TrainConfig) -> None:
    """Refuse, before any stage runs, a DiT checkpoint in ``out`` left by a run with other settings."""
    if _has_checkpoint(out):
        load_state(out, CHECKPOINT, expected_config=_settings(mc, cfg))


def _save_checkpoint(out: Path, step: int, settings: dict, digest: str, dit, opt, gen: torch.Generator) -> None:
    params = list(dit.parameters())
    tensors = {f"dit.{k}": v for k, v in dit.state_dict().items()}
    tensors.update(opt_tensors(opt, params))
    tensors["gen"], tensors["torch_rng"] = gen.get_state(), torch.get_rng_state()
    save_state(out, CHECKPOINT, tensors, {"fingerprint": config_fingerprint(settings), "config": settings,
                                          "data": digest, "step": step})  # fmt: skip


def _load_checkpoint(out: Path, settings: dict, digest: str, dit, opt, gen: torch.Generator) -> int:
    tensors, meta = load_state(out, CHECKPOINT, expected_config=settings)
    if meta.get("data") != digest:
        raise ResumeStateError(f"The DiT checkpoint in {out} was trained on other clips or another VAE "
                               f"(data {meta.get('data')}, here {digest}); {START_OVER}.")  # fmt: skip
    dit.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("dit.")})
    restore_opt(opt, list(dit.parameters()), tensors)
    gen.set_state(tensors["gen"])
    torch.set_rng_state(tensors["torch_rng"])
    return int(meta["step"])


def train_dit(dit, data, mc: TinyModelConfig, cfg: TrainConfig, gen: torch.Generator, log,
              checkpoint: Path | None = None, every: int | None = None) -> None:  # fmt: skip
    """Flow-matching training: base (first-chunk layout), then the latent-memory stage.

    With ``checkpoint`` (a folder), the state (weights, optimizer, random streams) is written
    there every ``every`` steps, and a checkpoint of the same run found there is continued: the result is the
    one an uninterrupted run gives, bit for bit."""
    opt = torch.optim.AdamW(dit.parameters(), lr=cfg.lr, weight_decay=0.01)
    grid = training_sigmas(defaults.SHIFT)
    total = cfg.base_steps + cfg.memory_steps
    start, every, settings, digest = 0, every or CHECKPOINT_EVERY, _settings(mc, cfg), None
    if checkpoint is not None:
        digest = data_digest(data)
        if _has_checkpoint(checkpoint):
            start = _load_checkpoint(checkpoint, settings, digest, dit, opt, gen)
            log(f"DiT stage continued from {checkpoint} at step {start} of {total}")
    bar = _progress(total, "dit")
    if bar and start:
        bar.update(start)
    for step in range(start, total):
        if checkpoint is not None and step > start and step % every == 0:
            _save_checkpoint(checkpoint, step, settings, digest, dit, opt, gen)
        memory_stage = step >= cfg.base_steps
        for g in opt.param_groups:
            g["lr"] = _lr(step, total, cfg.lr)
        x0, y, pose, weight = make_batch(data, mc, cfg, memory_stage, gen)
        noise = torch.randn(x0.shape, generator=gen)
        sig = grid[torch.randint(len(grid), (x0.shape[0],), generator=gen)]
        s = sig.view(-1, 1, 1, 1, 1)
        xt = add_noise(x0, noise, s)
        target = clean_velocity(x0, noise)
        pred = dit(xt, sig * 1000.0, y, pose, mc.anchors)
        if mc.output == "x0_skip":
            c_skip, c_out = skip_scalings(s)
            goal = (x0 - c_skip * xt) / c_out
        elif mc.output == "x0":
            goal = x0
        elif mc.output in PRIOR_HEADS:
            goal = target + head_prior(y, mc.anchors, dit.mask_channels, mc.output)
        else:
            goal = target
        loss = chunk_loss(pred, goal, mc.anchors, weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(dit.parameters(), 1.0)
        opt.step()
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", stage="memory" if memory_stage else "base")
        if step % 250 == 0:
            log(f"dit step {step} ({'memory' if memory_stage else 'base'}) loss {loss.item():.4f}")
    if bar:
        bar.close()


VAE_FIELDS = ("height", "width", "latent_channels", "vae_width", "vae_feat", "vae_factor", "vae_blocks", "vae_group")


def _check_vae_from(folder: Path, mc: TinyModelConfig) -> None:
    """``--vae-from`` must name a run whose VAE has this model's VAE settings."""
    for name in (CONFIG_FILE, VAE_FILE):
        if not (folder / name).exists():
            raise ConfigError(f"--vae-from {folder}: {name} is missing; point it at the folder of an earlier train-tiny run.")
    theirs = TinyModelConfig.load(folder / CONFIG_FILE)
    diff = [f"{k} {getattr(theirs, k)!r} there, {getattr(mc, k)!r} here" for k in VAE_FIELDS if getattr(theirs, k) != getattr(mc, k)]
    if diff:
        raise ConfigError(f"--vae-from {folder}: its VAE was trained with other settings ({'; '.join(diff)}). "
                          "Train the VAE again (drop --vae-from) or pick a run with the same VAE settings.")


def train_tiny(
    out_dir: str | Path, cfg: TrainConfig | None = None, mc: TinyModelConfig | None = None, vae_from: str | Path | None = None,
    checkpoint_every: int | None = None,
) -> dict:
    """Train all stages and write the weights; returns a summary with wall times.

    A run stopped in the DiT stage continues with ``vae_from=out_dir``: the VAE is read back and
    the DiT goes on from its last checkpoint in ``out_dir`` (at most ``checkpoint_every`` steps,
    default CHECKPOINT_EVERY, are trained again)."""
    cfg = cfg or TrainConfig()
    mc = mc or TinyModelConfig()
    if vae_from is not None:  # before anything is rendered or written
        _check_vae_from(Path(vae_from), mc)
    out = Path(out_dir)
    check_checkpoint_settings(out, mc, cfg)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    logs: list[str] = []

    def log(msg: str) -> None:
        logs.append(msg)
        if tqdm is None:
            print(msg, flush=True)

    times = {}
    t = time.perf_counter()
    bank = render_bank(cfg, mc, length=mc.frames + mc.chunk_settings.stride)
    times["render_s"] = time.perf_counter() - t
    vae, dit = build_models(mc)
    t = time.perf_counter()
    if vae_from is None:
        train_vae(vae, bank, cfg, gen, log)
        set_latent_stats(vae, bank)
    else:  # the VAE of an earlier run of the same command (its stage is seeded, so it is the same)
        vae.load_state_dict(load_file(str(Path(vae_from) / VAE_FILE)))
        log(f"VAE reused from {vae_from}")
    times["vae_s"] = time.perf_counter() - t
    # written at once, so a run stopped in the DiT stage continues with --vae-from OUT --out OUT
    # instead of training the VAE again (v2's DiT stage has its own stream; the DiT checkpoint
    # carries the stream's state, so v1 continues from a checkpoint unchanged too)
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, str(out / VAE_FILE))
    mc.save(out / CONFIG_FILE)
    log(f"VAE written to {out}; if the DiT stage stops, --vae-from {out} --out {out} continues it")
    if cfg.world_sequences:  # v2: the DiT stage has its own stream, so a reused VAE changes nothing
        gen = torch.Generator().manual_seed(cfg.seed + 1)
    vae.eval()
    t = time.perf_counter()
    data = encode_windows(vae, bank, mc)
    times["encode_s"] = time.perf_counter() - t
    del bank
    t = time.perf_counter()
    train_dit(dit, data, mc, cfg, gen, log, checkpoint=out, every=checkpoint_every)
    times["dit_s"] = time.perf_counter() - t
    save_file({k: v.contiguous() for k, v in dit.state_dict().items()}, str(out / DIT_FILE))
    for suffix in (".json", ".safetensors"):  # the weights are written: nothing left to continue
        (out / f"{CHECKPOINT}{suffix}").unlink(missing_ok=True)
    summary = {"train_config": cfg.__dict__, "model_config": mc.__dict__, "vae_from": None if vae_from is None else str(vae_from),
               "times": times, "log": logs}
    (out / "training_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Train EverAnimate-Tiny on SynthDance (CPU).")
    p.add_argument("--out", default=None, help="weights folder (default: runs/tiny_v2 for --v2, runs/tiny_v1 for v1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="a few steps of each stage (smoke test)")
    p.add_argument("--v2", action="store_true", help="EverAnimate-Tiny v2: the stateful world, VAE factor 4")
    p.add_argument("--vae-from", default=None, help="reuse the VAE of an earlier run of the same command (skips its stage); "
                   "--vae-from OUT --out OUT continues a stopped run from its last DiT checkpoint")
    p.add_argument("--head", choices=OUTPUTS, default=None, help="what the DiT predicts (default: the model's own)")
    p.add_argument("--attention", choices=ATTENTION, default=None, help="the DiT's attention (default: the model's own)")
    p.add_argument("--lr", type=float, default=None, help="the DiT's peak learning rate (default: the training's own)")
    p.add_argument("--vae-group", choices=GROUPS, default=None, help="how the VAE forms a 4-frame latent (default: the model's own)")
    p.add_argument("--figure-weight", type=float, default=None,
                   help="extra DiT loss weight where the dancer is (0: none; default: the training's own)")
    p.add_argument("--pose-blocks", action="store_true", help="add the pose tokens again before every DiT block (default: at the input only)")
    p.add_argument("--ref-attention", action="store_true",
                   help="every factorized DiT block also attends to all anchor tokens (default: along time at each place only)")
    a = p.parse_args(argv)
    cfg, mc = (v2_config(a.seed), v2_model()) if a.v2 else (TrainConfig(seed=a.seed), TinyModelConfig())
    if a.head:
        mc = replace(mc, output=a.head)
    if a.attention:
        mc = replace(mc, attention=a.attention)
    if a.vae_group:
        mc = replace(mc, vae_group=a.vae_group)
    if a.pose_blocks:
        mc = replace(mc, pose_blocks=True)
    if a.ref_attention:
        mc = replace(mc, ref_attention=True)
    if a.lr is not None:
        if a.lr <= 0:
            p.error(f"--lr must be positive; got {a.lr}")
        cfg = replace(cfg, lr=a.lr)
    if a.figure_weight is not None:
        if a.figure_weight < 0:
            p.error(f"--figure-weight must be 0 or more; got {a.figure_weight}")
        cfg = replace(cfg, figure_weight=a.figure_weight)
    if a.quick:
        small = dict(sequences=8, vae_steps=5, base_steps=5, memory_steps=5, batch=4)
        cfg = replace(cfg, **small, world_sequences=8 if a.v2 else 0)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = a.out or ("runs/tiny_v2" if a.v2 else "runs/tiny_v1")
    s = train_tiny(out, cfg, mc, a.vae_from)
    print(json.dumps(s["times"], indent=1))


if __name__ == "__main__":
    main()
