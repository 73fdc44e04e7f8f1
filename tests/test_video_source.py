"""The seekable video frame source: exact windows in any order, counts, fps, refusals."""

from __future__ import annotations

import io
import os
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from everanimate_core.errors import DrivingVideoError
from everanimate_core.plan import ChunkSettings, chunk_driving_indices, driving_indices, plan_for_driving
from everanimate_core.infra.resize import describe_fit, fit_frames
from everanimate_core.infra.video import StreamingVideoWriter, read_video
from everanimate_core.infra.video_source import VideoFileFrames
from nodes.images import ImageFrames

FRAMES = 60
# Keyframes every 8 frames with B-frames: a window in the middle needs a real seek, and decode
# order differs from display order.
X264 = {"preset": "ultrafast", "x264-params": "keyint=8:min-keyint=8:scenecut=0:bframes=2"}


def moving_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Frames that differ from each other everywhere (so a wrong frame index cannot go unnoticed)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    t = np.arange(n, dtype=np.float64)[:, None, None]
    r = 128 + 100 * np.sin(xx / 9.0 + t / 3.0)
    g = 128 + 100 * np.cos(yy / 7.0 - t / 5.0)
    b = (t * 4 + xx) % 256
    return np.rint(np.stack([r, g, b], axis=-1)).astype(np.uint8)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    frames = moving_frames(FRAMES)
    with StreamingVideoWriter(d / "pose.mp4", 16, crf=18, options=X264) as w:
        w.write(frames)
    with StreamingVideoWriter(d / "pose.mkv", Fraction(30000, 1001), codec="ffv1", crf=None, pix_fmt="bgr0") as w:
        w.write(frames)
    return {"x264": d / "pose.mp4", "ffv1": d / "pose.mkv"}


@pytest.fixture(scope="module")
def decoded(clips) -> dict[str, np.ndarray]:
    return {k: read_video(p) for k, p in clips.items()}


WINDOWS = {
    "forward": np.arange(17, 26),
    "reversed": np.arange(59, 40, -1),
    "repeats_and_jumps": np.array([5, 5, 5, 50, 3, 3, 40, 59, 0]),
    "pingpong_past_the_end": driving_indices(50, 25, FRAMES, "pingpong"),
    "hold_last": driving_indices(55, 12, FRAMES, "hold"),
    "loop_wraps": driving_indices(52, 20, FRAMES, "loop"),
    "whole_clip": np.arange(FRAMES),
}


@pytest.mark.parametrize("kind", ["x264", "ffv1"])
@pytest.mark.parametrize("window", list(WINDOWS))
def test_windows_equal_a_full_decode(clips, decoded, kind, window):
    src = VideoFileFrames(clips[kind])
    idx = WINDOWS[window]
    out = src[idx]
    assert out.dtype == np.uint8 and out.shape == (len(idx), 48, 64, 3)
    assert np.array_equal(out, decoded[kind][idx])


@pytest.mark.parametrize("kind", ["x264", "ffv1"])
def test_every_chunk_window_of_a_plan_in_a_row(clips, decoded, kind):
    src = VideoFileFrames(clips[kind])
    plan = plan_for_driving(FRAMES, ChunkSettings(9, 4, 4), 130, "pingpong")  # longer than the clip
    for chunk in plan:
        idx = chunk_driving_indices(chunk, len(src), "pingpong")
        assert np.array_equal(src[idx], decoded[kind][idx]), chunk


def test_counts_fps_and_keyframes_come_from_the_packet_index(clips):
    mp4, mkv = VideoFileFrames(clips["x264"]), VideoFileFrames(clips["ffv1"])
    assert len(mp4) == len(mkv) == FRAMES
    assert mp4.fps == 16 and mkv.fps == Fraction(30000, 1001)
    assert (mp4.source_width, mp4.source_height) == (64, 48)
    assert mp4.keyframes == list(range(0, FRAMES, 8)), "x264 was asked for a keyframe every 8 frames"
    assert mp4.decoded_frames == 0, "opening only demuxes"


def test_a_late_window_seeks_instead_of_decoding_from_the_start(clips):
    src = VideoFileFrames(clips["x264"])
    src[np.arange(49, 58)]
    assert src.seeks == 1
    assert src.decoded_frames <= 9 + 8 + 2, "decoding starts at the keyframe before the window (48)"
    before = src.decoded_frames
    src[np.arange(17, 9, -1)]  # backwards: one seek to keyframe 8
    assert src.seeks == 2 and src.decoded_frames - before <= 10 + 2


def test_consecutive_chunk_windows_decode_a_long_gop_file_once(tmp_path):
    """One keyframe for the whole clip: each chunk's window starts inside the previous one (the
    overlap), which must not send the decoder back to frame 0 every chunk."""
    path = tmp_path / "one_gop.mp4"
    frames = moving_frames(120)
    with StreamingVideoWriter(path, 16, options={"preset": "ultrafast", "x264-params": "keyint=300:min-keyint=300:scenecut=0"}) as w:
        w.write(frames)
    src = VideoFileFrames(path)
    assert src.keyframes == [0]
    full = read_video(path)
    plan = plan_for_driving(120, ChunkSettings(13, 4, 4), None, "pingpong")
    for chunk in plan:
        idx = chunk_driving_indices(chunk, 120, "pingpong")
        assert np.array_equal(src[idx], full[idx])
    assert src.seeks == 1 and src.decoded_frames <= 120 + 4, (src.seeks, src.decoded_frames)


