# SPDX-License-Identifier: GPL-3.0-or-later
"""Pilot (not part of the package): does v2 blur world backgrounds because it cannot know the pan?

Two fine-tunes of the embedded DiT (attempt 7) on first-chunk windows, identical but for the camera
of the world training clips: ``control`` renders the world as it is (the camera follows the dancer
with a lag the pose shows only indirectly); ``held`` holds the camera still for chunk 0 (the
pilot world of world_held_camera.py), so in its training chunk 0 of a world clip never pans.
Both are then measured on chunk 0 of world test clips with the camera held, and on the plain
world and the still scene as checks. A third arm, ``fixed_lag``, keeps the pan but gives every clip
the same camera follow time constant, so the pan can be read from the pose exactly; it is measured
on clips of that world. The question, the settings and what each outcome would mean
were written in docs/tiny_v2.md ("Pilot: does knowing the pan remove the world blur?") before it ran.

    OMP_NUM_THREADS=1 python docs/pilots/world_pan_knowledge.py train control runs/pan_control
    OMP_NUM_THREADS=1 python docs/pilots/world_pan_knowledge.py train held runs/pan_held
    OMP_NUM_THREADS=1 python docs/pilots/world_pan_knowledge.py eval runs/pan_held > held.json
    python docs/pilots/world_pan_knowledge.py compare control.json held.json

``eval shipped`` measures the embedded model itself. The world of the package is unchanged: the
camera is swapped inside this process only.
"""

import argparse
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from world_held_camera import held_camera  # noqa: E402

from everanimate_core.apps import quality  # noqa: E402
from everanimate_core.apps.drift import paired_diff  # noqa: E402
from everanimate_core.tiny import train_tiny, world  # noqa: E402
from everanimate_core.tiny.backend import CONFIG_FILE, DIT_FILE, VAE_FILE, WEIGHTS_DIR, load_tiny  # noqa: E402

SEED = 0
STEPS = 800
LR = 3e-4
EVAL_CLIPS = 16


def chunk0_hold_s(fps: float, frames: int) -> float:
    """The camera is held up to and including chunk 0's last frame."""
    return (frames - 1) / fps


FIXED_LAG_S = 2.0


def fixed_lag(lag_s: float = FIXED_LAG_S):
    """The world's camera with one follow time constant for every clip (the world draws it from
    1.5-2.5 s), so the pan is the integral of the dancer's offset in the pose over that constant."""
    steady = world.WorldSequence._view_centre

    def view_centre(self, t):
        drawn, self.lag = self.lag, lag_s
        try:
            return steady(self, t)
        finally:
            self.lag = drawn

    return view_centre


CAMERAS = {"as_is": None, "held": lambda mc: held_camera(chunk0_hold_s(mc.fps, mc.frames)), "fixed_lag": lambda mc: fixed_lag()}


def train(arm: str, out: Path, steps: int) -> None:
    be = load_tiny(None)
    mc = be.config
    steady = world.WorldSequence._view_centre
    if arm != "control":
        world.WorldSequence._view_centre = CAMERAS[arm](mc)
    cfg = replace(train_tiny.v2_config(SEED), world_fresh_p=1.0, base_steps=steps, memory_steps=0, lr=LR)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    try:
        bank = train_tiny.render_bank(cfg, mc, length=mc.frames + mc.chunk_settings.stride)
    finally:
        world.WorldSequence._view_centre = steady
    be.vae.eval()
    data = train_tiny.encode_windows(be.vae, bank, mc)
    del bank
    t1 = time.perf_counter()
    logs: list[str] = []
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    train_tiny.train_dit(be.dit, data, mc, cfg, gen, logs.append)
    t2 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for name in (CONFIG_FILE, VAE_FILE):
        shutil.copy(WEIGHTS_DIR / name, out / name)
    save_file({k: v.contiguous() for k, v in be.dit.state_dict().items()}, str(out / DIT_FILE))
    summary = {"arm": arm, "steps": steps, "lr": LR, "seed": SEED, "prepare_s": round(t1 - t0, 1),
               "dit_s": round(t2 - t1, 1), "log": logs}  # fmt: skip
    (out / "pilot_summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({k: v for k, v in summary.items() if k != "log"}))


def per_clip(be, clips: int) -> dict:
    """world_chunk0 clip by clip (each clip's wrong pose is then the next clip's), with the means."""
    rows = [quality.world_chunk0(be, 1, offset=i) for i in range(clips)]
    keys = [k for k in rows[0] if k not in ("sequences", "offset", "steps")]
    return {"clips": clips, **{k: round(float(np.mean([r[k] for r in rows])), 3) for k in keys},
            "per_clip": {k: [r[k] for r in rows] for k in ("model", "model_figure", "model_background")}}  # fmt: skip


def evaluate(weights: str, clips: int) -> dict:
    be = load_tiny(None if weights == "shipped" else weights)
    steady = world.WorldSequence._view_centre
    res = {"weights": weights}
    for camera, make in CAMERAS.items():
        if make is not None:
            world.WorldSequence._view_centre = make(be.config)
        try:
            res[f"{camera}_chunk0"] = per_clip(be, clips)
        finally:
            world.WorldSequence._view_centre = steady
    res["still_chunk0"] = quality.chunk0_quality(be, 8)
    return res


def compare(a: dict, b: dict, resamples: int = 10000) -> dict:
    """Paired differences b - a per clip with a 95 % bootstrap interval over clips (the drift
    bench's ``paired_diff``, seed 0)."""
    out = {"a": a["weights"], "b": b["weights"]}
    for part in [k for k, v in b.items() if isinstance(v, dict) and "per_clip" in v and k in a]:
        for key in ("model", "model_figure", "model_background"):
            ours, base = b[part]["per_clip"][key], a[part]["per_clip"][key]
            mean, lo, hi = paired_diff(ours, base, seed=0, resamples=resamples)
            out[f"{part}.{key}"] = {"mean": round(mean, 2), "ci95": [round(lo, 2), round(hi, 2)],
                                    "clips_up": int((np.asarray(ours) > np.asarray(base)).sum()), "clips": len(ours)}  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("arm", choices=("control", "held", "fixed_lag"))
    t.add_argument("out", type=Path)
    t.add_argument("--steps", type=int, default=STEPS)
    e = sub.add_parser("eval")
    e.add_argument("weights", help="a folder written by `train`, or `shipped`")
    e.add_argument("--clips", type=int, default=EVAL_CLIPS)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path, help="eval JSON of the control")
    c.add_argument("b", type=Path, help="eval JSON of the other arm")
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if a.cmd == "train":
        train(a.arm, a.out, a.steps)
    elif a.cmd == "eval":
        print(json.dumps(evaluate(a.weights, a.clips), indent=1, default=float))
    else:
        print(json.dumps(compare(json.loads(a.a.read_text()), json.loads(a.b.read_text())), indent=1))


if __name__ == "__main__":
    main()
