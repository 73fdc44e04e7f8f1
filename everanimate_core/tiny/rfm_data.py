"""Training windows of SynthDance for LoRA post-training of EverAnimate-Tiny (stage 1 and stage 2).

A bank is rendered and encoded once (seeded), then batches are drawn from it with the run's
generator, the release's way:
- two consecutive chunk windows per sequence: A (the previous real chunk) and B (the target);
- the motion latent is A's last latent (clean), anchors are K-1 random frames of A (each encoded on
  its own) + the reference with p 0.95, else the reference K times; first-chunk mode (anchors =
  reference x K, no motion, target A) with p 0.2;
- anchors from A get ONE random affine (scale 0.8-1.2, shift +-10 %) shared by all of them with
  p 0.5: the bank holds ``affine_draws`` transformed copies per sequence and a batch picks one;
- the degraded target (stage 2): ``degrade_draws`` parameter sets per sequence, each applied to every
  frame of A and of B, in pixel space through the TinyVAE (or on the latents with
  ``space="latent"``); the anchor slots of the degraded sample stay clean;
- with ``world_sequences``, clips of the stateful world follow the plain ones (``DataConfig``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..training.degrade import DEGRADE_SPACES, DegradeConfig, affine_params, apply_affine, degrade_latents, degrade_pixels, draw_params, unit_frames
from ..errors import ConfigError
from ..layout import build_condition, model_input_condition
from ..sampler import ChunkCondition
from ..training.trainer import TrainingBatch
from .backend import TinyModelConfig
from .synthdance import training_clip
from .vae import frames_to_tensor


@dataclass(frozen=True)
class DataConfig:
    sequences: int = 192
    batch: int = 16
    seed: int = 0
    space: str = "pixel"
    degrade_draws: int = 3
    affine_draws: int = 2
    affine_p: float = 0.5
    first_chunk_p: float = 0.2
    anchor_from_prev_p: float = 0.95
    split: str = "train"
    # Clips of the stateful world (tiny/world.py) after the plain ones, as in the v2 base's training:
    # each starts at a seeded random frame below world_span_s seconds, so the camera, the panel
    # colour and the ball are known only from the motion latent. A world clip enters the first-chunk
    # layout only when it starts at frame 0, the reference's view; otherwise that draw becomes a
    # memory window.
    world_sequences: int = 0
    world_span_s: float = 80.0
    # Windows of the loop's own memory (tiny/loop_bank.py): with p loop_p a draw takes the anchors
    # and motion latent the (c) loop carried into a chunk of a world training clip, and that
    # chunk's true latents as the target (docs/drift.md, "The loop's own memory in LoRA training").
    loop_bank: str | None = None
    loop_p: float = 0.0

    def __post_init__(self) -> None:
        if self.space not in DEGRADE_SPACES:
            raise ConfigError(f"degradation space must be one of {DEGRADE_SPACES}, got {self.space!r}.")
        if self.sequences < 1 or self.batch < 1:
            raise ConfigError("sequences and batch must be >= 1.")
        if self.world_sequences < 0 or self.world_span_s <= 0:
            raise ConfigError("world_sequences must be >= 0 and world_span_s > 0.")
        if not 0.0 <= self.loop_p <= 1.0:
            raise ConfigError(f"loop_p is a probability in [0, 1]; got {self.loop_p}.")
        if (self.loop_bank is None) != (self.loop_p == 0.0):
            raise ConfigError("--loop-bank and --loop-p go together: a rollout bank needs a share of windows > 0, "
                              "and a share needs a bank (make one with `python -m everanimate_core rollouts`).")

    def as_dict(self) -> dict:
        d = asdict(self)
        if not self.world_sequences:  # plain banks keep the fingerprint of earlier run folders
            d.pop("world_sequences"), d.pop("world_span_s")
        if self.loop_bank is None:  # as do banks without the loop's windows
            d.pop("loop_bank"), d.pop("loop_p")
        return d


def _video(x01: torch.Tensor) -> torch.Tensor:
    """float [F, 3, H, W] in [0, 1] -> the VAE's [1, 3, F, H, W] in [-1, 1]."""
    return (x01 * 2 - 1).permute(1, 0, 2, 3)[None]


