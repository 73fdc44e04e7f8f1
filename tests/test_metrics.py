"""Tests for everanimate_core.apps.metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from everanimate_core.errors import EverAnimateError
from everanimate_core.apps.metrics import (
    SeamMeter,
    background_psnr,
    masked_color_error,
    psnr,
    psnr_per_frame,
    ssim,
)


def image(seed: int = 0, shape: tuple[int, ...] = (4, 32, 40, 3)) -> np.ndarray:
    """Textured uint8 test frames, kept inside [30, 225] so +-d noise never clips."""
    rng = np.random.default_rng(seed)
    return rng.integers(30, 226, size=shape, dtype=np.uint8)


def plus_minus(shape: tuple[int, ...], d: int, seed: int = 1) -> np.ndarray:
    """Noise that is exactly +d or -d everywhere, so the MSE is exactly d^2."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random(shape) < 0.5, -d, d).astype(np.int16)


def test_psnr_identical_is_inf() -> None:
    a = image()
    assert psnr(a, a.copy()) == math.inf
    assert psnr(torch.from_numpy(a).float() / 255, torch.from_numpy(a).float() / 255) == math.inf
    assert np.isinf(psnr_per_frame(a, a)).all()


def test_psnr_matches_closed_form() -> None:
    a = image()
    for d in (1, 5, 20):
        b = (a.astype(np.int16) + plus_minus(a.shape, d)).astype(np.uint8)
        expected = 20 * math.log10(255 / d)  # 10 log10(255^2 / d^2)
        assert psnr(a, b) == pytest.approx(expected, abs=1e-9)
        # float inputs on the 0..1 scale give the same value
        assert psnr(a / 255.0, b / 255.0) == pytest.approx(expected, abs=1e-9)
        # torch tensors work too
        assert psnr(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected, abs=1e-9)
    # explicit data_range
    x = np.zeros((8, 8))
    assert psnr(x, x + 2.0, data_range=10.0) == pytest.approx(10 * math.log10(100 / 4))


def test_psnr_per_frame_and_pooled() -> None:
    a = image(shape=(3, 16, 16, 3))
    noise = np.stack([plus_minus(a.shape[1:], d, seed=d) for d in (2, 4, 8)])
    b = (a.astype(np.int16) + noise).astype(np.uint8)
    per = psnr_per_frame(a, b)
    np.testing.assert_allclose(per, [20 * math.log10(255 / d) for d in (2, 4, 8)])
    # the pooled PSNR uses the mean MSE, not the mean of per-frame PSNRs
    pooled = 10 * math.log10(255**2 / np.mean([4, 16, 64]))
    assert psnr(a, b) == pytest.approx(pooled)
    assert psnr(a, b) != pytest.approx(per.mean())


def test_psnr_rejects_mixed_scales() -> None:
    a = image()
    with pytest.raises(EverAnimateError, match="uint8"):
        psnr(a, a / 255.0)
    with pytest.raises(EverAnimateError, match="shapes"):
        psnr(a, a[:2])


