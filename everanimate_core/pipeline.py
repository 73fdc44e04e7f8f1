"""The long-horizon chunk loop, shared by the ComfyUI nodes, the tiny-model demo and the benchmarks.

Data flows one way: plan -> memory -> layout -> sampler (through a backend) -> stitch/state.
A *backend* hands the loop its model and VAE (the embedded tiny model, or ComfyUI's MODEL/VAE);
everything EverAnimate-specific (windows, anchors, motion carry, seeds, trimming, checkpoints) lives
here, once.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from . import defaults
from .errors import ConfigError, DrivingVideoError, NonFiniteError
from .flow import is_finite, sampling_sigmas
from .layout import SlotLayout, build_condition
from .memory import ANCHOR_POLICIES, LatentMemory, init_memory, propagate
from .replace import ReplacementSource, chunk_replacement_condition
from .plan import ChunkPlan, ChunkSettings, ChunkWindow, chunk_driving_indices, driving_indices, plan_for_driving
from .sampler import SEED_POLICIES, AnchorRestoration, BackgroundRestoration, BackgroundTarget, chunk_noise, chunk_seed
from .infra.identity import config_fingerprint, reference_identity


MOTION_CARRIES = ("latent", "decoded")


@dataclass(frozen=True)
class AnimationSettings:
    """Every setting that changes the output (all of it enters the run fingerprint)."""

    chunk: ChunkSettings = field(default_factory=ChunkSettings)
    steps: int = defaults.STEPS
    shift: float = defaults.SHIFT
    seed: int = defaults.SEED
    seed_policy: str = defaults.SEED_POLICY
    anchor_policy: str = defaults.ANCHOR_POLICY
    anchor_seed: int = defaults.ANCHOR_SEED
    window_mode: str = defaults.WINDOW_MODE
    restoration: AnchorRestoration | None = None
    motion_carry: str = "latent"  # latent (EverAnimate) | decoded (the drift benchmark's baseline)
    sigmas: tuple[float, ...] | None = None  # a user's sigma list (1 ... 0); None = steps + shift
    background_restoration: BackgroundRestoration | None = None  # replacement mode's opt-in background term

    def __post_init__(self) -> None:
        if self.seed_policy not in SEED_POLICIES:
            raise ConfigError(f"Unknown seed policy {self.seed_policy!r}; choose one of {SEED_POLICIES}.")
        if self.anchor_policy not in ANCHOR_POLICIES:
            raise ConfigError(
                f"Unknown anchor policy {self.anchor_policy!r}; choose one of {ANCHOR_POLICIES}."
            )
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}.")
        if self.motion_carry not in MOTION_CARRIES:
            raise ConfigError(f"Unknown motion carry {self.motion_carry!r}; choose one of {MOTION_CARRIES}.")
        if self.sigmas is not None:
            s = self.sigmas
            if len(s) < 2 or any(b > a for a, b in zip(s, s[1:])) or not all(map(math.isfinite, s)) or s[-1] != 0:
                raise ConfigError(
                    f"The SIGMAS input must be a falling list of at least 2 finite values ending at 0 (e.g. "
                    f"from BasicScheduler at denoise 1); got {[round(x, 4) for x in s][:8]}{' ...' if len(s) > 8 else ''}."
                )

    @property
    def num_steps(self) -> int:
        """Model calls per chunk: the sigma list's steps when one is given, else ``steps``."""
        return self.steps if self.sigmas is None else len(self.sigmas) - 1

    def sigma_list(self) -> torch.Tensor:
        """The chunk's sigma list: the user's, or the release's ``sampling_sigmas(steps, shift)``."""
        if self.sigmas is None:
            return sampling_sigmas(self.steps, self.shift)
        return torch.tensor(self.sigmas, dtype=torch.float32)

    def as_dict(self) -> dict:
        """Plain dict for the fingerprint and the run folder's JSON."""
        r = self.restoration
        return {
            "chunk": self.chunk.as_dict(),
            "steps": self.steps,
            "shift": float(self.shift),
            "seed": self.seed,
            "seed_policy": self.seed_policy,
            "anchor_policy": self.anchor_policy,
            "anchor_seed": self.anchor_seed,
            "window_mode": self.window_mode,
            "restoration": None
            if r is None
            else {"schedule": r.schedule.name, "weight": r.schedule.weight, "strength": r.strength},
            # only when not the default, so the fingerprints of latent-carry runs stay as they were
            **({} if self.motion_carry == "latent" else {"motion_carry": self.motion_carry}),
            **({} if self.sigmas is None else {"sigmas": [float(x) for x in self.sigmas]}),
            **({} if (b := self.background_restoration) is None else {"background_restoration": {
                "schedule": b.schedule.name, "weight": b.schedule.weight, "strength": b.strength}}),
        }


