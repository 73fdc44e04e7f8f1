"""The long-horizon drift benchmark: ``python -m everanimate_core bench drift`` (docs/drift.md).

Every variant animates the same held-out SynthDance sequences for 90 s at 8 fps (720 frames, 25
chunks) with seeded sampling and is scored against the exact ground truth frame by frame.
Variants (EverAnimate-Tiny; LoRAs in ``tiny/weights/lora/``: a LoRA folder always sits inside the
folder of the base model it was trained on): a decoded-frame carry (last 5 frames
re-encoded), reference-only anchors; b latent carry, reference-only anchors; c latent carry +
chunk-0 anchors (PLP); c+ c + stage-1 LoRA; d c + RFM LoRA (stage 2, gaussian_timestep, w 1);
e c + stage-2 LoRA with alpha 0; f d + inference-time anchor restoration.
Metrics (fixed before any result): PSNR, SSIM, background PSNR, identity colour error, seam ratio;
per horizon H the mean over [0, H) and over the last 10 s before H; mean over sequences with a 95 %
t-interval, relative gains with paired bootstrap intervals (2000 resamples, seeded).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import defaults
from ..errors import ConfigError
from .metrics import SeamMeter, background_psnr, masked_color_error, psnr_per_frame, ssim_per_frame
from ..pipeline import AnimationSettings, ChunkLoop, ChunkOutput, LoopHooks, RunInputs
from ..plan import plan_for_driving
from ..sampler import AnchorRestoration
from ..tiny.backend import WEIGHTS_DIR

LORA_DIR = WEIGHTS_DIR / "lora"
DOCS_DIR = Path(__file__).resolve().parents[2] / "docs"
HORIZONS_S = (10, 90)
WINDOW_S = 10
PAPER_GAINS = {10: {"psnr": 8.0, "ssim": 7.0}, 90: {"psnr": 15.0, "ssim": 15.0}}
METRICS = ("psnr", "ssim", "bg_psnr", "id_err")
WORLD_METRICS = ("revealed_psnr", "panel_err")  # the scene state (world clips only)
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "bg_psnr": True, "id_err": False, "revealed_psnr": True, "panel_err": False}
WORLD_VARIANTS = ("a", "c", "c+", "d", "e", "f")  # docs/drift.md, the v2 set-up: (b) is dropped there


@dataclass(frozen=True)
class Variant:
    key: str
    label: str
    carry: str = "latent"  # latent | decoded
    anchors: str = "random_plus_reference"
    lora: str | None = None
    restoration: bool = False


VARIANTS: dict[str, Variant] = {
    v.key: v
    for v in (
        Variant("a", "decoded-frame carry", carry="decoded", anchors="repeat_reference"),
        Variant("b", "latent carry, reference anchors", anchors="repeat_reference"),
        Variant("c", "PLP (latent carry + anchors)"),
        Variant("c+", "PLP + stage-1 LoRA (more training)", lora="plp_more"),
        Variant("d", "PLP + RFM LoRA", lora="rfm"),
        Variant("e", "PLP + RFM LoRA, alpha = 0", lora="rfm_alpha0"),
        Variant("f", "d + inference anchor restoration", lora="rfm", restoration=True),
        # docs/drift.md, "The loop's own memory in LoRA training": half the windows carry the (c)
        # loop's own anchors and motion latent (tiny/loop_bank.py)
        Variant("c+-loop", "stage-1 LoRA, half its windows with the loop's memory", lora="plp_loop"),
        Variant("d-loop", "RFM LoRA, half its windows with the loop's memory", lora="rfm_loop"),
    )
}


def base_weights(lora_dir: Path) -> Path:
    """The base model a LoRA folder belongs to: the folder around it (``<weights>/lora``)."""
    base = Path(lora_dir).resolve().parent
    if not (base / "tiny_config.json").exists():
        raise ConfigError(
            f"{lora_dir} is not inside an EverAnimate-Tiny weights folder: a LoRA folder must be the `lora` "
            "folder of the base model it was trained on, so the LoRAs never meet another base."
        )
    return base


def _backend(variant: Variant, lora_dir: Path):
    from safetensors.torch import load_file

    from ..tiny.backend import load_tiny
    from ..training.trainer import merge_lora

    path = None if variant.lora is None else lora_dir / f"{variant.lora}.safetensors"
    if path is not None and not path.exists():
        raise ConfigError(
            f"Variant {variant.key} needs the LoRA {path}. Train it with `python -m everanimate_core "
            f"train` (see docs/drift.md) or pass --lora-dir."
        )
    be = load_tiny(base_weights(lora_dir))
    if path is not None:
        merge_lora(be.dit, load_file(str(path)))
    return be


def world_seed(index: int) -> int:
    """The world run's seed base of clip ``index`` (docs/drift.md): chunk c uses it + c, so the seed
    varies by clip and by chunk."""
    return defaults.SEED + 1000 * int(index)


def run_sequence(
    variant: Variant, index: int, seconds: int, steps: int, lora_dir: Path, backend=None, world: bool = False
) -> dict:
    """Animate test sequence ``index`` with one variant; per-frame metric arrays and seam ratios.
    ``world``: a clip of the stateful world's test split, with its scene-state metrics and a chunk
    seed that varies by clip; else a still SynthDance sequence with the seed of every sequence."""
    from ..tiny.synthdance import make_sequence
    from ..tiny.world import make_world_sequence, panel_color_error, region_psnr

    t_start = time.perf_counter()
    be = backend or _backend(variant, lora_dir)
    mc = be.config
    total = int(round(seconds * mc.fps))
    seq = (make_world_sequence if world else make_sequence)(index, "test", mc.height, mc.width, mc.fps)
    pose = seq.pose(0, total)
    ref = seq.reference()
    restoration = AnchorRestoration() if variant.restoration else None
    settings = AnimationSettings(
        chunk=mc.chunk_settings, steps=steps, anchor_policy=variant.anchors,
        restoration=restoration, motion_carry=variant.carry,
        **({"seed": world_seed(index), "seed_policy": "increment"} if world else {}),
    )
    plan = plan_for_driving(len(pose), settings.chunk, total, settings.window_mode)
    seams_at = [c.start + c.drop for c in plan.chunks[1:]]
    window = int(round(WINDOW_S * mc.fps))
    meters = {h: SeamMeter([s for s in seams_at if s < int(round(h * mc.fps))]) for h in HORIZONS_S}
    per = {m: [] for m in METRICS + (WORLD_METRICS if world else ())}
    written = [0]

    def score(out: ChunkOutput, _chunks: int) -> None:
        keep, out_at = out.kept_frames, written[0]
        if world:
            gt, masks = seq.render_world(out_at, out_at + len(keep))
            fig = masks["figure"]
            for i in range(len(keep)):
                per["revealed_psnr"].append(min(region_psnr(keep[i : i + 1], gt[i : i + 1], masks["revealed"][i : i + 1]), 100.0))
                per["panel_err"].append(panel_color_error(keep[i : i + 1], gt[i : i + 1], masks["panel"][i : i + 1]))
        else:
            gt, fig = seq.render(out_at, out_at + len(keep))
        per["psnr"].extend(psnr_per_frame(keep, gt).tolist())
        per["ssim"].extend(ssim_per_frame(keep, gt).tolist())
        for i in range(len(keep)):
            per["bg_psnr"].append(min(background_psnr(keep[i], gt[i], fig[i]), 100.0))
            per["id_err"].append(masked_color_error(keep[i], gt[i], fig[i]) if fig[i].any() else float("nan"))
        for h, meter in meters.items():
            limit = int(round(h * mc.fps))
            if out_at < limit:
                meter.update(keep[: limit - out_at], out_at)
        written[0] += len(keep)

    ChunkLoop(be, settings).run(RunInputs(ref, pose, total_frames=total), hooks=LoopHooks(on_chunk=score))
    out_at = written[0]
    if out_at != total:
        raise RuntimeError(
            f"Generated {out_at} frames for a {total}-frame request: the chunk plan is inconsistent. "
            "This is a bug; please report it with the bench command line."
        )
    return {
        "variant": variant.key,
        "index": index,
        "world": world,
        "seed": settings.seed,
        "frames": total,
        "per_frame": {k: [round(float(x), 4) for x in v] for k, v in per.items()},
        "seam_ratio": {str(h): float(m.seam_ratio) for h, m in meters.items()},
        "window": window,
        "run_s": round(time.perf_counter() - t_start, 2),
    }


def _cache_path(cache: Path, variant: Variant, index: int, seconds: int, steps: int, lora_dir: Path, world: bool = False) -> Path:
    """One finished run per file; the name pins everything that changes the run (LoRA by content)."""
    import hashlib

    tag = "base"
    if variant.lora is not None:
        tag = hashlib.sha256((lora_dir / f"{variant.lora}.safetensors").read_bytes()).hexdigest()[:12]
    weights = base_weights(lora_dir) / "tiny_dit.safetensors"
    base = hashlib.sha256(weights.read_bytes()).hexdigest()[:8]
    key = variant.key.replace("+", "plus")
    scene = "world_" if world else ""
    return cache / f"{scene}{key}_{index:03d}_{seconds}s_{steps}st_{base}_{tag}.json"


def _worker(args) -> dict:
    variant_key, index, seconds, steps, lora_dir, cache, world = args
    torch.set_num_threads(1)
    r = run_sequence(VARIANTS[variant_key], index, seconds, steps, Path(lora_dir), world=world)
    if cache:
        path = _cache_path(Path(cache), VARIANTS[variant_key], index, seconds, steps, Path(lora_dir), world)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(r))
        tmp.replace(path)
    return r


# ------------------------------------------------------------------------------------- statistics


def _t95(n: int) -> float:
    table = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23,
             12: 2.18, 15: 2.13, 19: 2.09, 20: 2.09, 24: 2.06, 29: 2.05}
    if n <= 0:
        return float("nan")
    keys = [k for k in table if k <= n]
    return table[max(keys)] if n < 30 else 1.96


def mean_ci(values) -> tuple[float, float]:
    """Mean and the half-width of its 95 % t-interval."""
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    if len(v) == 1:
        return float(v[0]), float("nan")
    return float(v.mean()), float(_t95(len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def paired_gain(ours, base, seed: int = 0, resamples: int = 2000, higher_better: bool = True) -> tuple[float, float, float]:
    """Relative gain of ``ours`` over ``base`` in % (mean over sequences), with a paired bootstrap
    95 % interval. For lower-is-better metrics the gain is the relative reduction."""
    a, b = np.asarray(ours, np.float64), np.asarray(base, np.float64)
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]

    def gain(x, y):
        return 100 * (x.mean() / y.mean() - 1) if higher_better else 100 * (1 - x.mean() / y.mean())

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(resamples, len(a)))
    boots = np.array([gain(a[i], b[i]) for i in idx])
    return float(gain(a, b)), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def paired_diff(ours, base, seed: int = 0, resamples: int = 2000) -> tuple[float, float, float]:
    """Mean paired difference ours - base with a bootstrap 95 % interval."""
    a, b = np.asarray(ours, np.float64), np.asarray(base, np.float64)
    d = a - b
    d = d[~np.isnan(d)]
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    return float(d.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def summarize(runs: list[dict], fps: float) -> dict:
    """Per variant, horizon and metric: the per-sequence scores, mean and CI."""
    out: dict = {}
    w = int(round(WINDOW_S * fps))
    for r in runs:
        v = out.setdefault(r["variant"], {"scores": {}, "curves": {}})
        for h in HORIZONS_S:
            n = int(round(h * fps))
            for m in r["per_frame"]:
                arr = np.asarray(r["per_frame"][m][:n], np.float64)
                v["scores"].setdefault(f"{m}@{h}", []).append(float(np.nanmean(arr)))
                v["scores"].setdefault(f"{m}@{h}w", []).append(float(np.nanmean(arr[n - w : n])))
            v["scores"].setdefault(f"seam@{h}", []).append(r["seam_ratio"][str(h)])
        per_s = np.asarray(r["per_frame"]["psnr"], np.float64)
        secs = len(per_s) // int(fps)
        v["curves"].setdefault("psnr_per_second", []).append(
            per_s[: secs * int(fps)].reshape(secs, int(fps)).mean(axis=1).tolist()
        )
    for v in out.values():
        v["mean_ci"] = {k: mean_ci(s) for k, s in v["scores"].items()}
        curves = np.asarray(v["curves"]["psnr_per_second"])
        v["psnr_curve"] = curves.mean(axis=0).round(3).tolist()
    return out


# ----------------------------------------------------------------------------------- reporting


def _fmt(mc: tuple[float, float], digits: int = 2) -> str:
    m, c = mc
    if math.isnan(c):
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {c:.{digits}f}"


def markdown_table(summary: dict, meta: dict) -> str:
    keys = [k for k in VARIANTS if k in summary]
    lines = [
        "# Drift benchmark results",
        "",
        f"Command: `{meta['command']}`  ",
        (f"{meta['sequences']} held-out clips of the stateful world (test clips {meta.get('offset', 0)}.."
         f"{meta.get('offset', 0) + meta['sequences'] - 1}), EverAnimate-Tiny v2, " if meta.get("scene") == "world"
         else f"{meta['sequences']} held-out SynthDance test sequences, ")
        + f"{meta['seconds']} s at {meta['fps']:g} fps "
        f"({meta['frames']} frames, {meta['chunks']} chunks of {meta['chunk_frames']} frames), {meta['steps']} "
        f"Euler steps, EverAnimate-Tiny. "
        + (f"Wall time {meta['wall_s']:.0f} s with {meta['workers']} worker(s) for the {meta.get('runs_computed', '?')} "
           f"runs computed in this call; " if meta.get("runs_computed", 1) else "")
        + (f"{meta['runs_reused']} runs reused from the cache; " if meta.get("runs_reused") else "")
        + (f"variants {', '.join('(' + v + ')' for v in meta['reused_from']['variants'])} are the scores stored in "
           f"`{meta['reused_from']['path']}` (the same clips, horizon, steps and chunk seeds); "
           if meta.get("reused_from") else "")
        + f"one run took {meta.get('run_s_mean', float('nan')):.1f} s on one thread on average "
        f"({meta.get('run_s_total', float('nan')):.0f} s in all).",
        "",
        "Mean over sequences ± 95 % t-interval. Horizon H: average over frames [0, H) (a video of length H); "
        "'last 10 s': frames [H-10 s, H). ID err: mean |RGB error| in levels inside the figure (lower is "
        "better). Seam: frame-change ratio at chunk joins vs inside chunks (1 = invisible joins).",
        "",
    ]
    world = meta.get("scene") == "world"
    for h in HORIZONS_S:
        extra_head = " revealed-plate PSNR | panel err |" if world else ""
        lines += [f"## Horizon {h} s", "",
                  "| variant | PSNR | SSIM | background PSNR | ID err | PSNR last 10 s | SSIM last 10 s | seam |" + extra_head,
                  "|---|---|---|---|---|---|---|---|" + ("---|---|" if world else "")]
        for k in keys:
            mc = summary[k]["mean_ci"]
            extra = f" {_fmt(mc[f'revealed_psnr@{h}'])} | {_fmt(mc[f'panel_err@{h}'], 1)} |" if world else ""
            lines.append(
                f"| ({k}) {VARIANTS[k].label} | {_fmt(mc[f'psnr@{h}'])} | {_fmt(mc[f'ssim@{h}'], 3)} | "
                f"{_fmt(mc[f'bg_psnr@{h}'])} | {_fmt(mc[f'id_err@{h}'], 1)} | {_fmt(mc[f'psnr@{h}w'])} | "
                f"{_fmt(mc[f'ssim@{h}w'], 3)} | {_fmt(mc[f'seam@{h}'])} |" + extra
            )
        lines.append("")
    lines += ["## Relative gains (paired bootstrap 95 % interval)", "",
              "| comparison | horizon | PSNR gain % | SSIM gain % | paper (PSNR / SSIM) |", "|---|---|---|---|---|"]
    pairs = ([("c", "a"), ("d", "c+"), ("d", "e"), ("f", "d"), ("d", "a"), ("d-loop", "d"), ("d-loop", "c+-loop"),
              ("c+-loop", "c+"), ("d-loop", "c+"), ("d-loop", "a")] if world else
             [("d", "a"), ("d", "b"), ("d", "c"), ("d", "c+"), ("d", "e"), ("f", "d"), ("c", "a")])
    for ours, base in pairs:
        if ours not in summary or base not in summary:
            continue
        for h in HORIZONS_S:
            cells = []
            for m in ("psnr", "ssim"):
                g, lo, hi = paired_gain(summary[ours]["scores"][f"{m}@{h}"], summary[base]["scores"][f"{m}@{h}"])
                cells.append(f"{g:+.1f} [{lo:+.1f}, {hi:+.1f}]")
            paper = f"+{PAPER_GAINS[h]['psnr']:.0f} / +{PAPER_GAINS[h]['ssim']:.0f} (over their best baseline)" if base == "a" else ""
            lines.append(f"| ({ours}) vs ({base}) | {h} s | {cells[0]} | {cells[1]} | {paper} |")
    lines.append("")
    if world:
        lines += ["## Gates (fixed in docs/drift.md before any result)", ""]
        for name, (ok, text) in gates(summary, meta).items():
            lines.append(f"- {name}: **{'passed' if ok else 'FAILED'}**. {text}")
        lines.append("")
    sig = signature(summary)
    lines += ["## The paper's signature at toy scale", ""]
    for name, (ok, text) in sig.items():
        lines.append(f"- {name}: **{'yes' if ok else 'no'}**. {text}")
    lines.append("")
    return "\n".join(lines)


GATE_PROBE_DB = 3.0  # the zero-motion probe must cost at least this (the model uses its memory)
GATE_DRIFT_DB = 1.0  # (a) must lose at least this from its first 10 s to its last 10 s before 90 s


def gates(summary: dict, meta: dict) -> dict[str, tuple[bool, str]]:
    """The two gates of the world run (docs/drift.md): memory is used, and drift is real."""
    out: dict[str, tuple[bool, str]] = {}
    probe = meta.get("probe")
    if probe is not None:
        cost = probe["zero_motion_cost"]
        out[f"zero-motion probe costs >= {GATE_PROBE_DB:g} dB"] = (
            cost >= GATE_PROBE_DB,
            f"{probe['true_motion']:.2f} dB with the motion latent, {probe['zero_motion']:.2f} dB with zeros: "
            f"{cost:+.2f} dB ({probe['sequences']} clips, chunk {probe['probe_chunk']}"
            + (f"; measured by the run of `{probe['from']}`)" if probe.get("from") else ")"),
        )
    if "a" in summary:
        first = summary["a"]["mean_ci"]["psnr@10"][0]
        last = summary["a"]["mean_ci"]["psnr@90w"][0]
        out[f"(a) loses >= {GATE_DRIFT_DB:g} dB between its first and its last 10 s before 90 s"] = (
            first - last >= GATE_DRIFT_DB, f"{first:.2f} dB -> {last:.2f} dB ({last - first:+.2f} dB)"
        )
    return out


def signature(summary: dict) -> dict[str, tuple[bool, str]]:
    """The three checks of the issue, with the numbers behind them."""
    out: dict[str, tuple[bool, str]] = {}
    if "c" in summary and "a" in summary:
        g10 = paired_gain(summary["c"]["scores"]["psnr@10"], summary["a"]["scores"]["psnr@10"])[0]
        g90 = paired_gain(summary["c"]["scores"]["psnr@90"], summary["a"]["scores"]["psnr@90"])[0]
        out["(c) beats (a) by more at 90 s than at 10 s (PSNR)"] = (g90 > g10 and g90 > 0, f"gain {g10:+.1f} % at 10 s, {g90:+.1f} % at 90 s")
    if "d" in summary and "a" in summary:
        g10 = paired_gain(summary["d"]["scores"]["psnr@10"], summary["a"]["scores"]["psnr@10"])[0]
        g90 = paired_gain(summary["d"]["scores"]["psnr@90"], summary["a"]["scores"]["psnr@90"])[0]
        out["(d) beats (a) by more at 90 s than at 10 s (PSNR)"] = (g90 > g10 and g90 > 0, f"gain {g10:+.1f} % at 10 s, {g90:+.1f} % at 90 s")
    if "d" in summary and "c+" in summary:
        d, lo, hi = paired_diff(summary["d"]["scores"]["psnr@90"], summary["c+"]["scores"]["psnr@90"])
        out["(d) beats (c+) at 90 s beyond the interval (PSNR)"] = (lo > 0, f"difference {d:+.3f} dB, 95 % interval [{lo:+.3f}, {hi:+.3f}]")
    if "d" in summary:
        p10 = summary["d"]["mean_ci"]["psnr@10"][0]
        p90w = summary["d"]["mean_ci"]["psnr@90w"][0]
        rel = 100 * (p90w / p10 - 1)
        out["stretch: (d)'s PSNR in the last 10 s before 90 s within 5 % of its first 10 s"] = (abs(rel) <= 5 or rel > 0, f"{p10:.2f} dB -> {p90w:.2f} dB ({rel:+.1f} %)")
    return out


def svg_plot(summary: dict, fps: float, width: int = 720, height: int = 360) -> str:
    """PSNR over time (1-s bins, mean over sequences) per variant, as a self-contained SVG."""
    keys = [k for k in VARIANTS if k in summary]
    curves = {k: summary[k]["psnr_curve"] for k in keys}
    n = max(len(c) for c in curves.values())
    lo = math.floor(min(min(c) for c in curves.values()) - 0.5)
    hi = math.ceil(max(max(c) for c in curves.values()) + 0.5)
    ml, mr, mt, mb = 50, 190, 20, 40
    pw, ph = width - ml - mr, height - mt - mb
    colors = {"a": "#d62728", "b": "#ff7f0e", "c": "#1f77b4", "c+": "#17becf", "d": "#2ca02c", "e": "#9467bd", "f": "#8c564b"}

    def xy(i, v):
        return ml + pw * (i + 0.5) / n, mt + ph * (1 - (v - lo) / (hi - lo))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>',
             f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>']
    for db in range(lo, hi + 1):
        _, y = xy(0, db)
        parts.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{ml - 6}" y="{y + 4:.1f}" text-anchor="end">{db}</text>')
    for s in range(0, n + 1, 10):
        x = ml + pw * s / n
        parts.append(f'<text x="{x:.1f}" y="{mt + ph + 16}" text-anchor="middle">{s}</text>')
    parts.append(f'<text x="{ml + pw / 2}" y="{height - 6}" text-anchor="middle">time (s)</text>')
    parts.append(f'<text x="14" y="{mt + ph / 2}" transform="rotate(-90 14 {mt + ph / 2})" text-anchor="middle">PSNR (dB)</text>')
    x10 = ml + pw * 10 / n
    parts.append(f'<line x1="{x10:.1f}" x2="{x10:.1f}" y1="{mt}" y2="{mt + ph}" stroke="#999" stroke-dasharray="4 3"/>')
    for j, k in enumerate(keys):
        pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, v) for i, v in enumerate(curves[k])))
        col = colors.get(k, "#000")
        parts.append(f'<polyline fill="none" stroke="{col}" stroke-width="1.6" points="{pts}"/>')
        ly = mt + 14 + 16 * j
        parts.append(f'<line x1="{ml + pw + 10}" x2="{ml + pw + 28}" y1="{ly - 4}" y2="{ly - 4}" stroke="{col}" stroke-width="2"/>')
        parts.append(f'<text x="{ml + pw + 32}" y="{ly}">({k}) {VARIANTS[k].label[:24]}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def bench_drift(
    sequences: int = 20,
    seconds: int = 90,
    steps: int = defaults.STEPS,
    variants: tuple[str, ...] | None = None,
    workers: int = 2,
    lora_dir: Path | None = None,
    out_dir: Path | None = DOCS_DIR,
    command: str = "python -m everanimate_core bench drift",
    log=print,
    cache_dir: Path | None = None,
    world: bool = False,
    offset: int = 0,
    reuse: Path | None = None,
) -> dict:
    """Run the benchmark; writes drift_results.md/.json and drift_psnr.svg to ``out_dir``
    (``drift_world_results.*`` and ``drift_world_psnr.svg`` for the world).

    Sequences ``offset .. offset + sequences - 1`` of the test split. ``world``: clips of the
    stateful world; else the still SynthDance scene. ``lora_dir`` (default: the embedded model's
    ``lora`` folder) names the base model too: the folder around it. With ``cache_dir`` every
    finished (variant, sequence) run is kept there
    and reused by a later call with the same horizon, steps and weights, so an interrupted
    benchmark resumes. ``reuse``: an earlier results JSON of the same clips, horizon and steps; its
    variants that this call does not run join the tables (their per-clip scores, paired by clip)."""
    if variants is None:
        variants = WORLD_VARIANTS if world else tuple(VARIANTS)
    lora_dir = Path(LORA_DIR if lora_dir is None else lora_dir)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"Unknown variants {unknown}; choose from {list(VARIANTS)}.")
    if seconds < max(HORIZONS_S):
        raise ConfigError(f"The benchmark needs at least {max(HORIZONS_S)} s to report every horizon.")
    if sequences < 1 or offset < 0:
        raise ConfigError(f"--sequences must be at least 1 and --offset at least 0; got {sequences} and {offset}.")
    from ..tiny.world import WorldConfig

    split = WorldConfig().split_size("test")
    if world and offset + sequences > split:
        raise ConfigError(
            f"The world's test split holds {split} clips; clips {offset}..{offset + sequences - 1} were asked "
            f"for. Lower --sequences or --offset."
        )
    for v in variants:
        if VARIANTS[v].lora and not (lora_dir / f"{VARIANTS[v].lora}.safetensors").exists():
            _backend(VARIANTS[v], lora_dir)  # raises the explanatory error
    cache = str(cache_dir) if cache_dir is not None else ""
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    tasks = []
    for v in variants:
        for i in range(offset, offset + sequences):
            hit = _cache_path(Path(cache_dir), VARIANTS[v], i, seconds, steps, lora_dir, world) if cache_dir is not None else None
            if hit is not None and hit.exists():
                runs.append(json.loads(hit.read_text()))
            else:
                tasks.append((v, i, seconds, steps, str(lora_dir), cache, world))
    if runs:
        log(f"{len(runs)} runs reused from {cache_dir}; {len(tasks)} to go")
    t0 = time.perf_counter()
    if workers > 1 and tasks:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers) as pool:
            for k, r in enumerate(pool.imap_unordered(_worker, tasks)):
                runs.append(r)
                log(f"[{k + 1}/{len(tasks)}] variant {r['variant']} sequence {r['index']}: "
                    f"PSNR {np.mean(r['per_frame']['psnr']):.2f} dB")
    else:
        for k, task in enumerate(tasks):
            r = _worker(task)
            v, i = task[0], task[1]
            runs.append(r)
            log(f"[{k + 1}/{len(tasks)}] variant {v} sequence {i}: PSNR {np.mean(r['per_frame']['psnr']):.2f} dB")
    wall = time.perf_counter() - t0
    from ..tiny.backend import CONFIG_FILE, TinyModelConfig

    mc = TinyModelConfig.load(base_weights(lora_dir) / CONFIG_FILE)  # the benchmarked model's frame rate and chunks
    runs.sort(key=lambda r: (list(VARIANTS).index(r["variant"]), r["index"]))
    summary = summarize(runs, mc.fps) if runs else {}
    reused = {}
    if reuse is not None:
        reused = reused_variants(reuse, "world" if world else "plain", offset, sequences, seconds, steps, set(variants))
        summary.update(reused)
        summary = {k: summary[k] for k in VARIANTS if k in summary}
    plan = plan_for_driving(int(seconds * mc.fps), mc.chunk_settings, None, "pingpong")
    meta = {"command": command, "scene": "world" if world else "plain", "offset": offset,
            "sequences": sequences, "seconds": seconds, "fps": mc.fps, "frames": int(seconds * mc.fps),
            "chunks": len(plan), "chunk_frames": mc.frames, "steps": steps, "wall_s": wall, "workers": workers,
            "variants": list(variants), "runs_reused": len(runs) - len(tasks), "runs_computed": len(tasks),
            "run_s_mean": float(np.mean([r.get("run_s", float("nan")) for r in runs])),
            "run_s_total": float(np.sum([r.get("run_s", float("nan")) for r in runs]))}
    if reused:
        meta["reused_from"] = {"path": str(reuse), "variants": list(reused)}
    if world and reuse is not None and "probe" in json.loads(Path(reuse).read_text())["meta"]:
        # a property of the base model on the same clips and steps: the reused file measured it
        meta["probe"] = {**json.loads(Path(reuse).read_text())["meta"]["probe"], "from": str(reuse)}
    elif world:
        from ..tiny.backend import load_tiny
        from .quality import motion_probe

        log("zero-motion probe on the same clips ...")
        meta["probe"] = motion_probe(load_tiny(base_weights(lora_dir)), sequences, 3, steps, offset)
    table = markdown_table(summary, meta)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = "drift_world" if world else "drift"
        (out_dir / f"{stem}_results.md").write_text(table)
        (out_dir / f"{stem}_psnr.svg").write_text(svg_plot(summary, mc.fps))
        slim = {k: {"scores": v["scores"], "psnr_curve": v["psnr_curve"]} for k, v in summary.items()}
        (out_dir / f"{stem}_results.json").write_text(json.dumps({"meta": meta, "variants": slim}, indent=1))
    return {"meta": meta, "summary": summary, "table": table}


def reused_variants(path: Path, scene: str, offset: int, sequences: int, seconds: int, steps: int,
                    skip: set[str]) -> dict:
    """The variants of an earlier results JSON, for tables beside this call's runs; refused unless it
    scored the same clips, horizon and steps (the scores are paired clip by clip)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"--reuse {path}: no such results file (a drift_*_results.json of an earlier run).")
    stored = json.loads(path.read_text())
    m = stored["meta"]
    want = {"scene": scene, "offset": offset, "sequences": sequences, "seconds": seconds, "steps": steps}
    diff = [f"{k} {m.get(k, 0 if k == 'offset' else None)!r} there, {v!r} here" for k, v in want.items()
            if m.get(k, 0 if k == "offset" else None) != v]
    if diff:
        raise ConfigError(f"--reuse {path} scored other runs ({'; '.join(diff)}); its scores cannot be paired with these.")
    out = {}
    for k, v in stored["variants"].items():
        if k in skip or k not in VARIANTS:
            continue
        out[k] = {"scores": v["scores"], "psnr_curve": v["psnr_curve"],
                  "mean_ci": {name: mean_ci(s) for name, s in v["scores"].items()}}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="everanimate_core bench drift", description=__doc__.split("\n\n")[0])
    p.add_argument("--sequences", type=int, default=20)
    p.add_argument("--seconds", type=int, default=90)
    p.add_argument("--steps", type=int, default=defaults.STEPS)
    p.add_argument("--variants", default=None, help=f"comma-separated (default: all; the world: {','.join(WORLD_VARIANTS)})")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--lora-dir", default=None, help="LoRA folder inside its base model's weights folder")
    p.add_argument("--world", action="store_true", help="clips of the stateful world (the v2 set-up of docs/drift.md)")
    p.add_argument("--offset", type=int, default=0, help="first test sequence (other held-out sequences)")
    p.add_argument("--out", default=str(DOCS_DIR), help="where the table, JSON and plot go")
    p.add_argument("--reuse", default=None,
                   help="an earlier results JSON of the same clips: its other variants join the tables")
    p.add_argument("--cache", default="outputs/drift_cache",
                   help="keep every finished run here and reuse it (resume); '' to disable")
    a = p.parse_args(argv)
    cmd = "python -m everanimate_core bench drift" + (" " + " ".join(argv) if argv else "")
    variants = None if a.variants is None else tuple(v for v in a.variants.split(",") if v)
    res = bench_drift(a.sequences, a.seconds, a.steps, variants, a.workers,
                      None if a.lora_dir is None else Path(a.lora_dir), Path(a.out), cmd,
                      cache_dir=Path(a.cache) if a.cache else None, world=a.world, offset=a.offset,
                      reuse=None if a.reuse is None else Path(a.reuse))
    print(res["table"])
