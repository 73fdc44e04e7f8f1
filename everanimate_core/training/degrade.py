"""The drift family that Restorative Flow Matching learns to undo: ONE random parameter set per
sample, shared by all of its frames.

Pixel space (the release's, default), applied before the autoencoder: local contrast (p 0.9, CLAHE
on lightness, clip 1-64, 1-32 tiles per side at 480p and 1-4 at 64x64, applied as an RGB gain),
oversaturation (p 0.3, chroma x1.3-3.0 around grey), brightness (p 0.1, x0.8-1.2), detail erase
(p 0.9, 1-4 rectangles of 10-30 % per side, down-sampled 8-32x and back); no blur. Latent space
(option): the same four written on normalized latents. Anchors are never degraded; they get one
shared :func:`affine_params`/:func:`apply_affine` transform (scale 0.8-1.2, shift +-10 %, p 0.5).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ..errors import ConfigError

DEGRADE_SPACES = ("pixel", "latent")


@dataclass(frozen=True)
class DegradeConfig:
    """Probabilities and ranges of the degradation family (defaults: the release's, scaled to 64 px)."""

    contrast_p: float = 0.9
    clip_limit: tuple[float, float] = (1.0, 64.0)
    tiles: tuple[int, int] = (1, 4)
    saturation_p: float = 0.3
    saturation: tuple[float, float] = (1.3, 3.0)
    brightness_p: float = 0.1
    brightness: tuple[float, float] = (0.8, 1.2)
    erase_p: float = 0.9
    erase_count: tuple[int, int] = (1, 4)
    erase_size: tuple[float, float] = (0.10, 0.30)
    erase_factor: tuple[int, int] = (8, 32)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DegradeParams:
    """One draw of the family: applied identically to every frame of a sample."""

    clip_limit: float | None = None
    tiles: int = 0
    saturation: float | None = None
    brightness: float | None = None
    rects: tuple[tuple[float, float, float, float, int], ...] = field(default_factory=tuple)

    @property
    def is_identity(self) -> bool:
        return self.clip_limit is None and self.saturation is None and self.brightness is None and not self.rects


def _u(gen: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=gen))


def _i(gen: torch.Generator, lo: int, hi: int) -> int:
    return int(torch.randint(lo, hi + 1, (), generator=gen))


def draw_params(gen: torch.Generator, cfg: DegradeConfig = DegradeConfig()) -> DegradeParams:
    """Draw one parameter set. Every probability is drawn even when not used, so the stream of
    random numbers (and hence a seeded training run) does not depend on earlier outcomes."""
    use = [float(torch.rand((), generator=gen)) for _ in range(4)]
    clip, tiles = _u(gen, *cfg.clip_limit), _i(gen, *cfg.tiles)
    sat = _u(gen, *cfg.saturation)
    bri = _u(gen, *cfg.brightness)
    n = _i(gen, *cfg.erase_count)
    rects = []
    for _ in range(cfg.erase_count[1]):
        rh, rw = _u(gen, *cfg.erase_size), _u(gen, *cfg.erase_size)
        y0, x0 = _u(gen, 0.0, 1.0 - rh), _u(gen, 0.0, 1.0 - rw)
        rects.append((y0, x0, rh, rw, _i(gen, *cfg.erase_factor)))
    return DegradeParams(
        clip_limit=clip if use[0] < cfg.contrast_p else None,
        tiles=tiles if use[0] < cfg.contrast_p else 0,
        saturation=sat if use[1] < cfg.saturation_p else None,
        brightness=bri if use[2] < cfg.brightness_p else None,
        rects=tuple(rects[:n]) if use[3] < cfg.erase_p else (),
    )


# ---------------------------------------------------------------------------------------------
# pixel space: x is float [F, 3, H, W] in [0, 1]


