"""Benchmarks that print numbers (no timed tests): loop overhead, memory growth, VAE round trips.

    python -m everanimate_core bench loop   [--chunks 51] [--steps 20]
    python -m everanimate_core bench vae    [--sequences 8]
    python -m everanimate_core bench chunk0 [--sequences 8]
    python -m everanimate_core bench drift  [--sequences 20] [--seconds 90] (see everanimate_core.apps.drift)
    python -m everanimate_core bench run-folder [--seconds 60]
    python -m everanimate_core bench colour [--sequences 4] [--seconds 60] [--cast 0.03]
    python -m everanimate_core bench background [--sequences 4] [--seconds 30]
    python -m everanimate_core bench world  [--sequences 20] [--seconds 90] (see everanimate_core.tiny.world)
    python -m everanimate_core bench quality [--weights DIR] (see everanimate_core.apps.quality)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from .. import defaults
from .metrics import psnr, ssim
from ..pipeline import AnimationSettings, ChunkLoop, LoopHooks, RunInputs, run_animation
from ..plan import frames_for_chunks, plan_chunks
from ..tiny.backend import load_tiny
from ..tiny.synthdance import make_sequence
from ..tiny.vae import frames_to_tensor, tensor_to_frames
from ..infra.video import StreamingVideoWriter


def rss_mb() -> float:
    """Resident set size of this process in MB (Linux /proc; 0 elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def bench_loop(chunks: int = 51, steps: int = defaults.STEPS, index: int = 1) -> dict:
    """A long tiny run streamed to MP4: share of time outside model/VAE, RSS at chunks 5 and 50."""
    be = load_tiny()
    mc = be.config
    settings = AnimationSettings(chunk=mc.chunk_settings, steps=steps)
    total = frames_for_chunks(chunks, settings.chunk)
    seq = make_sequence(index, "test", mc.height, mc.width, mc.fps)
    rss: dict[int, float] = {}

    def on_chunk(out, n):
        rss[out.chunk.index] = rss_mb()

    with tempfile.TemporaryDirectory() as d:
        with StreamingVideoWriter(Path(d) / "bench.mp4", mc.fps) as w:
            plan, memory, stats = run_animation(
                be, RunInputs(seq.reference(), seq.pose(0, total)), settings, w, hooks=LoopHooks(on_chunk=on_chunk)
            )
    a, b = min(5, chunks - 1), chunks - 1
    result = {
        "chunks": len(plan),
        "frames": total,
        "steps": steps,
        "wall_s": round(stats.total, 2),
        "model_and_vae_s": round(stats.model_and_vae, 2),
        "loop_overhead_pct": round(100 * stats.overhead_fraction, 3),
        "mp4_encode_s": round(stats.sink, 2),
        "loop_overhead_excl_mp4_pct": round(100 * max(0.0, stats.total - stats.model_and_vae - stats.sink) / stats.total, 3),
        "anchor_encodes": stats.anchor_encodes,
        "anchor_encodes_after_chunk0": stats.anchor_encodes - 1 - (settings.chunk.anchors - 1),
        "pose_encodes_per_chunk": stats.pose_encodes / len(plan),
        f"rss_mb_chunk{a}": round(rss[a], 1),
        f"rss_mb_chunk{b}": round(rss[b], 1),
        "rss_growth_mb": round(rss[b] - rss[a], 1),
    }
    return result


@torch.no_grad()
def bench_vae(sequences: int = 8, frames: int = 33) -> dict:
    """PSNR of a decoded/re-encoded video after 1, 5, 10, 20 VAE round trips (held-out data)."""
    be = load_tiny()
    mc = be.config
    rounds = [1, 5, 10, 20]
    scores: dict[int, list] = {r: [] for r in rounds}
    for i in range(sequences):
        seq = make_sequence(i, "test", mc.height, mc.width, mc.fps)
        gt = seq.frames(0, frames)
        x = frames_to_tensor(gt)
        for r in range(1, max(rounds) + 1):
            x = be.vae.decode(be.vae.encode(x))
            x = frames_to_tensor(tensor_to_frames(x))  # through uint8, as a real pipeline would
            if r in scores:
                scores[r].append(psnr(tensor_to_frames(x).numpy(), gt))
    return {f"psnr_after_{r}_roundtrips": round(float(np.mean(v)), 2) for r, v in scores.items()}


@torch.no_grad()
def bench_chunk0(sequences: int = 8, steps: int = defaults.STEPS) -> dict:
    """Chunk-0 quality of the tiny model on held-out dancers: PSNR/SSIM vs ground truth."""
    be = load_tiny()
    mc = be.config
    settings = AnimationSettings(chunk=mc.chunk_settings, steps=steps)
    chunk = plan_chunks(mc.frames, settings.chunk)[0]
    loop = ChunkLoop(be, settings)
    ps, ss, vae_ps = [], [], []
    for i in range(sequences):
        seq = make_sequence(i, "test", mc.height, mc.width, mc.fps)
        gt = seq.frames(0, mc.frames)
        inputs = RunInputs(seq.reference(), seq.pose(0, mc.frames))
        _, frames, _ = loop.generate(loop.start(inputs.reference), chunk, inputs)
        ps.append(psnr(frames, gt))
        ss.append(ssim(frames, gt))
        vae_ps.append(psnr(tensor_to_frames(be.vae.decode(be.vae.encode(frames_to_tensor(gt)))).numpy(), gt))
    return {
        "sequences": sequences,
        "chunk0_psnr": round(float(np.mean(ps)), 2),
        "chunk0_psnr_min": round(float(np.min(ps)), 2),
        "chunk0_ssim": round(float(np.mean(ss)), 4),
        "vae_reconstruction_psnr": round(float(np.mean(vae_ps)), 2),
    }


def bench_run_folder(seconds: float = 60.0, fps: int = 16, height: int = defaults.HEIGHT, width: int = defaults.WIDTH, index: int = 1) -> dict:
    """Disk use of a run folder per minute of video at the release's chunking (77 frames, overlap 4,
    K = 4): each chunk's kept frames as the real FFV1 segment and its latent-memory checkpoint with
    Wan-sized latents (16 channels at 1/8 resolution). Frames are SynthDance renders at full size."""
    from ..memory import init_memory, propagate
    from ..infra.runs import RunStore
    from ..pipeline import run_config

    settings = AnimationSettings()
    total = int(round(seconds * fps))
    plan = plan_chunks(total, settings.chunk)
    seq = make_sequence(index, "test", height, width, fps)
    c, h, w = 16, height // 8, width // 8
    g = torch.Generator().manual_seed(0)

    def encode(frame):
        return torch.randn(c, 1, h, w, generator=g)

    with tempfile.TemporaryDirectory() as d:
        run = RunStore(Path(d) / "run", run_config(settings, RunInputs(seq.reference(), range(total)), total))
        memory = init_memory(encode(None), settings.chunk.anchors, settings.anchor_policy, settings.anchor_seed)
        t = time.perf_counter()
        for chunk in plan:
            kept = seq.frames(chunk.keep_start, chunk.keep_start + chunk.keep)  # chunk 0 keeps all its frames
            latents = torch.randn(c, chunk.latents, h, w, generator=g)
            memory = propagate(memory, latents, kept, encode, settings.chunk.motion_latents)
            run.save_chunk(chunk.index, memory, kept)
        wall = time.perf_counter() - t
        files = list(run.path.iterdir())
        segments = sum(p.stat().st_size for p in files if p.name.startswith("frames_"))
        checkpoints = sum(p.stat().st_size for p in files if p.name.startswith("chunk_"))
        other = sum(p.stat().st_size for p in files) - segments - checkpoints
    per_minute = 60.0 / (total / fps) / 1e6
    raw = total * height * width * 3
    return {
        "seconds": total / fps, "frames": total, "chunks": len(plan), "size": f"{width}x{height}",
        "segments_mb": round(segments / 1e6, 1), "checkpoints_mb": round(checkpoints / 1e6, 1), "other_mb": round(other / 1e6, 3),
        "segments_mb_per_minute": round(segments * per_minute, 1),
        "checkpoints_mb_per_minute": round(checkpoints * per_minute, 1),
        "total_mb_per_minute": round((segments + checkpoints + other) * per_minute, 1),
        "ffv1_vs_raw_rgb": round(segments / raw, 3),
        "render_and_write_s": round(wall, 1),
    }


def _cast(frames: np.ndarray, k: int, per_chunk: float) -> np.ndarray:
    """A Wan-like drift for chunk k: saturation and brightness grow by ``per_chunk`` per chunk."""
    x = frames.astype(np.float32)
    grey = x.mean(axis=-1, keepdims=True)
    x = (grey + (x - grey) * (1 + 2 * per_chunk * k)) * (1 + per_chunk * k)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def bench_colour(sequences: int = 4, seconds: float = 60.0, steps: int = defaults.STEPS, cast: float = 0.03) -> dict:
    """Seam ratio, colour drift (delta-E of each chunk's mean colour to the reference) and PSNR of
    the colour match's methods on EverAnimate-Tiny runs of held-out dancers, as generated and with
    a simulated Wan-like cast growing per chunk (``cast``). The match touches the output only, so
    one generation per sequence serves every method."""
    from ..colour import COLOUR_METHODS, ColourMatch, MatchedSink, colour_drift, seam_ratio

    be = load_tiny()
    mc = be.config
    settings = AnimationSettings(chunk=mc.chunk_settings, steps=steps)
    total = int(round(seconds * mc.fps))
    rows: dict[str, dict[str, list]] = {}
    for i in range(sequences):
        seq = make_sequence(i, "test", mc.height, mc.width, mc.fps)
        chunks: list[np.ndarray] = []
        plan, _, _ = run_animation(be, RunInputs(seq.reference(), seq.pose(0, total)), settings,
                                   hooks=LoopHooks(on_chunk=lambda o, n: chunks.append(o.kept_frames)))
        starts = [c.keep_start for c in plan.chunks]
        gt = seq.frames(0, total)
        for source, raw in (("generated", chunks), ("with_cast", [_cast(c, k, cast) for k, c in enumerate(chunks)])):
            for method in COLOUR_METHODS:
                for target in (("reference", "anchors") if method != "none" else ("reference",)):
                    out: list[np.ndarray] = []

                    class Collect:
                        def write(self, frames):
                            out.append(frames)

                    sink = MatchedSink(Collect(), ColourMatch(method, 1.0, target), seq.reference())
                    for c in raw:
                        sink.write(c)
                    video = np.concatenate(out)
                    drift = colour_drift(video, seq.reference(), chunk_starts=starts)
                    r = rows.setdefault(f"{source}/{method}" + ("" if method == "none" else f"/{target}"), {"seam": [], "first": [], "last": [], "psnr": []})
                    r["seam"].append(seam_ratio(video, starts))
                    r["first"].append(float(drift[0]))
                    r["last"].append(float(drift[-1]))
                    r["psnr"].append(psnr(video, gt))
    return {
        "sequences": sequences, "seconds": total / mc.fps, "chunks": len(starts), "cast_per_chunk": cast,
        "rows": {k: {"seam_ratio": round(float(np.mean(v["seam"])), 3),
                     "drift_first_chunk_dE": round(float(np.mean(v["first"])), 2),
                     "drift_last_chunk_dE": round(float(np.mean(v["last"])), 2),
                     "psnr_db": round(float(np.mean(v["psnr"])), 2)} for k, v in rows.items()},
    }


def bench_background(sequences: int = 4, seconds: float = 30.0, steps: int = defaults.STEPS, strengths=(0.0, 1.0, 2.0)) -> dict:
    """Replacement mode on EverAnimate-Tiny: background PSNR (outside the dancer, against the ground
    truth) per chunk, with the opt-in background restoration off (0) and on, beside animation mode.
    The background video is the ground truth with the dancer greyed out; the mask is the dancer."""
    from dataclasses import replace

    from ..replace import ReplacementSource
    from ..sampler import BackgroundRestoration
    from .metrics import background_psnr

    be = load_tiny()
    mc = be.config
    base = AnimationSettings(chunk=mc.chunk_settings, steps=steps)
    total = int(round(seconds * mc.fps))
    rows: dict[str, list[list[float]]] = {}
    for i in range(sequences):
        seq = make_sequence(i, "test", mc.height, mc.width, mc.fps)
        gt, figure = seq.render(0, total)
        bg = np.where(figure[..., None], np.uint8(128), gt)
        runs = {"animation mode": (base, None)}
        for s in strengths:
            restoration = None if s == 0 else BackgroundRestoration(strength=s)
            runs[f"replacement, background restoration {s:g}"] = (
                replace(base, background_restoration=restoration),
                ReplacementSource(bg, figure.astype(np.float32), mc.width, mc.height, total),
            )
        for name, (settings, source) in runs.items():
            per_chunk: list[float] = []

            def score(out, n, per_chunk=per_chunk):
                a = out.chunk.keep_start
                frames, truth, fig = out.kept_frames, gt[a : a + len(out.kept_frames)], figure[a : a + len(out.kept_frames)]
                per_chunk.append(float(np.mean([min(background_psnr(f, g, m), 100.0) for f, g, m in zip(frames, truth, fig)])))

            run_animation(be, RunInputs(seq.reference(), seq.pose(0, total), replacement=source), settings, hooks=LoopHooks(on_chunk=score))
            rows.setdefault(name, []).append(per_chunk)
    out = {"sequences": sequences, "seconds": total / mc.fps, "steps": steps, "rows": {}}
    for name, runs_ in rows.items():
        m = np.mean(np.array(runs_), axis=0)
        out["rows"][name] = {"bg_psnr_chunk0": round(float(m[0]), 2), "bg_psnr_last_chunk": round(float(m[-1]), 2),
                             "bg_psnr_mean": round(float(m.mean()), 2), "chunks": len(m)}
    return out


def main(argv: list[str] | None = None) -> None:
    if argv and argv[0] == "drift":
        from .drift import main as drift_main

        drift_main(argv[1:])
        return
    if argv and argv[0] == "world":
        from ..tiny.world import main as world_main

        world_main(argv[1:])
        return
    if argv and argv[0] == "quality":
        from .quality import main as quality_main

        quality_main(argv[1:])
        return
    p = argparse.ArgumentParser(prog="everanimate_core bench", description=__doc__.split("\n\n")[0])
    p.add_argument("which", choices=["loop", "vae", "chunk0", "all", "drift", "run-folder", "world", "quality", "colour", "background"])
    p.add_argument("--chunks", type=int, default=51)
    p.add_argument("--steps", type=int, default=defaults.STEPS)
    p.add_argument("--sequences", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60.0, help="run-folder: seconds of 480x832 video at 16 fps")
    p.add_argument("--cast", type=float, default=0.03, help="colour: simulated saturation/brightness growth per chunk")
    a = p.parse_args(argv)
    torch.manual_seed(0)
    results = {}
    t = time.perf_counter()
    if a.which in ("vae", "all"):
        results["vae_roundtrip"] = bench_vae(a.sequences)
    if a.which in ("chunk0", "all"):
        results["chunk0"] = bench_chunk0(a.sequences, a.steps)
    if a.which in ("loop", "all"):
        results["loop"] = bench_loop(a.chunks, a.steps)
    if a.which == "run-folder":
        results["run_folder"] = bench_run_folder(a.seconds)
    if a.which == "background":
        torch.set_num_threads(1)
        results["background"] = bench_background(min(a.sequences, 4) if a.sequences == 8 else a.sequences, a.seconds if a.seconds != 60.0 else 30.0, a.steps)
    if a.which == "colour":
        torch.set_num_threads(1)  # at the tiny model's sizes one thread is the fastest on 2 cores
        results["colour"] = bench_colour(min(a.sequences, 4) if a.sequences == 8 else a.sequences, a.seconds, a.steps, a.cast)
    results["bench_wall_s"] = round(time.perf_counter() - t, 1)
    print(json.dumps(results, indent=1))