def check_sequence_length(available: int, mc: TinyModelConfig) -> None:
    """Two chunk windows (previous + target) must fit in the rendered or given frames."""
    stride = mc.chunk_settings.stride
    need = mc.frames + stride
    if available < need:
        raise ConfigError(
            f"Training needs {need} frames per sequence (a previous chunk of {mc.frames} and a target "
            f"chunk starting {stride} frames later); got {available}. Use longer clips "
            "or shorter chunks."
        )


class TinyRFMData:
    """The encoded bank and a batch sampler (see the module docstring)."""

    def __init__(self, vae, mc: TinyModelConfig, cfg: DataConfig, degrade: DegradeConfig = DegradeConfig(),
                 length: int | None = None, weights_dir=None):
        self.mc, self.cfg = mc, cfg
        self.loop = None
        if cfg.loop_bank is not None:
            from .backend import WEIGHTS_DIR
            from .loop_bank import load_rollouts

            self.loop = load_rollouts(cfg.loop_bank, mc.__dict__, WEIGHTS_DIR if weights_dir is None else weights_dir)
        f, stride = mc.frames, mc.chunk_settings.stride
        length = f + stride if length is None else length
        check_sequence_length(length, mc)
        gen = torch.Generator().manual_seed(cfg.seed + 7919)
        keys = ("a", "b", "pose_a", "pose_b", "singles", "ref", "a_aug", "b_aug", "singles_aff", "ref_aff")
        acc: dict[str, list] = {k: [] for k in keys}
        fresh: list[bool] = []
        with torch.no_grad():
            for seq, frames, pose, start in self._clips(length):
                fresh.append(start == 0)
                fa, fb = unit_frames(frames[:f]), unit_frames(frames[stride : stride + f])
                ref = unit_frames(seq.reference()[None])
                acc["a"].append(vae.encode(_video(fa))[0])
                acc["b"].append(vae.encode(_video(fb))[0])
                acc["pose_a"].append(vae.encode(frames_to_tensor(pose[:f]))[0])
                acc["pose_b"].append(vae.encode(frames_to_tensor(pose[stride : stride + f]))[0])
                acc["singles"].append(self._singles(vae, fa))
                acc["ref"].append(vae.encode(_video(ref))[0])
                a_aug, b_aug = [], []
                for _ in range(cfg.degrade_draws):
                    p = draw_params(gen, degrade)
                    if cfg.space == "pixel":
                        a_aug.append(vae.encode(_video(degrade_pixels(fa, p)))[0])
                        b_aug.append(vae.encode(_video(degrade_pixels(fb, p)))[0])
                    else:
                        a_aug.append(degrade_latents(acc["a"][-1], p))
                        b_aug.append(degrade_latents(acc["b"][-1], p))
                acc["a_aug"].append(torch.stack(a_aug))
                acc["b_aug"].append(torch.stack(b_aug))
                s_aff, r_aff = [], []
                for _ in range(cfg.affine_draws):
                    t = affine_params(gen, p=1.0)
                    s_aff.append(self._singles(vae, apply_affine(fa, t)))
                    r_aff.append(vae.encode(_video(apply_affine(ref, t)))[0])
                acc["singles_aff"].append(torch.stack(s_aff))
                acc["ref_aff"].append(torch.stack(r_aff))
        self.data = {k: torch.stack(v) for k, v in acc.items()}
        self.fresh = torch.as_tensor(fresh)

    def _clips(self, length: int):
        """(sequence, frames, pose, first frame) of the plain clips, then of the world clips."""
        mc, cfg = self.mc, self.cfg
        for i in range(cfg.sequences):
            seq, frames, pose = training_clip(i, cfg.split, length, mc.height, mc.width, mc.fps)
            yield seq, frames, pose, 0
        if cfg.world_sequences:
            from .world import make_world_sequence

            starts = torch.Generator().manual_seed(cfg.seed + 0x3011D)
            span = max(1, int(cfg.world_span_s * mc.fps))
            for i in range(cfg.world_sequences):
                seq = make_world_sequence(i, cfg.split, mc.height, mc.width, mc.fps)
                start = int(torch.randint(span, (1,), generator=starts))
                yield seq, seq.frames(start, start + length), seq.pose(start, start + length), start

    @staticmethod
    def _singles(vae, frames01: torch.Tensor) -> torch.Tensor:
        """Each frame encoded on its own: [F, C, h, w] (frame index first for easy picking)."""
        return vae.encode(_video(frames01).permute(2, 1, 0, 3, 4))[:, :, 0]

    def _loop_window(self, gen: torch.Generator):
        """A window of the loop's own memory: (anchors, motion, clean target, degraded target, pose)."""
        L = self.loop
        w = int(torch.randint(L["x0"].shape[0], (1,), generator=gen))
        j = int(torch.randint(L["x0_aug"].shape[1], (1,), generator=gen))
        return L["anchors"][w], L["motion"][w], L["x0"][w], L["x0_aug"][w, j], L["pose"][w]

    def _bank_window(self, gen: torch.Generator):
        """A window of the bank, the release's way: (anchors, motion, clean target, degraded target, pose)."""
        d, mc, cfg = self.data, self.mc, self.cfg
        n, k, f = d["a"].shape[0], mc.anchors, mc.frames
        i = int(torch.randint(n, (1,), generator=gen))
        j = int(torch.randint(cfg.degrade_draws, (1,), generator=gen))
        r_first, r_prev, r_aff = (float(v) for v in torch.rand(3, generator=gen))
        m = int(torch.randint(cfg.affine_draws, (1,), generator=gen))
        idx = torch.randperm(f - 1, generator=gen)[: k - 1] + 1
        ref = d["ref"][i]
        if r_first < cfg.first_chunk_p and bool(self.fresh[i]):
            anchors, motion = ref.repeat(1, k, 1, 1), None
            x0, x0d, pose = d["a"][i], d["a_aug"][i, j], d["pose_a"][i]
        else:
            if r_prev < cfg.anchor_from_prev_p:
                aff = r_aff < cfg.affine_p
                singles = d["singles_aff"][i, m] if aff else d["singles"][i]
                r = d["ref_aff"][i, m] if aff else ref
                anchors = torch.cat([singles[idx].permute(1, 0, 2, 3), r], dim=1)
            else:
                anchors = ref.repeat(1, k, 1, 1)
            motion = d["a"][i][:, -1:]
            x0, x0d, pose = d["b"][i], d["b_aug"][i, j], d["pose_b"][i]
        return anchors, motion, x0, x0d, pose

    def next_batch(self, gen: torch.Generator) -> TrainingBatch:
        cfg, k = self.cfg, self.mc.anchors
        xs, xds, ys, poses = [], [], [], []
        for _ in range(cfg.batch):
            if self.loop is not None and float(torch.rand((), generator=gen)) < cfg.loop_p:
                anchors, motion, x0, x0d, pose = self._loop_window(gen)
            else:
                anchors, motion, x0, x0d, pose = self._bank_window(gen)
            cond, mask, _ = build_condition(anchors, motion, x0.shape[1])
            ys.append(model_input_condition(cond, mask))
            xs.append(torch.cat([anchors, x0], dim=1))
            xds.append(torch.cat([anchors, x0d], dim=1))
            poses.append(pose)
        cond = ChunkCondition(y=torch.stack(ys), pose=torch.stack(poses), anchors=k, extras={})
        return TrainingBatch(x0=torch.stack(xs), cond=cond, x0_degraded=torch.stack(xds))
