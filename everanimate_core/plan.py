"""Chunk plan: the frame arithmetic of a long animation, and driving-video windows.

A long video is generated as a sequence of chunks. Chunk ``c`` is one model call that makes
``frames`` pixel frames (``1 + 4*(G-1)`` for a causal VAE with temporal factor 4, i.e. G latents).
Chunk ``c+1`` starts ``overlap`` frames before chunk ``c`` ends and drops those first frames after
decoding, so the stitched output has no gap and no duplicate. With the release settings
(77 frames, overlap 4) N full chunks give ``77 + 73*(N-1)`` frames.

Any requested output length is honoured exactly: the last chunk is shortened to the smallest
valid length that covers what is left, and, when rounding up to a valid length would read past the
end of the output, it starts up to three frames earlier and drops those frames too. No padded last
window is generated and no seam frame is lost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from . import defaults
from .errors import ConfigError, DrivingVideoError

WindowMode = Literal["pingpong", "loop", "hold", "strict"]
WINDOW_MODES: tuple[str, ...] = ("pingpong", "loop", "hold", "strict")


@dataclass(frozen=True)
class ChunkSettings:
    """How a long video is cut into model calls.

    frames: pixel frames per chunk (must be 1 mod ``temporal_factor``; release 77).
    overlap: frames a chunk shares with the previous one, dropped after decoding (release 4).
    anchors: K, the number of anchor latent slots in front of the generated latents (release 4).
    motion_latents: how many of the previous chunk's last latents are carried (release 1).
    temporal_factor: frames per latent of the causal VAE after the first frame (Wan: 4).
    """

    frames: int = defaults.FRAMES
    overlap: int = defaults.OVERLAP
    anchors: int = defaults.ANCHORS
    motion_latents: int = defaults.MOTION_LATENTS
    temporal_factor: int = defaults.TEMPORAL_FACTOR

    def __post_init__(self) -> None:
        tf = self.temporal_factor
        if tf < 1:
            raise ConfigError(f"temporal_factor must be >= 1, got {self.temporal_factor}.")
        if self.frames < 1 or (self.frames - 1) % tf != 0:
            lo = max(1, self.frames - ((self.frames - 1) % tf))
            raise ConfigError(
                f"frames per chunk must be 1 mod {tf} (e.g. {lo} or {lo + tf}); got {self.frames}. "
                f"The causal VAE maps 1 + {tf}*(G-1) frames to G latents."
            )
        if self.anchors < 1:
            raise ConfigError(
                f"K (anchor latents) must be at least 1, got {self.anchors}. "
                "K = 1 is the native Wan-Animate layout; the release uses K = 4."
            )
        if self.overlap < 0 or self.overlap >= self.frames:
            raise ConfigError(
                f"overlap must be in [0, frames per chunk) = [0, {self.frames}); got {self.overlap}. "
                "The release uses 4."
            )
        if self.motion_latents < 0 or self.motion_latents > self.latents:
            raise ConfigError(
                f"motion_latents must be in [0, {self.latents}] for {self.frames}-frame chunks; "
                f"got {self.motion_latents}."
            )

    @property
    def latents(self) -> int:
        """G: generated latents of a full chunk."""
        return latents_for_frames(self.frames, self.temporal_factor)

    @property
    def stride(self) -> int:
        """Frames between the starts of two consecutive full chunks (release 73)."""
        return self.frames - self.overlap

    def as_dict(self) -> dict:
        """Plain dict for fingerprints and JSON."""
        return {
            "frames": self.frames,
            "overlap": self.overlap,
            "anchors": self.anchors,
            "motion_latents": self.motion_latents,
            "temporal_factor": self.temporal_factor,
        }


def latents_for_frames(frames: int, temporal_factor: int = 4) -> int:
    """Latents a causal VAE produces for ``frames`` frames (frames must be 1 mod factor)."""
    if frames < 1 or (frames - 1) % temporal_factor:
        raise ConfigError(f"{frames} frames is not 1 mod {temporal_factor}.")
    return 1 + (frames - 1) // temporal_factor


def _round_up_valid(n: int, tf: int) -> int:
    """Smallest valid chunk length (1 mod tf) that is >= n."""
    n = max(1, n)
    return 1 + tf * math.ceil((n - 1) / tf)


@dataclass(frozen=True)
class ChunkWindow:
    """One chunk of the plan, in output-frame coordinates.

    start: first output frame the chunk generates (its window start in the driving timeline).
    frames: frames the chunk generates (1 mod temporal factor).
    drop: leading generated frames discarded after decoding (the overlap, plus up to 3 frames when
        the last chunk is pulled back to end exactly on the output length).
    keep: frames kept after ``drop`` (they are output frames ``start+drop .. start+drop+keep``).
    """

    index: int
    start: int
    frames: int
    drop: int
    keep: int
    latents: int

    @property
    def keep_start(self) -> int:
        """First output frame index this chunk contributes."""
        return self.start + self.drop

    @property
    def end(self) -> int:
        """One past the last generated frame."""
        return self.start + self.frames


@dataclass(frozen=True)
class ChunkPlan:
    """All chunks needed for ``total_frames`` output frames."""

    settings: ChunkSettings
    total_frames: int
    chunks: tuple[ChunkWindow, ...] = field(default_factory=tuple)

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self):
        return iter(self.chunks)

    def __getitem__(self, i: int) -> ChunkWindow:
        return self.chunks[i]

    @property
    def seam_frames(self) -> list[int]:
        """Output indices of the first kept frame of every chunk after the first."""
        return [c.keep_start for c in self.chunks[1:]]


def plan_chunks(total_frames: int, settings: ChunkSettings | None = None) -> ChunkPlan:
    """Cut ``total_frames`` output frames into chunks; the kept frames tile [0, total) exactly.

    Full chunks follow the release (start ``stride*c``, drop ``overlap``). The last chunk is only as
    long as it needs to be; if rounding its length up to 1 mod 4 would run past the end, it starts
    earlier by that many frames and drops them, so the driving video is never read past the output
    length (no padded window) and no frame is generated twice into the output.
    """
    s = settings or ChunkSettings()
    if total_frames < 1:
        raise DrivingVideoError(
            f"Nothing to generate: the requested length is {total_frames} frames. "
            "Give a driving video with at least one frame (or a positive duration)."
        )
    tf = s.temporal_factor
    chunks: list[ChunkWindow] = []
    first_len = min(s.frames, _round_up_valid(total_frames, tf))
    keep = min(first_len, total_frames)
    chunks.append(ChunkWindow(0, 0, first_len, 0, keep, latents_for_frames(first_len, tf)))
    covered = keep
    while covered < total_frames:
        prev = chunks[-1]
        start = prev.end - s.overlap
        remaining = total_frames - covered
        length = min(s.frames, _round_up_valid(s.overlap + remaining, tf))
        if start + length > total_frames:
            # Pull the window back so it ends on the last output frame (by at most tf-1 frames).
            start = total_frames - length
        drop = covered - start
        keep = min(start + length, total_frames) - covered
        chunks.append(
            ChunkWindow(len(chunks), start, length, drop, keep, latents_for_frames(length, tf))
        )
        covered += keep
    return ChunkPlan(s, total_frames, tuple(chunks))


def frames_for_chunks(num_chunks: int, settings: ChunkSettings | None = None) -> int:
    """Output frames of ``num_chunks`` full chunks: frames + stride*(N-1) (release: 77 + 73*(N-1))."""
    s = settings or ChunkSettings()
    if num_chunks < 1:
        raise ConfigError(f"num_chunks must be >= 1, got {num_chunks}.")
    return s.frames + s.stride * (num_chunks - 1)


# ----------------------------------------------------------------------------------------------
# Driving-video windows
# ----------------------------------------------------------------------------------------------


def driving_indices(start: int, count: int, length: int, mode: str = "pingpong") -> np.ndarray:
    """Indices into a driving video of ``length`` frames for output frames [start, start+count).

    pingpong (release default): F + reverse(F[1:-1]) repeated; loop: F repeated; hold: the last
    frame repeated; strict: an error naming the shortfall when the window runs past the end.
    """
    if mode not in WINDOW_MODES:
        raise ConfigError(f"Unknown driving window mode {mode!r}; choose one of {WINDOW_MODES}.")
    if length < 1:
        raise DrivingVideoError(
            "The driving video is empty (0 frames). Load a pose video with at least one frame."
        )
    idx = np.arange(start, start + count, dtype=np.int64)
    if count == 0:
        return idx
    if mode == "strict":
        if start + count > length:
            raise DrivingVideoError(
                f"The driving video has {length} frames but frames up to {start + count - 1} are "
                f"needed (strict mode). Use a longer video, request at most {length} frames, or "
                "pick the pingpong, loop or hold mode."
            )
        return idx
    if mode == "hold":
        return np.minimum(idx, length - 1)
    if mode == "loop" or length == 1:
        return idx % length
    period = 2 * length - 2
    j = idx % period
    return np.where(j < length, j, period - j)


def plan_for_driving(
    driving_frames: int,
    settings: ChunkSettings | None = None,
    total_frames: int | None = None,
    mode: str = "pingpong",
) -> ChunkPlan:
    """Plan for a driving video: by default the output is exactly as long as the video.

    ``total_frames`` asks for another length; longer than the video needs a non-strict mode.
    """
    if driving_frames < 1:
        raise DrivingVideoError(
            "The driving (pose) video is empty. Load a pose video with at least one frame."
        )
    total = driving_frames if total_frames is None else int(total_frames)
    if mode == "strict" and total > driving_frames:
        raise DrivingVideoError(
            f"Strict mode: {total} output frames were requested but the driving video has only "
            f"{driving_frames}. Shorten the request or choose pingpong, loop or hold."
        )
    return plan_chunks(total, settings)


def chunk_driving_indices(
    chunk: ChunkWindow, driving_frames: int, mode: str = "pingpong"
) -> np.ndarray:
    """Driving-video indices for every frame the chunk generates."""
    if mode == "strict" and chunk.end > driving_frames:
        # Only the single-chunk case rounds past the end (a <4-frame tail); hold those frames.
        if chunk.index == 0 and chunk.keep <= driving_frames:
            return driving_indices(chunk.start, chunk.frames, driving_frames, "hold")
    return driving_indices(chunk.start, chunk.frames, driving_frames, mode)
