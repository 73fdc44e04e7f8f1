"""Driving frames read from a video file window by window, never the whole clip.

:class:`VideoFileFrames` demuxes the file once on opening (no decoding) to index every frame's
timestamp and keyframe, so the frame count and rate are exact and an empty, unreadable or cut-short
file is refused up front. ``frames[indices]`` takes any index array (ping-pong, held frames): the
distinct frames are decoded once each, in runs from the preceding keyframe, fitted with
:func:`everanimate_core.infra.resize.fit_frames` a small batch at a time, and returned in the requested
order. A file truncated or replaced mid-run fails at that window with a :class:`DrivingVideoError`.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import os
from collections import OrderedDict
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import DrivingVideoError
from .resize import RESIZE_MODES, fit_frames

__all__ = ["VideoFileFrames", "VideoSource", "describe_source", "opener"]

VideoSource = "str | os.PathLike[str] | io.BytesIO | bytes"

# Frames decoded before a resize batch is flushed: bounds the full-size frames held at once.
_RESIZE_BATCH = 8
# Most recent fitted frames kept for the next window: consecutive chunks share their overlap (4 frames
# in the release, up to 3 more for a pulled-back last chunk), which would otherwise cost a seek back
# and, in a long-GOP file, decoding from the keyframe again.
_RECENT = 16
_REENCODE_HINT = (
    "Re-export the video (for example `ffmpeg -i input.mp4 -c:v libx264 -pix_fmt yuv420p fixed.mp4`) "
    "and load that file."
)


def describe_source(source: Any) -> str:
    """A short name for messages: the file name, or 'an in-memory video'."""
    if isinstance(source, (str, os.PathLike)):
        return repr(Path(source).name)
    return "an in-memory video"


def opener(source: Any) -> Callable[[], Any]:
    """A function that opens ``source`` afresh with PyAV each time it is called.

    File-like sources are given an independent BytesIO view of the same bytes per container, so a
    video reader and an audio reader never fight over one read position.
    """
    import av

    if isinstance(source, (str, os.PathLike)):
        path = str(source)
        if not Path(path).is_file():
            raise DrivingVideoError(f"The video file {describe_source(path)} does not exist. Load an existing video file.")
        return lambda: av.open(path, mode="r")
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "getvalue"):
        data = source.getvalue()  # BytesIO: shares the buffer, no copy of the file
    elif hasattr(source, "read") and hasattr(source, "seek"):
        pos = source.tell()
        source.seek(0)
        data = source.read()
        source.seek(pos)
    else:
        raise DrivingVideoError(
            f"Cannot read a video from a {type(source).__name__}; give a file path or the file's bytes."
        )
    return lambda: av.open(io.BytesIO(data), mode="r")


class VideoFileFrames:
    """A seekable uint8 frame source over a video file: ``len(src)`` and ``src[indices]``.

    ``source`` is a path or the file's bytes (BytesIO). With ``width``/``height`` every frame is
    fitted with ``mode`` (crop/pad/stretch) exactly like an IMAGE batch of the same frames would be.
    ``label`` names the input in error messages ("pose video", "face video").
    Raises :class:`DrivingVideoError` for a missing, unreadable, empty or truncated file.
    """

    def __init__(
        self,
        source: Any,
        width: int | None = None,
        height: int | None = None,
        mode: str = "crop",
        label: str = "pose video",
    ) -> None:
        if mode not in RESIZE_MODES:
            raise DrivingVideoError(f"Unknown resize mode {mode!r}; choose one of {RESIZE_MODES}.")
        self.label, self.width, self.height, self.mode = label, width, height, mode
        self.name = describe_source(source)
        self._open = opener(source)
        self._path = Path(source) if isinstance(source, (str, os.PathLike)) else None
        self._stamp = self._file_stamp()
        self._container: Any = None
        self._decoder: Any = None
        self._next_index: int | None = None  # index of the next frame the open decoder yields
        self._recent: OrderedDict[int, np.ndarray] = OrderedDict()
        self.seeks = 0  # diagnostics: seeks and frames decoded so far (tests check windows stay local)
        self.decoded_frames = 0
        self._index_file()

    # -- opening ---------------------------------------------------------------------------

    def _file_stamp(self) -> tuple[int, int] | None:
        """(size, mtime) of a file source, to notice a file changed under a running job."""
        if self._path is None:
            return None
        try:
            st = self._path.stat()
        except OSError:
            return (-1, -1)
        return (int(st.st_size), int(st.st_mtime_ns))

    def _check_unchanged(self, indices: np.ndarray) -> None:
        now = self._file_stamp()
        if now != self._stamp:
            was = self._stamp[0] if self._stamp else "?"
            size = "it is gone" if now is None or now[0] < 0 else f"{was} -> {now[0]} bytes"
            self.close()
            raise self._missing(indices, f"the file changed on disk after the run started: {size}")

    def _fail(self, what: str) -> DrivingVideoError:
        return DrivingVideoError(f"The {self.label} {self.name} {what}. {_REENCODE_HINT}")

    def _open_container(self) -> Any:
        import av

        try:
            container = self._open()
        except (av.error.FFmpegError, OSError, EOFError) as e:
            raise self._fail(f"cannot be read as a video ({e}): it is damaged, cut short, or not a video file") from None
        if not container.streams.video:
            container.close()
            raise DrivingVideoError(
                f"The {self.label} {self.name} has no video frames (no video stream: an audio-only file, "
                "or an export that stopped before its first frame). Load a video with at least one frame."
            )
        return container

    def _index_file(self) -> None:
        """Demux the video stream once: timestamps, keyframes, count, fps, size."""
        import av

        container = self._open_container()
        try:
            stream = container.streams.video[0]
            self.source_width = int(stream.codec_context.width)
            self.source_height = int(stream.codec_context.height)
            self._time_base = stream.time_base
            declared = int(stream.frames or 0)
            duration = container.duration
            rate = stream.average_rate or stream.guessed_rate
            pts, keys, packets = [], [], 0
            digest = hashlib.sha256()
            try:
                for packet in container.demux(stream):
                    if packet.size == 0:
                        continue  # the demuxer's end-of-stream marker
                    packets += 1
                    digest.update(bytes(packet))
                    if packet.is_discard:
                        continue  # kept only to decode others (trimmed by an edit list): no frame
                    t = packet.pts if packet.pts is not None else packet.dts
                    if t is None:
                        raise self._fail("has frames without timestamps, so windows cannot be found in it")
                    pts.append(int(t))
                    keys.append(bool(packet.is_keyframe))
            except av.error.FFmpegError as e:
                raise self._fail(
                    f"cannot be read past frame {len(pts)} ({e}): the file is damaged or was cut short"
                ) from None
        finally:
            container.close()
        if not pts:
            raise DrivingVideoError(
                f"The {self.label} {self.name} has no frames. Load a video with at least one frame "
                "(check that the export finished)."
            )
        order = np.argsort(np.asarray(pts, dtype=np.int64), kind="stable")
        self._pts = np.asarray(pts, dtype=np.int64)[order]
        if len(np.unique(self._pts)) != len(self._pts):
            raise self._fail("has several frames with the same timestamp, so frames cannot be told apart")
        self._pts_to_index = {int(t): i for i, t in enumerate(self._pts)}
        keyframes = sorted(int(i) for i, k in zip(np.argsort(order, kind="stable"), keys) if k)
        self._keyframes = keyframes if keyframes and keyframes[0] == 0 else [0] + keyframes
        n = len(self._pts)
        if rate:
            self.fps: Fraction | None = Fraction(rate)
        elif n > 1 and self._time_base:
            self.fps = Fraction(n - 1) / (Fraction(int(self._pts[-1] - self._pts[0])) * self._time_base)
        else:
            self.fps = None
        expected, readable = declared, packets
        if not expected and duration and self.fps:
            # No frame count in the header (Matroska, WebM): the recorded duration says how many.
            expected = int(float(duration) / 1_000_000 * float(self.fps) + 0.5)
            expected = expected if n < expected - 1 else 0  # one frame of rounding is not a cut
            readable = n
        if expected and readable < expected:
            raise self._fail(
                f"is cut short: its header announces {expected} frames but only {readable} can be read"
            )
        self.frames = n
        self.content_digest = digest.hexdigest()[:16]

    # -- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.frames

    @property
    def identity(self) -> str:
        """A digest of the video stream's packets: the same content gives the same identity,
        whatever the file's name or modification time (run folders resume on it)."""
        return self.content_digest

    @property
    def keyframes(self) -> list[int]:
        """Indices of the frames a decoder can start from (the seek points)."""
        return list(self._keyframes)

    def _seek(self, index: int) -> None:
        """Position the decoder at the keyframe at or before ``index``."""
        import av

        if self._container is None:
            self._container = self._open_container()
        stream = self._container.streams.video[0]
        k = self._keyframes[bisect.bisect_right(self._keyframes, index) - 1]
        try:
            self._container.seek(int(self._pts[k]), stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError as e:
            raise self._missing([index], f"seeking failed ({e})") from None
        self._decoder = self._container.decode(stream)
        self._next_index = k
        self.seeks += 1

    def _missing(self, indices, why: str) -> DrivingVideoError:
        lo, hi = int(min(indices)), int(max(indices))
        span = f"frame {lo}" if lo == hi else f"frames {lo}..{hi}"
        return DrivingVideoError(
            f"The {self.label} {self.name} could not give {span} of its {self.frames} ({why}): the file "
            "was cut short, damaged, or changed on disk after the run started. The chunks finished so far "
            "are kept; put the original video back (or re-export it) and queue again to resume."
        )

    def _decode_sorted(self, wanted: np.ndarray) -> dict[int, np.ndarray]:
        """Decode the sorted distinct frame indices ``wanted``; returns index -> fitted frame."""
        import av

        got: dict[int, np.ndarray] = {}
        pending_idx: list[int] = []
        pending: list[np.ndarray] = []

        def flush() -> None:
            if pending:
                fitted = fit_frames(np.stack(pending), self.width, self.height, self.mode)
                got.update(zip(pending_idx, fitted))
                pending_idx.clear()
                pending.clear()

        i, seeks_here = 0, 0
        while i < len(wanted):
            target = int(wanted[i])
            k = self._keyframes[bisect.bisect_right(self._keyframes, target) - 1]
            if self._decoder is None or self._next_index is None or self._next_index > target or k > self._next_index:
                if seeks_here > len(wanted) + 1:
                    raise self._missing(wanted[i:], "the decoder made no progress")
                self._seek(target)
                seeks_here += 1
            try:
                for frame in self._decoder:
                    idx = self._pts_to_index.get(frame.pts) if frame.pts is not None else None
                    self.decoded_frames += 1
                    if idx is None:
                        continue
                    self._next_index = idx + 1
                    if idx == int(wanted[i]):
                        pending_idx.append(idx)
                        pending.append(frame.to_ndarray(format="rgb24"))
                        if len(pending) >= _RESIZE_BATCH:
                            flush()
                    while i < len(wanted) and int(wanted[i]) < self._next_index:
                        if int(wanted[i]) not in got and int(wanted[i]) not in pending_idx:
                            raise self._missing(wanted[i:], f"frame {int(wanted[i])} was not in the stream where the index put it")
                        i += 1
                    if i >= len(wanted):
                        break
                    nxt = int(wanted[i])
                    if self._keyframes[bisect.bisect_right(self._keyframes, nxt) - 1] > self._next_index:
                        break  # a later keyframe is closer: seek instead of decoding the gap
                else:
                    self._decoder, self._next_index = None, None
                    if i < len(wanted):
                        raise self._missing(wanted[i:], "the file ends before them")
            except av.error.FFmpegError as e:
                self._decoder, self._next_index = None, None
                raise self._missing(wanted[i:], f"decoding failed: {e}") from None
        flush()
        return got

    def __getitem__(self, idx: Any) -> np.ndarray:
        """uint8 frames [len(idx), H, W, 3] for an index array (any order, repeats allowed)."""
        order = np.asarray(idx, dtype=np.int64).reshape(-1)
        if order.size and (order.min() < 0 or order.max() >= self.frames):
            raise DrivingVideoError(
                f"Frame indices {int(order.min())}..{int(order.max())} are outside the {self.label} "
                f"{self.name} ({self.frames} frames)."
            )
        wanted = np.unique(order)
        if wanted.size:
            self._check_unchanged(wanted)
        got = {int(i): self._recent[int(i)] for i in wanted if int(i) in self._recent}
        todo = np.array([i for i in wanted if int(i) not in got], dtype=np.int64)
        if todo.size:
            decoded = self._decode_sorted(todo)
            got.update(decoded)
            for i in todo[-_RECENT:]:
                self._recent[int(i)] = decoded[int(i)].copy()  # not a view pinning its whole batch
            while len(self._recent) > _RECENT:
                self._recent.popitem(last=False)
        if not order.size:
            h = self.height if self.height is not None else self.source_height
            w = self.width if self.width is not None else self.source_width
            return np.zeros((0, h, w, 3), np.uint8)
        return np.stack([got[int(i)] for i in order])

    def close(self) -> None:
        """Close the open file (reopened on the next read)."""
        self._decoder, self._next_index = None, None
        self._recent.clear()
        if self._container is not None:
            try:
                self._container.close()
            finally:
                self._container = None

    def __enter__(self) -> "VideoFileFrames":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
