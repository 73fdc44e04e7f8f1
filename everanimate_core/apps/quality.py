"""Quality of an EverAnimate-Tiny model against the trivial answers, and whether it uses its inputs.

    python -m everanimate_core bench quality [--weights DIR] [--lora FILE] [--sequences 8] [--world 8] [--probe-chunk 3]

``--lora FILE`` merges a LoRA (the released format, e.g. one of ``tiny/weights/lora/``) into the
model first, to see what it changes in chunk 0 and in the use of the motion latent.

Four measurements, each against an answer that needs no model:

- **chunk 0 on held-out dancers** (plain SynthDance test split, first-chunk layout): full-frame and
  figure-region PSNR of the model, of the reference image repeated, and of the empty scene repeated
  (the background without the dancer, the best a model that draws no dancer can do on a still scene);
- **follows the pose**: the same chunk driven by another held-out sequence's pose video. A model that
  follows the pose scores higher with its own pose, in the figure region and in the overlap of the
  figure it drew with the true figure mask; one that ignores the pose scores the same;
- **uses the motion latent** (world test split): the loop runs chunks 0..c-1, then chunk c is made
  twice from the same noise, with the carried motion latent and with zeros in its place, and a
  third time with the true carried latent (``true_memory``: the last latent of the true previous
  chunk, what the loop would carry without its own errors). Beside them, two answers no model
  gives: ``hold_previous``, the true frame just before chunk c held for the whole chunk (what a
  perfect memory that does not predict the motion gives), and ``reference``, the reference image
  held (what a model that ignores its memory falls back to).

- **chunk 0 on held-out world clips** (``world_chunk0``, the demo's first chunk): the model against
  the VAE's round trip, the reference held, the empty first view held (no pan), and the empty scene
  under the true camera (a ceiling for the background, since it knows the pan), with the same
  own-pose / other-pose IoU.

Chunk 0 also reports what a score means, with answers no model gives:

- ``vae`` / ``vae_figure``: the model's own VAE round trip of the true chunk, the ceiling of any
  output it decodes;
- ``shifted`` / ``shifted_figure``: the true chunk one pixel to the right (the edge column
  repeated), a perfect dancer drawn one pixel off;
- ``mean_fill`` / ``mean_fill_figure``: the VAE round trip with every figure pixel set to the
  figure's mean colour in that frame, a perfect silhouette with no detail;

and where the model's frame is lost: ``model_background`` outside both the figure and the place of
the reference's dancer, ``model_ref_place`` on the reference's dancer where the true dancer is not
(a model that copies the reference's dancer loses it there). At that place, ``reference_ref_place``
keeps the reference's dancer and ``inpainted_ref_place`` fills it from the scene either side, row
by row (:func:`inpaint_rows`), which needs nothing the reference does not show.
``model_one_step`` / ``model_one_step_figure`` are the same chunk made in one Euler step, the
model's mean guess from pure noise: the difference to ``model`` is what the sampler's trajectory
adds or loses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from dataclasses import replace

import numpy as np
import torch

from .. import defaults
from ..errors import ConfigError
from ..pipeline import AnimationSettings, ChunkLoop, RunInputs
from ..plan import frames_for_chunks, plan_chunks
from ..tiny.backend import TinyBackend, load_tiny
from ..tiny.synthdance import make_sequence
from ..tiny.vae import frames_to_tensor, tensor_to_frames
from ..tiny.world import WorldConfig, make_world_sequence, region_psnr

# A pixel belongs to the drawn figure when it differs from the empty scene by more than this (levels).
FIGURE_THRESHOLD = 40.0


def _check_count(n: int, split_size: int | None, what: str) -> None:
    if n < 1 or (split_size is not None and n > split_size):
        top = "" if split_size is None else f" and {split_size} (the held-out split's size)"
        raise ConfigError(f"--{what} must be between 1{top}; got {n}.")


def drawn_figure(frames: np.ndarray, empty: np.ndarray, threshold: float = FIGURE_THRESHOLD) -> np.ndarray:
    """bool [T, H, W]: pixels that differ from the empty scene by more than ``threshold`` levels."""
    d = np.abs(np.asarray(frames, np.float32) - np.asarray(empty, np.float32)).max(axis=-1)
    return d > threshold


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two bool masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def shifted(frames: np.ndarray, px: int = 1) -> np.ndarray:
    """frames [T, H, W, 3] moved ``px`` pixels to the right, the first column repeated into the gap."""
    f = np.asarray(frames)
    return np.concatenate([np.repeat(f[:, :, :1], px, axis=2), f[:, :, :-px]], axis=2)


def mean_filled(frames: np.ndarray, figure: np.ndarray) -> np.ndarray:
    """frames with every pixel of figure [T, H, W] set to the mean colour of that frame's figure."""
    out = np.array(frames, np.float32)
    for t in range(len(out)):
        if figure[t].any():
            out[t][figure[t]] = out[t][figure[t]].mean(axis=0)
    return out.round().clip(0, 255).astype(np.uint8)


