"""Streaming video output and simple video input (PyAV).

Long animations (minutes of frames) must not be held in memory just to be written out,
so :class:`StreamingVideoWriter` encodes each batch as soon as it is handed over; memory
stays flat however long the video gets. The writer never leaves a half-written file under
the final name: it writes to a hidden temporary file next to the target and renames it
atomically on :meth:`StreamingVideoWriter.close`. If the run fails part-way, the frames
already encoded are kept in ``<stem>.partial<suffix>`` so a crash late in a long render
does not throw away the finished part.

This module does not import torch itself (it only recognises tensors when torch is already
loaded), so light tools can read and write videos without paying for a torch import.
"""

from __future__ import annotations

import math
import os
import sys
import uuid
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np

from ..errors import ConfigError, EverAnimateError

__all__ = [
    "StreamingVideoWriter",
    "VideoInfo",
    "read_video",
    "iter_video_frames",
    "count_frames",
    "video_info",
    "side_by_side",
    "to_uint8_frames",
]

# Pixel formats whose chroma is subsampled by 2 horizontally and vertically: width and
# height must be even.
_EVEN_SIZE_PIX_FMTS = {"yuv420p", "yuvj420p", "nv12", "nv21", "yuv420p10le"}
# Pixel formats subsampled horizontally only: width must be even.
_EVEN_WIDTH_PIX_FMTS = {"yuv422p", "yuvj422p", "yuv422p10le"}
# Container formats picked from the suffix; anything else is left to FFmpeg's guess.
_MP4_SUFFIXES = {"", ".mp4", ".m4v"}


def _torch_module() -> Any:
    """Return the torch module if it is already imported, else None (no import cost)."""
    return sys.modules.get("torch")


def to_uint8_frames(frames: Any) -> np.ndarray:
    """Convert a frame batch to a C-contiguous uint8 numpy array of shape [N, H, W, 3].

    Accepts uint8 numpy/torch arrays ([N,H,W,3] or a single [H,W,3] frame) and float
    numpy/torch arrays with values in [0, 1] (clamped, then rounded to 0..255), which is
    the IMAGE convention of ComfyUI. Raises EverAnimateError for any other layout or for
    NaN/inf values, because encoding them would silently produce garbage pixels.
    """
    torch = _torch_module()
    if torch is not None and isinstance(frames, torch.Tensor):
        t = frames.detach()
        if t.dtype == torch.uint8:
            arr = t.cpu().numpy()
        elif t.is_floating_point():
            if not bool(torch.isfinite(t).all()):
                raise EverAnimateError(
                    "frames contain NaN or inf; the video cannot be encoded. Check the "
                    "chunk that produced them (decode/VAE output) before writing."
                )
            arr = t.float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).cpu().numpy()
        else:
            raise EverAnimateError(
                f"frames tensor has dtype {t.dtype}; expected uint8 (0..255) or a float "
                "dtype with values in [0, 1]."
            )
    elif isinstance(frames, np.ndarray):
        if frames.dtype == np.uint8:
            arr = frames
        elif np.issubdtype(frames.dtype, np.floating):
            if not np.isfinite(frames).all():
                raise EverAnimateError(
                    "frames contain NaN or inf; the video cannot be encoded. Check the "
                    "chunk that produced them before writing."
                )
            arr = np.rint(np.clip(frames, 0.0, 1.0) * 255.0).astype(np.uint8)
        else:
            raise EverAnimateError(
                f"frames array has dtype {frames.dtype}; expected uint8 (0..255) or a "
                "float dtype with values in [0, 1]."
            )
    else:
        raise EverAnimateError(
            f"frames must be a numpy array or torch tensor, got {type(frames).__name__}."
        )
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise EverAnimateError(
            f"frames have shape {tuple(arr.shape)}; expected [N, H, W, 3] or [H, W, 3] "
            "(RGB, channels last)."
        )
    return np.ascontiguousarray(arr)


def _check_size(width: int, height: int, pix_fmt: str) -> None:
    """Raise ConfigError when the frame size cannot be encoded with ``pix_fmt``."""
    if width <= 0 or height <= 0:
        raise ConfigError(f"video size must be positive, got {width}x{height}.")
    if pix_fmt in _EVEN_SIZE_PIX_FMTS and (width % 2 or height % 2):
        raise ConfigError(
            f"video size {width}x{height} cannot be encoded as {pix_fmt}: {pix_fmt} "
            "needs an even width and an even height (chroma is stored at half "
            "resolution). Resize or crop the frames to even sizes, e.g. "
            f"{width - width % 2}x{height - height % 2}, or use pix_fmt='yuv444p'."
        )
    if pix_fmt in _EVEN_WIDTH_PIX_FMTS and width % 2:
        raise ConfigError(
            f"video width {width} cannot be encoded as {pix_fmt}: it needs an even "
            "width. Resize or crop the frames, or use pix_fmt='yuv444p'."
        )


