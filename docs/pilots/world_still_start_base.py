# SPDX-License-Identifier: GPL-3.0-or-later
"""Attempt 8 (not part of the package until it replaces attempt 7): v2's base trained on the
world with a still start (``WorldConfig(still_s=4.0)``: chunk 0 does not pan).

The training is attempt 7's command as it is (``train_tiny.v2_config(0)``, ``v2_model()``, the VAE
trained by the same command); only the world differs: every world clip that does not name a world
is drawn from the still-start one, inside this process only. The protocol and what makes attempt 8
replace attempt 7 were written in docs/tiny_v2.md ("Attempt 8 on a world with a still start")
before it ran. (A fixed-lag base was registered first and not run: its condition failed.)

    OMP_NUM_THREADS=2 python docs/pilots/world_still_start_base.py train runs/tiny_v2_a8
    OMP_NUM_THREADS=2 python docs/pilots/world_still_start_base.py train runs/tiny_v2_a8 --resume  # after a stop
    OMP_NUM_THREADS=2 python docs/pilots/world_still_start_base.py eval runs/tiny_v2_a8 > a8.json
    OMP_NUM_THREADS=2 python docs/pilots/world_still_start_base.py eval shipped > a7.json
    python docs/pilots/world_still_start_base.py compare a7.json a8.json
    OMP_NUM_THREADS=1 python docs/pilots/world_still_start_base.py probe shipped > p7.json   # after the verdict
    OMP_NUM_THREADS=1 python docs/pilots/world_still_start_base.py probe runs/tiny_v2_a8 > p8.json
    python docs/pilots/world_still_start_base.py compare-probes p7.json p8.json
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world_pan_knowledge import compare, per_clip  # noqa: E402

from everanimate_core.apps import quality  # noqa: E402
from everanimate_core.apps.drift import paired_diff  # noqa: E402
from everanimate_core.tiny import train_tiny, world  # noqa: E402
from everanimate_core.tiny.backend import load_tiny  # noqa: E402

SEED = 0
STILL_S = 4.0


def in_world(config: world.WorldConfig, fn, *args, **kw):
    """Run ``fn`` with ``config`` as the world of every make_world_sequence call that names none."""
    make = world.make_world_sequence
    saved = make.__defaults__  # (split, height, width, fps, config)
    assert saved[-1] is None, saved
    make.__defaults__ = (*saved[:-1], config)
    try:
        return fn(*args, **kw)
    finally:
        make.__defaults__ = saved


STILL = world.WorldConfig(still_s=STILL_S)


def train(out: Path, resume: bool = False) -> None:
    t0 = time.perf_counter()
    summary = in_world(STILL, train_tiny.train_tiny, out, train_tiny.v2_config(SEED), train_tiny.v2_model(),
                       vae_from=out if resume else None)  # fmt: skip
    meta = {"resumed": resume, "attempt": 8, "world": STILL.fingerprint(), "still_s": STILL_S, "seed": SEED,
            "wall_s": round(time.perf_counter() - t0, 1),
            "times": {k: round(v, 1) for k, v in summary["times"].items()}}  # fmt: skip
    (out / "attempt8.json").write_text(json.dumps(meta, indent=1))
    print(json.dumps(meta))


def evaluate(weights: str, clips: int) -> dict:
    be = load_tiny(None if weights == "shipped" else weights)
    return {
        "weights": weights, "world": STILL.fingerprint(),
        "still_start_chunk0": in_world(STILL, per_clip, be, clips),
        "as_is_chunk0": per_clip(be, clips),
        "still_chunk0": quality.chunk0_quality(be, 8),
        "still_start_probe": in_world(STILL, quality.motion_probe, be, 8),
    }  # fmt: skip


def probe_per_clip(weights: str, clips: int, chunk: int, as_is: bool = False) -> dict:
    """The zero-motion probe of ``bench quality`` clip by clip (world test clips 0..clips-1, the
    still-start world, or with ``as_is`` the package's world), so two models' costs can be paired.
    Measured after attempt 8's verdict."""
    be = load_tiny(None if weights == "shipped" else weights)
    cfg = world.WorldConfig() if as_is else STILL
    rows = [in_world(cfg, quality.motion_probe, be, 1, chunk, offset=i) for i in range(clips)]
    keys = ("true_motion", "zero_motion", "true_memory")
    return {"weights": weights, "world": cfg.fingerprint(), "probe_chunk": chunk, "clips": clips,
            "per_clip": {k: [r[k] for r in rows] for k in keys},
            "cost": [round(r["true_motion"] - r["zero_motion"], 2) for r in rows]}  # fmt: skip


def compare_probes(a: dict, b: dict) -> dict:
    """Paired differences b - a of the per-clip probe (95 % bootstrap over clips, seed 0)."""
    out = {"a": a["weights"], "b": b["weights"], "probe_chunk": b["probe_chunk"], "clips": b["clips"]}
    series = {**{k: (b["per_clip"][k], a["per_clip"][k]) for k in b["per_clip"]}, "cost": (b["cost"], a["cost"])}
    for k, (ours, base) in series.items():
        mean, lo, hi = paired_diff(ours, base, seed=0, resamples=10000)
        out[k] = {"a": round(float(sum(base) / len(base)), 2), "b": round(float(sum(ours) / len(ours)), 2),
                  "diff": round(mean, 2), "ci95": [round(lo, 2), round(hi, 2)]}  # fmt: skip
    return out


def verdict(a: dict, b: dict) -> dict:
    """The paired differences b - a and the criteria registered in docs/tiny_v2.md ("Attempt 8 on a
    world with a still start") for b to replace a, each with the numbers it was decided on."""
    diffs = compare(a, b)
    bg = diffs["still_start_chunk0.model_background"]
    full = b["still_chunk0"]["model"] - a["still_chunk0"]["model"]
    fig = b["still_chunk0"]["model_figure"] - a["still_chunk0"]["model_figure"]
    cost = b["still_start_probe"]["zero_motion_cost"] - a["still_start_probe"]["zero_motion_cost"]
    criteria = {
        "still_start_background_up_1dB": {"mean": bg["mean"], "ci95": bg["ci95"], "pass": bg["mean"] >= 1.0 and bg["ci95"][0] > 0},
        "still_scene_full_within_0.3dB": {"delta": round(full, 2), "pass": full >= -0.3},
        "still_scene_figure_within_0.3dB": {"delta": round(fig, 2), "pass": fig >= -0.3},
        "probe_cost_within_0.3dB": {"delta": round(cost, 2), "pass": cost >= -0.3},
    }  # fmt: skip
    return {**diffs, "criteria": criteria, "replaces": all(c["pass"] for c in criteria.values())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("out", type=Path)
    t.add_argument("--resume", action="store_true", help="continue a stopped run in OUT (its VAE, its last DiT checkpoint)")
    e = sub.add_parser("eval")
    e.add_argument("weights", help="a folder written by `train`, or `shipped`")
    e.add_argument("--clips", type=int, default=16)
    pr = sub.add_parser("probe", help="the zero-motion probe clip by clip (after the verdict)")
    pr.add_argument("weights", help="a folder written by `train`, or `shipped`")
    pr.add_argument("--clips", type=int, default=16)
    pr.add_argument("--chunk", type=int, default=3)
    pr.add_argument("--as-is", action="store_true", help="in the package's world instead of the still-start one")
    cp = sub.add_parser("compare-probes", help="paired differences b - a of two `probe` outputs")
    cp.add_argument("a", type=Path)
    cp.add_argument("b", type=Path)
    c = sub.add_parser("compare", help="paired differences b - a and the registered criteria for b to replace a")
    c.add_argument("a", type=Path, help="eval JSON of attempt 7")
    c.add_argument("b", type=Path, help="eval JSON of attempt 8")
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if a.cmd == "train":
        train(a.out, a.resume)
    elif a.cmd == "eval":
        print(json.dumps(evaluate(a.weights, a.clips), indent=1, default=float))
    elif a.cmd == "probe":
        print(json.dumps(probe_per_clip(a.weights, a.clips, a.chunk, a.as_is), indent=1, default=float))
    elif a.cmd == "compare-probes":
        print(json.dumps(compare_probes(json.loads(a.a.read_text()), json.loads(a.b.read_text())), indent=1))
    else:
        print(json.dumps(verdict(json.loads(a.a.read_text()), json.loads(a.b.read_text())), indent=1))


if __name__ == "__main__":
    main()
