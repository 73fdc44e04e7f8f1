"""Widgets shared by the Chunk Sampler and the Long Animation node, and their translation into the
core's AnimationSettings. Every default is the core's release default (``everanimate_core.defaults``)."""

from __future__ import annotations

from .api_version import io

from everanimate_core import defaults as release
from everanimate_core.errors import ConfigError
from everanimate_core.flow import ALPHA_SCHEDULES, AlphaSchedule
from everanimate_core.memory import ANCHOR_POLICIES
from everanimate_core.pipeline import AnimationSettings
from everanimate_core.plan import WINDOW_MODES, ChunkSettings
from everanimate_core.sampler import SEED_POLICIES, AnchorRestoration, BackgroundRestoration

RESTORATION_MODES = ("off", "anchors", "background", "anchors+background")
RESTORATION_SCHEDULES = tuple(s for s in ALPHA_SCHEDULES if s != "augmented_velocity")


def size_inputs() -> list:
    """Output size widgets (release 832x480)."""
    return [
        io.Int.Input("width", default=release.WIDTH, min=16, max=4096, step=16, tooltip="Video width, a multiple of 16 (release 832)."),
        io.Int.Input("height", default=release.HEIGHT, min=16, max=4096, step=16, tooltip="Video height, a multiple of 16 (release 480)."),
    ]


def chunk_inputs() -> list:
    """Chunk-shape widgets (release: 77 frames, overlap 4)."""
    return [
        io.Int.Input("frames_per_chunk", default=release.FRAMES, min=5, max=257, step=4, tooltip="Frames per model call; must be 1 mod 4 (release 77)."),
        io.Int.Input("overlap", default=release.OVERLAP, min=0, max=64, tooltip="Frames each chunk shares with the previous one, dropped after decoding (release 4)."),
    ]


def anchor_inputs() -> list:
    return [
        io.Int.Input("anchors", default=release.ANCHORS, min=1, max=16, tooltip="K, the anchor latent slots in front of every chunk (release 4; 1 = native layout)."),
        io.Combo.Input("anchor_policy", options=list(ANCHOR_POLICIES), default=release.ANCHOR_POLICY, tooltip="How anchors are chosen after chunk 0: K-1 seeded random frames of chunk 0 + the reference (release), the reference repeated, pose-diverse frames, or your anchor images."),
        io.Int.Input("anchor_seed", default=release.ANCHOR_SEED, min=0, max=2**31 - 1, control_after_generate=False, tooltip="Seed of the random anchor pick (the release leaves it unseeded)."),
    ]


def seed_inputs() -> list:
    """The chunk seeds and how a short driving video is read (shared with Chunk Conditioning)."""
    return [
        io.Int.Input(
            "seed", default=release.SEED, min=0, max=2**31 - 1, control_after_generate=True,
            tooltip="Base seed; with the 'multiply' policy chunk c uses seed*c (release 42*c). Keep its control on 'fixed': re-queueing the same settings then resumes the run.",
        ),
        io.Combo.Input("seed_policy", options=list(SEED_POLICIES), default=release.SEED_POLICY, tooltip="multiply: seed*c (release); increment: seed+c; fixed: seed for every chunk."),
        io.Combo.Input("window_mode", options=list(WINDOW_MODES), default=release.WINDOW_MODE, tooltip="How a driving video shorter than needed is read: pingpong (release), loop, hold the last frame, or strict (error)."),
    ]


def sampling_inputs() -> list:
    return [
        io.Int.Input("steps", default=release.STEPS, min=1, max=200, tooltip="Euler steps per chunk (release 20); ignored when a SIGMAS input is connected."),
        io.Float.Input("cfg", default=release.CFG, min=0.0, max=30.0, step=0.1, tooltip="Classifier-free guidance (release 1.0: the negative is not evaluated)."),
        io.Float.Input("shift", default=release.SHIFT, min=0.01, max=100.0, step=0.1, tooltip="Sigma shift of the schedule (release 5)."),
        *seed_inputs(),
        io.Combo.Input("restoration", options=list(RESTORATION_MODES), default="off", tooltip="off = the release (restoration lives in the LoRA). anchors = opt-in inference-time restoration of the anchor slots (experimental). background = in replacement mode, pull the known background (outside the character mask) toward the background video's trajectory; anchors+background = both."),
        io.Float.Input("restoration_strength", default=release.RESTORATION_STRENGTH, min=0.0, max=10.0, step=0.05, tooltip="Scale of the restorative velocity term when restoration is on."),
        io.Combo.Input("restoration_schedule", options=list(RESTORATION_SCHEDULES), default=release.RESTORATION_SCHEDULE, tooltip="alpha(sigma) of the restorative term (the released LoRA was trained with gaussian_timestep)."),
    ]


def sampler_inputs() -> list:
    """Optional stock SAMPLER / SIGMAS sockets: few-step distilled LoRAs and other samplers."""
    return [
        io.Sampler.Input("sampler", optional=True, tooltip="Optional SAMPLER (e.g. KSamplerSelect) used for every chunk instead of the release's Euler; per-chunk seeds and the latent memory stay the same. Not with restoration 'anchors'."),
        io.Sigmas.Input("sigmas", optional=True, tooltip="Optional SIGMAS (e.g. BasicScheduler, 4-8 steps for a distilled LoRA) used for every chunk instead of steps + shift; the steps widget is then ignored."),
    ]


def build_settings(kw: dict) -> AnimationSettings:
    """AnimationSettings from the widget values (validates combos: ComfyUI does not for V3)."""
    for name, options in (
        ("anchor_policy", ANCHOR_POLICIES),
        ("seed_policy", SEED_POLICIES),
        ("window_mode", WINDOW_MODES),
        ("restoration", RESTORATION_MODES),
        ("restoration_schedule", RESTORATION_SCHEDULES),
    ):
        if name in kw and kw[name] not in options:
            raise ConfigError(f"{name} must be one of {options}; got {kw[name]!r}.")
    mode = kw.get("restoration", "off")
    schedule = AlphaSchedule(kw.get("restoration_schedule", release.RESTORATION_SCHEDULE), release.RESTORATION_WEIGHT)
    strength = float(kw.get("restoration_strength", release.RESTORATION_STRENGTH))
    restoration = AnchorRestoration(schedule, strength) if "anchors" in mode else None
    background = BackgroundRestoration(schedule, strength) if "background" in mode else None
    return AnimationSettings(
        chunk=ChunkSettings(int(kw["frames_per_chunk"]), int(kw["overlap"]), int(kw["anchors"])),
        steps=int(kw.get("steps", release.STEPS)),
        shift=float(kw.get("shift", release.SHIFT)),
        seed=int(kw.get("seed", release.SEED)),
        seed_policy=kw.get("seed_policy", release.SEED_POLICY),
        anchor_policy=kw.get("anchor_policy", release.ANCHOR_POLICY),
        anchor_seed=int(kw.get("anchor_seed", release.ANCHOR_SEED)),
        window_mode=kw.get("window_mode", release.WINDOW_MODE),
        restoration=restoration,
        background_restoration=background,
        sigmas=None if kw.get("sigmas") is None else tuple(float(x) for x in kw["sigmas"].flatten().tolist()),
    )


def cfg_of(kw: dict) -> float:
    """The cfg widget's value (release 1.0)."""
    return float(kw.get("cfg", release.CFG))