def test_a_window_holds_only_its_own_frames_in_memory(tmp_path):
    path = tmp_path / "long.mp4"
    with StreamingVideoWriter(path, 16, options=X264) as w:
        for s in range(0, 240, 40):
            w.write(moving_frames(40, 64, 64))
    src = VideoFileFrames(path, 64, 64)
    frame_bytes = 64 * 64 * 3
    tracemalloc.start()
    try:
        src[np.arange(200, 209)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 * frame_bytes, f"reading 9 of 240 frames peaked at {peak / frame_bytes:.0f} frames"


@pytest.mark.parametrize("mode", ["crop", "pad", "stretch"])
def test_video_and_image_paths_of_the_same_frames_agree(clips, decoded, mode):
    """Tolerance: at most 1 level of 255 per pixel (measured: identical; both paths run the same resize)."""
    comfy_image = torch.from_numpy(decoded["x264"]) / 255.0  # what Get Video Components makes
    image_path = ImageFrames(comfy_image, 40, 56, mode)
    video_path = VideoFileFrames(clips["x264"], 40, 56, mode)
    idx = np.array([0, 7, 8, 33, 59, 33])
    a, b = image_path[idx].astype(int), video_path[idx].astype(int)
    assert a.shape == b.shape == (6, 56, 40, 3)
    assert np.abs(a - b).max() <= 1
    assert (a == b).mean() > 0.99


def test_fit_frames_sizes_and_describe_fit():
    frames = moving_frames(2, 48, 64)
    assert fit_frames(frames, None, None).shape == (2, 48, 64, 3)
    assert fit_frames(frames, 32, 32, "pad").shape == (2, 32, 32, 3)
    assert describe_fit(64, 48, 128, 96, "crop") is None, "same aspect: only scaled"
    crop = describe_fit(832, 480, 480, 832, "crop")
    assert "832x480" in crop and "'crop'" in crop and "'pad'" in crop and "cut off" in crop
    pad = describe_fit(832, 480, 480, 832, "pad")
    assert "black bars" in pad and "'crop'" in pad


def test_bytes_sources_read_like_files(clips, decoded):
    data = clips["x264"].read_bytes()
    src = VideoFileFrames(io.BytesIO(data))
    assert len(src) == FRAMES and src.name == "an in-memory video"
    assert np.array_equal(src[np.arange(30, 20, -1)], decoded["x264"][30:20:-1])


# ---------------------------------------------------------------------------------------------
# refusals
# ---------------------------------------------------------------------------------------------


def _zero_frame_file(path: Path, fmt: str, codec: str, pix_fmt: str) -> Path:
    container = av.open(str(path), "w", format=fmt)
    stream = container.add_stream(codec, rate=16)
    stream.width, stream.height, stream.pix_fmt = 64, 48, pix_fmt
    container.start_encoding()
    container.close()
    return path


@pytest.mark.parametrize("fmt,codec,pix_fmt,suffix", [("mp4", "libx264", "yuv420p", ".mp4"), ("matroska", "ffv1", "bgr0", ".mkv")])
def test_a_video_without_frames_is_refused(tmp_path, fmt, codec, pix_fmt, suffix):
    path = _zero_frame_file(tmp_path / f"empty{suffix}", fmt, codec, pix_fmt)
    with pytest.raises(DrivingVideoError, match="no video frames|cannot be read") as e:
        VideoFileFrames(path)
    assert "empty" + suffix in str(e.value)


def test_unreadable_and_missing_files_are_refused(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(os.urandom(4000))
    with pytest.raises(DrivingVideoError, match="cannot be read as a video.*Re-export"):
        VideoFileFrames(junk)
    with pytest.raises(DrivingVideoError, match="does not exist"):
        VideoFileFrames(tmp_path / "nowhere.mp4")


def _truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def test_truncated_files_are_refused_before_anything_runs(clips, tmp_path):
    # MP4 with its index at the end: the index is gone.
    with pytest.raises(DrivingVideoError, match="cannot be read as a video"):
        VideoFileFrames(_truncate(clips["x264"], tmp_path / "cut.mp4", 0.6))
    # Matroska: the header announces more frames than the file holds.
    with pytest.raises(DrivingVideoError, match=rf"cut short: its header announces {FRAMES} frames but only \d+"):
        VideoFileFrames(_truncate(clips["ffv1"], tmp_path / "cut.mkv", 0.6))


def test_a_file_cut_while_a_run_reads_it_fails_at_that_window(clips, decoded, tmp_path):
    path = tmp_path / "live.mkv"
    path.write_bytes(clips["ffv1"].read_bytes())
    src = VideoFileFrames(path)
    assert np.array_equal(src[np.arange(9)], decoded["ffv1"][:9])
    _truncate(clips["ffv1"], path, 0.4)
    with pytest.raises(DrivingVideoError, match=r"frames 40\.\.48 of its 60.*changed on disk.*queue again to resume"):
        src[np.arange(40, 49)]


def test_out_of_range_indices_are_refused(clips):
    with pytest.raises(DrivingVideoError, match="outside"):
        VideoFileFrames(clips["x264"])[np.array([0, FRAMES])]
