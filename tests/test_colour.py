"""Tests for everanimate_core.colour: colour matching of chunks and the seam/drift measures.

``python tests/test_colour.py`` prints the seam ratio and colour drift of the synthetic drifting
video with and without each method.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from everanimate_core.colour import (
    COLOUR_METHODS,
    ColourMatch,
    MatchedSink,
    _rgb_to_lab,
    colour_drift,
    match_colours,
    seam_ratio,
)
from everanimate_core.errors import ConfigError, EverAnimateError
from everanimate_core.apps.metrics import SeamMeter

METHODS = [m for m in COLOUR_METHODS if m != "none"]
CHUNK, N_CHUNKS = 12, 5


def scene(n_frames: int = CHUNK * N_CHUNKS, h: int = 24, w: int = 32) -> np.ndarray:
    """A smooth moving scene, float RGB levels [T, H, W, 3] inside ~[40, 215]: a static colour
    gradient with a fixed texture and a soft red disc (the dancer) circling at constant speed, so
    every frame-to-frame difference is about the same (~2.6 levels) and chunks look alike."""
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h - 1, w - 1])[:, None, None]
    bg = np.stack([90 + 60 * xx, 110 + 40 * yy, 150 - 60 * xx], axis=-1)
    bg += np.random.default_rng(0).normal(0, 6, size=bg.shape)
    frames = []
    for t in range(n_frames):
        a = 2 * np.pi * t / 16
        cx, cy = 0.5 + 0.1 * np.cos(a), 0.5 + 0.1 * np.sin(a) * w / h
        disc = 1 / (1 + np.exp((np.hypot(xx - cx, (yy - cy) * h / w) - 0.2) * 40))[..., None]
        frames.append(bg * (1 - disc) + np.array([200.0, 70.0, 60.0]) * disc)
    return np.stack(frames)


def to_u8(x: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(x, 0, 255)).astype(np.uint8)


def cast(x: np.ndarray, k: int) -> np.ndarray:
    """Wan-like drift of chunk k: saturation and brightness grow, a warm tint creeps in."""
    grey = x.mean(axis=-1, keepdims=True)
    y = grey + (1 + 0.12 * k) * (x - grey)
    return y * (1 + 0.05 * k) + np.array([3.0, 0.0, -3.0]) * k


def drifting_video() -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(video uint8 [T, H, W, 3] with a growing cast per chunk, reference = clean frame 0, starts)."""
    clean = scene()
    starts = list(range(0, len(clean), CHUNK))
    video = np.concatenate([cast(clean[s : s + CHUNK], i) for i, s in enumerate(starts)])
    return to_u8(video), to_u8(clean[0]), starts


