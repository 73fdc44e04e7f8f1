"""Pose and face videos as ComfyUI VIDEO or IMAGE: one frame source, frame rate and sound for both.

A VIDEO from Load Video is a file: its frames are read window by window with the core's
``VideoFileFrames`` and never held whole in RAM. A VIDEO already in memory (built from components)
and an IMAGE batch are wrapped as ``ImageFrames``. This module recognises the inputs by their
methods (duck typing) and imports no ComfyUI, so it unit-tests on a bare Python.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from everanimate_core.infra.audio import AudioTrack, WaveformAudio, file_audio
from everanimate_core.errors import ConfigError
from everanimate_core.infra.resize import describe_fit
from everanimate_core.infra.video_source import VideoFileFrames

from .images import ImageFrames

log = logging.getLogger("EverAnimate")

DEFAULT_FPS = 16
"""Frame rate of an IMAGE input, which carries none (Wan-Animate's native 16 fps)."""


@dataclass
class DrivingVideo:
    """A driving input, whatever socket type it came through."""

    frames: Any  # FrameSource: len() and [index array] -> uint8 [n, H, W, 3]
    fps: Fraction | None  # None for an IMAGE batch
    audio: AudioTrack | None  # the video's own sound, if it has any
    kind: str  # "VIDEO file", "VIDEO", "IMAGE"
    label: str
    source_width: int
    source_height: int

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def identity(self) -> str:
        """What the run folder remembers of this input: the file's stream digest, or for frames in
        memory their shape and a digest of eight frames spread over the clip (hashing gigabytes
        of IMAGE would cost more than it protects)."""
        own = getattr(self.frames, "identity", None)
        if own:
            return f"file:{own}"
        return f"frames:{spread_digest(self.frames.images)}"


def spread_digest(batch: Any) -> str:
    """Digest of a tensor batch's shape and of eight of its frames spread over it."""
    n = int(batch.shape[0])
    picks = sorted({round(i * (n - 1) / 7) for i in range(8)})
    h = hashlib.sha256(repr(tuple(batch.shape)).encode())
    for i in picks:
        h.update(batch[i].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _reads_from_a_file(video: Any) -> bool:
    """True when ``get_stream_source`` is the video's own (a file or its bytes), not the base
    class's fallback that would re-encode frames held in memory."""
    for klass in type(video).__mro__:
        if "get_stream_source" in vars(klass):
            return klass.__name__ != "VideoInput"
    return False


def _audio_of_components(audio: Any) -> AudioTrack | None:
    if not audio:
        return None
    return WaveformAudio(audio["waveform"], audio["sample_rate"])


def driving_video(value: Any, label: str, width: int | None = None, height: int | None = None, mode: str = "crop") -> DrivingVideo:
    """Wrap a VIDEO or IMAGE input as a frame source fitted to width x height (None = as is)."""
    if hasattr(value, "get_stream_source") and _reads_from_a_file(value):
        source = value.get_stream_source()
        frames = VideoFileFrames(source, width, height, mode, label=label)
        return DrivingVideo(frames, frames.fps, file_audio(source, label), "VIDEO file", label, frames.source_width, frames.source_height)
    if hasattr(value, "get_components"):
        comps = value.get_components()
        images = comps.images
        frames = _image_frames(images, width, height, mode, label)
        fps = Fraction(comps.frame_rate) if getattr(comps, "frame_rate", None) else None
        return DrivingVideo(frames, fps, _audio_of_components(getattr(comps, "audio", None)), "VIDEO", label, int(images.shape[2]), int(images.shape[1]))
    if hasattr(value, "dim") and hasattr(value, "shape"):
        frames = _image_frames(value, width, height, mode, label)
        return DrivingVideo(frames, None, None, "IMAGE", label, int(value.shape[2]), int(value.shape[1]))
    raise ConfigError(
        f"The {label} input got a {type(value).__name__}; connect a VIDEO (Load Video) or an IMAGE batch "
        "(e.g. Get Video Components' images)."
    )


def close_sources(*sources: Any) -> None:
    """Release the open video files among these frame sources (IMAGE sources hold none)."""
    for src in sources:
        if hasattr(src, "close"):
            src.close()


def _image_frames(images: Any, width, height, mode, label) -> ImageFrames:
    if images is None or getattr(images, "ndim", 0) != 4 or images.shape[0] == 0:
        raise ConfigError(f"The {label} is empty: connect a video with at least one frame.")
    return ImageFrames(images, width, height, mode)


def _fps_text(fps: Fraction | float) -> str:
    f = float(fps)
    return f"{f:g}" if abs(f - round(f)) < 1e-9 else f"{f:.3f}".rstrip("0")


def resolve_fps(widget_fps: float, pose: DrivingVideo | None) -> tuple[Fraction, str | None]:
    """Output frame rate: the widget when set (> 0), else the pose video's, else 16 for IMAGE.

    Returns (fps, note). The note, for the log and the node's progress text, says when the widget
    overrides a VIDEO's own rate: frames are used one for one, so the motion's speed changes.
    """
    video_fps = pose.fps if pose is not None else None
    widget = float(widget_fps or 0)
    if widget <= 0:
        return (Fraction(video_fps) if video_fps else Fraction(DEFAULT_FPS)), None
    fps = Fraction(widget).limit_denominator(1001)
    if video_fps and abs(float(video_fps) - widget) > 1e-3:
        ratio = float(video_fps) / widget
        speed = f"{ratio:.2f}x slower" if ratio > 1 else f"{1 / ratio:.2f}x faster"
        return fps, (
            f"EverAnimate: the {pose.label} runs at {_fps_text(video_fps)} fps but the fps widget is "
            f"{_fps_text(widget)}: the widget wins. Pose frames are used one for one (none dropped or "
            f"repeated), so the animation plays {speed} than the {pose.label} and any sound taken from it "
            "drifts out of sync. Set fps to 0 to follow the video."
        )
    return fps, None


def fit_note(pose: DrivingVideo, width: int, height: int, mode: str) -> str | None:
    """How a pose video of another aspect ratio is fitted to width x height (None if it is not)."""
    text = describe_fit(pose.source_width, pose.source_height, width, height, mode, f"the {pose.label}")
    return None if text is None else f"EverAnimate: {text}"


def choose_audio(audio_input: Any, pose: DrivingVideo | None) -> tuple[AudioTrack | None, str | None]:
    """The sound for the output: the AUDIO input if connected, else the pose VIDEO's own track."""
    if audio_input is not None:
        if not isinstance(audio_input, dict) or "waveform" not in audio_input or "sample_rate" not in audio_input:
            raise ConfigError("The audio input must be a ComfyUI AUDIO (Load Audio, or Get Video Components' audio).")
        return WaveformAudio(audio_input["waveform"], audio_input["sample_rate"]), "EverAnimate: sound from the audio input, cut to the animation's length."
    if pose is not None and pose.audio is not None:
        return pose.audio, f"EverAnimate: sound from the {pose.label}'s own audio track, cut to the animation's length."
    return None, None



def replacement_inputs() -> list:
    """The optional sockets of replacement mode (Chunk Sampler, Chunk Conditioning, Long Animation)."""
    from .api_version import io

    return [
        io.MultiType.Input("background_video", types=[io.Video, io.Image], optional=True, tooltip="Replacement mode: the driving video's own scene with the person removed (e.g. greyed out), frame for frame with the pose video; read chunk by chunk like it. Needs character_mask too. Empty = animation mode (the reference's own background)."),
        io.MultiType.Input("character_mask", types=[io.Mask, io.Video, io.Image], optional=True, tooltip="Replacement mode: where the new character goes, white (1) = character, one mask per frame of the pose video (a MASK batch or a mask video), or a single mask for every frame."),
    ]


@dataclass
class Replacement:
    """Replacement mode's inputs as the core reads them, with what to close and to remember."""

    source: Any  # everanimate_core.replace.ReplacementSource
    sources: tuple  # frame sources to close
    identity: dict
    background: DrivingVideo


def replacement_source(background_video: Any, character_mask: Any, width: int, height: int, mode: str,
                       pose: DrivingVideo) -> Replacement | None:
    """Replacement mode's source, or None in animation mode (neither input connected)."""
    from everanimate_core.replace import ReplacementSource

    if background_video is None and character_mask is None:
        return None
    if background_video is None or character_mask is None:
        missing = "background_video" if background_video is None else "character_mask"
        raise ConfigError(
            f"Replacement mode needs both background_video and character_mask; {missing} is not connected. "
            "Connect it, or disconnect the other for animation mode."
        )
    bg = driving_video(background_video, "background video", width, height, mode)
    opened = [bg.frames]
    if hasattr(character_mask, "dim") and character_mask.dim() in (2, 3):  # a MASK
        mask = character_mask
        mask_id = f"mask:{spread_digest(mask[None] if mask.dim() == 2 else mask)}"
    else:  # a mask video (VIDEO or IMAGE): channel 0, at its own size (the core fits it, nearest)
        m = driving_video(character_mask, "character mask")
        mask, mask_id = m.frames, m.identity
        opened.append(m.frames)
    try:
        source = ReplacementSource(
            bg.frames, mask, width, height, len(pose), mode,
            {"background video": (bg.source_width, bg.source_height), "pose video": (pose.source_width, pose.source_height)},
        )
    except Exception:
        close_sources(*opened)
        raise
    return Replacement(source, tuple(opened), {"background": bg.identity, "character_mask": mask_id}, bg)
