"""The loop's own memory as LoRA training windows (docs/drift.md, "The loop's own memory in LoRA
training").

    python -m everanimate_core rollouts --out runs/rollouts

Every LoRA training window of ``rfm_data.TinyRFMData`` carries the previous *real* chunk's last
latent as its motion latent; the loop, after a few chunks, carries its own. This module runs the
(c) loop (base weights, latent carry, reference + chunk-0 anchors) on world training clips from
frame 0 and keeps, for every chunk c >= 1, what the loop carried into it (the K anchor latents and
the motion latent) beside the true chunk c (clean latents, degraded versions, pose latents). The
LoRA trainer draws from it with ``--loop-bank DIR --loop-p P``.

One file per clip (``clip_NNN.safetensors``), so an interrupted run resumes where it stopped; a
folder made with other settings or another base model is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import defaults
from ..errors import ConfigError

BANK_META = "rollouts.json"
SEED_OFFSET = 500000  # keeps the rollouts' chunk seeds apart from the test clips' (drift.world_seed)


@dataclass(frozen=True)
class RolloutConfig:
    clips: int = 32
    chunks: int = 16  # windows per clip: the memory carried into chunks 1..chunks
    steps: int = 20
    split: str = "train"
    degrade_draws: int = 3
    seed: int = 0  # the degradation draws

    def __post_init__(self) -> None:
        if self.clips < 1 or self.chunks < 1 or self.steps < 1 or self.degrade_draws < 1:
            raise ConfigError("clips, chunks, steps and degrade_draws must each be >= 1.")

    def as_dict(self) -> dict:
        return asdict(self)


def rollout_seed(index: int) -> int:
    """Chunk c of training clip ``index`` uses this + c (the increment policy)."""
    return defaults.SEED + 1000 * int(index) + SEED_OFFSET


def _weights_tag(weights_dir: Path) -> str:
    from .backend import DIT_FILE

    return hashlib.sha256((Path(weights_dir) / DIT_FILE).read_bytes()).hexdigest()[:12]


def rollout_clip(be, index: int, cfg: RolloutConfig) -> dict[str, torch.Tensor]:
    """The windows of one clip: tensors with a leading window axis (chunks 1..cfg.chunks)."""
    from ..pipeline import AnimationSettings, ChunkLoop, ChunkOutput, LoopHooks, RunInputs
    from ..plan import plan_for_driving
    from ..training.degrade import DegradeConfig, degrade_pixels, draw_params, unit_frames
    from .rfm_data import _video as video
    from .vae import frames_to_tensor
    from .world import make_world_sequence

    mc, vae = be.config, be.vae
    f, stride = mc.frames, mc.chunk_settings.stride
    total = f + cfg.chunks * stride
    seq = make_world_sequence(index, cfg.split, mc.height, mc.width, mc.fps)
    settings = AnimationSettings(chunk=mc.chunk_settings, steps=cfg.steps, anchor_policy="random_plus_reference",
                                 motion_carry="latent", seed=rollout_seed(index), seed_policy="increment")
    plan = plan_for_driving(total, settings.chunk, total, settings.window_mode)
    if len(plan) != cfg.chunks + 1 or any(c.frames != f or c.start != c.index * stride for c in plan.chunks):
        raise ConfigError(f"The chunk plan of {total} frames is not {cfg.chunks + 1} whole chunks; this is a bug.")
    carried: list[tuple[torch.Tensor, torch.Tensor]] = []

    def keep(out: ChunkOutput, _n: int) -> None:
        carried.append((out.memory.anchors.clone(), out.memory.motion.clone()))

    pose = seq.pose(0, total)
    ChunkLoop(be, settings).run(RunInputs(seq.reference(), pose, total_frames=total),
                                hooks=LoopHooks(on_chunk=keep, stop_after=cfg.chunks))
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + int(index))
    degrade = DegradeConfig()
    out: dict[str, list] = {k: [] for k in ("anchors", "motion", "x0", "x0_aug", "pose", "chunk")}
    with torch.no_grad():
        for c in range(1, cfg.chunks + 1):
            start = plan.chunks[c].start
            frames = unit_frames(seq.frames(start, start + f))
            out["x0"].append(vae.encode(video(frames))[0])
            out["x0_aug"].append(torch.stack([vae.encode(video(degrade_pixels(frames, draw_params(gen, degrade))))[0]
                                              for _ in range(cfg.degrade_draws)]))
            out["pose"].append(vae.encode(frames_to_tensor(pose[start : start + f]))[0])
            anchors, motion = carried[c - 1]
            out["anchors"].append(anchors)
            out["motion"].append(motion)
            out["chunk"].append(torch.tensor(c))
    return {k: torch.stack(v) for k, v in out.items()}


def _meta(cfg: RolloutConfig, weights_dir: Path, model_config: dict) -> dict:
    return {"config": cfg.as_dict(), "weights": _weights_tag(weights_dir), "model_config": model_config,
            "seed_rule": f"chunk c of clip i: {defaults.SEED} + 1000 * i + {SEED_OFFSET} + c"}


def _worker(args) -> tuple[int, float]:
    from safetensors.torch import save_file

    from .backend import load_tiny

    index, cfg_dict, weights_dir, out = args
    torch.set_num_threads(1)
    t = time.perf_counter()
    be = load_tiny(weights_dir)
    tensors = rollout_clip(be, index, RolloutConfig(**cfg_dict))
    path = Path(out) / f"clip_{index:03d}.safetensors"
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(path)
    return index, time.perf_counter() - t


def make_rollouts(out: str | Path, cfg: RolloutConfig = RolloutConfig(), weights_dir: str | Path | None = None,
                  workers: int = 2, log=print) -> dict:
    """Write (or finish) the rollout bank in ``out``; returns its metadata with the wall time."""
    from .backend import WEIGHTS_DIR, TinyModelConfig, CONFIG_FILE

    weights_dir = Path(WEIGHTS_DIR if weights_dir is None else weights_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta = _meta(cfg, weights_dir, TinyModelConfig.load(weights_dir / CONFIG_FILE).__dict__)
    meta_path = out / BANK_META
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        diff = [k for k in ("config", "weights", "model_config") if old.get(k) != meta[k]]
        if diff:
            raise ConfigError(f"{out} holds rollouts made with other settings ({', '.join(diff)} differ); "
                              "use another --out folder or delete it.")
    else:
        meta_path.write_text(json.dumps(meta, indent=1))
    todo = [i for i in range(cfg.clips) if not (out / f"clip_{i:03d}.safetensors").exists()]
    log(f"rollouts: {cfg.clips - len(todo)} clips done, {len(todo)} to go ({cfg.chunks} chunks, {cfg.steps} steps)")
    t0 = time.perf_counter()
    tasks = [(i, cfg.as_dict(), str(weights_dir), str(out)) for i in todo]
    if workers > 1 and len(tasks) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for k, (i, s) in enumerate(pool.imap_unordered(_worker, tasks)):
                log(f"[{k + 1}/{len(tasks)}] clip {i}: {s:.1f} s")
    else:
        for k, task in enumerate(tasks):
            i, s = _worker(task)
            log(f"[{k + 1}/{len(tasks)}] clip {i}: {s:.1f} s")
    wall = time.perf_counter() - t0
    meta = json.loads(meta_path.read_text())
    meta.setdefault("wall_s", []).append({"clips": len(todo), "workers": workers, "wall_s": round(wall, 1)})
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta


def load_rollouts(path: str | Path, model_config: dict, weights_dir: str | Path) -> dict[str, torch.Tensor]:
    """All windows of a finished bank, for the base model it was made with; clear errors otherwise."""
    from safetensors.torch import load_file

    path = Path(path)
    meta_path = path / BANK_META
    if not meta_path.exists():
        raise ConfigError(f"{path} is not a rollout bank (no {BANK_META}); make one with "
                          f"`python -m everanimate_core rollouts --out {path}`.")
    meta = json.loads(meta_path.read_text())
    if meta["model_config"] != model_config or meta["weights"] != _weights_tag(Path(weights_dir)):
        raise ConfigError(f"The rollouts in {path} were made with another base model; remake them for this one.")
    cfg = RolloutConfig(**meta["config"])
    missing = [i for i in range(cfg.clips) if not (path / f"clip_{i:03d}.safetensors").exists()]
    if missing:
        raise ConfigError(f"The rollout bank {path} is unfinished ({len(missing)} of {cfg.clips} clips missing); "
                          "rerun the same `rollouts` command to finish it.")
    parts = [load_file(str(path / f"clip_{i:03d}.safetensors")) for i in range(cfg.clips)]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="everanimate_core rollouts", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="bank folder (one file per clip; rerun to resume)")
    p.add_argument("--clips", type=int, default=RolloutConfig.clips)
    p.add_argument("--chunks", type=int, default=RolloutConfig.chunks)
    p.add_argument("--steps", type=int, default=RolloutConfig.steps)
    p.add_argument("--seed", type=int, default=RolloutConfig.seed)
    p.add_argument("--weights", default=None, help="EverAnimate-Tiny weights folder (default: shipped)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    a = p.parse_args(argv)
    cfg = RolloutConfig(clips=a.clips, chunks=a.chunks, steps=a.steps, seed=a.seed)
    return make_rollouts(a.out, cfg, a.weights, a.workers)


if __name__ == "__main__":
    main()
