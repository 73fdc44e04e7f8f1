# SPDX-License-Identifier: GPL-3.0-or-later
"""Pilot (not part of the package): does the still start itself make the base do better without
the motion latent? Attempt 8 (still-start world) against attempt 7 (the world as it is) was one
training seed each; its probe's cost fell 0.6 dB because the zeroed output got better.

Two short DiT trainings, identical but for the world of their world clips: seed 1, the embedded
model's VAE for both (so the latents are the same code), a third of v2's DiT schedule (400 base +
800 memory steps), everything else v2's. Each is measured by the zero-motion probe clip by clip
(``world_still_start_base.py probe``, 16 clips, the package's world). What each outcome means was
written in docs/tiny_v2.md ("Pilot: the still start's effect on the probe, seed 1") before it ran.

    OMP_NUM_THREADS=1 python docs/pilots/still_start_pair.py train as_is runs/pair_as_is
    OMP_NUM_THREADS=1 python docs/pilots/still_start_pair.py train still runs/pair_still
    OMP_NUM_THREADS=1 python docs/pilots/world_still_start_base.py probe runs/pair_as_is --as-is > as_is.json
    OMP_NUM_THREADS=1 python docs/pilots/world_still_start_base.py probe runs/pair_still --as-is > still.json
    python docs/pilots/world_still_start_base.py compare-probes as_is.json still.json

``--full`` trains v2's whole DiT schedule (1200 base + 2400 memory steps) instead, for the repeat
registered in docs/tiny_v2.md ("Pilot: the full-schedule pair, seed 1"); ``--seed`` another seed
(the as-is arm at seed 2: "Pilot: a third seed of attempt 7's recipe"); ``--depth`` another number
of DiT blocks, everything else v2's ("Pilot: a deeper DiT on v2's data").
"""

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world_still_start_base import STILL, in_world  # noqa: E402

from everanimate_core.tiny import train_tiny, world  # noqa: E402
from everanimate_core.tiny.backend import WEIGHTS_DIR  # noqa: E402

SEED = 1
BASE_STEPS = 400
MEMORY_STEPS = 800


def train(arm: str, out: Path, full: bool = False, seed: int = SEED, depth: int | None = None) -> None:
    cfg = train_tiny.v2_config(seed)
    if not full:
        cfg = replace(cfg, base_steps=BASE_STEPS, memory_steps=MEMORY_STEPS)
    model = train_tiny.v2_model()
    if depth is not None:
        model = replace(model, depth=depth)
    wc = STILL if arm == "still" else world.WorldConfig()
    t0 = time.perf_counter()
    summary = in_world(wc, train_tiny.train_tiny, out, cfg, model, vae_from=WEIGHTS_DIR)
    meta = {"arm": arm, "world": wc.fingerprint(), "seed": seed, "base_steps": cfg.base_steps, "memory_steps": cfg.memory_steps,
            "dim": model.dim, "depth": model.depth,
            "wall_s": round(time.perf_counter() - t0, 1), "times": {k: round(v, 1) for k, v in summary["times"].items()}}  # fmt: skip
    (out / "pair.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("arm", choices=("as_is", "still"))
    t.add_argument("out", type=Path)
    t.add_argument("--full", action="store_true", help="v2's whole DiT schedule (1200 base + 2400 memory steps)")
    t.add_argument("--seed", type=int, default=SEED, help="training seed (default %(default)s, the registered pairs')")
    t.add_argument("--depth", type=int, default=None, help="DiT blocks (default: v2's)")
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train(a.arm, a.out, a.full, a.seed, a.depth)


if __name__ == "__main__":
    main()
