# SPDX-License-Identifier: GPL-3.0-or-later
"""Pilot (not part of the package): does a generated token that can read every anchor token draw
the dancer better? In v2's factorized blocks a generated token reads the reference only at its own
position (attention along time); the dancer's colours elsewhere in the reference reach it through
two hops. ``ref_attention`` adds, in every block, a cross-attention from every token to all tokens
of the K anchor slots (2D rotary, gate from zero): about 0.7M more parameters, a step about 6 %
longer at one thread.

Two arms, identical but for that option, on the set-up of the earlier figure pilots (128 plain
clips, the base stage only, 800 steps of batch 8, v2's lr 1e-3 and figure weight 4, the embedded
VAE), each at seeds 0 and 1, scored on chunk 0 of 16 held-out dancers (20 steps and one step),
clip by clip. What each outcome means was written in docs/tiny_v2.md ("Pilot: attention to every
anchor token") before it ran.

    OMP_NUM_THREADS=1 python docs/pilots/ref_attention.py train plain runs/ref_plain_s0 --seed 0
    OMP_NUM_THREADS=1 python docs/pilots/ref_attention.py train ref runs/ref_ref_s0 --seed 0
    OMP_NUM_THREADS=1 python docs/pilots/ref_attention.py eval runs/ref_plain_s0 > plain_s0.json
    OMP_NUM_THREADS=1 python docs/pilots/ref_attention.py eval runs/ref_ref_s0 > ref_s0.json
    python docs/pilots/ref_attention.py compare plain_s0.json ref_s0.json
"""

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from everanimate_core.apps.drift import paired_diff
from everanimate_core.apps.quality import chunk0_quality
from everanimate_core.tiny import train_tiny
from everanimate_core.tiny.backend import WEIGHTS_DIR, load_tiny

CLIPS = 128
STEPS = 800
DANCERS = 16
MEASURES = ("model", "model_figure", "model_one_step", "model_one_step_figure", "model_background", "model_ref_place", "iou")


def train(arm: str, out: Path, seed: int) -> None:
    cfg = replace(train_tiny.v2_config(seed), sequences=CLIPS, world_sequences=0, base_steps=STEPS, memory_steps=0)
    model = replace(train_tiny.v2_model(), ref_attention=arm == "ref")
    t0 = time.perf_counter()
    summary = train_tiny.train_tiny(out, cfg, model, vae_from=WEIGHTS_DIR)
    meta = {"arm": arm, "seed": seed, "clips": CLIPS, "steps": STEPS, "wall_s": round(time.perf_counter() - t0, 1),
            "times": {k: round(v, 1) for k, v in summary["times"].items()}}  # fmt: skip
    (out / "pilot.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta))


def evaluate(weights: Path) -> None:
    torch.set_num_threads(1)
    res = chunk0_quality(load_tiny(weights), sequences=DANCERS, per_clip=True)
    print(json.dumps({"weights": str(weights), **res}, indent=1))


def compare(a_path: Path, b_path: Path) -> None:
    a, b = json.loads(a_path.read_text()), json.loads(b_path.read_text())
    out = {"a": a["weights"], "b": b["weights"], "b_minus_a": {}}
    for m in MEASURES:
        d, lo, hi = paired_diff([r[m] for r in b["rows"]], [r[m] for r in a["rows"]])
        ups = sum(rb[m] > ra[m] for ra, rb in zip(a["rows"], b["rows"]))
        out["b_minus_a"][m] = {"a": a[m], "b": b[m], "diff": round(d, 3), "ci95": [round(lo, 3), round(hi, 3)], "b_up": f"{ups}/{len(a['rows'])}"}
    print(json.dumps(out, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("arm", choices=("plain", "ref"))
    t.add_argument("out", type=Path)
    t.add_argument("--seed", type=int, required=True)
    e = sub.add_parser("eval")
    e.add_argument("weights", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    a = p.parse_args()
    if a.cmd == "train":
        train(a.arm, a.out, a.seed)
    elif a.cmd == "eval":
        evaluate(a.weights)
    else:
        compare(a.a, a.b)


if __name__ == "__main__":
    main()
