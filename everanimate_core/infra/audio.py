"""Sound for the output video: an audio track cut to the animation and muxed as AAC.

A dance animation without its music is only half of it. The track comes either from a waveform
(ComfyUI's AUDIO: ``{"waveform": [B, C, S], "sample_rate": sr}``) or from a video/audio file's own
audio stream, decoded block by block. :class:`AudioMuxer` encodes it into the container that
:class:`everanimate_core.infra.video.StreamingVideoWriter` writes, interleaved with the frames and cut to
exactly the video's length, so the finished MP4 and a ``.partial.mp4`` of a failed run both carry
the sound of the frames they hold.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from typing import Any, Iterator, Protocol

import numpy as np

from ..errors import ConfigError, DrivingVideoError

__all__ = ["AudioTrack", "WaveformAudio", "FileAudio", "file_audio", "AudioMuxer"]

# Samples handed to the encoder per block (about a second at 48 kHz).
_BLOCK = 48_000
# FFmpeg's usual layout for a channel count (the waveform of a ComfyUI AUDIO carries no layout).
_LAYOUTS = {1: "mono", 2: "stereo", 3: "3.0", 4: "4.0", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


class AudioTrack(Protocol):
    """A source of float32 samples in [-1, 1], channels first, read once from the start."""

    sample_rate: int
    channels: int
    layout: str

    def blocks(self) -> Iterator[np.ndarray]:
        """Yield float32 arrays [channels, n] in order until the track ends."""


class WaveformAudio:
    """An in-memory waveform [C, S] or [B, C, S] (the first batch item is used), numpy or torch."""

    def __init__(self, waveform: Any, sample_rate: int) -> None:
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(waveform, torch.Tensor):
            waveform = waveform.detach().float().cpu().numpy()
        w = np.asarray(waveform, dtype=np.float32)
        if w.ndim == 3:
            w = w[0]
        if w.ndim == 1:
            w = w[None]
        if w.ndim != 2 or w.shape[0] < 1:
            raise ConfigError(
                f"The audio waveform has shape {tuple(np.shape(waveform))}; expected [batch, channels, samples] "
                "(ComfyUI AUDIO). Connect an AUDIO output such as Load Audio's or Get Video Components'."
            )
        if w.shape[0] not in _LAYOUTS:
            raise ConfigError(
                f"The audio has {w.shape[0]} channels; up to 8 can be muxed. Mix it down (e.g. to stereo) first."
            )
        if not np.isfinite(w).all():
            raise ConfigError("The audio contains NaN or inf samples; connect another audio or leave the input empty.")
        try:
            rate = int(sample_rate)
        except (TypeError, ValueError):
            rate = 0
        if rate <= 0:
            raise ConfigError(f"The audio's sample rate must be a positive number, got {sample_rate!r}.")
        self.waveform, self.sample_rate, self.channels = w, rate, int(w.shape[0])
        self.layout = _LAYOUTS[self.channels]

    @property
    def samples(self) -> int:
        return int(self.waveform.shape[1])

    def blocks(self) -> Iterator[np.ndarray]:
        for s in range(0, self.samples, _BLOCK):
            yield self.waveform[:, s : s + _BLOCK]


class FileAudio:
    """The first audio stream of a media file (path or bytes), decoded block by block."""

    def __init__(self, source: Any, label: str = "pose video") -> None:
        from .video_source import describe_source, opener

        self._open = opener(source)
        self.name, self.label = describe_source(source), label
        with self._open() as container:
            if not container.streams.audio:
                raise DrivingVideoError(f"The {label} {self.name} has no audio track.")
            stream = container.streams.audio[0]
            self.sample_rate = int(stream.sample_rate or stream.codec_context.sample_rate or 0)
            self.channels = int(stream.codec_context.channels or len(stream.layout.channels))
            self.layout = stream.layout.name if stream.layout and len(stream.layout.channels) == self.channels else _LAYOUTS.get(self.channels, "stereo")
        if self.sample_rate <= 0 or self.channels <= 0:
            raise DrivingVideoError(f"The audio track of the {label} {self.name} has no sample rate or channels.")

    def blocks(self) -> Iterator[np.ndarray]:
        import av

        with self._open() as container:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", layout=self.layout, rate=self.sample_rate)
            try:
                for frame in container.decode(stream):
                    for out in resampler.resample(frame):
                        yield out.to_ndarray().astype(np.float32, copy=False)
                for out in resampler.resample(None):
                    yield out.to_ndarray().astype(np.float32, copy=False)
            except av.error.FFmpegError:
                return  # a damaged tail: keep the sound decoded so far


def file_audio(source: Any, label: str = "pose video") -> FileAudio | None:
    """The file's audio track, or None when it has none (or it cannot be read)."""
    try:
        return FileAudio(source, label)
    except (DrivingVideoError, OSError, ValueError):
        return None
    except Exception as e:  # PyAV errors: a video without readable audio still animates
        if type(e).__module__.startswith("av"):
            return None
        raise


def _layout(channels: int) -> str:
    return "mono" if channels == 1 else "stereo"


class AudioMuxer:
    """Encodes an :class:`AudioTrack` as AAC into an open PyAV output container, cut to length.

    :meth:`feed` encodes up to a sample count (the writer calls it as video frames arrive, so sound
    and picture are interleaved); :meth:`finish` encodes exactly up to the final length and flushes.
    Sources with more than two channels are mixed down to stereo; sample rates AAC cannot store are
    resampled to 48 kHz.
    """

    def __init__(self, container: Any, track: AudioTrack, codec: str = "aac") -> None:
        import av

        self.track = track
        self.rate = int(track.sample_rate)
        out_rate = self.rate if self.rate in (av.codec.Codec(codec, "w").audio_rates or ()) else 48_000
        self._stream = container.add_stream(codec, rate=out_rate)
        self._stream.layout = _layout(track.channels)
        self._container = container
        self._in_layout = getattr(track, "layout", None) or _LAYOUTS.get(track.channels, "stereo")
        self._blocks = iter(track.blocks())
        self._carry: np.ndarray | None = None
        self.samples_written = 0
        self._ended = False

    def samples_for(self, frames: int, fps: Fraction) -> int:
        """Samples that cover ``frames`` video frames at ``fps``."""
        return int(round(Fraction(int(frames)) * self.rate / Fraction(fps)))

    def _encode(self, block: np.ndarray) -> None:
        import av

        block = np.ascontiguousarray(np.clip(block, -1.0, 1.0), dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=self._in_layout)
        frame.sample_rate = self.rate
        frame.pts = self.samples_written
        frame.time_base = Fraction(1, self.rate)
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.samples_written += block.shape[1]

    def feed(self, until: int) -> None:
        """Encode the track's samples up to sample ``until`` (or its end)."""
        while not self._ended and self.samples_written < until:
            block = self._carry
            self._carry = None
            if block is None:
                block = next(self._blocks, None)
                if block is None:
                    self._ended = True
                    break
            block = np.asarray(block, dtype=np.float32)
            if block.ndim != 2 or block.shape[0] != self.track.channels:
                raise ConfigError(f"audio block of shape {block.shape} does not have {self.track.channels} channels.")
            room = until - self.samples_written
            if block.shape[1] > room:
                block, self._carry = block[:, :room], block[:, room:]
            if block.shape[1]:
                self._encode(block)

    def finish(self, until: int) -> None:
        """Encode up to ``until`` samples, drop the rest, flush the encoder."""
        self.feed(until)
        for packet in self._stream.encode(None):
            self._container.mux(packet)
