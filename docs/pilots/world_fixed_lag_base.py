# SPDX-License-Identifier: GPL-3.0-or-later
"""Attempt 8 (not part of the package until it replaces attempt 7): v2's base trained on the world
with one camera follow time constant for every clip.

The training is attempt 7's command as it is (``train_tiny.v2_config(0)``, ``v2_model()``, the VAE
trained by the same command); only the world's camera differs, through the pan pilot's
``fixed_lag`` camera, swapped inside this process. The protocol and what makes attempt 8 replace
attempt 7 were written in docs/tiny_v2.md ("Attempt 8") before it ran.

    OMP_NUM_THREADS=2 python docs/pilots/world_fixed_lag_base.py train runs/tiny_v2_a8
    OMP_NUM_THREADS=2 python docs/pilots/world_fixed_lag_base.py eval runs/tiny_v2_a8 > a8.json
    OMP_NUM_THREADS=2 python docs/pilots/world_fixed_lag_base.py eval shipped > a7.json
    python docs/pilots/world_pan_knowledge.py compare a7.json a8.json
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world_pan_knowledge import evaluate, fixed_lag  # noqa: E402

from everanimate_core.apps import quality  # noqa: E402
from everanimate_core.tiny import train_tiny, world  # noqa: E402
from everanimate_core.tiny.backend import load_tiny  # noqa: E402

SEED = 0


def in_fixed_lag_world(fn, *args, **kw):
    """Run ``fn`` with the world's camera following every clip with the same lag; undone after."""
    steady = world.WorldSequence._view_centre
    world.WorldSequence._view_centre = fixed_lag()
    try:
        return fn(*args, **kw)
    finally:
        world.WorldSequence._view_centre = steady


def train(out: Path) -> None:
    t0 = time.perf_counter()
    summary = in_fixed_lag_world(train_tiny.train_tiny, out, train_tiny.v2_config(SEED), train_tiny.v2_model())
    meta = {"attempt": 8, "world": "one camera lag for every clip (docs/pilots/world_pan_knowledge.py fixed_lag)",
            "seed": SEED, "wall_s": round(time.perf_counter() - t0, 1),
            "times": {k: round(v, 1) for k, v in summary["times"].items()}}  # fmt: skip
    (out / "attempt8.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("out", type=Path)
    e = sub.add_parser("eval")
    e.add_argument("weights", help="a folder written by `train`, or `shipped`")
    e.add_argument("--clips", type=int, default=16)
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if a.cmd == "train":
        train(a.out)
        return
    res = evaluate(a.weights, a.clips)  # chunk 0 under each camera (fixed_lag_chunk0 is this world) + still
    be = load_tiny(None if a.weights == "shipped" else a.weights)
    res["fixed_lag_probe"] = in_fixed_lag_world(quality.motion_probe, be, 8)
    print(json.dumps(res, indent=1, default=float))


if __name__ == "__main__":
    main()