def _ssim_reference(x: np.ndarray, y: np.ndarray, rng: float) -> float:
    """Direct loop implementation of Wang et al. SSIM for one grey image (valid windows)."""
    size, sigma = 11, 1.5
    c = np.arange(size) - 5
    g = np.exp(-(c**2) / (2 * sigma**2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    vals = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            px, py = x[i : i + size, j : j + size], y[i : i + size, j : j + size]
            mx, my = (w * px).sum(), (w * py).sum()
            vx = (w * (px - mx) ** 2).sum()
            vy = (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            vals.append(((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_matches_direct_definition() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (14, 15), dtype=np.uint8)
    y = np.clip(x.astype(int) + rng.integers(-40, 41, x.shape), 0, 255).astype(np.uint8)
    expected = _ssim_reference(x.astype(float), y.astype(float), 255.0)
    assert ssim(x, y) == pytest.approx(expected, rel=1e-9)
    # per channel: a 3-channel image is the mean of its channels' SSIMs
    z = np.stack([x, y, x], -1)
    t = np.stack([y, y, 255 - x], -1)
    per_channel = [_ssim_reference(z[..., k].astype(float), t[..., k].astype(float), 255.0) for k in range(3)]
    assert ssim(z, t) == pytest.approx(np.mean(per_channel), rel=1e-9)


def test_ssim_constant_images_closed_form() -> None:
    # No variance: SSIM = (2xy + C1) / (x^2 + y^2 + C1) at every window.
    x, y = 0.3, 0.6
    a = np.full((2, 20, 20, 3), x)
    b = np.full((2, 20, 20, 3), y)
    c1 = (0.01 * 1.0) ** 2
    assert ssim(a, b) == pytest.approx((2 * x * y + c1) / (x * x + y * y + c1), rel=1e-9)


def test_ssim_identity_noise_symmetry() -> None:
    a = image(shape=(2, 32, 32, 3))
    assert ssim(a, a.copy()) == pytest.approx(1.0, abs=1e-12)
    values = []
    for d in (2, 8, 30):
        b = (a.astype(np.int16) + plus_minus(a.shape, d)).astype(np.uint8)
        values.append(ssim(a, b))
        assert ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-12)
    assert 1.0 > values[0] > values[1] > values[2]
    # uint8 and float inputs agree
    b = (a.astype(np.int16) + plus_minus(a.shape, 8)).astype(np.uint8)
    assert ssim(a / 255.0, b / 255.0) == pytest.approx(ssim(a, b), rel=1e-9)
    with pytest.raises(EverAnimateError, match="window"):
        ssim(a[:, :8, :8], a[:, :8, :8])


def test_background_psnr_ignores_figure() -> None:
    a = image(shape=(3, 24, 24, 3))
    mask = np.zeros((3, 24, 24), bool)
    mask[:, 6:18, 8:16] = True  # the figure
    b = (a.astype(np.int16) + plus_minus(a.shape, 4)).astype(np.uint8)
    base = background_psnr(a, b, mask)
    assert base == pytest.approx(20 * math.log10(255 / 4))
    # a huge error on the figure does not change the background PSNR ...
    c = b.copy()
    c[mask] = 255 - c[mask]
    assert background_psnr(a, c, mask) == pytest.approx(base, abs=1e-12)
    assert psnr(a, c) < base - 5  # ... while the plain PSNR drops a lot
    # ... but an error in the background does
    d = b.copy()
    d[:, 0, 0] = 0
    assert background_psnr(a, d, mask) < base
    # [H,W] and [N,H,W,1] masks broadcast the same way
    assert background_psnr(a, c, mask[0]) == pytest.approx(base)
    assert background_psnr(a, c, torch.from_numpy(mask[..., None])) == pytest.approx(base)
    assert math.isnan(background_psnr(a, b, np.ones((24, 24), bool)))


def test_masked_color_error() -> None:
    a = np.full((2, 8, 8, 3), 100, np.uint8)
    b = a.copy()
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:5] = True
    b[:, mask] = [110, 100, 70]  # |diff| = 10, 0, 30 -> mean 40/3
    b[:, ~mask] = 0  # outside the mask: ignored
    assert masked_color_error(a, b, mask) == pytest.approx(40 / 3)
    assert masked_color_error(a / 255.0, b / 255.0, mask) == pytest.approx(40 / 3 / 255)
    assert math.isnan(masked_color_error(a, b, np.zeros((8, 8), bool)))


def chunked_stream(n_chunks: int = 4, chunk_len: int = 10) -> tuple[np.ndarray, list[int]]:
    """Frames that brighten by 1 level per frame inside chunks and jump +20 at joins."""
    t = np.arange(n_chunks * chunk_len)
    values = t + 20 * (t // chunk_len)
    frames = np.broadcast_to(values[:, None, None, None], (len(t), 6, 5, 3)).astype(np.uint8)
    seams = [k * chunk_len for k in range(1, n_chunks)]
    return np.ascontiguousarray(frames), seams


def test_seam_meter_detects_joins() -> None:
    frames, seams = chunked_stream()
    m = SeamMeter(seams)
    m.update(frames, 0)
    assert m.seam_count == 3 and m.inner_count == 39 - 3
    assert m.inner_mean == pytest.approx(1.0)
    assert m.seam_mean == pytest.approx(21.0)
    assert m.seam_ratio == pytest.approx(21.0)
    assert m.seam_values == {10: 21.0, 20: 21.0, 30: 21.0}
    # a smooth stream (no jumps) measured with the same seams has ratio 1
    smooth = np.broadcast_to(np.arange(40)[:, None, None, None], frames.shape).astype(np.uint8)
    s = SeamMeter(seams)
    s.update(smooth, 0)
    assert s.seam_ratio == pytest.approx(1.0)


def test_seam_meter_chunkwise_equals_one_shot() -> None:
    frames, seams = chunked_stream()
    one = SeamMeter(seams)
    one.update(frames, 0)
    # exactly at the joins (the join transition spans two calls) ...
    by_chunk = SeamMeter(seams)
    for start in range(0, 40, 10):
        by_chunk.update(frames[start : start + 10], start)
    # ... and at arbitrary batch boundaries, as float tensors in [0, 1]
    ragged = SeamMeter(seams)
    for start, stop in [(0, 3), (3, 4), (4, 21), (21, 40)]:
        ragged.update(torch.from_numpy(frames[start:stop]).float() / 255.0, start)
    for m in (by_chunk, ragged):
        assert m.seam_count == one.seam_count and m.inner_count == one.inner_count
        assert m.seam_mean == pytest.approx(one.seam_mean)
        assert m.inner_mean == pytest.approx(one.inner_mean)
        assert m.seam_ratio == pytest.approx(one.seam_ratio)


def test_seam_meter_overlap_and_gap() -> None:
    frames, seams = chunked_stream()
    m = SeamMeter(seams)
    m.update(frames[:10], 0)
    with pytest.raises(EverAnimateError, match="overlap"):
        m.update(frames[5:15], 5)
    # a gap skips the transition across it (frame 10 was never seen)
    m.update(frames[11:20], 11)
    assert m.seam_count == 0 and m.inner_count == 9 + 8
    assert math.isnan(m.seam_ratio)


def test_block_processing_does_not_change_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Long clips are processed in memory-bounded blocks; results must not depend on it."""
    import everanimate_core.apps.metrics as metrics

    a = image(shape=(5, 16, 16, 3))
    b = (a.astype(np.int16) + plus_minus(a.shape, 6)).astype(np.uint8)
    mask = np.zeros((5, 16, 16), bool)
    mask[:, 4:9] = True
    frames, seams = chunked_stream()

    def everything() -> list[float]:
        m = SeamMeter(seams)
        m.update(frames, 0)
        return [psnr(a, b), ssim(a, b), background_psnr(a, b, mask),
                masked_color_error(a, b, mask), m.seam_mean, m.inner_mean,
                *psnr_per_frame(a, b)]

    whole = everything()
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 1)  # one frame per block
    np.testing.assert_allclose(everything(), whole, rtol=1e-12)


def test_seam_meter_frame_by_frame() -> None:
    frames, seams = chunked_stream()
    m = SeamMeter(seams)
    for t in range(len(frames)):
        m.update(frames[t], t)  # single [H,W,C] frames, the first one alone
    assert (m.seam_count, m.inner_count) == (3, 36)
    assert m.seam_ratio == pytest.approx(21.0)