def _fps_fraction(fps: float | int | Fraction) -> Fraction:
    """Turn fps into an exact Fraction (29.97 -> 2997/100, 30000/1001 stays exact)."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        try:
            value = float(fps)
        except (TypeError, ValueError):
            raise ConfigError(f"fps must be a number, got {fps!r}.") from None
        if not math.isfinite(value):
            raise ConfigError(f"fps must be finite, got {fps!r}.")
        rate = Fraction(value).limit_denominator(1001)
    if rate <= 0:
        raise ConfigError(f"fps must be positive, got {fps!r}.")
    return rate


class StreamingVideoWriter:
    """Encode frames to a video file batch by batch, with memory independent of length.

    Usage::

        with StreamingVideoWriter("out.mp4", fps=16) as w:
            for chunk in chunks:
                w.write(chunk)          # encoded right away, nothing is buffered

    Behaviour, chosen so that long renders are safe:

    * Frames go to a hidden temporary file in the same directory
      (``.<stem>.<random>.tmp<suffix>``); on :meth:`close` the container is finalized and
      atomically renamed (``os.replace``) to ``path``. An existing file at ``path`` is
      therefore only replaced at close, and never by a half-written file.
    * If the ``with`` block exits with an exception, or :meth:`abort` is called, the frames
      already written are kept: the container is finalized and renamed to
      ``<stem>.partial<suffix>`` (e.g. ``out.partial.mp4``; an older partial file of the
      same name is replaced). If nothing was written, the temporary file is removed and
      no partial file is created.
    * The frame size is taken from ``width``/``height`` or from the first batch. Odd sizes
      with a 4:2:0 pixel format (the default ``yuv420p``) raise :class:`ConfigError`:
      frames are never padded or cropped silently.
    * Closing a writer that received no frames removes the temporary file and raises
      :class:`EverAnimateError` (an empty MP4 is useless and would hide a bug upstream).
    * A writer garbage-collected without close/abort behaves like :meth:`abort` (frames
      kept as the partial file), so a forgotten close never leaves an orphaned temp file.

    ``codec``/``crf``/``pix_fmt`` are passed to FFmpeg; ``options`` adds further encoder
    options (e.g. ``{"preset": "ultrafast"}``). The container format comes from the suffix
    of ``path`` (MP4 when it is ``.mp4``, ``.m4v`` or missing).

    ``audio`` (an :class:`everanimate_core.infra.audio.AudioTrack`) adds an AAC sound track, encoded
    as the frames arrive and cut to the length of the video (also in a partial file). Without
    it the file holds the video stream only, exactly as before.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float | int | Fraction,
        width: int | None = None,
        height: int | None = None,
        codec: str = "libx264",
        crf: int | None = 18,
        pix_fmt: str = "yuv420p",
        options: dict[str, str] | None = None,
        audio: Any = None,
    ) -> None:
        self._path = Path(path)
        self._audio_track = audio
        self._audio: Any = None
        self._rate = _fps_fraction(fps)
        if (width is None) != (height is None):
            raise ConfigError("give both width and height, or neither (taken from the frames).")
        self._codec = codec
        self._crf = crf
        self._pix_fmt = pix_fmt
        self._options = {str(k): str(v) for k, v in (options or {}).items()}
        if crf is not None:
            self._options.setdefault("crf", str(crf))
        if codec == "libx264":
            # One encoder thread: x264's automatic thread count depends on the machine, and another
            # thread count gives another (still repeatable) bitstream.
            self._options.setdefault("threads", "1")
            # No macroblock-tree rate control. x264's AVX-512 mbtree_propagate_list steps through a
            # macroblock row 8 at a time without masking the lanes past its end, so when
            # ceil(width / 16) is not a multiple of 8 (832 px: 52) the rate control adds costs read
            # from beyond x264's buffers. Identical frames then encode to different bytes depending
            # on what the process allocated before (a long-lived ComfyUI server), and a resumed run
            # could not reproduce an uninterrupted one. Costs 30-50 % more bytes at CRF 18 on
            # SynthDance content, at slightly higher PSNR. A caller's own "x264-params" come after
            # it, so they still win.
            extra = self._options.get("x264-params")
            self._options["x264-params"] = "mbtree=0" + (f":{extra}" if extra else "")
        self._width: int | None = None
        self._height: int | None = None
        if width is not None and height is not None:
            _check_size(int(width), int(height), pix_fmt)
            self._width, self._height = int(width), int(height)
        if not self._path.parent.is_dir():
            raise ConfigError(
                f"the folder {str(self._path.parent)!r} for the video does not exist; "
                "create it first."
            )
        suffix = self._path.suffix
        self._format = "mp4" if suffix.lower() in _MP4_SUFFIXES else None
        stem = self._path.stem if suffix else self._path.name
        self._tmp_path = self._path.with_name(f".{stem}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
        self._partial_path = self._path.with_name(f"{stem}.partial{suffix or '.mp4'}")
        self._container: Any = None
        self._stream: Any = None
        self._frames_written = 0
        self._closed = False

    # -- properties -------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """Final path of the video (exists only after a successful :meth:`close`)."""
        return self._path

    @property
    def partial_path(self) -> Path:
        """Where the frames written so far are kept if the writer is aborted."""
        return self._partial_path

    @property
    def frames_written(self) -> int:
        """Number of frames handed to the encoder so far."""
        return self._frames_written

    @property
    def closed(self) -> bool:
        """True once :meth:`close` or :meth:`abort` has run."""
        return self._closed

    # -- internals --------------------------------------------------------------------

    def _open(self) -> None:
        """Open the temporary container and the video stream (needs the frame size)."""
        import av  # local import: PyAV is only needed once frames arrive

        assert self._width is not None and self._height is not None
        container = av.open(str(self._tmp_path), mode="w", format=self._format)
        try:
            stream = container.add_stream(self._codec, rate=self._rate)
            stream.width = self._width
            stream.height = self._height
            stream.pix_fmt = self._pix_fmt
            if self._options:
                stream.options = dict(self._options)
            if self._audio_track is not None:
                from .audio import AudioMuxer

                self._audio = AudioMuxer(container, self._audio_track)
        except Exception:
            container.close()
            self._remove_tmp()
            raise
        self._container, self._stream = container, stream

    def _remove_tmp(self) -> None:
        """Delete the temporary file if it exists."""
        try:
            self._tmp_path.unlink()
        except FileNotFoundError:
            pass

    def _finalize(self) -> None:
        """Flush the encoder and write the container trailer (moov atom for MP4)."""
        container, stream, audio = self._container, self._stream, self._audio
        self._container = self._stream = self._audio = None
        if container is None:
            return
        try:
            if self._frames_written > 0:
                for packet in stream.encode(None):
                    container.mux(packet)
                if audio is not None:
                    audio.finish(audio.samples_for(self._frames_written, self._rate))
        finally:
            container.close()

    # -- public API -------------------------------------------------------------------

    def write(self, frames: Any) -> None:
        """Encode a batch of frames now.

        ``frames`` is uint8 [N,H,W,3] / [H,W,3] (numpy or torch) or float in [0, 1]
        (e.g. a ComfyUI IMAGE tensor). All batches must have the same size as the first.
        Nothing is kept after the call, so memory does not grow with the video length.
        """
        if self._closed:
            raise EverAnimateError(f"the writer for {str(self._path)!r} is already closed.")
        arr = to_uint8_frames(frames)
        n, h, w, _ = arr.shape
        if self._width is None:
            _check_size(w, h, self._pix_fmt)
            self._width, self._height = w, h
        if (w, h) != (self._width, self._height):
            raise EverAnimateError(
                f"frame size {w}x{h} differs from the video size "
                f"{self._width}x{self._height}; all frames of a video must be equally sized."
            )
        if n == 0:
            return
        if self._container is None:
            self._open()
        import av

        container, stream = self._container, self._stream
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(arr[i], format="rgb24")
            frame.pts = self._frames_written
            for packet in stream.encode(frame):
                container.mux(packet)
            self._frames_written += 1
        if self._audio is not None:
            self._audio.feed(self._audio.samples_for(self._frames_written, self._rate))

    def close(self) -> Path:
        """Finalize the video and atomically move it to :attr:`path`; returns the path.

        Calling it again is a no-op. Raises EverAnimateError if no frame was written
        (the temporary file is removed and nothing is created).
        """
        if self._closed:
            return self._path
        self._closed = True
        if self._frames_written == 0:
            self._finalize()
            self._remove_tmp()
            raise EverAnimateError(
                f"no frames were written, so {str(self._path)!r} was not created."
            )
        try:
            self._finalize()
        except BaseException:
            self._remove_tmp()
            raise
        os.replace(self._tmp_path, self._path)
        return self._path

    def abort(self) -> Path | None:
        """Stop writing and keep what was written as ``<stem>.partial<suffix>``.

        Returns the partial path, or None if no frame had been written (then the
        temporary file is simply removed). Never raises for encoder problems: a failure
        while finalizing is reported as a warning and the file is still renamed, so the
        error that caused the abort is the one the caller sees.
        """
        if self._closed:
            return None
        self._closed = True
        if self._frames_written == 0:
            try:
                self._finalize()
            except Exception:
                pass
            self._remove_tmp()
            return None
        try:
            self._finalize()
        except Exception as exc:  # keep the original error visible to the caller
            warnings.warn(
                f"could not finalize the partial video {str(self._partial_path)!r}: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
        if not self._tmp_path.exists():
            return None
        os.replace(self._tmp_path, self._partial_path)
        return self._partial_path

    def __enter__(self) -> "StreamingVideoWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def __del__(self) -> None:
        # A writer dropped without close/abort (e.g. interpreter shutdown mid-run): keep the
        # frames as a partial file rather than an orphaned temp file.
        try:
            if not self._closed:
                self.abort()
        except Exception:
            pass


class VideoInfo(NamedTuple):
    """Basic facts about a video file: frame rate, frame size and frame count."""

    fps: float
    width: int
    height: int
    frames: int


def _open_for_reading(path: str | os.PathLike[str]) -> Any:
    """Open a file with PyAV for reading, with a clear error when it is missing."""
    import av

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"video file {str(p)!r} does not exist.")
    container = av.open(str(p), mode="r")
    if not container.streams.video:
        container.close()
        raise EverAnimateError(f"{str(p)!r} contains no video stream.")
    return container


def iter_video_frames(
    path: str | os.PathLike[str], start: int = 0, stop: int | None = None
) -> Iterator[np.ndarray]:
    """Yield the frames of a video one at a time as uint8 [H, W, 3] RGB arrays.

    Decoding is streamed, so a long video can be processed in constant memory. ``start``
    and ``stop`` select frames ``start <= t < stop`` (earlier frames are still decoded,
    since seeking in long-GOP video is not frame exact).
    """
    if start < 0 or (stop is not None and stop < start):
        raise EverAnimateError(f"invalid frame range start={start}, stop={stop}.")
    container = _open_for_reading(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for t, frame in enumerate(container.decode(stream)):
            if stop is not None and t >= stop:
                break
            if t >= start:
                yield frame.to_ndarray(format="rgb24")
    finally:
        container.close()


def read_video(
    path: str | os.PathLike[str], start: int = 0, stop: int | None = None
) -> np.ndarray:
    """Decode frames ``start <= t < stop`` of a video into a uint8 array [T, H, W, 3].

    Holds the whole selection in memory; use :func:`iter_video_frames` for long videos.
    """
    frames = list(iter_video_frames(path, start, stop))
    if frames:
        return np.stack(frames)
    info = video_info(path)
    return np.empty((0, info.height, info.width, 3), dtype=np.uint8)


def count_frames(path: str | os.PathLike[str], exact: bool = False) -> int:
    """Number of frames in a video.

    Uses the count stored in the container when there is one (instant for MP4) and
    otherwise counts packets. ``exact=True`` decodes every frame instead, which is slow
    but right even for files whose header is wrong.
    """
    container = _open_for_reading(path)
    try:
        stream = container.streams.video[0]
        if exact:
            return sum(1 for _ in container.decode(stream))
        if stream.frames and stream.frames > 0:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)
    finally:
        container.close()


def video_info(path: str | os.PathLike[str]) -> VideoInfo:
    """Return :class:`VideoInfo` (fps, width, height, frames) of a video file."""
    container = _open_for_reading(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        width, height = int(stream.codec_context.width), int(stream.codec_context.height)
        frames = int(stream.frames or 0)
    finally:
        container.close()
    if frames <= 0:
        frames = count_frames(path)
    return VideoInfo(fps=fps, width=width, height=height, frames=frames)


def side_by_side(*frames: Any, scale: int = 1) -> np.ndarray:
    """Place frame batches next to each other (left to right) for visual comparison.

    Each argument is a uint8 (or float [0, 1]) batch [N, H, W, 3] or a single frame
    [H, W, 3]; all must have the same number of frames and the same height (widths may
    differ). The result is uint8, upscaled by the integer ``scale`` with nearest-neighbour
    repetition so that small debug renders stay crisp. Single frames in, single frame out.
    """
    if not frames:
        raise EverAnimateError("side_by_side needs at least one frame batch.")
    if not isinstance(scale, (int, np.integer)) or isinstance(scale, bool) or scale < 1:
        raise ConfigError(f"scale must be an integer >= 1, got {scale!r}.")
    single = all(getattr(f, "ndim", 0) == 3 for f in frames)
    batches = [to_uint8_frames(f) for f in frames]
    n, h = batches[0].shape[0], batches[0].shape[1]
    for i, b in enumerate(batches[1:], start=1):
        if b.shape[0] != n or b.shape[1] != h:
            raise EverAnimateError(
                f"side_by_side input {i} has {b.shape[0]} frames of height {b.shape[1]}; "
                f"input 0 has {n} frames of height {h}. Frame counts and heights must match."
            )
    out = np.concatenate(batches, axis=2)
    if scale > 1:
        out = out.repeat(int(scale), axis=1).repeat(int(scale), axis=2)
    return out[0] if single else out
