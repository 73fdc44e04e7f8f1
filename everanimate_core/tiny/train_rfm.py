"""``python -m everanimate_core train``: LoRA post-training of EverAnimate-Tiny, resumable.

    python -m everanimate_core train --stage 2 --out runs/rfm            # Restorative Flow Matching
    python -m everanimate_core train --stage 1 --out runs/plp_more       # same steps, no corruption
    python -m everanimate_core train --stage 2 --schedule fixed --alpha-weight 0 --out runs/alpha0

The LoRA (rank 32 on qkv, o, ffn.0, ffn.2 of every block, alpha = rank) is trained on top of the
shipped EverAnimate-Tiny weights, whose DiT already had the latent-memory stage as full training.
Interrupt and rerun the same command to resume from the last checkpoint (every 100 steps); a
folder made with other settings is refused. The result is ``<out>/lora.safetensors`` in the
authors' released key format, readable by the node pack's LoRA loader and by PEFT.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..training.degrade import DEGRADE_SPACES
from ..flow import ALPHA_SCHEDULES, AlphaSchedule
from ..training.trainer import LOSS_SLOTS, LoopConfig, LoraSpec, RFMObjective, add_lora, export_released, train_lora
from .backend import TinyDenoiser, load_tiny
from .rfm_data import DataConfig, TinyRFMData

TINY_TARGETS: tuple[str, ...] = ("qkv", "o", "ffn.0", "ffn.2")
LORA_FILE = "lora.safetensors"


def train_tiny_lora(
    out: str | Path,
    objective: RFMObjective,
    loop: LoopConfig,
    data_cfg: DataConfig,
    spec: LoraSpec = LoraSpec(rank=32, targets=TINY_TARGETS),
    weights_dir: str | Path | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    log=print,
) -> dict:
    """Build the bank, train, export; returns a summary with wall times (also written to JSON)."""
    out = Path(out)
    torch.manual_seed(loop.seed)
    be = load_tiny(weights_dir)
    dit = be.dit
    add_lora(dit, spec)
    t = time.perf_counter()
    data = TinyRFMData(be.vae, be.config, data_cfg, weights_dir=weights_dir)
    bank_s = time.perf_counter() - t
    config = {"model": "everanimate-tiny", "model_config": be.config.__dict__, "data": data_cfg.as_dict(),
              "lora": spec.as_dict()}
    res = train_lora(dit, TinyDenoiser(dit), data.next_batch, objective, loop, out, config,
                     progress=progress, log=log, stop_after=stop_after)
    summary = {
        "stage": objective.stage,
        "objective": objective.as_dict(),
        "loop": loop.as_dict(),
        "data": data_cfg.as_dict(),
        "lora": spec.as_dict(),
        "steps_done": res.steps_done,
        "resumed_from": res.resumed_from,
        "bank_s": round(bank_s, 1),
        "train_s": round(res.wall_s, 1),
        "degraded_fraction": round(res.degraded_fraction, 3),
        "loss_first_50": round(sum(res.losses[:50]) / max(1, len(res.losses[:50])), 5) if res.losses else None,
        "loss_last_50": round(sum(res.losses[-50:]) / max(1, len(res.losses[-50:])), 5) if res.losses else None,
        "threads": torch.get_num_threads(),
    }
    if res.steps_done >= loop.steps:
        export_released(dit, out / LORA_FILE, {"stage": objective.stage, "schedule": objective.schedule.name,
                                               "alpha_weight": objective.schedule.weight, "steps": loop.steps})
        summary["lora_file"] = LORA_FILE
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="everanimate_core train", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="run folder (checkpoints, lora.safetensors, summary.json)")
    p.add_argument("--stage", type=int, choices=[1, 2], default=2)
    p.add_argument("--schedule", choices=ALPHA_SCHEDULES, default="gaussian_timestep")
    p.add_argument("--alpha-weight", type=float, default=1.0)
    p.add_argument("--degrade-space", choices=DEGRADE_SPACES, default="pixel")
    p.add_argument("--slots", choices=LOSS_SLOTS, default="all",
                   help="loss over all K+G slots (the release) or the generated ones only (as the tiny base)")
    p.add_argument("--no-weighting", action="store_true", help="drop the release's timestep weight (as the tiny base)")
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--sequences", type=int, default=192)
    p.add_argument("--world-sequences", type=int, default=0,
                   help="clips of the stateful world beside the plain ones (as the v2 base was trained)")
    p.add_argument("--loop-bank", default=None,
                   help="rollout bank (`python -m everanimate_core rollouts`): windows of the loop's own memory")
    p.add_argument("--loop-p", type=float, default=0.0, help="share of batch draws taken from --loop-bank")
    p.add_argument("--rank", type=int, default=32)
    p.add_argument("--targets", default=",".join(TINY_TARGETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--weights", default=None, help="EverAnimate-Tiny weights folder (default: shipped)")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this many steps (resume later)")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> dict:
    a = parser().parse_args(argv)
    objective = RFMObjective(stage=a.stage, schedule=AlphaSchedule(a.schedule, a.alpha_weight),
                             weighting=not a.no_weighting, slots=a.slots)
    loop = LoopConfig(steps=a.steps, lr=a.lr, seed=a.seed, checkpoint_every=a.checkpoint_every)
    data_cfg = DataConfig(sequences=a.sequences, batch=a.batch, seed=a.seed, space=a.degrade_space,
                          world_sequences=a.world_sequences, loop_bank=a.loop_bank, loop_p=a.loop_p)
    spec = LoraSpec(rank=a.rank, targets=tuple(t for t in a.targets.split(",") if t))
    s = train_tiny_lora(a.out, objective, loop, data_cfg, spec, a.weights, not a.no_progress, a.stop_after)
    print(json.dumps(s, indent=1))
    return s


if __name__ == "__main__":
    main()
