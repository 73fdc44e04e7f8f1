"""Image/video quality metrics used by the evaluation scripts and the tests.

All functions take numpy arrays or torch tensors, channels last ([H,W,C] frames or
[N,H,W,C] batches; a [H,W] grey image also works where noted). uint8 inputs are on the
0..255 scale; float inputs are assumed to be on the 0..1 scale (ComfyUI IMAGE) unless a
``data_range`` is given. Both inputs of a comparison must have the same dtype family
(both uint8 or both float), because mixing scales is almost always a bug.

Sums are accumulated in float64, frame by frame, so long videos neither overflow uint8
arithmetic nor need a float copy of the whole clip.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, EverAnimateError

__all__ = [
    "psnr",
    "psnr_per_frame",
    "ssim",
    "background_psnr",
    "masked_color_error",
    "SeamMeter",
]

# Elements (frames x pixels x channels) processed per step when accumulating sums over
# long clips: bounds the float64 temporaries to a few tens of MB at any resolution.
_BLOCK_ELEMENTS = 1 << 21


def _as_numpy(x: Any) -> np.ndarray:
    """numpy view/copy of an array or tensor (detached, on CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16 or x.dtype == torch.float16:
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _is_uint8(x: np.ndarray) -> bool:
    return x.dtype == np.uint8


def _pair(a: Any, b: Any, data_range: float | None) -> tuple[np.ndarray, np.ndarray, float]:
    """Validate a comparison pair and return (a, b, data_range)."""
    a_np, b_np = _as_numpy(a), _as_numpy(b)
    if a_np.shape != b_np.shape:
        raise EverAnimateError(
            f"cannot compare arrays of shapes {a_np.shape} and {b_np.shape}; they must match."
        )
    if _is_uint8(a_np) != _is_uint8(b_np):
        raise EverAnimateError(
            f"cannot compare {a_np.dtype} with {b_np.dtype}: convert both to uint8 "
            "(0..255) or both to float (0..1) first."
        )
    for name, arr in (("a", a_np), ("b", b_np)):
        if not (_is_uint8(arr) or np.issubdtype(arr.dtype, np.number)):
            raise EverAnimateError(f"input {name} has non-numeric dtype {arr.dtype}.")
    if data_range is None:
        data_range = 255.0 if _is_uint8(a_np) else 1.0
    if not (data_range > 0 and math.isfinite(data_range)):
        raise ConfigError(f"data_range must be a positive number, got {data_range!r}.")
    return a_np, b_np, float(data_range)


def _blocks(arr: np.ndarray) -> Iterable[slice]:
    """Slices over the leading (frame) axis of ``arr`` in memory-bounded steps."""
    n = arr.shape[0]
    per_frame = max(1, int(np.prod(arr.shape[1:])))
    step = max(1, _BLOCK_ELEMENTS // per_frame)
    for s in range(0, n, step):
        yield slice(s, min(n, s + step))


def _psnr_from_mse(mse: float, data_range: float) -> float:
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / mse)


def psnr(a: Any, b: Any, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB over all elements of ``a`` and ``b``.

    PSNR = 10 log10(R^2 / MSE) with R = ``data_range`` (255 for uint8, 1 for float by
    default) and the MSE pooled over every pixel, channel and frame (so it is *not* the
    mean of per-frame PSNRs; see :func:`psnr_per_frame` for that). Identical inputs give
    ``inf``.
    """
    a_np, b_np, rng = _pair(a, b, data_range)
    if a_np.size == 0:
        raise EverAnimateError("cannot compute PSNR of empty arrays.")
    if a_np.ndim >= 4:
        sse = 0.0
        for s in _blocks(a_np):
            d = a_np[s].astype(np.float64) - b_np[s].astype(np.float64)
            sse += float(np.sum(d * d))
        mse = sse / a_np.size
    else:
        d = a_np.astype(np.float64) - b_np.astype(np.float64)
        mse = float(np.mean(d * d))
    return _psnr_from_mse(mse, rng)


def psnr_per_frame(a: Any, b: Any, data_range: float | None = None) -> np.ndarray:
    """PSNR in dB of each frame of two batches [N, ...]; returns a float64 array [N].

    Useful to find the frames where a long video degrades, or to average per-frame
    PSNRs (``psnr_per_frame(a, b).mean()``) as some papers do. Identical frames give inf.
    """
    a_np, b_np, rng = _pair(a, b, data_range)
    if a_np.ndim < 2:
        raise EverAnimateError(f"psnr_per_frame needs a batch [N, ...], got shape {a_np.shape}.")
    out = np.empty(a_np.shape[0], dtype=np.float64)
    for s in _blocks(a_np):
        d = a_np[s].astype(np.float64) - b_np[s].astype(np.float64)
        mse = (d * d).reshape(d.shape[0], -1).mean(axis=1)
        for i, m in enumerate(mse, start=s.start):
            out[i] = _psnr_from_mse(float(m), rng)
    return out


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """Normalized 2-D gaussian kernel [1, 1, size, size] in float64."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(coords**2) / (2.0 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(
    a: Any,
    b: Any,
    data_range: float | None = None,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Structural similarity (Wang, Bovik, Sheikh, Simoncelli 2004), mean over everything.

    Standard definition: an 11x11 gaussian window (sigma 1.5), C1 = (0.01 R)^2,
    C2 = (0.03 R)^2, local means/variances/covariance weighted by the window, each
    channel treated as its own grey image, and the SSIM map averaged over the "valid"
    window positions (no padding) of every channel and frame. No automatic downsampling
    is done. Inputs: [H,W], [H,W,C] or [N,H,W,C]; frames must be at least
    ``window_size`` pixels in each direction. Returns 1.0 for identical inputs; it is
    symmetric in ``a`` and ``b``. Computed with torch conv2d in float64.
    """
    return float(ssim_per_frame(a, b, data_range, window_size, sigma, k1, k2).mean())


def ssim_per_frame(
    a: Any,
    b: Any,
    data_range: float | None = None,
    window_size: int = 11,
    sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> np.ndarray:
    """SSIM of each frame (see :func:`ssim`), float64 [N]; [H,W] or [H,W,C] inputs give [1].

    Frames are filtered in batches with the separable gaussian (a row pass then a column pass),
    so a long video is scored in a few convolution calls.
    """
    a_np, b_np, rng = _pair(a, b, data_range)
    if a_np.ndim == 2:
        a_np, b_np = a_np[None, :, :, None], b_np[None, :, :, None]
    elif a_np.ndim == 3:
        a_np, b_np = a_np[None], b_np[None]
    elif a_np.ndim != 4:
        raise EverAnimateError(
            f"ssim expects [H,W], [H,W,C] or [N,H,W,C] arrays, got shape {a_np.shape}."
        )
    n, h, w, c = a_np.shape
    if h < window_size or w < window_size:
        raise EverAnimateError(
            f"frames of {h}x{w} are smaller than the {window_size}x{window_size} SSIM window."
        )
    g = _gaussian_window(window_size, sigma)[0, 0].sum(dim=1)  # the 1-D factor of the 2-D kernel
    rows, cols = g.view(1, 1, window_size, 1), g.view(1, 1, 1, window_size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, rows), cols)

    c1 = (k1 * rng) ** 2
    c2 = (k2 * rng) ** 2
    out = np.empty(n, dtype=np.float64)
    for s in _blocks(a_np):
        # [B, H, W, C] -> [B*C, 1, H, W]: every channel is filtered on its own.
        x = torch.from_numpy(np.ascontiguousarray(a_np[s])).to(torch.float64)
        y = torch.from_numpy(np.ascontiguousarray(b_np[s])).to(torch.float64)
        bsz = x.shape[0]
        x = x.permute(0, 3, 1, 2).reshape(-1, 1, h, w)
        y = y.permute(0, 3, 1, 2).reshape(-1, 1, h, w)
        mu_x = blur(x)
        mu_y = blur(y)
        sxx = blur(x * x) - mu_x * mu_x
        syy = blur(y * y) - mu_y * mu_y
        sxy = blur(x * y) - mu_x * mu_y
        num = (2.0 * mu_x * mu_y + c1) * (2.0 * sxy + c2)
        den = (mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2)
        smap = (num / den).reshape(bsz, -1)
        out[s] = smap.mean(dim=1).numpy()
    return out


def _broadcast_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean mask broadcast to an image/batch shape with channels last.

    Accepts [H,W] (same for every frame), [N,H,W] or [N,H,W,1] / [H,W,1], or a mask of
    the full shape.
    """
    m = _as_numpy(mask)
    if m.dtype != np.bool_:
        m = m > 0.5 if np.issubdtype(m.dtype, np.floating) else m != 0
    if m.shape == shape:
        return m
    if len(shape) >= 3 and 2 <= m.ndim < len(shape) and m.shape == shape[-1 - m.ndim : -1]:
        m = m[..., None]  # [H,W] or [N,H,W]: the same mask for every channel
    try:
        return np.broadcast_to(m, shape)
    except ValueError:
        raise EverAnimateError(
            f"mask of shape {m.shape} does not fit images of shape {shape}; expected "
            "[H,W], [N,H,W] or [N,H,W,1]."
        ) from None


def background_psnr(a: Any, b: Any, mask: Any, data_range: float | None = None) -> float:
    """PSNR in dB over the background only: pixels where ``mask`` is False.

    ``mask`` is True on the FIGURE (the animated person), which is excluded, so the
    metric measures how well the static scene is preserved over a long video no matter
    how the figure moves. Returns inf if the background matches exactly, NaN if the mask
    covers every pixel (there is no background to measure).
    """
    a_np, b_np, rng = _pair(a, b, data_range)
    m = _broadcast_mask(mask, a_np.shape)
    keep = ~m
    count = int(keep.sum())
    if count == 0:
        return math.nan
    if a_np.ndim >= 4:
        sse = 0.0
        for s in _blocks(a_np):
            d = a_np[s].astype(np.float64) - b_np[s].astype(np.float64)
            sse += float(np.sum(d * d, where=keep[s]))
    else:
        d = a_np.astype(np.float64) - b_np.astype(np.float64)
        sse = float(np.sum(d * d, where=keep))
    return _psnr_from_mse(sse / count, rng)


def masked_color_error(a: Any, b: Any, mask: Any) -> float:
    """Mean absolute RGB difference inside ``mask`` (True = figure), per channel value.

    Measures identity colour drift of the animated figure (skin, clothes) between a
    generated video and a reference. The result is in the units of the input: 0..255
    levels for uint8, 0..1 for float. NaN if the mask is empty.
    """
    a_np, b_np, _ = _pair(a, b, None)
    m = _broadcast_mask(mask, a_np.shape)
    count = int(m.sum())
    if count == 0:
        return math.nan
    if a_np.ndim >= 4:
        sae = 0.0
        for s in _blocks(a_np):
            d = np.abs(a_np[s].astype(np.float64) - b_np[s].astype(np.float64))
            sae += float(np.sum(d, where=m[s]))
    else:
        d = np.abs(a_np.astype(np.float64) - b_np.astype(np.float64))
        sae = float(np.sum(d, where=m))
    return sae / count


class SeamMeter:
    """Streaming measure of how visible chunk joins are in a long video.

    For every pair of consecutive frames it computes the mean absolute difference
    ``mean |f_t - f_{t-1}|`` over all pixels and channels, **in uint8 levels (0..255)**:
    uint8 frames are used as they are and float frames (0..1) are multiplied by 255, so
    numbers from both kinds of input are comparable. Each transition ``t-1 -> t`` is a
    *seam* transition when ``t`` is in ``seam_indices`` (``t`` is the first frame kept
    from a new chunk) and an *inner* transition otherwise. A smooth video has
    ``seam_ratio = seam_mean / inner_mean`` close to 1; visible jumps at joins give
    ratios well above 1.

    Frames may arrive in any batching: :meth:`update` keeps the last frame of the
    previous call, so the transition into the first frame of a new call is counted too.
    Only running sums (and one value per seam) are kept, so memory is constant.
    """

    def __init__(self, seam_indices: Iterable[int]) -> None:
        self._seams = frozenset(int(t) for t in seam_indices)
        self._prev: np.ndarray | None = None
        self._next_index = 0
        self._seam_sum = 0.0
        self._seam_count = 0
        self._inner_sum = 0.0
        self._inner_count = 0
        self.seam_values: dict[int, float] = {}
        """Mean absolute difference of each seam transition seen, keyed by its index t."""

    @staticmethod
    def _as_batch(frames: Any) -> np.ndarray:
        """Frames as a numpy batch [N,H,W,C] (uint8 or float), validated."""
        arr = _as_numpy(frames)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4:
            raise EverAnimateError(
                f"SeamMeter.update expects frames [N,H,W,C] or [H,W,C], got shape {arr.shape}."
            )
        if arr.dtype != np.uint8 and not np.issubdtype(arr.dtype, np.floating):
            raise EverAnimateError(
                f"SeamMeter.update expects uint8 or float frames, got {arr.dtype}."
            )
        return arr

    @staticmethod
    def _levels(block: np.ndarray) -> np.ndarray:
        """A uint8 or float (0..1) block as float64 in uint8 levels."""
        if block.dtype == np.uint8:
            return block.astype(np.float64)
        return block.astype(np.float64) * 255.0

    def update(self, frames: Any, first_global_index: int) -> None:
        """Add frames whose first frame has global index ``first_global_index``.

        Calls must come in increasing, non-overlapping order. If a call continues right
        after the previous one, the transition between them is counted; if it leaves a
        gap, the transition across the gap is skipped (those frames were not seen).
        """
        first = int(first_global_index)
        if first < 0:
            raise EverAnimateError(f"first_global_index must be >= 0, got {first}.")
        if first < self._next_index and self._prev is not None:
            raise EverAnimateError(
                f"SeamMeter.update got frames starting at {first}, but frames up to "
                f"{self._next_index - 1} were already counted; updates must not overlap."
            )
        batch = self._as_batch(frames)
        n_frames = batch.shape[0]
        if n_frames == 0:
            return
        prev = self._prev if (self._prev is not None and first == self._next_index) else None
        for s in _blocks(batch):
            block = self._levels(batch[s])
            if prev is not None and prev.shape != block.shape[1:]:
                raise EverAnimateError(
                    f"frame shape {block.shape[1:]} differs from the previous frame's "
                    f"{prev.shape}."
                )
            seq = block if prev is None else np.concatenate([prev[None], block], axis=0)
            if seq.shape[0] < 2:  # a lone first frame: no transition yet
                prev = block[-1]
                continue
            diffs = np.abs(np.diff(seq, axis=0)).reshape(seq.shape[0] - 1, -1).mean(axis=1)
            # Global index of the frame each transition ends at.
            end_first = first + s.start + (0 if prev is not None else 1)
            for k, value in enumerate(diffs):
                t = end_first + k
                v = float(value)
                if t in self._seams:
                    self._seam_sum += v
                    self._seam_count += 1
                    self.seam_values[t] = v
                else:
                    self._inner_sum += v
                    self._inner_count += 1
            prev = block[-1]
        self._prev = prev
        self._next_index = first + n_frames

    @property
    def seam_count(self) -> int:
        """Number of seam transitions measured so far."""
        return self._seam_count

    @property
    def inner_count(self) -> int:
        """Number of inner (within-chunk) transitions measured so far."""
        return self._inner_count

    @property
    def seam_mean(self) -> float:
        """Mean absolute frame difference across chunk joins (uint8 levels); NaN if none."""
        return self._seam_sum / self._seam_count if self._seam_count else math.nan

    @property
    def inner_mean(self) -> float:
        """Mean absolute frame difference inside chunks (uint8 levels); NaN if none."""
        return self._inner_sum / self._inner_count if self._inner_count else math.nan

    @property
    def seam_ratio(self) -> float:
        """``seam_mean / inner_mean``: ~1 means invisible joins. NaN if either is missing;
        inf if the video is static inside chunks but jumps at a join."""
        s, i = self.seam_mean, self.inner_mean
        if math.isnan(s) or math.isnan(i):
            return math.nan
        if i == 0.0:
            return math.inf if s > 0.0 else 1.0
        return s / i