@dataclass
class ChunkRequest:
    """One model call, fully specified. Latents are in model (normalized) space.

    condition/mask/layout: the conditioning layout (anchors | motion | padding, mask 1 on anchors).
    noise: [1, C, K+G, h, w], drawn for all K+G slots with ``seed``.
    pose: [C, G, h, w] pose latents of the chunk's driving window (None when the backend has none).
    clip_image: uint8 [H, W, 3]: the reference for chunk 0, the previous chunk's last frame after.
    face_frames: uint8 [F, h, w, 3] face crops of the window, or None.
    """

    chunk: ChunkWindow
    seed: int
    noise: torch.Tensor
    condition: torch.Tensor
    mask: torch.Tensor
    layout: SlotLayout
    anchors: torch.Tensor
    pose: torch.Tensor | None
    clip_image: np.ndarray
    face_frames: np.ndarray | None
    sigmas: torch.Tensor
    restoration: AnchorRestoration | None
    on_step: Callable[[int, int, torch.Tensor], None] | None = None
    background: BackgroundTarget | None = None  # replacement mode's opt-in background term


class ChunkBackend(Protocol):
    """The model host: the only things the loop cannot do itself."""

    def encode_frame(self, frame: np.ndarray) -> torch.Tensor:
        """ONE uint8 frame [H, W, 3] -> one model-space latent [C, 1, h, w]."""

    def encode_pose(self, frames: np.ndarray) -> torch.Tensor | None:
        """uint8 pose window [F, H, W, 3] -> model-space pose latents [C, G, h, w]."""

    def sample(self, request: ChunkRequest) -> torch.Tensor:
        """Denoise one chunk; returns final model-space latents [C, K+G, h, w]."""

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """Model-space latents [C, G, h, w] -> uint8 frames [1 + 4(G-1), H, W, 3]."""


class FrameSink(Protocol):
    def write(self, frames: np.ndarray) -> None: ...


@dataclass
class LoopStats:
    """Where the time went (seconds) and how often the VAE was called."""

    total: float = 0.0
    sample: float = 0.0
    decode: float = 0.0
    encode_pose: float = 0.0
    encode_anchor: float = 0.0
    sink: float = 0.0
    anchor_encodes: int = 0
    pose_encodes: int = 0
    chunks: int = 0

    @property
    def model_and_vae(self) -> float:
        return self.sample + self.decode + self.encode_pose + self.encode_anchor

    @property
    def overhead_fraction(self) -> float:
        """Share of wall time spent outside model and VAE calls (loop, layout, I/O, checkpoints,
        and the sink: encoding the output video counts as overhead here)."""
        return 0.0 if self.total <= 0 else max(0.0, self.total - self.model_and_vae) / self.total

    def as_dict(self) -> dict:
        """The summary a run logs (seconds rounded to ms; overhead as % of wall time and of sampling)."""
        return {
            "chunks_run": self.chunks,
            "wall_s": round(self.total, 3),
            "sample_s": round(self.sample, 3),
            "decode_s": round(self.decode, 3),
            "encode_s": round(self.encode_pose + self.encode_anchor, 3),
            "loop_overhead_pct": round(100 * self.overhead_fraction, 3),
            "overhead_over_sampler_pct": round(100 * (self.total - self.model_and_vae) / max(self.sample, 1e-9), 3),
            "anchor_encodes": self.anchor_encodes,
            "pose_encodes": self.pose_encodes,
        }


@dataclass
class ChunkOutput:
    """What a finished chunk hands to callbacks (previews, seam meters, benchmarks)."""

    chunk: ChunkWindow
    latents: torch.Tensor
    kept_frames: np.ndarray
    memory: LatentMemory


