"""The main job on the embedded tiny model: a minute of animation of a held-out dancer.

    python -m everanimate_core demo [--seconds 60] [--out outputs/demo] [--still] [--threads N]

Runs the same chunk loop as the ComfyUI nodes (``pipeline.run_animation``) with EverAnimate-Tiny,
streams the animation to an MP4 and a side-by-side (generated | ground truth | pose) MP4, and prints
the frame count, duration, wall time and PSNR/SSIM against the ground truth for the first and the
last 10 seconds. The dancer dances in a held-out clip of the stateful world (``tiny/world.py``: a
camera that pans over a wide plate, a wall panel that changes colour, a ball), whose state only
earlier frames show, so the model must carry it in its latent memory; ``--still`` takes a still
SynthDance scene instead.

Before it starts, the demo times one model call and one decode at each thread count it may use and
keeps the fastest: at these tensor sizes torch's default threads can be many times slower than one.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import defaults
from ..errors import ConfigError
from .metrics import SeamMeter, psnr, ssim
from ..pipeline import AnimationSettings, LoopHooks, RunInputs, run_animation, run_config
from ..plan import plan_for_driving
from ..infra.runs import RunStore
from ..tiny.backend import load_tiny
from ..tiny.synthdance import make_sequence
from ..tiny.world import make_world_sequence
from ..infra.video import StreamingVideoWriter, side_by_side

try:
    from tqdm import tqdm
except ImportError:  # pragma: no cover
    tqdm = None


@dataclass
class WindowScores:
    """Running PSNR/SSIM over frames [start, stop) of the output."""

    start: int
    stop: int
    psnr: list = field(default_factory=list)
    ssim: list = field(default_factory=list)
    weights: list = field(default_factory=list)

    def update(self, first: int, gen: np.ndarray, gt: np.ndarray) -> None:
        lo, hi = max(self.start, first), min(self.stop, first + len(gen))
        if lo >= hi:
            return
        g, t = gen[lo - first : hi - first], gt[lo - first : hi - first]
        self.psnr.append(psnr(g, t))
        self.ssim.append(ssim(g, t))
        self.weights.append(hi - lo)

    def result(self) -> tuple[float, float]:
        w = np.asarray(self.weights, float)
        return float(np.average(self.psnr, weights=w)), float(np.average(self.ssim, weights=w))


def thread_candidates() -> list[int]:
    """1, 2, 4, ... up to the cores this process may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    out, n = [], 1
    while n <= cores:
        out.append(n)
        n *= 2
    if out[-1] != cores:
        out.append(cores)
    return out


def fastest_threads(backend, candidates: list[int] | None = None, repeats: int = 3) -> tuple[int, dict[int, float]]:
    """Time one denoiser call and one chunk decode at each thread count; (fastest, seconds per count).
    Leaves torch at the fastest count."""
    import torch

    mc = backend.config
    side = mc.height // mc.vae_factor
    g = 1 + (mc.frames - 1) // 4
    k = mc.anchors
    x = torch.zeros(1, mc.latent_channels, k + g, side, side)
    y = torch.zeros(1, 4 + mc.latent_channels, k + g, side, side)
    pose = torch.zeros(1, mc.latent_channels, g, side, side)
    t = torch.full((1,), 500.0)
    times: dict[int, float] = {}
    with torch.no_grad():
        for n in candidates or thread_candidates():
            torch.set_num_threads(n)
            backend.dit(x, t, y, pose, k)  # warm-up
            t0 = time.perf_counter()
            for _ in range(repeats):
                backend.dit(x, t, y, pose, k)
                backend.vae.decode(x[:, :, k:])
            times[n] = (time.perf_counter() - t0) / repeats
    best = min(times, key=times.get)
    torch.set_num_threads(best)
    return best, times