def matched_video(video: np.ndarray, reference: np.ndarray, starts: list[int], cm: ColourMatch) -> np.ndarray:
    cm.fit(reference)
    bounds = starts + [len(video)]
    return np.concatenate([cm.apply(video[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])


def chunk_and_target() -> tuple[np.ndarray, np.ndarray]:
    clean = scene(8)
    return to_u8(clean), to_u8(clean * np.array([1.15, 0.9, 0.8]) + np.array([10.0, -5.0, 12.0]))


# --- API and identity -----------------------------------------------------------------------


def test_off_by_default_and_widget_tuple() -> None:
    assert COLOUR_METHODS == ("none", "reinhard", "mkl", "histogram")
    cm = ColourMatch()
    assert cm.method == "none" and not cm.enabled


@pytest.mark.parametrize("method,strength", [("none", 1.0)] + [(m, 0.0) for m in METHODS])
def test_identity_is_bit_exact(method: str, strength: float) -> None:
    target, chunk = chunk_and_target()
    cm = ColourMatch(method, strength).fit(target[0])
    out = cm.apply(chunk)
    assert out is chunk and np.array_equal(out, chunk)
    assert ColourMatch("none").apply(chunk) is chunk  # no fit needed when off


@pytest.mark.parametrize("method", METHODS)
def test_matching_a_chunk_to_itself_leaves_it_unchanged(method: str) -> None:
    chunk = chunk_and_target()[0]
    out = ColourMatch(method, target="anchors").fit(chunk).apply(chunk)
    assert out.dtype == np.uint8 and out.shape == chunk.shape
    diff = np.abs(out.astype(int) - chunk)
    assert diff.max() <= 1 and diff.mean() < 0.05


# --- each method restores what it claims to -------------------------------------------------


def rgb_mean_cov(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    px = x.reshape(-1, 3).astype(np.float64)
    return px.mean(axis=0), np.cov(px.T, bias=True)


def lab_pixels(x: np.ndarray) -> np.ndarray:
    return _rgb_to_lab(x.reshape(-1, 3)).T.astype(np.float64)


def test_reinhard_restores_lab_mean_and_std_and_rgb_mean() -> None:
    target, casted = chunk_and_target()
    out = ColourMatch("reinhard", target="anchors").fit(target).apply(casted)
    lab_t, lab_c, lab_o = (lab_pixels(x) for x in (target, casted, out))
    assert np.abs(lab_c.mean(0) - lab_t.mean(0)).max() > 5  # the cast is real
    assert np.abs(lab_o.mean(0) - lab_t.mean(0)).max() < 0.5
    assert np.allclose(lab_o.std(0), lab_t.std(0), rtol=0.05)
    mu_t, mu_c, mu_o = (rgb_mean_cov(x)[0] for x in (target, casted, out))
    assert np.abs(mu_c - mu_t).max() > 10
    assert np.abs(mu_o - mu_t).max() < 2.0


def test_mkl_restores_rgb_mean_and_covariance() -> None:
    target, casted = chunk_and_target()
    out = ColourMatch("mkl", target="anchors").fit(target).apply(casted)
    (mu_t, cov_t), (mu_c, cov_c), (mu_o, cov_o) = (rgb_mean_cov(x) for x in (target, casted, out))
    rel = lambda c: np.linalg.norm(c - cov_t) / np.linalg.norm(cov_t)  # noqa: E731
    assert np.abs(mu_c - mu_t).max() > 10 and rel(cov_c) > 0.15
    assert np.abs(mu_o - mu_t).max() < 1.0
    assert rel(cov_o) < 0.02


def test_mkl_fixes_a_channel_mixing_cast_reinhard_cannot_see() -> None:
    """A cast that mixes channels: mkl's full covariance brings it back closer than a per-axis
    transfer, so mkl is not reinhard in disguise."""
    clean = scene(8)
    mix = np.array([[0.8, 0.3, 0.0], [0.0, 0.8, 0.3], [0.3, 0.0, 0.8]])
    target, casted = to_u8(clean), to_u8(clean @ mix.T)
    cov_t = rgb_mean_cov(target)[1]
    err = {m: np.linalg.norm(rgb_mean_cov(match_colours(casted, target, m))[1] - cov_t) for m in METHODS}
    assert err["mkl"] < 0.02 * np.linalg.norm(cov_t) < min(err["reinhard"], err["histogram"])


def test_histogram_matches_per_channel_quantiles() -> None:
    clean = scene(8)
    target = to_u8(clean)
    casted = to_u8(255 * (clean / 255) ** np.array([0.7, 1.0, 1.4]) + np.array([0.0, 15.0, 0.0]))
    out = match_colours(casted, target, "histogram")
    q = np.linspace(0.05, 0.95, 10)
    quant = lambda x: np.quantile(x.reshape(-1, 3), q, axis=0)  # noqa: E731
    assert np.abs(quant(casted) - quant(target)).max() > 10
    assert np.abs(quant(out) - quant(target)).max() <= 2.0


def test_flat_chunk_does_not_blow_up() -> None:
    """An almost flat chunk (a gain without the cap would be ~60x): reinhard/mkl move its mean to
    the target's and amplify its +-1 level noise at most 4x; histogram stays finite and in range
    (it maps quantiles, so it gives the two levels the target's spread by design)."""
    target = chunk_and_target()[0]
    flat = np.full((4, 8, 8, 3), 128, dtype=np.uint8)
    flat[:, ::2, ::2] += 1
    for method in METHODS:
        out = match_colours(flat, target, method)
        assert out.dtype == np.uint8 and out.shape == flat.shape
        if method != "histogram":
            assert out.reshape(-1, 3).astype(float).std(0).max() <= 4 * flat.reshape(-1, 3).std(0).max() + 1
    lab = lambda x: lab_pixels(x).mean(0)  # noqa: E731
    assert np.abs(lab(match_colours(flat, target, "reinhard")) - lab(target)).max() < 1
    rgb = lambda x: x.reshape(-1, 3).mean(0)  # noqa: E731
    assert np.abs(rgb(match_colours(flat, target, "mkl")) - rgb(target)).max() < 1


# --- one transform per chunk -----------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_one_transform_for_all_frames_of_a_chunk(method: str) -> None:
    """Every input colour maps to the same output colour in every frame (one pooled transform),
    and the result is not the per-frame fit (which would flicker)."""
    video, reference, _ = drifting_video()
    chunk = video[2 * CHUNK : 3 * CHUNK]
    cm = ColourMatch(method, 0.8).fit(reference)
    out = cm.apply(chunk)
    assert np.array_equal(out, cm.apply(chunk))  # deterministic
    pairs = np.unique(np.concatenate([chunk.reshape(-1, 3), out.reshape(-1, 3)], axis=1), axis=0)
    assert len(pairs) == len(np.unique(chunk.reshape(-1, 3), axis=0))
    per_frame = np.stack([cm.apply(f[None])[0] for f in chunk])
    assert not np.array_equal(per_frame, out)


@pytest.mark.parametrize("method", METHODS)
def test_non_contiguous_input_gives_the_same_result(method: str) -> None:
    target, chunk = chunk_and_target()
    strided = np.ascontiguousarray(chunk.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)  # same values, W-major
    cm = ColourMatch(method, 0.7).fit(target[0])
    assert not strided.flags.c_contiguous
    assert np.array_equal(cm.apply(strided), cm.apply(chunk))


def test_anchor_stack_of_another_size_is_a_valid_target() -> None:
    video, _, _ = drifting_video()
    anchors = to_u8(scene(3, h=40, w=56))
    out = ColourMatch("reinhard", target="anchors").fit(anchors).apply(video[-CHUNK:])
    before, after = (colour_drift(x, anchors, window=CHUNK)[0] for x in (video[-CHUNK:], out))
    assert after < 0.3 * before


# --- measures and the drifting video ---------------------------------------------------------


def test_seam_ratio_smooth_jump_and_agrees_with_seam_meter() -> None:
    clean = to_u8(scene())
    starts = list(range(0, len(clean), CHUNK))
    assert 0.9 < seam_ratio(clean, starts) < 1.1
    jump = clean.astype(float)
    jump[3 * CHUNK :] *= 1.1
    assert seam_ratio(to_u8(jump), [3 * CHUNK]) > 3  # one join, with a 10% brightness jump
    assert 1.5 < seam_ratio(to_u8(jump), starts) < 3  # the same jump averaged with 3 clean joins
    video = drifting_video()[0]
    meter = SeamMeter(starts)
    meter.update(video, 0)
    assert seam_ratio(video, starts) == pytest.approx(meter.seam_ratio, rel=1e-12)
    assert math.isnan(seam_ratio(clean, [0]))


def test_colour_drift_segments() -> None:
    video, reference, starts = drifting_video()
    by_chunk = colour_drift(video, reference, chunk_starts=starts)
    assert by_chunk.shape == (N_CHUNKS,)
    assert np.allclose(colour_drift(video, reference, window=CHUNK), by_chunk)
    assert np.all(np.diff(by_chunk) > 0) and by_chunk[-1] > 10 * max(by_chunk[0], 1.0)


@pytest.mark.parametrize("method", METHODS)
def test_matching_removes_seams_and_drift_of_a_drifting_video(method: str) -> None:
    video, reference, starts = drifting_video()
    r_off = seam_ratio(video, starts)
    d_off = colour_drift(video, reference, chunk_starts=starts)
    assert r_off > 2
    on = matched_video(video, reference, starts, ColourMatch(method))
    half = matched_video(video, reference, starts, ColourMatch(method, 0.5))
    r_on, r_half = seam_ratio(on, starts), seam_ratio(half, starts)
    d_on = colour_drift(on, reference, chunk_starts=starts)
    # joins: most of the excess over 1 is gone; half strength lands in between
    assert r_on - 1 < 0.25 * (r_off - 1)
    assert r_on < r_half < r_off
    # drift: the last chunk is as close to the reference as the first, far closer than without
    assert d_on[-1] < 0.2 * d_off[-1] and d_on[-1] < d_on[0] + 2.0


@pytest.mark.parametrize("method", METHODS)
def test_matching_a_drift_free_video_adds_no_visible_joins(method: str) -> None:
    """Matching every chunk to the same target moves each chunk a little when its content differs
    from the target's; on a scene whose chunks look alike that must stay invisible."""
    clean = to_u8(scene())
    starts = list(range(0, len(clean), CHUNK))
    assert seam_ratio(matched_video(clean, clean[0], starts, ColourMatch(method)), starts) < 1.15


# --- errors ----------------------------------------------------------------------------------


def test_errors_say_what_to_do() -> None:
    chunk = chunk_and_target()[0]
    with pytest.raises(ConfigError, match="choose one of"):
        ColourMatch("lab")
    with pytest.raises(ConfigError, match="choose one of"):
        ColourMatch("mkl", target="previous")
    for bad in (-0.1, 1.5, math.nan, "x"):
        with pytest.raises(ConfigError, match=r"\[0, 1\]"):
            ColourMatch("mkl", bad)
    cm = ColourMatch("mkl")
    with pytest.raises(EverAnimateError, match="before fit"):
        cm.apply(chunk)
    with pytest.raises(ConfigError, match="target='anchors'"):
        cm.fit(chunk)  # a stack for target='reference'
    cm.fit(chunk[0])
    with pytest.raises(EverAnimateError, match="uint8"):
        cm.apply(chunk.astype(np.float32) / 255)
    with pytest.raises(EverAnimateError, match="leading axis"):
        cm.apply(chunk[0])
    with pytest.raises(EverAnimateError, match="chunk starts"):
        seam_ratio(chunk, [0, 99])
    with pytest.raises(EverAnimateError, match="exactly one"):
        colour_drift(chunk, chunk[0])
    assert issubclass(EverAnimateError, ValueError)


def report() -> None:
    """Seam ratio and colour drift of the synthetic drifting video, without and with each method."""
    video, reference, starts = drifting_video()
    print(f"synthetic drifting video: {N_CHUNKS} chunks x {CHUNK} frames, {video.shape[2]}x{video.shape[1]}")
    print(f"{'method':<10} {'strength':>8} {'seam ratio':>10}   colour drift per chunk (delta-E to reference)")
    for method, strength in [("none", 1.0)] + [(m, s) for m in METHODS for s in (0.5, 1.0)]:
        out = matched_video(video, reference, starts, ColourMatch(method, strength))
        drift = colour_drift(out, reference, chunk_starts=starts)
        series = " ".join(f"{d:5.2f}" for d in drift)
        print(f"{method:<10} {strength:>8.1f} {seam_ratio(out, starts):>10.2f}   {series}")
    clean = to_u8(scene())
    print(f"drift-free video (what matching itself adds): none {seam_ratio(clean, starts):.2f}, " + ", ".join(
        f"{m} {seam_ratio(matched_video(clean, clean[0], starts, ColourMatch(m)), starts):.2f}" for m in METHODS
    ))


if __name__ == "__main__":
    report()


# --------------------------------------------------------------------------- the sink in the loop


class _Collect:
    def __init__(self):
        self.chunks = []

    def write(self, frames):
        self.chunks.append(np.array(frames))


def _drifting_chunks(n=4, t=9):
    rng = np.random.default_rng(3)
    base = rng.integers(40, 200, size=(t, 12, 16, 3)).astype(np.float64)
    return [np.clip(base * (1 + 0.15 * k) + 4 * k, 0, 255).astype(np.uint8) for k in range(n)]


def test_matched_sink_matches_every_chunk_to_the_reference_and_a_replay_gives_the_same_video():
    chunks = _drifting_chunks()
    ref = chunks[0][0]
    first = _Collect()
    sink = MatchedSink(first, ColourMatch("mkl", 1.0, "reference"), ref)
    for c in chunks:
        sink.write(c)
    drift_raw = colour_drift(np.concatenate(chunks), ref, chunk_starts=[0, 9, 18, 27])
    drift_out = colour_drift(np.concatenate(first.chunks), ref, chunk_starts=[0, 9, 18, 27])
    assert drift_out[-1] < 0.25 * drift_raw[-1], (drift_raw, drift_out)
    # a resume replays the raw segments one chunk per write through a new sink: the same bytes
    again = _Collect()
    replay = MatchedSink(again, ColourMatch("mkl", 1.0, "reference"), ref)
    for c in chunks:
        replay.write(c)
    assert all(np.array_equal(a, b) for a, b in zip(first.chunks, again.chunks))


def test_matched_sink_anchor_target_leaves_chunk0_and_none_passes_the_frames_through():
    chunks = _drifting_chunks()
    out = _Collect()
    sink = MatchedSink(out, ColourMatch("reinhard", 1.0, "anchors"))
    for c in chunks:
        sink.write(c)
    assert np.array_equal(out.chunks[0], chunks[0])
    assert not np.array_equal(out.chunks[-1], chunks[-1])
    assert abs(out.chunks[-1].mean() - chunks[0].mean()) < 0.25 * abs(chunks[-1].mean() - chunks[0].mean())
    plain = _Collect()
    off = MatchedSink(plain, ColourMatch("none"))
    for c in chunks:
        off.write(c)
    assert all(np.array_equal(a, b) for a, b in zip(plain.chunks, chunks))
    with pytest.raises(ConfigError, match="reference image"):
        MatchedSink(_Collect(), ColourMatch("mkl", 1.0, "reference"))
