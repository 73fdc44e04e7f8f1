"""The long-horizon drift benchmark: ``python -m everanimate_core bench drift`` (docs/drift.md).

Every variant animates the same held-out SynthDance sequences for 90 s at 8 fps (720 frames, 25
chunks) with seeded sampling and is scored against the exact ground truth frame by frame.
Variants (EverAnimate-Tiny; LoRAs in ``tiny/weights/lora/``): a decoded-frame carry (last 5 frames
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
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "bg_psnr": True, "id_err": False}


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
    )
}


def _backend(variant: Variant, lora_dir: Path):
    from safetensors.torch import load_file

    from ..tiny.backend import load_tiny
    from ..training.trainer import merge_lora

    be = load_tiny()
    if variant.lora is not None:
        path = lora_dir / f"{variant.lora}.safetensors"
        if not path.exists():
            raise ConfigError(
                f"Variant {variant.key} needs the LoRA {path}. Train it with `python -m everanimate_core "
                f"train` (see docs/drift.md) or pass --lora-dir."
            )
        merge_lora(be.dit, load_file(str(path)))
    return be


def run_sequence(variant: Variant, index: int, seconds: int, steps: int, lora_dir: Path, backend=None) -> dict:
    """Animate test sequence ``index`` with one variant; per-frame metric arrays and seam ratios."""
    from ..tiny.synthdance import make_sequence

    t_start = time.perf_counter()
    be = backend or _backend(variant, lora_dir)
    mc = be.config
    total = int(round(seconds * mc.fps))
    seq = make_sequence(index, "test", mc.height, mc.width, mc.fps)
    pose = seq.pose(0, total)
    ref = seq.reference()
    restoration = AnchorRestoration() if variant.restoration else None
    settings = AnimationSettings(
        chunk=mc.chunk_settings, steps=steps, anchor_policy=variant.anchors,
        restoration=restoration, motion_carry=variant.carry,
    )
    plan = plan_for_driving(len(pose), settings.chunk, total, settings.window_mode)
    seams_at = [c.start + c.drop for c in plan.chunks[1:]]
    window = int(round(WINDOW_S * mc.fps))
    meters = {h: SeamMeter([s for s in seams_at if s < int(round(h * mc.fps))]) for h in HORIZONS_S}
    per = {m: [] for m in METRICS}
    written = [0]

    def score(out: ChunkOutput, _chunks: int) -> None:
        keep, out_at = out.kept_frames, written[0]
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
        "frames": total,
        "per_frame": {k: [round(float(x), 4) for x in v] for k, v in per.items()},
        "seam_ratio": {str(h): float(m.seam_ratio) for h, m in meters.items()},
        "window": window,
        "run_s": round(time.perf_counter() - t_start, 2),
    }


def _cache_path(cache: Path, variant: Variant, index: int, seconds: int, steps: int, lora_dir: Path) -> Path:
    """One finished run per file; the name pins everything that changes the run (LoRA by content)."""
    import hashlib

    tag = "base"
    if variant.lora is not None:
        tag = hashlib.sha256((lora_dir / f"{variant.lora}.safetensors").read_bytes()).hexdigest()[:12]
    weights = WEIGHTS_DIR / "tiny_dit.safetensors"
    base = hashlib.sha256(weights.read_bytes()).hexdigest()[:8]
    key = variant.key.replace("+", "plus")
    return cache / f"{key}_{index:03d}_{seconds}s_{steps}st_{base}_{tag}.json"


def _worker(args) -> dict:
    variant_key, index, seconds, steps, lora_dir, cache = args
    torch.set_num_threads(1)
    r = run_sequence(VARIANTS[variant_key], index, seconds, steps, Path(lora_dir))
    if cache:
        path = _cache_path(Path(cache), VARIANTS[variant_key], index, seconds, steps, Path(lora_dir))
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
            for m in METRICS:
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
        f"{meta['sequences']} held-out SynthDance test sequences, {meta['seconds']} s at {meta['fps']:g} fps "
        f"({meta['frames']} frames, {meta['chunks']} chunks of {meta['chunk_frames']} frames), {meta['steps']} "
        f"Euler steps, EverAnimate-Tiny. "
        + (f"Wall time {meta['wall_s']:.0f} s with {meta['workers']} worker(s) for the {meta.get('runs_computed', '?')} "
           f"runs computed in this call; " if meta.get("runs_computed", 1) else "")
        + (f"{meta['runs_reused']} runs reused from the cache; " if meta.get("runs_reused") else "")
        + f"one run took {meta.get('run_s_mean', float('nan')):.1f} s on one thread on average "
        f"({meta.get('run_s_total', float('nan')):.0f} s in all).",
        "",
        "Mean over sequences ± 95 % t-interval. Horizon H: average over frames [0, H) (a video of length H); "
        "'last 10 s': frames [H-10 s, H). ID err: mean |RGB error| in levels inside the figure (lower is "
        "better). Seam: frame-change ratio at chunk joins vs inside chunks (1 = invisible joins).",
        "",
    ]
    for h in HORIZONS_S:
        lines += [f"## Horizon {h} s", "",
                  "| variant | PSNR | SSIM | background PSNR | ID err | PSNR last 10 s | SSIM last 10 s | seam |",
                  "|---|---|---|---|---|---|---|---|"]
        for k in keys:
            mc = summary[k]["mean_ci"]
            lines.append(
                f"| ({k}) {VARIANTS[k].label} | {_fmt(mc[f'psnr@{h}'])} | {_fmt(mc[f'ssim@{h}'], 3)} | "
                f"{_fmt(mc[f'bg_psnr@{h}'])} | {_fmt(mc[f'id_err@{h}'], 1)} | {_fmt(mc[f'psnr@{h}w'])} | "
                f"{_fmt(mc[f'ssim@{h}w'], 3)} | {_fmt(mc[f'seam@{h}'])} |"
            )
        lines.append("")
    lines += ["## Relative gains (paired bootstrap 95 % interval)", "",
              "| comparison | horizon | PSNR gain % | SSIM gain % | paper (PSNR / SSIM) |", "|---|---|---|---|---|"]
    pairs = [("d", "a"), ("d", "b"), ("d", "c"), ("d", "c+"), ("d", "e"), ("f", "d"), ("c", "a")]
    for ours, base in pairs:
        if ours not in summary or base not in summary:
            continue
        for h in HORIZONS_S:
            cells = []
            for m in ("psnr", "ssim"):
                g, lo, hi = paired_gain(summary[ours]["scores"][f"{m}@{h}"], summary[base]["scores"][f"{m}@{h}"])
                cells.append(f"{g:+.1f} [{lo:+.1f}, {hi:+.1f}]")
            paper = f"+{PAPER_GAINS[h]['psnr']:.0f} / +{PAPER_GAINS[h]['ssim']:.0f} (over their best baseline)" if (ours, base) == ("d", "a") else ""
            lines.append(f"| ({ours}) vs ({base}) | {h} s | {cells[0]} | {cells[1]} | {paper} |")
    lines.append("")
    sig = signature(summary)
    lines += ["## The paper's signature at toy scale", ""]
    for name, (ok, text) in sig.items():
        lines.append(f"- {name}: **{'yes' if ok else 'no'}**. {text}")
    lines.append("")
    return "\n".join(lines)


def signature(summary: dict) -> dict[str, tuple[bool, str]]:
    """The three checks of the issue, with the numbers behind them."""
    out: dict[str, tuple[bool, str]] = {}
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
    variants: tuple[str, ...] = tuple(VARIANTS),
    workers: int = 2,
    lora_dir: Path = LORA_DIR,
    out_dir: Path | None = DOCS_DIR,
    command: str = "python -m everanimate_core bench drift",
    log=print,
    cache_dir: Path | None = None,
) -> dict:
    """Run the benchmark; writes drift_results.md/.json and drift_psnr.svg to ``out_dir``.

    With ``cache_dir`` every finished (variant, sequence) run is kept there and reused by a later
    call with the same horizon, steps and weights, so an interrupted benchmark resumes."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"Unknown variants {unknown}; choose from {list(VARIANTS)}.")
    if seconds < max(HORIZONS_S):
        raise ConfigError(f"The benchmark needs at least {max(HORIZONS_S)} s to report every horizon.")
    for v in variants:
        if VARIANTS[v].lora and not (lora_dir / f"{VARIANTS[v].lora}.safetensors").exists():
            _backend(VARIANTS[v], lora_dir)  # raises the explanatory error
    cache = str(cache_dir) if cache_dir is not None else ""
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    runs: list[dict] = []
    tasks = []
    for v in variants:
        for i in range(sequences):
            hit = _cache_path(Path(cache_dir), VARIANTS[v], i, seconds, steps, lora_dir) if cache_dir is not None else None
            if hit is not None and hit.exists():
                runs.append(json.loads(hit.read_text()))
            else:
                tasks.append((v, i, seconds, steps, str(lora_dir), cache))
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
    from ..tiny.backend import TinyModelConfig

    mc = TinyModelConfig()
    runs.sort(key=lambda r: (list(VARIANTS).index(r["variant"]), r["index"]))
    summary = summarize(runs, mc.fps)
    plan = plan_for_driving(int(seconds * mc.fps), mc.chunk_settings, None, "pingpong")
    meta = {"command": command, "sequences": sequences, "seconds": seconds, "fps": mc.fps, "frames": int(seconds * mc.fps),
            "chunks": len(plan), "chunk_frames": mc.frames, "steps": steps, "wall_s": wall, "workers": workers,
            "variants": list(variants), "runs_reused": len(runs) - len(tasks), "runs_computed": len(tasks),
            "run_s_mean": float(np.mean([r.get("run_s", float("nan")) for r in runs])),
            "run_s_total": float(np.sum([r.get("run_s", float("nan")) for r in runs]))}
    table = markdown_table(summary, meta)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "drift_results.md").write_text(table)
        (out_dir / "drift_psnr.svg").write_text(svg_plot(summary, mc.fps))
        slim = {k: {"scores": v["scores"], "psnr_curve": v["psnr_curve"]} for k, v in summary.items()}
        (out_dir / "drift_results.json").write_text(json.dumps({"meta": meta, "variants": slim}, indent=1))
    return {"meta": meta, "summary": summary, "table": table}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="everanimate_core bench drift", description=__doc__.split("\n\n")[0])
    p.add_argument("--sequences", type=int, default=20)
    p.add_argument("--seconds", type=int, default=90)
    p.add_argument("--steps", type=int, default=defaults.STEPS)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--lora-dir", default=str(LORA_DIR))
    p.add_argument("--out", default=str(DOCS_DIR), help="where the table, JSON and plot go")
    p.add_argument("--cache", default="outputs/drift_cache",
                   help="keep every finished run here and reuse it (resume); '' to disable")
    a = p.parse_args(argv)
    cmd = "python -m everanimate_core bench drift" + (" " + " ".join(argv) if argv else "")
    res = bench_drift(a.sequences, a.seconds, a.steps, tuple(v for v in a.variants.split(",") if v), a.workers,
                      Path(a.lora_dir), Path(a.out), cmd, cache_dir=Path(a.cache) if a.cache else None)
    print(res["table"])