def run_demo(
    seconds: float = 60.0,
    out_dir: str | Path = "outputs/demo",
    index: int = 0,
    steps: int = defaults.STEPS,
    resume: bool = False,
    quiet: bool = False,
    weights_dir: str | Path | None = None,
    world: bool = True,
    threads: int | None = None,
) -> dict:
    """Render ``seconds`` of a held-out dancer with EverAnimate-Tiny; returns the printed summary.
    ``world``: a clip of the stateful world (default) or a still scene. ``threads``: torch threads (None: the fastest of a quick timing at start-up)."""
    import torch

    backend = load_tiny(weights_dir)
    mc = backend.config
    if threads is None:
        threads, thread_times = fastest_threads(backend)
    else:
        if threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}.")
        torch.set_num_threads(threads)
        thread_times = {}
    total = int(round(seconds * mc.fps))
    if total < 1:
        raise ConfigError(f"--seconds {seconds:g} gives no frame at {mc.fps:g} fps; ask for at least {1 / mc.fps:g} s.")
    make = make_world_sequence if world else make_sequence
    seq = make(index, "test", mc.height, mc.width, mc.fps)
    reference = seq.reference()
    pose = seq.pose(0, total)  # the driving video, loaded up front as a Load Video node would
    inputs = RunInputs(reference, pose)
    settings = AnimationSettings(chunk=mc.chunk_settings, steps=steps)
    plan = plan_for_driving(total, settings.chunk)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = None
    if resume:
        run = RunStore(out / "run", run_config(settings, inputs, total, extra={"demo_index": index, "world": world}))
    ten = int(round(10 * mc.fps))
    first, last = WindowScores(0, min(ten, total)), WindowScores(max(0, total - ten), total)
    seams = SeamMeter(plan.seam_frames)
    bar = None if quiet or tqdm is None else tqdm(total=len(plan) * steps, desc="EverAnimate-Tiny", unit="step", dynamic_ncols=True, mininterval=0.5)
    written = [0]
    scoring = [0.0]  # the demo's own ground-truth rendering, scoring and side-by-side

    def on_step(c: int, i: int, n: int, x) -> None:
        if bar is not None:
            bar.update(1)
            bar.set_postfix(chunk=f"{c + 1}/{len(plan)}")

    video_path, sbs_path = out / "everanimate_tiny.mp4", out / "everanimate_tiny_side_by_side.mp4"
    t0 = time.perf_counter()
    with StreamingVideoWriter(video_path, mc.fps) as video, StreamingVideoWriter(sbs_path, mc.fps) as sbs:

        class Sink:
            """Writes kept frames and scores them against the ground truth as they arrive."""

            def write(self, frames: np.ndarray) -> None:
                start = written[0]
                video.write(frames)
                t = time.perf_counter()
                gt = seq.frames(start, start + len(frames))
                sbs.write(side_by_side(frames, gt, seq.pose(start, start + len(frames)), scale=2))
                first.update(start, frames, gt)
                last.update(start, frames, gt)
                seams.update(frames, start)
                scoring[0] += time.perf_counter() - t
                written[0] += len(frames)

        if bar is not None and run is not None and run.finished():
            bar.update(run.finished() * steps)
        plan, memory, stats = run_animation(backend, inputs, settings, Sink(), store=run, hooks=LoopHooks(on_step=on_step))
    wall = time.perf_counter() - t0
    if bar is not None:
        bar.close()
    loop_time = stats.total - scoring[0]
    overhead = max(0.0, loop_time - stats.model_and_vae) / loop_time if loop_time > 0 else 0.0
    p0, s0 = first.result()
    p1, s1 = last.result()
    summary = {
        "frames": written[0],
        "driving_frames": total,
        "fps": mc.fps,
        "duration_s": written[0] / mc.fps,
        "chunks": len(plan),
        "wall_s": round(wall, 2),
        "loop_overhead_fraction": round(overhead, 4),
        "demo_scoring_s": round(scoring[0], 2),
        "first_10s": {"psnr": round(p0, 2), "ssim": round(s0, 4)},
        "last_10s": {"psnr": round(p1, 2), "ssim": round(s1, 4)},
        "seam_ratio": round(seams.seam_ratio, 3),
        "scene": "world" if world else "plain",
        "threads": threads,
        "thread_timing_s": {str(k): round(v, 4) for k, v in thread_times.items()},
        "video": str(video_path),
        "side_by_side": str(sbs_path),
    }
    if not quiet:
        print(
            f"{summary['frames']} frames ({summary['duration_s']:.1f} s at {mc.fps:g} fps, "
            f"{summary['chunks']} chunks) in {wall:.1f} s wall on {threads} thread(s)\n"
            f"first 10 s: PSNR {p0:.2f} dB, SSIM {s0:.4f}\n"
            f"last 10 s:  PSNR {p1:.2f} dB, SSIM {s1:.4f}\n"
            f"seam ratio {summary['seam_ratio']}, loop overhead {100 * overhead:.2f}% "
            f"(time outside model and VAE calls, the demo's own scoring excluded)\n"
            f"video: {video_path}\nside by side (generated | ground truth | pose): {sbs_path}"
        )
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="everanimate_core demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="length of the animation (default 60)")
    p.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    p.add_argument("--index", type=int, default=0, help="held-out sequence (default 0)")
    scene = p.add_mutually_exclusive_group()
    scene.add_argument("--world", dest="still", action="store_false", help="a clip of the stateful world (the default)")
    scene.add_argument("--still", action="store_true", help="a still SynthDance scene instead of the stateful world")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: the fastest of a quick timing)")
    p.add_argument("--steps", type=int, default=defaults.STEPS, help="sampling steps per chunk (release: 20)")
    p.add_argument("--resume", action="store_true", help="checkpoint every chunk in OUT/run and resume from it")
    p.set_defaults(still=False)  # both flags share one destination: the default must be said once, here
    a = p.parse_args(argv)
    run_demo(a.seconds, a.out, a.index, a.steps, a.resume, world=not a.still, threads=a.threads)
