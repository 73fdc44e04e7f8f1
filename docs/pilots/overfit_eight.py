# SPDX-License-Identifier: GPL-3.0-or-later
"""Pilot (not part of the package): can v2's DiT hold a chunk at all, trained many times on a few
windows? Attempt 7 scores 25.1 dB on the chunk-0 windows it was trained on (each drawn about 30
times), far from its VAE's round trip (docs/tiny_v2.md, "Results of seen against held-out chunk-0
windows").

The DiT of v2 (attempt 7's model config and training settings, the embedded VAE, seed 0), trained
on the first 8 plain training clips only, no world clips, the base stage only (the first-chunk
layout), 1600 steps of batch 8: each of the 8 windows is drawn about 1600 times. Then
``seen_vs_held_out.py --weights OUT --one-step`` scores it on those windows. What each outcome
means was written in docs/tiny_v2.md ("Pilot: eight windows trained many times") before it ran.

    OMP_NUM_THREADS=2 python docs/pilots/overfit_eight.py runs/overfit8
    OMP_NUM_THREADS=1 python docs/pilots/seen_vs_held_out.py --weights runs/overfit8 --one-step > overfit8.json
"""

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from everanimate_core.tiny import train_tiny
from everanimate_core.tiny.backend import WEIGHTS_DIR

CLIPS = 8
STEPS = 1600


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    a = p.parse_args()
    cfg = replace(train_tiny.v2_config(0), sequences=CLIPS, world_sequences=0, base_steps=STEPS, memory_steps=0)
    t0 = time.perf_counter()
    summary = train_tiny.train_tiny(a.out, cfg, train_tiny.v2_model(), vae_from=WEIGHTS_DIR)
    meta = {"clips": CLIPS, "steps": STEPS, "seed": 0, "wall_s": round(time.perf_counter() - t0, 1),
            "times": {k: round(v, 1) for k, v in summary["times"].items()}}  # fmt: skip
    (a.out / "overfit.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