def inpaint_rows(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """image [H, W, 3] with the pixels of mask [H, W] filled row by row, linearly between the nearest
    unmasked pixels either side (the nearest one's colour at the frame's edge); rows with no unmasked
    pixel are left as they are."""
    out = np.array(image, np.float32)
    cols = np.arange(out.shape[1])
    for y in np.flatnonzero(mask.any(axis=1)):
        keep = ~mask[y]
        if keep.any():
            for c in range(out.shape[2]):
                out[y, mask[y], c] = np.interp(cols[mask[y]], cols[keep], out[y, keep, c])
    return out.round().clip(0, 255).astype(np.uint8)


def _chunk0(loop: ChunkLoop, reference: np.ndarray, pose: np.ndarray) -> np.ndarray:
    chunk = plan_chunks(len(pose), loop.settings.chunk)[0]
    inputs = RunInputs(reference, pose)
    _, frames, _ = loop.generate(loop.start(reference), chunk, inputs)
    return frames


def _mean(rows: list[dict], key: str) -> float:
    return round(float(np.mean([r[key] for r in rows])), 2)


def _summary(rows: list[dict], **head) -> dict:
    """Per-clip rows -> their means (dB to 0.01, IoUs to 0.001) after the run's settings."""
    res = {**head, **{k: _mean(rows, k) for k in rows[0]}}
    for k in ("iou", "wrong_pose_iou"):
        res[k] = round(float(np.mean([r[k] for r in rows])), 3)
    return res


def _vae_round_trip(be: TinyBackend, frames: np.ndarray) -> np.ndarray:
    return tensor_to_frames(be.vae.decode(be.vae.encode(frames_to_tensor(frames)))).numpy()


@torch.no_grad()
def chunk0_quality(be: TinyBackend, sequences: int = 8, steps: int = defaults.STEPS, per_clip: bool = False) -> dict:
    """Chunk 0 on held-out dancers against the copy baselines, and the wrong-pose control. With
    ``per_clip``, the result also holds each dancer's row (``rows``), for paired comparisons."""
    _check_count(sequences, None, "sequences")
    mc = be.config
    f = mc.frames
    loop = ChunkLoop(be, AnimationSettings(chunk=mc.chunk_settings, steps=steps))
    one_step = ChunkLoop(be, AnimationSettings(chunk=mc.chunk_settings, steps=1))
    seqs = [make_sequence(i, "test", mc.height, mc.width, mc.fps) for i in range(max(2, sequences))]
    rows = []
    for i in range(sequences):
        seq, other = seqs[i], seqs[(i + 1) % len(seqs)]
        gt, fig = seq.render(0, f)
        empty = np.broadcast_to(seq.plate(), gt.shape)
        ref = np.broadcast_to(seq.reference(), gt.shape)
        out = _chunk0(loop, seq.reference(), seq.pose(0, f))
        wrong = _chunk0(loop, seq.reference(), other.pose(0, f))
        once = _chunk0(one_step, seq.reference(), seq.pose(0, f))
        vae = _vae_round_trip(be, gt)
        fill = np.where(fig[..., None], mean_filled(gt, fig), vae)
        moved = shifted(gt)
        dancer = np.abs(ref[0].astype(np.float32) - empty[0].astype(np.float32)).max(axis=-1) > 0
        ref_place = dancer[None] & ~fig
        inpainted = np.broadcast_to(inpaint_rows(seq.reference(), dancer), gt.shape)
        background = ~fig & ~ref_place
        rows.append({
            "model": region_psnr(out, gt, np.ones_like(fig)), "model_figure": region_psnr(out, gt, fig),
            "reference": region_psnr(ref, gt, np.ones_like(fig)), "reference_figure": region_psnr(ref, gt, fig),
            "empty": region_psnr(empty, gt, np.ones_like(fig)), "empty_figure": region_psnr(empty, gt, fig),
            "vae": region_psnr(vae, gt, np.ones_like(fig)), "vae_figure": region_psnr(vae, gt, fig),
            "shifted": region_psnr(moved, gt, np.ones_like(fig)), "shifted_figure": region_psnr(moved, gt, fig),
            "mean_fill": region_psnr(fill, gt, np.ones_like(fig)), "mean_fill_figure": region_psnr(fill, gt, fig),
            "model_background": region_psnr(out, gt, background), "model_ref_place": region_psnr(out, gt, ref_place),
            "reference_ref_place": region_psnr(ref, gt, ref_place), "inpainted_ref_place": region_psnr(inpainted, gt, ref_place),
            "model_one_step": region_psnr(once, gt, np.ones_like(fig)), "model_one_step_figure": region_psnr(once, gt, fig),
            "wrong_pose_figure": region_psnr(wrong, gt, fig),
            "iou": mask_iou(drawn_figure(out, empty), fig), "wrong_pose_iou": mask_iou(drawn_figure(wrong, empty), fig),
        })  # fmt: skip
    res = _summary(rows, sequences=sequences, steps=steps)
    res["margin_over_copies"] = round(res["model"] - max(res["reference"], res["empty"]), 2)
    if per_clip:
        res["rows"] = [{k: round(float(v), 4) for k, v in r.items()} for r in rows]
    return res


@torch.no_grad()
def world_chunk0(be: TinyBackend, sequences: int = 8, steps: int = defaults.STEPS, offset: int = 0) -> dict:
    """Chunk 0 of held-out world clips (the demo's first chunk) against the same kind of answers as
    :func:`chunk0_quality`. ``empty`` is the scene without the dancer under the true camera, which
    knows the pan a model has to infer from the pose alone, so it is a ceiling for the background
    rather than a copy a model could make; ``first_view`` is the empty scene as the reference shows
    it, held (no dancer, no pan: what a model gets that neither draws the dancer nor follows the
    camera); ``reference`` is the reference image held."""
    size = WorldConfig().split_size("test")
    _check_count(offset + sequences, size, "world (with the offset)")
    mc = be.config
    f = mc.frames
    loop = ChunkLoop(be, AnimationSettings(chunk=mc.chunk_settings, steps=steps))
    rows = []
    for i in range(offset, offset + sequences):
        seq = make_world_sequence(i, "test", mc.height, mc.width, mc.fps)
        j = offset + (i - offset + 1) % sequences if sequences > 1 else (i + 1) % size  # another clip's pose
        other = make_world_sequence(j, "test", mc.height, mc.width, mc.fps)
        gt, fig = seq.render(0, f)
        empty = seq.empty_frames(0, f)
        ref = np.broadcast_to(seq.reference(), gt.shape)
        ones = np.ones_like(fig)
        out = _chunk0(loop, seq.reference(), seq.pose(0, f))
        wrong = _chunk0(loop, seq.reference(), other.pose(0, f))
        vae = _vae_round_trip(be, gt)
        rows.append({
            "model": region_psnr(out, gt, ones), "model_figure": region_psnr(out, gt, fig),
            "model_background": region_psnr(out, gt, ~fig),
            "vae": region_psnr(vae, gt, ones), "vae_figure": region_psnr(vae, gt, fig),
            "reference": region_psnr(ref, gt, ones), "reference_figure": region_psnr(ref, gt, fig),
            "empty": region_psnr(empty, gt, ones), "empty_figure": region_psnr(empty, gt, fig),
            "first_view": region_psnr(np.broadcast_to(seq.first_view(), gt.shape), gt, ones),
            "iou": mask_iou(drawn_figure(out, empty), fig), "wrong_pose_iou": mask_iou(drawn_figure(wrong, empty), fig),
        })  # fmt: skip
    return _summary(rows, sequences=sequences, offset=offset, steps=steps)


@torch.no_grad()
def motion_probe(
    be: TinyBackend, sequences: int = 8, probe_chunk: int = 3, steps: int = defaults.STEPS, offset: int = 0
) -> dict:
    """World test split: chunk ``probe_chunk`` with the carried motion latent vs zeros in its place."""
    _check_count(offset + sequences, WorldConfig().split_size("test"), "world (with the offset)")
    if probe_chunk < 1:
        raise ConfigError(f"--probe-chunk must be at least 1 (chunk 0 has no motion latent); got {probe_chunk}.")
    mc = be.config
    settings = AnimationSettings(chunk=mc.chunk_settings, steps=steps)
    total = frames_for_chunks(probe_chunk + 1, settings.chunk)
    rows = []
    for i in range(offset, offset + sequences):
        seq = make_world_sequence(i, "test", mc.height, mc.width, mc.fps)
        inputs = RunInputs(seq.reference(), seq.pose(0, total))
        loop = ChunkLoop(be, settings)
        plan = loop.plan(inputs)
        memory = loop.start(inputs.reference)
        for chunk in plan.chunks[:probe_chunk]:
            generated, frames, pose_frames = loop.generate(memory, chunk, inputs)
            memory = loop.advance(memory, generated, frames, pose_frames)
        chunk = plan.chunks[probe_chunk]
        gt = seq.frames(chunk.start, chunk.start + chunk.frames)
        _, true_frames, _ = loop.generate(memory, chunk, inputs)
        zeroed = replace(memory, motion=torch.zeros_like(memory.motion))
        _, zero_frames, _ = loop.generate(zeroed, chunk, inputs)
        # the carried latent as it would be without the loop's own errors: the end of the true
        # previous chunk's latents, as the training's memory windows carry it
        prev = plan.chunks[probe_chunk - 1]
        true_prev = be.encode_pose(seq.frames(prev.start, prev.start + prev.frames))  # the video encoder
        told = replace(memory, motion=true_prev[:, -memory.motion.shape[1] :].to(memory.motion))
        _, told_frames, _ = loop.generate(told, chunk, inputs)
        ones = np.ones(gt.shape[:3], bool)
        held = np.broadcast_to(seq.frames(chunk.start - 1, chunk.start), gt.shape)
        rows.append({
            "true_motion": region_psnr(true_frames, gt, ones), "zero_motion": region_psnr(zero_frames, gt, ones),
            "true_memory": region_psnr(told_frames, gt, ones), "hold_previous": region_psnr(held, gt, ones),
            "reference": region_psnr(np.broadcast_to(inputs.reference, gt.shape), gt, ones),
        })  # fmt: skip
    res = {"sequences": sequences, "offset": offset, "probe_chunk": probe_chunk, "steps": steps}
    res.update({k: _mean(rows, k) for k in rows[0]})
    costs = [r["true_motion"] - r["zero_motion"] for r in rows]
    res["zero_motion_cost"] = round(float(np.mean(costs)), 2)
    res["zero_motion_cost_min"] = round(float(np.min(costs)), 2)
    return res


def apply_lora(be: TinyBackend, path: str | Path) -> str:
    """Merge the LoRA file at ``path`` into ``be``'s DiT (strength 1); returns the path it read."""
    from safetensors.torch import load_file

    from ..training.trainer import merge_lora

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"No LoRA file at {path}; the embedded ones are in everanimate_core/tiny/weights/lora/.")
    merge_lora(be.dit, load_file(str(path)))
    return str(path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default=None, help="a weights folder (default: the embedded model)")
    p.add_argument("--lora", default=None, help="a LoRA file merged into the model first (strength 1)")
    p.add_argument("--sequences", type=int, default=8, help="held-out plain dancers for chunk 0 (0: skip)")
    p.add_argument("--world", type=int, default=8, help="held-out world clips for the motion probe (0: skip)")
    p.add_argument("--world-offset", type=int, default=0, help="first world test clip")
    p.add_argument("--probe-chunk", type=int, default=3)
    p.add_argument("--steps", type=int, default=defaults.STEPS)
    a = p.parse_args(argv)
    be = load_tiny(a.weights)
    out = {}
    if a.lora is not None:
        out["lora"] = apply_lora(be, a.lora)
    if a.sequences:
        out["chunk0"] = chunk0_quality(be, a.sequences, a.steps)
    if a.world:
        out["world_chunk0"] = world_chunk0(be, a.world, a.steps, a.world_offset)
        out["motion_probe"] = motion_probe(be, a.world, a.probe_chunk, a.steps, a.world_offset)
    print(json.dumps(out, indent=1))