@dataclass
class LoopHooks:
    """Callbacks: progress per step, a finished chunk, and a check between chunks (cancel)."""

    on_step: Callable[[int, int, int, torch.Tensor], None] | None = None
    on_chunk: Callable[[ChunkOutput, int], None] | None = None
    between_chunks: Callable[[int], None] | None = None
    stop_after: int | None = None  # end after this many chunks of this call (tests of resuming)


class FrameSource(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, idx: Any) -> np.ndarray: ...


@dataclass
class RunInputs:
    """What a run animates: the reference, the driving videos, optional user anchors, the length.

    reference: uint8 [H, W, 3] at the generation size. pose_video / face_video: frame sources read
    window by window. anchor_frames: extra views for the 'user' anchor policy. total_frames: the
    output length (None = the pose video's length). replacement: the background video and character
    mask of replacement mode (read at the pose window's frames), None for animation mode.
    """

    reference: np.ndarray
    pose_video: FrameSource
    face_video: FrameSource | None = None
    anchor_frames: Sequence[np.ndarray] = ()
    total_frames: int | None = None
    replacement: ReplacementSource | None = None  # replacement mode: background video + character mask


def run_config(settings: AnimationSettings, inputs: RunInputs, total_frames: int, extra: dict | None = None) -> dict:
    """Everything that determines a run's output, as JSON: settings plus input identities.

    A run folder made with one config refuses to resume with another (and says which keys differ).
    """
    return {
        **settings.as_dict(),
        "inputs": {
            **reference_identity(inputs.reference),
            "driving_frames": int(len(inputs.pose_video)),
            "total_frames": int(total_frames),
            **(extra or {}),
        },
    }


def run_fingerprint(settings: AnimationSettings, extra: dict | None = None) -> str:
    """Fingerprint of the settings (and any extra identity) that determine a run's output."""
    cfg = settings.as_dict()
    if extra:
        cfg = {**cfg, "inputs": extra}
    return config_fingerprint(cfg)


