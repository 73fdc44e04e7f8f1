# SPDX-License-Identifier: GPL-3.0-or-later
"""Pilot (not part of the package): does the base score better on the chunk-0 windows it was
trained on than on held-out ones? If so, it has learnt its clips more than the task, and more
training clips are a lever for chunk 0; if not, they are not.

Each plain training clip i gives the DiT one chunk-0 window, frames [(37 i) mod 400, + 33) of
training sequence i (``synthdance.training_render``). For clips 0..N-1 this scores chunk 0
(first-chunk layout, 20 steps, the bench's regions) on:

- ``seen``: that training window, exactly as trained on;
- ``seen_clip_new_frames``: the same training sequence 200 frames later (its dancer, clothes and
  scene were seen, these frames and poses were not);
- ``held_out``: test sequence i at the same start frame (nothing seen; the same phase of the
  motion generator as ``seen``).

Each against the empty scene and the reference held over the same frames. What each outcome means
was written in docs/tiny_v2.md ("Pilot: seen against held-out chunk-0 windows") before it ran.

    OMP_NUM_THREADS=1 python docs/pilots/seen_vs_held_out.py [--weights DIR] [--clips 8] [--one-step] > out.json
"""

import argparse
import json

import numpy as np
import torch

from everanimate_core import defaults
from everanimate_core.apps.quality import _chunk0, _vae_round_trip, drawn_figure, mask_iou
from everanimate_core.pipeline import AnimationSettings, ChunkLoop
from everanimate_core.tiny.backend import load_tiny
from everanimate_core.tiny.synthdance import make_sequence
from everanimate_core.tiny.world import region_psnr

LATER = 200  # frames between the seen window and the same clip's unseen one


def _score(loop, once, seq, start: int, frames: int) -> dict:
    gt, fig = seq.render(start, start + frames)
    empty = np.broadcast_to(seq.plate(), gt.shape)
    ref = np.broadcast_to(seq.reference(), gt.shape)
    out = _chunk0(loop, seq.reference(), seq.pose(start, start + frames))
    ones = np.ones_like(fig)
    row = {
        "model": region_psnr(out, gt, ones), "model_figure": region_psnr(out, gt, fig),
        "model_background": region_psnr(out, gt, ~fig),
        "empty": region_psnr(empty, gt, ones), "reference": region_psnr(ref, gt, ones),
        "iou": mask_iou(drawn_figure(out, empty), fig),
    }  # fmt: skip
    if once is not None:  # the same chunk in one step: the model's mean guess
        one = _chunk0(once, seq.reference(), seq.pose(start, start + frames))
        row["model_one_step"] = region_psnr(one, gt, ones)
        row["model_one_step_figure"] = region_psnr(one, gt, fig)
        vae = _vae_round_trip(loop.backend, gt)  # the ceiling of anything the model decodes
        row["vae"] = region_psnr(vae, gt, ones)
        row["vae_figure"] = region_psnr(vae, gt, fig)
    row["margin"] = row["model"] - max(row["empty"], row["reference"])  # this clip's own margin
    return row


def _paired(a: list[float], b: list[float], seed: int = 0, n: int = 2000) -> dict:
    d = np.asarray(b) - np.asarray(a)
    rng = np.random.default_rng(seed)
    boots = [float(np.mean(rng.choice(d, len(d)))) for _ in range(n)]
    return {"mean": round(float(d.mean()), 2), "ci95": [round(float(np.percentile(boots, q)), 2) for q in (2.5, 97.5)]}


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=None, help="a weights folder (default: the embedded model)")
    p.add_argument("--clips", type=int, default=8)
    p.add_argument("--one-step", action="store_true", help="also score chunk 0 made in one step, and the VAE's round trip")
    a = p.parse_args()
    be = load_tiny(a.weights)
    mc = be.config
    f = mc.frames
    loop = ChunkLoop(be, AnimationSettings(chunk=mc.chunk_settings, steps=defaults.STEPS))
    once = ChunkLoop(be, AnimationSettings(chunk=mc.chunk_settings, steps=1)) if a.one_step else None
    rows: dict[str, list[dict]] = {"seen": [], "seen_clip_new_frames": [], "held_out": []}
    for i in range(a.clips):
        start = (i * 37) % 400  # training_render's window
        train = make_sequence(i, "train", mc.height, mc.width, mc.fps)
        test = make_sequence(i, "test", mc.height, mc.width, mc.fps)
        rows["seen"].append(_score(loop, once, train, start, f))
        rows["seen_clip_new_frames"].append(_score(loop, once, train, start + LATER, f))
        rows["held_out"].append(_score(loop, once, test, start, f))
    res: dict = {"weights": a.weights or "shipped", "clips": a.clips, "steps": defaults.STEPS}
    for name, rs in rows.items():
        res[name] = {k: round(float(np.mean([r[k] for r in rs])), 3 if k == "iou" else 2) for k in rs[0]}
        res[name]["margin_over_copies"] = round(res[name]["model"] - max(res[name]["empty"], res[name]["reference"]), 2)
        res[name]["per_clip_model"] = [r["model"] for r in rs]
    for name in ("seen", "seen_clip_new_frames"):
        res[f"{name}_minus_held_out"] = {
            k: _paired([r[k] for r in rows["held_out"]], [r[k] for r in rows[name]]) for k in ("model", "model_figure", "model_background", "margin")
        }
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