def _luma(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def clahe(lightness: torch.Tensor, clip_limit: float, tiles: int, bins: int = 64) -> torch.Tensor:
    """Contrast-limited adaptive histogram equalization of ``lightness`` [F, 1, H, W] in [0, 1].

    Each of ``tiles x tiles`` tiles gets a clipped-histogram equalization mapping (excess above
    ``clip_limit`` x the mean bin count is spread over all bins); pixels interpolate bilinearly
    between the mappings of the four nearest tile centres, as in the classic algorithm.
    """
    f, _, h, w = lightness.shape
    if tiles < 1 or tiles > min(h, w):
        raise ConfigError(f"CLAHE needs 1..{min(h, w)} tiles per side for {h}x{w}, got {tiles}.")
    idx = (lightness.clamp(0, 1) * (bins - 1)).round().long()[:, 0]  # [F,H,W]
    ty = torch.arange(h) * tiles // h
    tx = torch.arange(w) * tiles // w
    tile = (ty.view(h, 1) * tiles + tx.view(1, w)).expand(f, h, w)
    hist = torch.zeros(f, tiles * tiles * bins, dtype=lightness.dtype)
    hist.scatter_add_(1, (tile * bins + idx).reshape(f, -1), torch.ones(f, h * w, dtype=lightness.dtype))
    hist = hist.view(f, tiles * tiles, bins)
    limit = clip_limit * (h * w) / (tiles * tiles) / bins
    excess = (hist - limit).clamp_min(0).sum(dim=2, keepdim=True)
    hist = hist.clamp_max(limit) + excess / bins
    cdf = hist.cumsum(dim=2)
    cdf = (cdf - cdf[..., :1]) / (cdf[..., -1:] - cdf[..., :1]).clamp_min(1e-6)  # [F, T*T, bins]
    maps = cdf.view(f, tiles, tiles, bins)
    # tile-centre coordinates of every pixel, clamped at the borders
    cy = ((torch.arange(h, dtype=lightness.dtype) + 0.5) * tiles / h - 0.5).clamp(0, tiles - 1)
    cx = ((torch.arange(w, dtype=lightness.dtype) + 0.5) * tiles / w - 0.5).clamp(0, tiles - 1)
    y0, x0 = cy.floor().long(), cx.floor().long()
    y1, x1 = (y0 + 1).clamp_max(tiles - 1), (x0 + 1).clamp_max(tiles - 1)
    wy, wx = (cy - y0).view(1, h, 1), (cx - x0).view(1, 1, w)
    v = idx
    fi = torch.arange(f).view(f, 1, 1)

    def look(ty, tx):
        return maps[fi, ty.view(1, h, 1), tx.view(1, 1, w), v]

    out = (1 - wy) * ((1 - wx) * look(y0, x0) + wx * look(y0, x1)) + wy * ((1 - wx) * look(y1, x0) + wx * look(y1, x1))
    return out[:, None]


def _erase_rects(x: torch.Tensor, rects, pooled_min: int = 1) -> torch.Tensor:
    """Replace each rectangle by its down-sampled-then-up-sampled self (detail erase)."""
    out = x.clone()
    h, w = x.shape[-2:]
    for y0, x0, rh, rw, factor in rects:
        top, left = int(round(y0 * h)), int(round(x0 * w))
        bh, bw = max(1, int(round(rh * h))), max(1, int(round(rw * w)))
        bh, bw = min(bh, h - top), min(bw, w - left)
        region = out[..., top : top + bh, left : left + bw]
        small = F.interpolate(
            region.reshape(-1, *region.shape[-3:]),
            size=(max(pooled_min, bh // factor), max(pooled_min, bw // factor)),
            mode="area",
        )
        back = F.interpolate(small, size=(bh, bw), mode="bilinear", align_corners=False)
        out[..., top : top + bh, left : left + bw] = back.reshape(region.shape)
    return out


def degrade_pixels(frames: torch.Tensor, p: DegradeParams) -> torch.Tensor:
    """Apply one parameter set to frames [F, 3, H, W] in [0, 1] (every frame alike)."""
    if frames.dim() != 4 or frames.shape[1] != 3:
        raise ConfigError(f"degrade_pixels wants frames [F, 3, H, W], got {tuple(frames.shape)}.")
    x = frames.float()
    if p.clip_limit is not None:
        lum = _luma(x)
        eq = clahe(lum, p.clip_limit, p.tiles)
        x = x * (eq + 1e-3) / (lum + 1e-3)
    if p.saturation is not None:
        g = _luma(x)
        x = g + p.saturation * (x - g)
    if p.brightness is not None:
        x = x * p.brightness
    x = x.clamp(0, 1)
    if p.rects:
        x = _erase_rects(x, p.rects)
    return x.clamp(0, 1)


def unit_frames(frames) -> torch.Tensor:
    """numpy uint8 [F, H, W, 3] -> float [F, 3, H, W] in [0, 1], the layout this module works in."""
    import numpy as np

    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0


def degrade_uint8(frames, p: DegradeParams):
    """numpy uint8 [F, H, W, 3] -> degraded numpy uint8 (the same frames, one parameter set)."""
    y = degrade_pixels(unit_frames(frames), p)
    return (y * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------------------------------------
# latent space: z is [C, G, h, w] normalized (0 = dataset mean)


def degrade_latents(z: torch.Tensor, p: DegradeParams, contrast_gain: float = 0.25) -> torch.Tensor:
    """The latent-space option: the same four operations on a normalized latent [C, G, h, w]."""
    if z.dim() != 4:
        raise ConfigError(f"degrade_latents wants latents [C, G, h, w], got {tuple(z.shape)}.")
    x = z.float()
    if p.clip_limit is not None:
        k = max(1, x.shape[-1] // max(1, p.tiles))
        local = F.avg_pool2d(x.transpose(0, 1), k, stride=1, padding=k // 2, count_include_pad=False)
        local = local[..., : x.shape[-2], : x.shape[-1]].transpose(0, 1)
        x = local + (1 + contrast_gain * (p.clip_limit - 1)) * (x - local)
    if p.saturation is not None:
        m = x.mean(dim=0, keepdim=True)
        x = m + p.saturation * (x - m)
    if p.brightness is not None:
        x = x * p.brightness
    if p.rects:
        x = _erase_rects(x.transpose(0, 1), [(a, b, c, d, max(2, f // 8)) for a, b, c, d, f in p.rects]).transpose(0, 1)
    return x


# ---------------------------------------------------------------------------------------------
# anchors: one random affine shared by all anchors of a sample


@dataclass(frozen=True)
class AffineParams:
    scale: float = 1.0
    shift_y: float = 0.0
    shift_x: float = 0.0

    @property
    def is_identity(self) -> bool:
        return self.scale == 1.0 and self.shift_x == 0.0 and self.shift_y == 0.0


def affine_params(
    gen: torch.Generator, p: float = 0.5, scale: tuple[float, float] = (0.8, 1.2), shift: float = 0.1
) -> AffineParams:
    """Draw the anchors' shared affine (identity with probability 1 - p)."""
    use = float(torch.rand((), generator=gen))
    s = _u(gen, *scale)
    dy, dx = _u(gen, -shift, shift), _u(gen, -shift, shift)
    return AffineParams(s, dy, dx) if use < p else AffineParams()


def apply_affine(frames: torch.Tensor, a: AffineParams) -> torch.Tensor:
    """Scale about the centre and shift (fractions of the normalized [-1, 1] extent) frames
    [F, 3, H, W] in [0, 1]; uncovered borders are mid-grey, as in the release."""
    if a.is_identity:
        return frames
    f = frames.shape[0]
    theta = torch.tensor([[1 / a.scale, 0.0, -a.shift_x], [0.0, 1 / a.scale, -a.shift_y]], dtype=frames.dtype)
    grid = F.affine_grid(theta.expand(f, 2, 3), list(frames.shape), align_corners=False)
    out = F.grid_sample(frames * 2 - 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out + 1) / 2


__all__ = [
    "DEGRADE_SPACES",
    "AffineParams",
    "DegradeConfig",
    "DegradeParams",
    "affine_params",
    "apply_affine",
    "clahe",
    "degrade_latents",
    "degrade_pixels",
    "degrade_uint8",
    "draw_params",
    "unit_frames",
]
