"""Tests for everanimate_core.infra.video: streaming writer, readers, side_by_side."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from everanimate_core.errors import ConfigError, EverAnimateError
from everanimate_core.apps.metrics import psnr
from everanimate_core.infra.video import (
    StreamingVideoWriter,
    count_frames,
    iter_video_frames,
    read_video,
    side_by_side,
    video_info,
)

REPO = Path(__file__).resolve().parents[1]
FAST = {"preset": "ultrafast"}


def smooth_frames(start: int, n: int, h: int = 64, w: int = 64) -> np.ndarray:
    """Smooth, slowly moving colour gradients: compress well and decode close to input."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    t = np.arange(start, start + n, dtype=np.float64)[:, None, None]
    r = 128 + 90 * np.sin(xx / 13.0 + t / 17.0)
    g = 128 + 90 * np.cos(yy / 11.0 - t / 23.0)
    b = 128 + 60 * np.sin((xx + yy) / 19.0 + t / 29.0)
    return np.rint(np.stack([r, g, b], axis=-1)).astype(np.uint8)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "tmp" in p.name)


def test_roundtrip_300_frames_in_batches(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    frames = smooth_frames(0, 300)
    with StreamingVideoWriter(out, fps=16, crf=8, options=FAST) as w:
        for s in range(0, 300, 7):  # uneven batch sizes, last batch shorter
            w.write(frames[s : s + 7])
            assert not out.exists(), "final file must only appear at close"
        assert w.frames_written == 300
    assert out.exists()
    assert leftovers(tmp_path) == []
    assert count_frames(out) == 300
    assert count_frames(out, exact=True) == 300
    info = video_info(out)
    assert (info.width, info.height, info.frames) == (64, 64, 300)
    assert info.fps == pytest.approx(16.0)
    decoded = read_video(out)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert psnr(decoded, frames) > 30.0
    # Frame order is kept: every decoded frame is closest to its own source frame.
    assert psnr(decoded[150], frames[150]) > psnr(decoded[150], frames[120]) + 3
    # Sub-range reading and the streaming iterator agree with the full read.
    np.testing.assert_array_equal(read_video(out, 100, 110), decoded[100:110])
    it = iter_video_frames(out)
    np.testing.assert_array_equal(next(it), decoded[0])
    it.close()


def test_torch_float_input_matches_uint8(tmp_path: Path) -> None:
    frames = smooth_frames(0, 12)
    as_float = torch.from_numpy(frames).float() / 255.0
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    with StreamingVideoWriter(a, fps=8, crf=8, options=FAST) as w:
        w.write(frames)
    with StreamingVideoWriter(b, fps=8, crf=8, options=FAST) as w:
        w.write(as_float[:5])
        w.write(as_float[5])  # a single [H,W,3] frame
        w.write(as_float[6:])
    np.testing.assert_array_equal(read_video(a), read_video(b))


def test_existing_file_replaced_only_at_close(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"old video")
    with StreamingVideoWriter(out, fps=16, options=FAST) as w:
        w.write(smooth_frames(0, 10))
        assert out.read_bytes() == b"old video"
    assert count_frames(out) == 10


def test_exception_keeps_partial_file(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    frames = smooth_frames(0, 40)
    with pytest.raises(RuntimeError, match="boom"):
        with StreamingVideoWriter(out, fps=16, crf=8, options=FAST) as w:
            w.write(frames[:25])
            raise RuntimeError("boom")
    partial = tmp_path / "clip.partial.mp4"
    assert not out.exists()
    assert partial.exists()
    assert leftovers(tmp_path) == []
    decoded = read_video(partial)
    assert decoded.shape[0] == 25
    assert psnr(decoded, frames[:25]) > 30.0


def test_abort_without_frames_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    with pytest.raises(RuntimeError):
        with StreamingVideoWriter(out, fps=16, width=64, height=64):
            raise RuntimeError("fails before any frame")
    assert list(tmp_path.iterdir()) == []
    w = StreamingVideoWriter(out, fps=16)
    assert w.abort() is None
    assert list(tmp_path.iterdir()) == []


def test_close_without_frames_raises_and_cleans(tmp_path: Path) -> None:
    w = StreamingVideoWriter(tmp_path / "clip.mp4", fps=16)
    with pytest.raises(EverAnimateError, match="no frames"):
        w.close()
    assert list(tmp_path.iterdir()) == []


def test_odd_size_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="even"):
        StreamingVideoWriter(tmp_path / "a.mp4", fps=16, width=63, height=64)
    with pytest.raises(ConfigError, match="yuv420p needs an even"):
        with StreamingVideoWriter(tmp_path / "b.mp4", fps=16) as w:
            w.write(np.zeros((2, 64, 65, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_frame_size_change_and_bad_input_rejected(tmp_path: Path) -> None:
    with pytest.raises(EverAnimateError, match="differs"):
        with StreamingVideoWriter(tmp_path / "a.mp4", fps=16, options=FAST) as w:
            w.write(np.zeros((2, 32, 32, 3), np.uint8))
            w.write(np.zeros((2, 32, 48, 3), np.uint8))
    # the two good frames survive as a partial file
    assert count_frames(tmp_path / "a.partial.mp4") == 2
    w = StreamingVideoWriter(tmp_path / "b.mp4", fps=16)
    with pytest.raises(EverAnimateError, match="NaN"):
        w.write(torch.full((1, 32, 32, 3), float("nan")))
    with pytest.raises(EverAnimateError, match="shape"):
        w.write(np.zeros((1, 32, 32, 4), np.uint8))
    w.abort()


MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, {repo!r})
    from everanimate_core.infra.video import StreamingVideoWriter

    def peak_kib():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])

    def stream(n, path):
        yy, xx = np.mgrid[0:64, 0:64]
        with StreamingVideoWriter(path, fps=16, options={{"preset": "ultrafast"}}) as w:
            for s in range(0, n, 8):
                t = np.arange(s, min(n, s + 8))[:, None, None]
                r = (128 + 100 * np.sin(xx / 9 + t / 5)).astype(np.uint8)
                g = (128 + 100 * np.cos(yy / 11 - t / 7)).astype(np.uint8)
                b = ((xx * 3 + yy * 5 + t * 7) % 256).astype(np.uint8)
                w.write(np.stack([r, g, b], -1))
            assert w.frames_written == n

    stream(200, sys.argv[1])
    short = peak_kib()
    stream(2000, sys.argv[2])
    long = peak_kib()
    print(short, long)
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_memory_does_not_grow_with_length(tmp_path: Path) -> None:
    """Peak RSS after a 2000-frame stream is within a few MB of a 200-frame stream.

    Runs in a fresh interpreter so that memory freed by earlier tests cannot hide
    growth. Buffering the 1800 extra 64x64 frames even as uint8 would add ~22 MB, so
    the 10 MB bound fails for any writer that keeps frames.
    """
    script = tmp_path / "mem.py"
    script.write_text(MEMORY_SCRIPT.format(repo=str(REPO)))
    short_mp4, long_mp4 = tmp_path / "short.mp4", tmp_path / "long.mp4"
    res = subprocess.run(
        [sys.executable, str(script), str(short_mp4), str(long_mp4)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    short_kib, long_kib = map(int, res.stdout.split())
    growth_mb = (long_kib - short_kib) / 1024
    assert growth_mb < 10.0, f"peak RSS grew by {growth_mb:.1f} MB for 1800 more frames"
    assert count_frames(long_mp4) == 2000


def test_side_by_side() -> None:
    a = np.zeros((2, 3, 4, 3), np.uint8)
    b = np.full((2, 3, 5, 3), 200, np.uint8)
    out = side_by_side(a, b, scale=2)
    assert out.shape == (2, 6, 18, 3)
    assert (out[:, :, :8] == 0).all() and (out[:, :, 8:] == 200).all()
    # nearest neighbour: each source pixel becomes a 2x2 block
    img = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    up = side_by_side(img, scale=3)
    assert up.shape == (6, 6, 3)
    np.testing.assert_array_equal(up[0:3, 3:6], np.broadcast_to(img[0, 1], (3, 3, 3)))
    np.testing.assert_array_equal(up[3:6, 0:3], np.broadcast_to(img[1, 0], (3, 3, 3)))
    # float input in [0, 1] is converted to uint8
    f = torch.ones(1, 3, 4, 3)
    assert (side_by_side(f, a[:1]).astype(int)[:, :, :4] == 255).all()
    with pytest.raises(EverAnimateError, match="height"):
        side_by_side(a, np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ConfigError):
        side_by_side(a, scale=0)


_ENCODE_ONCE = textwrap.dedent(
    """
    import hashlib, json, os, sys, tempfile
    import numpy as np
    from everanimate_core.infra.video import StreamingVideoWriter
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (240 + 64, 416 + 64, 3), dtype=np.uint8)
    frames = np.stack([base[i % 32 : i % 32 + 240, 2 * i % 64 : 2 * i % 64 + 416] for i in range(24)])
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "x.mp4")
        with StreamingVideoWriter(p, 16, options=json.loads(sys.argv[1])) as w:
            w.write(frames)
        print(hashlib.sha256(open(p, "rb").read()).hexdigest())
    """
)


def _encode_with_heap_filled(fill: int, options: dict) -> str:
    import json
    import os

    env = dict(os.environ, MALLOC_PERTURB_=str(fill))
    out = subprocess.run([sys.executable, "-c", _ENCODE_ONCE, json.dumps(options)], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _has_avx512() -> bool:
    try:
        return "avx512bw" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not _has_avx512(), reason="the x264 over-read this guards against is in its AVX-512 code path")
def test_identical_frames_give_identical_mp4_bytes_whatever_the_heap_holds() -> None:
    """A resumed run's MP4 must equal an uninterrupted run's byte for byte. x264's AVX-512 mbtree
    code reads past its buffers at widths that are not a multiple of 128 (416 here, 832 in the
    release), so with mbtree on the bytes depend on what the process allocated before; the writer
    turns mbtree off. The same encode with mbtree forced on shows the test can fail."""
    with_mbtree = {"x264-params": "mbtree=1"}
    if _encode_with_heap_filled(1, with_mbtree) == _encode_with_heap_filled(170, with_mbtree):
        pytest.skip("on this machine the heap contents do not reach x264's output even with mbtree on")
    assert _encode_with_heap_filled(1, {}) == _encode_with_heap_filled(170, {})
