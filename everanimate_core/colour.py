"""Colour matching of decoded chunks to the reference or the anchors, and colour-drift measures.

Wan-Animate drifts in colour from chunk to chunk (saturation and brightness creep), which shows as
jumps at the joins. :class:`ColourMatch` fits ONE transform per chunk, from all its frames pooled,
that moves the chunk's colour statistics onto the target's (the reference image or the anchor
frames), and applies it to every frame of the chunk, so colour does not flicker inside a chunk.

It works on decoded uint8 RGB frames only and never touches latents: the latent carry is the same
with it on or off. ``"none"`` (the default) returns the input array itself, so runs with the option
off are bit-identical to runs without it.

Methods (all deterministic, uint8 in, uint8 out):

- ``reinhard``: per-channel mean/std transfer in CIE Lab (D65), computed in float.
- ``mkl``: Monge-Kantorovich linear map of the RGB mean and 3x3 covariance (closed form).
- ``histogram``: per-channel CDF matching in RGB (a 256-entry lookup table per channel).

Measures: :func:`seam_ratio` (how visible the joins are) and :func:`colour_drift` (per-chunk
distance of the mean colour to the target).
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np

from .errors import ConfigError, EverAnimateError

__all__ = [
    "MatchedSink",
    "COLOUR_METHODS",
    "COLOUR_TARGETS",
    "ColourMatch",
    "match_colours",
    "seam_ratio",
    "colour_drift",
]

COLOUR_METHODS = ("none", "reinhard", "mkl", "histogram")
COLOUR_TARGETS = ("reference", "anchors")

_EPS_LAB = 1.0  # variance regulariser of reinhard, Lab units^2
_EPS_RGB = 1.0  # covariance regulariser of mkl, uint8 levels^2
_MAX_GAIN = 4.0  # cap on any per-axis gain, so a nearly flat chunk is not blown up into noise
_BLOCK_PIXELS = 1 << 16  # pixels converted at once: bounds the float temporaries to about a MB each

# sRGB (linear) -> CIE XYZ, D65; rows give X, Y, Z. Normalised by the white so white is (1, 1, 1).
_RGB2XYZ = np.array(
    [
        [0.4124564, 0.3575761, 0.1804375],
        [0.2126729, 0.7151522, 0.0721750],
        [0.0193339, 0.1191920, 0.9503041],
    ]
)
_RGB2XYZ_N = (_RGB2XYZ / _RGB2XYZ.sum(axis=1, keepdims=True)).astype(np.float32)
_XYZ_N2RGB = np.linalg.inv(_RGB2XYZ / _RGB2XYZ.sum(axis=1, keepdims=True)).astype(np.float32)
_D = 6.0 / 29.0
_c = np.arange(256) / 255.0
_DECODE = np.where(_c <= 0.04045, _c / 12.92, ((_c + 0.055) / 1.055) ** 2.4).astype(np.float32)
del _c

# Colour maths runs on pixel planes [3, P] (float32, one contiguous row per channel), elementwise,
# so every pixel gets exactly the same arithmetic whatever block it falls in (BLAS kernels may
# round differently by position) and numpy's fast contiguous loops are used.


def _mat3(p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``m @ p`` for planes [3, P] and a float32 [3, 3] matrix."""
    return np.stack([m[i, 0] * p[0] + m[i, 1] * p[1] + m[i, 2] * p[2] for i in range(3)])