class ChunkLoop:
    """The chunk loop over one backend with one set of settings; its steps are public, so the
    granular nodes run them one node at a time and ``run`` chains them for a whole video.

    ``stats`` accumulates where the time went over every call.
    """

    def __init__(self, backend: ChunkBackend, settings: AnimationSettings, stats: LoopStats | None = None):
        self.backend = backend
        self.settings = settings
        self.stats = stats or LoopStats()

    def plan(self, inputs: RunInputs) -> ChunkPlan:
        """The chunk plan for these inputs (refuses an empty pose video)."""
        if len(inputs.pose_video) == 0:
            raise DrivingVideoError("The pose video is empty. Load a pose video with at least one frame.")
        plan = plan_for_driving(len(inputs.pose_video), self.settings.chunk, inputs.total_frames, self.settings.window_mode)
        r = inputs.replacement
        if r is not None:
            if r.driving_frames != len(inputs.pose_video):
                raise ConfigError(
                    f"The replacement source was made for a {r.driving_frames}-frame pose video, but the pose "
                    f"video has {len(inputs.pose_video)} frames."
                )
            r.check_plan(plan, self.settings.window_mode)  # a short background fails before chunk 0
        return plan

    def start(self, reference: np.ndarray, anchor_frames: Sequence[np.ndarray] = (), fingerprint: str = "") -> LatentMemory:
        """Latent memory before chunk 0: the reference (and any user anchor frame) encoded on its own;
        the reference is also chunk 0's CLIP image."""
        s = self.settings
        t = time.perf_counter()
        ref = self.backend.encode_frame(np.asarray(reference))
        users = [self.backend.encode_frame(np.asarray(f)) for f in anchor_frames]
        self.stats.encode_anchor += time.perf_counter() - t
        self.stats.anchor_encodes += 1 + len(users)
        memory = init_memory(ref, s.chunk.anchors, s.anchor_policy, s.anchor_seed, users, fingerprint)
        return replace(memory, last_frame=np.array(reference, copy=True))

    def request(
        self,
        memory: LatentMemory,
        chunk: ChunkWindow,
        inputs: RunInputs,
        on_step: Callable[[int, int, torch.Tensor], None] | None = None,
    ) -> tuple[ChunkRequest, np.ndarray]:
        """Everything the model call of chunk ``memory.chunk_index`` needs, and the chunk's pose
        window uint8 [F, H, W, 3]. ``sample`` runs it; the Chunk Conditioning node hands it to a
        stock sampler instead."""
        s, stats = self.settings, self.stats
        if chunk.index != memory.chunk_index:
            raise ConfigError(
                f"The memory is ready for chunk {memory.chunk_index} but chunk {chunk.index} was asked for."
            )
        if memory.last_frame is None:
            raise ConfigError("The memory has no CLIP image: make it with ChunkLoop.start (Latent Memory Init).")
        idx = chunk_driving_indices(chunk, len(inputs.pose_video), s.window_mode)
        pose_frames = np.asarray(inputs.pose_video[idx])
        face_frames = None
        if inputs.face_video is not None:
            fidx = driving_indices(chunk.start, chunk.frames, len(inputs.face_video), s.window_mode)
            face_frames = np.asarray(inputs.face_video[fidx])
        t = time.perf_counter()
        pose = self.backend.encode_pose(pose_frames)
        stats.encode_pose += time.perf_counter() - t
        stats.pose_encodes += 1
        motion = memory.motion if memory.chunk_index > 0 else None
        if inputs.replacement is None:
            if s.background_restoration is not None:
                raise ConfigError(
                    "Background restoration pulls the known background of replacement mode: connect a "
                    "background video and a character mask, or turn it off."
                )
            condition, mask, layout = build_condition(memory.anchors, motion, chunk.latents)
        else:
            t = time.perf_counter()
            condition, mask, layout, _ = chunk_replacement_condition(
                inputs.replacement, memory.anchors, motion, chunk, s.window_mode, self.backend.encode_pose
            )
            stats.encode_pose += time.perf_counter() - t
            stats.pose_encodes += 1
        seed = chunk_seed(s.seed, chunk.index, s.seed_policy)
        request = ChunkRequest(
            chunk=chunk,
            seed=seed,
            noise=chunk_noise((1, *condition.shape), seed),
            condition=condition,
            mask=mask,
            layout=layout,
            anchors=memory.anchors,
            pose=pose,
            clip_image=memory.last_frame,
            face_frames=face_frames,
            sigmas=s.sigma_list(),
            restoration=s.restoration,
            on_step=on_step,
            background=None if s.background_restoration is None or inputs.replacement is None
            else BackgroundTarget(s.background_restoration, condition, mask, layout),
        )
        return request, pose_frames

    def sample(
        self,
        memory: LatentMemory,
        chunk: ChunkWindow,
        inputs: RunInputs,
        on_step: Callable[[int, int, torch.Tensor], None] | None = None,
    ) -> tuple[torch.Tensor, np.ndarray]:
        """Denoise chunk ``memory.chunk_index``; returns (generated latents [C, G, h, w] in model
        space, the chunk's pose window uint8 [F, H, W, 3]). Raises NonFiniteError on NaN/inf."""
        request, pose_frames = self.request(memory, chunk, inputs, on_step)
        t = time.perf_counter()
        latents = self.backend.sample(request)
        self.stats.sample += time.perf_counter() - t
        return self.generated(chunk, latents), pose_frames

    def generated(self, chunk: ChunkWindow, latents: torch.Tensor) -> torch.Tensor:
        """The generated slots [C, G, h, w] of a sampler's output [C, K+G, h, w] (model space);
        NonFiniteError, naming the chunk, on NaN/inf."""
        generated = latents[:, self.settings.chunk.anchors:]
        if not is_finite(generated):
            raise NonFiniteError(
                f"Chunk {chunk.index} produced NaN/inf latents; the finished chunks 0..{chunk.index - 1} "
                "are kept. Try another seed, fp32/bf16 instead of fp16, or a lower LoRA strength.",
                chunk.index,
            )
        return generated

    def decode(self, generated: torch.Tensor) -> np.ndarray:
        """A chunk's generated latents -> uint8 frames [F, H, W, 3]."""
        t = time.perf_counter()
        frames = self.backend.decode(generated)
        self.stats.decode += time.perf_counter() - t
        return frames

    def generate(
        self, memory: LatentMemory, chunk: ChunkWindow, inputs: RunInputs, on_step: Callable | None = None
    ) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        """Denoise and decode one chunk: (generated latents, decoded frames, pose window)."""
        generated, pose_frames = self.sample(memory, chunk, inputs, on_step)
        return generated, self.decode(generated), pose_frames

    def advance(
        self, memory: LatentMemory, generated: torch.Tensor, frames: np.ndarray, pose_frames: np.ndarray | None = None
    ) -> LatentMemory:
        """Memory for the next chunk; the VAE is called only after chunk 0, for the anchor frames
        (and, with the ``decoded`` motion carry of the drift baseline, for the carried frames)."""
        s, calls = self.settings.chunk, [0]

        def encode(frame: np.ndarray) -> torch.Tensor:
            calls[0] += 1
            return self.backend.encode_frame(frame)

        t = time.perf_counter()
        new = propagate(memory, generated, frames, encode, s.motion_latents, pose_frames)
        if self.settings.motion_carry == "decoded":
            # The baseline EverAnimate replaces: the last 1 + tf*M decoded frames re-encoded as a
            # video (M latents after the causal first one) instead of the latents themselves.
            tail = self.backend.encode_pose(frames[-(1 + s.temporal_factor * s.motion_latents):])
            new = replace(new, motion=tail[:, -s.motion_latents:].clone())
        self.stats.encode_anchor += time.perf_counter() - t
        self.stats.anchor_encodes += calls[0]
        return new

    def run(
        self,
        inputs: RunInputs,
        sink: FrameSink | None = None,
        store: Any | None = None,
        hooks: LoopHooks | None = None,
    ) -> tuple[ChunkPlan, LatentMemory]:
        """Generate a whole animation chunk by chunk and stream the kept frames to ``sink``.

        With a ``store`` (``infra.runs.RunStore``) every finished chunk is checkpointed; a rerun
        with the same settings resumes after the last finished chunk and first replays the finished
        frames into ``sink``, so the output is identical to an uninterrupted run.
        """
        hooks = hooks or LoopHooks()
        stats = self.stats
        t0 = time.perf_counter()
        plan = self.plan(inputs)
        memory = None
        fingerprint = run_fingerprint(self.settings)
        if store is not None:
            fingerprint = store.fingerprint
            memory = store.resume(sink)
        if memory is None:
            memory = self.start(inputs.reference, inputs.anchor_frames, fingerprint)
        done_here = 0
        for chunk in plan.chunks[memory.chunk_index :]:
            if hooks.stop_after is not None and done_here >= hooks.stop_after:
                break
            if hooks.between_chunks is not None:
                hooks.between_chunks(chunk.index)
            step_cb = None
            if hooks.on_step is not None:
                step_cb = lambda i, n, x, c=chunk.index: hooks.on_step(c, i, n, x)  # noqa: E731
            generated, frames, pose_frames = self.generate(memory, chunk, inputs, step_cb)
            keep = kept_frames(chunk, frames)
            memory = self.advance(memory, generated, frames, pose_frames)
            if store is not None:
                store.save_chunk(chunk.index, memory, keep)
            if sink is not None:
                t = time.perf_counter()
                sink.write(keep)
                stats.sink += time.perf_counter() - t
            stats.chunks += 1
            done_here += 1
            if hooks.on_chunk is not None:
                hooks.on_chunk(ChunkOutput(chunk, generated, keep, memory), len(plan))
        stats.total += time.perf_counter() - t0
        return plan, memory


def kept_frames(chunk: ChunkWindow, frames: np.ndarray) -> np.ndarray:
    """The frames a chunk contributes to the output (drops the overlap and any rounding tail)."""
    return frames[chunk.drop : chunk.drop + chunk.keep]


def run_animation(
    backend: ChunkBackend,
    inputs: RunInputs,
    settings: AnimationSettings,
    sink: FrameSink | None = None,
    store: Any | None = None,
    hooks: LoopHooks | None = None,
) -> tuple[ChunkPlan, LatentMemory, LoopStats]:
    """``ChunkLoop(backend, settings).run(...)``, returning its stats too."""
    loop = ChunkLoop(backend, settings)
    plan, memory = loop.run(inputs, sink, store, hooks)
    return plan, memory, loop.stats