def _rgb_to_lab(px: np.ndarray) -> np.ndarray:
    """uint8 sRGB pixels [P, 3] -> CIE Lab planes [3, P], float32."""
    xyz = _mat3(_DECODE[px.T], _RGB2XYZ_N)
    f = np.where(xyz > _D**3, np.cbrt(xyz), xyz * (1 / (3 * _D**2)) + 4 / 29)
    return np.stack([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _lab_to_rgb(lab: np.ndarray) -> np.ndarray:
    """CIE Lab planes [3, P] -> sRGB planes in uint8 levels, float32, clipped to [0, 255] (out of
    gamut clips in linear light)."""
    fy = (lab[0] + 16) * (1 / 116)
    f = np.stack([fy + lab[1] * (1 / 500), fy, fy - lab[2] * (1 / 200)])
    xyz = np.where(f > _D, f * f * f, (3 * _D**2) * (f - 4 / 29))
    lin = np.clip(_mat3(xyz, _XYZ_N2RGB), 0, 1)
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055) * 255


def _blocks(n: int) -> Iterator[slice]:
    for s in range(0, n, _BLOCK_PIXELS):
        yield slice(s, min(n, s + _BLOCK_PIXELS))


def _check_frames(x: object, what: str, single_ok: bool = False) -> np.ndarray:
    """uint8 RGB frames as a [T, H, W, 3] array (a lone [H, W, 3] image if ``single_ok``)."""
    arr = np.asarray(x)
    if arr.dtype != np.uint8:
        raise EverAnimateError(
            f"{what} must be uint8 RGB (0..255), got dtype {arr.dtype}; convert float images "
            "(0..1) with (x * 255).round().clip(0, 255).astype(np.uint8)."
        )
    if single_ok and arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.size == 0:
        shapes = "[T, H, W, 3] or [H, W, 3]" if single_ok else "[T, H, W, 3] (add a leading axis for 1 frame)"
        raise EverAnimateError(f"{what} must be non-empty RGB frames {shapes}, got shape {arr.shape}.")
    return arr


def _moments(frames: np.ndarray, lab: bool) -> tuple[np.ndarray, np.ndarray]:
    """Mean [3] and covariance [3, 3] of all pixels of uint8 frames, in Lab or in RGB levels."""
    px = frames.reshape(-1, 3)
    s, ss = np.zeros(3), np.zeros((3, 3))
    for b in _blocks(len(px)):
        x = (_rgb_to_lab(px[b]) if lab else px[b].T).astype(np.float64)
        s += x.sum(axis=1)
        ss += x @ x.T
    mean = s / len(px)
    cov = ss / len(px) - np.outer(mean, mean)
    return mean, (cov + cov.T) / 2


def _histograms(frames: np.ndarray) -> np.ndarray:
    """Per-channel counts [3, 256] of all pixels of uint8 frames."""
    px = frames.reshape(-1, 3)
    h = np.zeros((3, 256), dtype=np.int64)
    for b in _blocks(len(px)):
        for c in range(3):
            h[c] += np.bincount(px[b, c], minlength=256)
    return h


def _stats(frames: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """What ``method`` matches: Lab mean/cov (reinhard), RGB mean/cov (mkl), or per-channel
    histograms (histogram; the second item is unused)."""
    if method == "histogram":
        return _histograms(frames), np.empty(0)
    return _moments(frames, lab=(method == "reinhard"))


def _sym_pow(c: np.ndarray, p: float) -> np.ndarray:
    """``c ** p`` for a symmetric positive semi-definite 3x3 matrix (eigenvalues floored at 1e-12)."""
    w, v = np.linalg.eigh(c)
    return (v * np.maximum(w, 1e-12) ** p) @ v.T


def _mkl_matrix(cov_s: np.ndarray, cov_t: np.ndarray) -> np.ndarray:
    """Symmetric T with ``T cov_s T = cov_t`` (both regularised): the Monge-Kantorovich linear map
    ``T = Cs^-1/2 (Cs^1/2 Ct Cs^1/2)^1/2 Cs^-1/2``; its eigenvalues are capped at 1/4..4."""
    eye = np.eye(3) * _EPS_RGB
    cs, ct = cov_s + eye, cov_t + eye
    rs, rs_inv = _sym_pow(cs, 0.5), _sym_pow(cs, -0.5)
    t = rs_inv @ _sym_pow(rs @ ct @ rs, 0.5) @ rs_inv
    w, v = np.linalg.eigh((t + t.T) / 2)
    return (v * np.clip(w, 1 / _MAX_GAIN, _MAX_GAIN)) @ v.T


def _histogram_lut(h_s: np.ndarray, h_t: np.ndarray) -> np.ndarray:
    """[3, 256] float map sending each source level to the target level of the same quantile
    (mid-rank quantiles, linear interpolation between the target's occupied levels)."""
    levels = np.arange(256, dtype=np.float64)
    lut = np.empty((3, 256))
    for c in range(3):
        q_s = (np.cumsum(h_s[c]) - h_s[c] / 2) / h_s[c].sum()
        occupied = h_t[c] > 0
        q_t = ((np.cumsum(h_t[c]) - h_t[c] / 2) / h_t[c].sum())[occupied]
        lut[c] = np.interp(q_s, q_t, levels[occupied])
    return lut


class ColourMatch:
    """Match each chunk's colours to a target with one transform per chunk.

    ``method``: one of :data:`COLOUR_METHODS` (``"none"``, the default, is off).
    ``strength``: 0..1, blend of original (0) and matched (1) colours.
    ``target``: ``"reference"`` (fit on the one reference image) or ``"anchors"`` (fit on the
    anchor frames, a stack [N, H, W, 3]); it only says what :meth:`fit` expects. Target and chunk
    sizes may differ: only colour statistics are used.

    Use: ``cm = ColourMatch("mkl", 1.0).fit(reference)`` once per run, then
    ``frames = cm.apply(decoded_chunk)`` for each chunk (before writing; never into the latents).
    """

    def __init__(self, method: str = "none", strength: float = 1.0, target: str = "reference") -> None:
        if method not in COLOUR_METHODS:
            raise ConfigError(f"Unknown colour match method {method!r}; choose one of {COLOUR_METHODS}.")
        if target not in COLOUR_TARGETS:
            raise ConfigError(f"Unknown colour match target {target!r}; choose one of {COLOUR_TARGETS}.")
        try:
            s = float(strength)
        except (TypeError, ValueError):
            s = math.nan
        if not 0.0 <= s <= 1.0:  # also rejects NaN
            raise ConfigError(f"Colour match strength must be a number in [0, 1], got {strength!r}.")
        self.method, self.strength, self.target = method, s, target
        self._target_stats: tuple[np.ndarray, np.ndarray] | None = None

    def __repr__(self) -> str:
        return f"ColourMatch(method={self.method!r}, strength={self.strength}, target={self.target!r})"

    @property
    def enabled(self) -> bool:
        """False when :meth:`apply` is the identity (method ``"none"`` or strength 0)."""
        return self.method != "none" and self.strength > 0.0

    def fit(self, target_frames: np.ndarray) -> "ColourMatch":
        """Store the target's statistics: the reference [H, W, 3] (or [1, H, W, 3]) for
        ``target="reference"``, the anchor frames [N, H, W, 3] (or one [H, W, 3]) for
        ``"anchors"``. Returns ``self``; calling it again replaces the target."""
        arr = _check_frames(target_frames, f"the colour match {self.target}", single_ok=True)
        if self.target == "reference" and arr.shape[0] != 1:
            raise ConfigError(
                f"target='reference' expects one reference image, got {arr.shape[0]} frames; "
                "pass the reference image, or use target='anchors' for a stack of anchor frames."
            )
        self._target_stats = _stats(arr, self.method) if self.enabled else None
        return self

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """One chunk's decoded frames uint8 [T, H, W, 3] -> colour-matched uint8 frames, same shape.

        The transform is fitted on all T frames pooled and applied to each; output is clipped and
        rounded. When not :attr:`enabled` it returns ``frames`` itself, unchanged."""
        arr = _check_frames(frames, "the chunk frames")
        if not self.enabled:
            return frames
        if self._target_stats is None:
            raise EverAnimateError(
                f"ColourMatch.apply was called before fit(); call fit() with the {self.target} "
                "frames once per run first."
            )
        src = _stats(arr, self.method)
        s = self.strength
        if self.method == "histogram":
            levels = np.arange(256, dtype=np.float64)
            lut = _histogram_lut(src[0], self._target_stats[0])
            lut8 = np.rint(np.clip((1 - s) * levels + s * lut, 0, 255)).astype(np.uint8)
            return np.stack([lut8[c][arr[..., c]] for c in range(3)], axis=-1)

        (mu_s, cov_s), (mu_t, cov_t) = src, self._target_stats
        if self.method == "reinhard":  # lab * gain + shift, per Lab channel
            gain = np.sqrt((np.diag(cov_t) + _EPS_LAB) / (np.diag(cov_s) + _EPS_LAB))
            gain = np.clip(gain, 1 / _MAX_GAIN, _MAX_GAIN)
            g, shift = gain.astype(np.float32)[:, None], (mu_t - gain * mu_s).astype(np.float32)[:, None]

            def match(px: np.ndarray, x: np.ndarray) -> np.ndarray:
                return _lab_to_rgb(_rgb_to_lab(px) * g + shift)

        else:  # mkl: t @ rgb + shift
            t = _mkl_matrix(cov_s, cov_t)
            t32, shift = t.astype(np.float32), (mu_t - t @ mu_s).astype(np.float32)[:, None]

            def match(px: np.ndarray, x: np.ndarray) -> np.ndarray:
                return np.clip(_mat3(x, t32) + shift, 0, 255)

        out = np.empty(arr.shape, dtype=np.uint8)
        src_px, dst_px = arr.reshape(-1, 3), out.reshape(-1, 3)
        for b in _blocks(len(src_px)):
            x = src_px[b].T.astype(np.float32)
            y = match(src_px[b], x)
            if s < 1:
                y = x + np.float32(s) * (y - x)
            dst_px[b] = np.rint(np.clip(y, 0, 255)).astype(np.uint8).T
        return out


class MatchedSink:
    """A frame sink that colour-matches every chunk before passing it on; nothing else sees the
    matched frames (the latent carry, the checkpoints and the previews keep the raw ones).

    Each ``write`` must be one chunk, as the loop and a resume's replay both write. Target
    ``reference``: fitted on the reference now. Target ``anchors``: fitted on the first chunk
    written (chunk 0, whose frames the anchors are picked from), which goes out unmatched. So a
    resumed run, replaying the raw segments, writes the same video as an uninterrupted one.
    """

    def __init__(self, sink, match: ColourMatch, reference: np.ndarray | None = None) -> None:
        self.sink, self.match = sink, match
        self._fitted = not match.enabled
        if match.enabled and match.target == "reference":
            if reference is None:
                raise ConfigError("Colour match to the reference needs the reference image.")
            match.fit(reference)
            self._fitted = True

    def write(self, frames: np.ndarray) -> None:
        if not self._fitted:
            self.match.fit(frames)
            self._fitted = True
            self.sink.write(frames)
            return
        self.sink.write(self.match.apply(frames))


def match_colours(frames: np.ndarray, target: np.ndarray, method: str, strength: float = 1.0) -> np.ndarray:
    """One-shot :class:`ColourMatch`: match ``frames`` [T, H, W, 3] to ``target`` (one image or a
    stack; statistics pooled over all its frames)."""
    target_kind = "reference" if np.ndim(target) == 3 or len(target) == 1 else "anchors"
    return ColourMatch(method, strength, target_kind).fit(target).apply(frames)


def _segments(n_frames: int, chunk_starts: Sequence[int]) -> list[int]:
    """Validated, sorted chunk starts with 0 first."""
    starts = sorted({0, *(int(t) for t in chunk_starts)})
    if starts[-1] >= n_frames or starts[0] < 0:
        raise EverAnimateError(
            f"chunk starts must be frame indices in [0, {n_frames - 1}] for a {n_frames}-frame "
            f"video, got {list(chunk_starts)}."
        )
    return starts


def seam_ratio(frames: np.ndarray, chunk_starts: Sequence[int]) -> float:
    """How visible the chunk joins are.

    ``mean |f_t - f_(t-1)|`` (uint8 levels, all pixels and channels) over the transitions into a
    chunk start ``t`` (the first frame of each chunk after the first), divided by the same mean
    over all other transitions. 1.0: joins invisible; > 1: the video jumps at joins. Same
    definition as :class:`everanimate_core.apps.metrics.SeamMeter`. NaN without a join or without an
    inner transition; inf if the video is static inside chunks but jumps at a join.
    """
    arr = _check_frames(frames, "the video frames")
    seams = set(_segments(len(arr), chunk_starts)) - {0}
    sums = {True: 0.0, False: 0.0}
    counts = {True: 0, False: 0}
    for t in range(1, len(arr)):
        d = float(np.abs(arr[t].astype(np.int16) - arr[t - 1]).mean())
        sums[t in seams] += d
        counts[t in seams] += 1
    if not counts[True] or not counts[False]:
        return math.nan
    seam, inner = sums[True] / counts[True], sums[False] / counts[False]
    if inner == 0.0:
        return math.inf if seam > 0.0 else 1.0
    return seam / inner


def colour_drift(
    frames: np.ndarray,
    target: np.ndarray,
    chunk_starts: Sequence[int] | None = None,
    window: int | None = None,
) -> np.ndarray:
    """Colour drift of each segment of a video from a target.

    Returns, for each segment, the CIE76 delta-E between the segment's mean Lab colour (all its
    pixels) and the target's (the reference image or a stack of anchors, pooled); ~2.3 is a
    just-noticeable difference. Segments are the chunks (``chunk_starts``) or consecutive
    ``window``-frame pieces (e.g. ``window=fps`` for one value per second); give exactly one.
    Compare the first and last values to see the drift over the video.
    """
    arr = _check_frames(frames, "the video frames")
    ref = _check_frames(target, "the colour drift target", single_ok=True)
    if (chunk_starts is None) == (window is None):
        raise EverAnimateError("colour_drift needs exactly one of chunk_starts or window.")
    if window is not None:
        if int(window) < 1:
            raise EverAnimateError(f"window must be a positive number of frames, got {window!r}.")
        starts = list(range(0, len(arr), int(window)))
    else:
        starts = _segments(len(arr), chunk_starts)
    mean_t = _moments(ref, lab=True)[0]
    bounds = starts + [len(arr)]
    return np.array(
        [np.linalg.norm(_moments(arr[a:b], lab=True)[0] - mean_t) for a, b in zip(bounds[:-1], bounds[1:])]
    )
