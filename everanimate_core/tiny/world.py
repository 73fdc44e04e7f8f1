"""SynthDance World: a SynthDance scene with state that only earlier frames show (docs/world.md).

In plain SynthDance the reference and the pose window determine every frame, so memory is never
needed. Here the scene has a state neither shows: a **camera** panning over a wide plate
(``plate_factor``) that follows the dancer with a first-order lag (``lag_s``; the pose is in camera
coordinates, so the camera position is the integral of the pose history); **revealed plate**
regions that leave and return (``revisited`` masks, ``revisit_lag``); a wall **panel** whose colour
switches at Poisson times (``panel_mean_s``, ``panel_colors``; the reference shows colour 0); an
optional bouncing **prop**. No lighting change (it would clash with the RFM brightness term).

:func:`make_world_sequence` returns a :class:`WorldSequence` with the
:class:`~everanimate_core.tiny.synthdance.Sequence` interface plus ``render_world``, ``camera``,
``panel_index``, ``panel_color``, ``empty_frames`` and ``first_view``; frame k depends only on k.
Its random choices come from ``SeedSequence([WORLD_SEED, split seed, kind, index, ...])``, disjoint
from plain SynthDance (whose sequences are unchanged); the dancer of world sequence i is
SynthDance's identity and motion i; splits have fixed sizes (``train_size``, ``test_size``).
Metrics: :func:`region_psnr`, :func:`panel_color_error`, :func:`score_world`,
:func:`memoryless_bounds` (``python -m everanimate_core bench world``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from everanimate_core.errors import ConfigError, EverAnimateError

from . import synthdance as sd

__all__ = [
    "WORLD_SEED",
    "WorldConfig",
    "WorldSequence",
    "make_world_sequence",
    "region_psnr",
    "panel_color_error",
    "score_world",
    "memoryless_bounds",
    "require_world",
]

#: First entry of every world seed; SynthDance's streams start with a split seed instead.
WORLD_SEED = 0x3011_D009
_KIND = {"camera": 1, "plate": 2, "panel": 3, "panel_events": 4, "prop": 5, "plate_noise": 6}
#: Panel switch events are drawn per block of this many seconds (a Poisson process restricted
#: to disjoint intervals is independent), so a frame needs only the blocks before it.
_EVENT_BLOCK_S = 60.0
#: Largest excursion of SynthDance's wander from the frame centre (motion ``_wander`` a1 + a2).
_WANDER_MAX = 0.23


@dataclass(frozen=True)
class WorldConfig:
    """Parameters of the world. Lengths along x are in frame widths, along y in frame heights.

    Changing any field makes another world (:meth:`fingerprint` differs); the seed stream does
    not depend on the config, so the same (split, index) keeps its identity and motion.
    """

    plate_factor: float = 2.5  #: plate width / frame width
    travel: float = 0.5  #: largest excursion of the dancer's slow travel across the plate
    lag_s: tuple[float, float] = (1.5, 2.5)  #: range of the camera's follow time constant, s
    panel_mean_s: float = 6.0  #: mean time between panel colour switches, s
    panel_colors: int = 3  #: colours the panel switches between (colour 0 is the reference's)
    prop: bool = True  #: a bouncing ball on its own path
    revisit_lag: int = 32  #: frames: "revisited" = seen at least this many frames before
    #: seconds at the start during which the camera holds its first view, the dancer's slow travel
    #: rests and the panel keeps the reference's colour (the dancer's own wander goes on); then the
    #: travel starts and the camera follows it from rest. 0: the world pans from frame 0.
    still_s: float = 0.0
    train_size: int = 10_000
    test_size: int = 200
    version: int = 1

    def __post_init__(self) -> None:
        if not self.plate_factor >= 1.5:
            raise ConfigError(f"plate_factor must be at least 1.5 frame widths, got {self.plate_factor}")
        if not 0.0 <= self.travel <= (self.plate_factor - 1.0) / 2 - _WANDER_MAX:
            raise ConfigError(
                f"travel must be in [0, (plate_factor - 1) / 2 - {_WANDER_MAX}] = "
                f"[0, {(self.plate_factor - 1) / 2 - _WANDER_MAX:.3f}] so the camera stays on the plate; "
                f"got {self.travel} (raise plate_factor or lower travel)"
            )
        lo, hi = self.lag_s
        if not 0.0 < lo <= hi:
            raise ConfigError(f"lag_s must be (low, high) with 0 < low <= high seconds, got {self.lag_s}")
        if not self.panel_mean_s > 0:
            raise ConfigError(f"panel_mean_s must be positive, got {self.panel_mean_s}")
        if not 2 <= self.panel_colors <= 6:
            raise ConfigError(f"panel_colors must be between 2 and 6, got {self.panel_colors}")
        if self.revisit_lag < 0:
            raise ConfigError(f"revisit_lag must be non-negative, got {self.revisit_lag}")
        if not (math.isfinite(self.still_s) and self.still_s >= 0.0):
            raise ConfigError(f"still_s must be a finite number of seconds >= 0, got {self.still_s}")
        if self.train_size < 1 or self.test_size < 1:
            raise ConfigError(f"split sizes must be positive, got {self.train_size}, {self.test_size}")

    def split_size(self, split: str) -> int:
        if split not in sd.SPLITS:
            raise ConfigError(f"split must be one of {sd.SPLITS}, got {split!r}")
        return self.train_size if split == "train" else self.test_size

    def fingerprint(self) -> str:
        """Short hash of every field: two worlds with the same fingerprint render the same.
        ``still_s`` stays out at 0, so the world as it was before the field keeps its fingerprint."""
        d = asdict(self)
        if d["still_s"] == 0.0:
            del d["still_s"]
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _rng(kind: str, split: str, index: int, *extra: int) -> np.random.Generator:
    return np.random.default_rng(
        np.random.SeedSequence([WORLD_SEED, sd._SPLIT_SEED[split], _KIND[kind], int(index), *extra])
    )


def _check_index(index, split: str, config: WorldConfig) -> None:
    size = config.split_size(split)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise ConfigError(f"index must be an integer, got {index!r}")
    if not 0 <= index < size:
        raise ConfigError(
            f"world sequence index {index} is outside the {split!r} split, which has indices 0..{size - 1} "
            f"(WorldConfig.{split}_size)"
        )


# --------------------------------------------------------------------------- plate


def _cover(d_px: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in pixels (negative inside)."""
    return np.clip(0.5 - d_px, 0.0, 1.0)


def _box(U, Y, box, W: int, H: int) -> np.ndarray:
    """Coverage of the box (u0, y0, u1, y1) at world u [.., 1, W] and y [1, H, 1]."""
    u0, y0, u1, y1 = box
    du = np.maximum(u0 - U, U - u1) * W
    dy = np.maximum(y0 - Y, Y - y1) * H
    return _cover(np.maximum(du, dy))


def _smooth_keys(keys: np.ndarray, pos: np.ndarray, U: np.ndarray) -> np.ndarray:
    """Cosine interpolation of key colours [K, 3] at key positions [K] (uniform) along U."""
    step = pos[1] - pos[0]
    q = np.clip((U - pos[0]) / step, 0.0, len(pos) - 1.000001)
    i = q.astype(np.int64)
    f = 0.5 - 0.5 * np.cos(np.pi * (q - i))
    return keys[i] * (1 - f)[..., None] + keys[i + 1] * f[..., None]


def _value_noise(lattice: np.ndarray, spacing_u: float, spacing_y: float, U, Y) -> np.ndarray:
    """Bilinear value noise on a lattice fixed in the world (resolution independent)."""
    ly, lu = Y / spacing_y, U / spacing_u
    iy = np.minimum(ly.astype(np.int64), lattice.shape[0] - 2)
    iu = np.minimum(lu.astype(np.int64), lattice.shape[1] - 2)
    fy, fu = ly - iy, lu - iu
    return (
        lattice[iy, iu] * (1 - fy) * (1 - fu) + lattice[iy + 1, iu] * fy * (1 - fu)
        + lattice[iy, iu + 1] * (1 - fy) * fu + lattice[iy + 1, iu + 1] * fy * fu
    )  # fmt: skip


@dataclass(frozen=True, eq=False)
class _Plate:
    """The static world plate (everything but the panel's inner colour, the prop, the dancer)."""

    width: float  # plate_factor
    horizon: float
    key_u: np.ndarray
    wall_top: np.ndarray  # [K, 3]
    wall_bottom: np.ndarray
    floor_far: np.ndarray
    floor_near: np.ndarray
    segments: tuple  # (u0, u1, period, amp) wallpaper sections; period 0: plain
    tile_period: float
    tile_amp: float
    items: tuple  # ("picture" | "window" | "disc", geometry, colours)
    noise1: np.ndarray
    noise2: np.ndarray
    panel_inner: tuple[float, float, float, float]
    panel_outer: tuple[float, float, float, float]
    panel_frame: np.ndarray  # [3]
    panel_palette: np.ndarray  # [panel_colors, 3] float32

    def render(self, U: np.ndarray, Y: np.ndarray, W: int, H: int) -> tuple[np.ndarray, np.ndarray]:
        """(plate float32 [T, H, W, 3] without the panel's inner colour, panel inner coverage [T, H, W])."""
        f32 = np.float32
        T = U.shape[0]
        U = U.astype(f32)  # float32 is exact enough: 1e-4 px at 128 px
        Yb = Y.astype(f32)
        gw = np.clip(Yb / self.horizon, 0.0, 1.0)[..., None]  # [1, H, 1, 1]
        top = _smooth_keys(self.wall_top, self.key_u, U)  # [T, 1, W, 3]
        bot = _smooth_keys(self.wall_bottom, self.key_u, U)
        wall = top * (1 - gw) + bot * gw
        mult = np.zeros((T, 1, U.shape[2]))
        for u0, u1, period, amp in self.segments:
            cov = _cover(np.maximum(u0 - U, U - u1) * W)
            pattern = 1.0 if period == 0 else 1 + amp * (2 * sd._band(U * W, period * W) - 1)
            mult = mult + cov * pattern
        wall = wall * mult[..., None]
        gf = np.clip((Yb - self.horizon) / (1 - self.horizon), 0.0, 1.0)[..., None]
        far = _smooth_keys(self.floor_far, self.key_u, U)
        near = _smooth_keys(self.floor_near, self.key_u, U)
        floor = far * (1 - gf) + near * gf
        # floor tiles: vertical seams fixed in the world (they show the pan on the floor too)
        tiles = 1 + self.tile_amp * (2 * sd._band(U * W, self.tile_period * W) - 1)
        floor = floor * tiles[..., None]
        a = np.clip((Yb - self.horizon) * H + 0.5, 0.0, 1.0)[..., None]
        img = wall * (1 - a) + floor * a
        img = np.broadcast_to(img.astype(f32), (T, Yb.shape[1], U.shape[2], 3)).copy()

        cam_lo, cam_hi = float(U[:, 0, 0].min()) - 0.5 / W, float(U[:, 0, 0].max()) - 0.5 / W  # view left edges
        for kind, geo, cols in self.items:
            # only the rows and columns the item can touch in this chunk of frames
            if kind == "disc":
                cu, cy, r = geo
                ub, yb = (cu - r * H / W, cu + r * H / W), (cy - r, cy + r)
            else:
                ub, yb = (geo[0], geo[2]), (geo[1], geo[3])
            j0 = max(0, int(math.floor((ub[0] - cam_hi) * W)) - 2)
            j1 = min(U.shape[2], int(math.ceil((ub[1] - cam_lo) * W)) + 2)
            i0 = max(0, int(math.floor(yb[0] * H)) - 2)
            i1 = min(Yb.shape[1], int(math.ceil(yb[1] * H)) + 2)
            if j0 >= j1 or i0 >= i1:
                continue
            Uw, Yw = U[:, :, j0:j1], Yb[:, i0:i1]
            win = img[:, i0:i1, j0:j1]
            if kind == "disc":
                d = np.sqrt(((Uw - cu) * W) ** 2 + ((Yw - cy) * H) ** 2) - r * H
                cov = _cover(d)[..., None]
                win[...] = win * (1 - cov) + cov * cols[0]
            else:
                u0, y0, u1, y1 = geo
                w, h = u1 - u0, y1 - y0
                outer = _box(Uw, Yw, geo, W, H)[..., None]
                inner = _box(Uw, Yw, (u0 + 0.18 * w, y0 + 0.18 * h, u1 - 0.18 * w, y1 - 0.18 * h), W, H)[..., None]
                fill = cols[1]
                if kind == "window":  # light pane with a dark cross
                    bar_u = _cover((np.abs(Uw - 0.5 * (u0 + u1)) - 0.04 * w) * W)
                    bar_y = _cover((np.abs(Yw - 0.5 * (y0 + y1)) - 0.04 * h) * H)
                    bars = np.maximum(bar_u, bar_y)[..., None]
                    fill = cols[1] * (1 - bars) + cols[0] * bars
                win[...] = win * (1 - outer) + outer * (cols[0] * (1 - inner) + inner * fill)

        noise = _value_noise(self.noise1, 1 / 9, 1 / 9, U, Yb) + _value_noise(self.noise2, 1 / 24, 1 / 24, U, Yb)
        img = img + noise[..., None]
        frame = _box(U, Yb, self.panel_outer, W, H)[..., None]
        img = img * (1 - frame) + frame * self.panel_frame
        inner = _box(U, Yb, self.panel_inner, W, H)
        img = np.clip(img, 0.0, sd.SCENE_MAX_LEVEL)
        return img.astype(f32), np.broadcast_to(inner, (T, Yb.shape[1], U.shape[2])).astype(f32)


def _muted_array(rng, **kw) -> np.ndarray:
    return np.array(sd._muted(rng, **kw), np.float32)


def _make_plate(split: str, index: int, cfg: WorldConfig, first_view: float) -> _Plate:
    rng = _rng("plate", split, index)
    P = cfg.plate_factor
    horizon = rng.uniform(0.6, 0.72)
    n_keys = int(math.ceil(P / 0.4)) + 1
    key_u = np.linspace(0.0, P, n_keys).astype(np.float32)
    wall_top, wall_bottom, floor_far, floor_near = [], [], [], []
    for _ in range(n_keys):
        wt = sd._muted(rng, sat=(0.05, 0.6), val=(0.3, 0.85))
        wb = sd._muted(rng, sat=(0.05, 0.6), val=(0.25, 0.8), avoid=(wt,), min_dist=30)
        ff = sd._muted(rng, sat=(0.05, 0.5), val=(0.25, 0.7), avoid=(wb,), min_dist=50)
        fn = sd._muted(rng, sat=(0.05, 0.5), val=(0.25, 0.75), avoid=(ff,), min_dist=30)
        for lst, c in ((wall_top, wt), (wall_bottom, wb), (floor_far, ff), (floor_near, fn)):
            lst.append(c)
    cuts = np.sort(rng.uniform(0.0, P, int(rng.integers(3, 6))))
    bounds = np.concatenate([[-1.0], cuts, [P + 1.0]])
    segments = []
    for u0, u1 in zip(bounds[:-1], bounds[1:]):
        if rng.random() < 0.8:
            segments.append((float(u0), float(u1), float(rng.uniform(0.04, 0.12)), float(rng.uniform(0.06, 0.14))))
        else:
            segments.append((float(u0), float(u1), 0.0, 0.0))
    items = []
    for _ in range(int(round(5.0 * P))):
        col = _muted_array(rng, sat=(0.1, 0.65), val=(0.2, 0.85))
        r = rng.random()
        if r < 0.25:
            rad = rng.uniform(0.04, 0.09)
            items.append(("disc", (rng.uniform(0.0, P), rng.uniform(rad + 0.02, horizon - rad), rad), (col,)))
        else:
            w, h = rng.uniform(0.08, 0.24), rng.uniform(0.1, 0.3)
            u0, y0 = rng.uniform(-0.05, P - w + 0.05), rng.uniform(0.03, max(0.04, horizon - h - 0.04))
            fill = _muted_array(rng, sat=(0.1, 0.65), val=(0.3, 0.85), avoid=(tuple(col),), min_dist=60)
            kind = "window" if r > 0.85 else "picture"
            shade = col * rng.uniform(0.5, 0.8)
            items.append((kind, (u0, y0, u0 + w, y0 + h), (shade, fill)))
    noise1 = rng.normal(0.0, 5.0, size=(11, int(math.ceil(9 * P)) + 3)).astype(np.float32)
    noise2 = rng.normal(0.0, 3.0, size=(26, int(math.ceil(24 * P)) + 3)).astype(np.float32)

    prng = _rng("panel", split, index)
    pw, ph = prng.uniform(0.2, 0.28), prng.uniform(0.2, 0.28)
    if prng.random() < 0.5:  # left or right part of the first view, clear of the reference dancer
        pu0 = first_view + prng.uniform(0.05, 0.3 - pw * 0.5)
    else:
        pu0 = first_view + 1.0 - pw - prng.uniform(0.05, 0.3 - pw * 0.5)
    py0 = prng.uniform(0.06, 0.12)
    inner = (float(pu0), float(py0), float(pu0 + pw), float(py0 + ph))
    outer = (inner[0] - 0.025, inner[1] - 0.025, inner[2] + 0.025, inner[3] + 0.025)
    frame = _muted_array(prng, sat=(0.1, 0.4), val=(0.15, 0.35))
    wall_here = tuple(int(v) for v in _smooth_keys(np.array(wall_top, np.float64), key_u, np.array([pu0]))[0])
    palette: list[tuple[int, int, int]] = []
    for _ in range(cfg.panel_colors):
        palette.append(sd._muted(prng, sat=(0.4, 0.7), val=(0.45, 0.85), avoid=(wall_here, *palette), min_dist=90))
    return _Plate(
        width=P, horizon=float(horizon), key_u=key_u,
        wall_top=np.array(wall_top, np.float32), wall_bottom=np.array(wall_bottom, np.float32),
        floor_far=np.array(floor_far, np.float32), floor_near=np.array(floor_near, np.float32),
        segments=tuple(segments), tile_period=float(rng.uniform(0.08, 0.16)), tile_amp=float(rng.uniform(0.08, 0.14)),
        items=tuple(items), noise1=noise1, noise2=noise2,
        panel_inner=inner, panel_outer=outer, panel_frame=frame, panel_palette=np.array(palette, np.float32),
    )  # fmt: skip


# --------------------------------------------------------------------------- the sequence


@dataclass(frozen=True)
class _Prop:
    radius: float  # frame heights
    color: np.ndarray
    u_lo: float
    u_hi: float
    speed: float  # widths per second
    phase: float
    floor_y: float
    bounce_h: float
    bounce_t: float
    bounce_p: float

    def at(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World (u, y) of the ball's centre at times t (s)."""
        span = self.u_hi - self.u_lo
        z = np.mod(self.speed * t / span + self.phase, 2.0)
        u = self.u_lo + span * np.where(z < 1.0, z, 2.0 - z)
        y = self.floor_y - self.radius - self.bounce_h * np.abs(np.sin(np.pi * t / self.bounce_t + self.bounce_p))
        return u, y


@dataclass(eq=False)
class WorldSequence:
    """One stateful SynthDance World clip; every frame range renders on its own."""

    identity: sd.Identity
    motion: sd.Motion
    config: WorldConfig
    height: int
    width: int
    split: str
    index: int
    fps: float
    lag: float  # camera follow time constant, s
    _travel: tuple = field(repr=False)  # ((amp, omega, phase), ...) of the dancer's world travel
    _plate: _Plate = field(repr=False)
    _prop: _Prop | None = field(repr=False)

    # ---- state as functions of time
    def _t(self, start: int, stop: int) -> np.ndarray:
        sd._check_range(start, stop)
        return np.arange(start, stop, dtype=np.float64) / self.fps

    def _components(self, t: np.ndarray) -> list[tuple[float, float, float, np.ndarray]]:
        """(amplitude, omega, phase, time) of each sinusoid of the dancer's world u: the slow travel
        runs on the clock that starts after ``still_s``, the wander on the clip's."""
        a1, f1, p1, a2, f2, p2 = self.motion._wander
        still = self.config.still_s
        tt = t if still == 0.0 else np.maximum(t - still, 0.0)
        return [*((a, w, p, tt) for a, w, p in self._travel), (a1, 2 * np.pi * f1, p1, t), (a2, 2 * np.pi * f2, p2, t)]

    def _dancer_u(self, t: np.ndarray) -> np.ndarray:
        u = np.full_like(t, 0.5 * self.config.plate_factor)
        for a, w, p, tc in self._components(t):
            u = u + a * np.sin(w * tc + p)
        return u

    def _steady_view(self, t: np.ndarray) -> np.ndarray:
        # steady-state response of  v' = (u - v) / lag  to the sinusoids of u
        v = np.full_like(t, 0.5 * self.config.plate_factor)
        for a, w, p, tc in self._components(t):
            wt = w * self.lag
            v = v + a / math.sqrt(1 + wt * wt) * np.sin(w * tc + p - math.atan(wt))
        return v

    def _first_view(self) -> float:
        """View centre while the world is still: where the resting travel holds the dancer."""
        return 0.5 * self.config.plate_factor + sum(a * math.sin(p) for a, w, p in self._travel)

    def _view_centre(self, t: np.ndarray) -> np.ndarray:
        v = self._steady_view(t)  # valid for all t when the world pans from frame 0
        still = self.config.still_s
        if still == 0.0:
            return v
        # held until ``still``, then the exact solution from rest at the first view: the steady
        # state plus the start's difference decaying with the lag
        v0 = self._first_view()
        v_start = float(self._steady_view(np.full(1, still))[0])
        after = v + (v0 - v_start) * np.exp(-np.maximum(t - still, 0.0) / self.lag)
        return np.where(t <= still, v0, after)

    def camera(self, start: int, stop: int) -> np.ndarray:
        """World u of the left edge of the view per frame, float64 [T], in frame widths (0 .. plate_factor - 1)."""
        return self._view_centre(self._t(start, stop)) - 0.5

    def dancer_world_x(self, start: int, stop: int) -> np.ndarray:
        """World u of the dancer's centre (hips) per frame, float64 [T], in frame widths."""
        return self._dancer_u(self._t(start, stop))

    def center_x(self, start: int, stop: int) -> np.ndarray:
        """Normalised x of the dancer's centre in the frame (camera coordinates), float64 [T]."""
        t = self._t(start, stop)
        return 0.5 + self._dancer_u(t) - self._view_centre(t)

    def _panel_events(self, t_max: float) -> tuple[np.ndarray, np.ndarray]:
        """(times s, colour steps) of every panel switch up to t_max, sorted."""
        times, steps = [], []
        k = self.config.panel_colors
        for b in range(int(t_max // _EVENT_BLOCK_S) + 1):
            rng = _rng("panel_events", self.split, self.index, b)
            n = int(rng.poisson(_EVENT_BLOCK_S / self.config.panel_mean_s))
            times.append(np.sort(b * _EVENT_BLOCK_S + rng.uniform(0.0, _EVENT_BLOCK_S, n)))
            steps.append(rng.integers(1, k, n))
        return np.concatenate(times), np.concatenate(steps)

    def panel_index(self, start: int, stop: int) -> np.ndarray:
        """Index into the panel palette per frame, int64 [T]; 0 at frame 0 (the reference's colour)."""
        t = self._t(start, stop)
        if t.size == 0:
            return np.zeros(0, np.int64)
        if self.config.still_s != 0.0:  # the switches run on the clock that starts after the still start
            t = np.maximum(t - self.config.still_s, 0.0)
        times, steps = self._panel_events(float(t.max()))
        csum = np.concatenate([[0], np.cumsum(steps)])
        return (csum[np.searchsorted(times, t, side="right")] % self.config.panel_colors).astype(np.int64)

    def panel_switches(self, start: int, stop: int) -> np.ndarray:
        """Frames in [start, stop) whose panel colour differs from the previous frame's, int64."""
        idx = self.panel_index(max(0, start - 1), stop)
        changed = np.flatnonzero(idx[1:] != idx[:-1]) + max(0, start - 1) + 1
        return changed[changed >= start]

    @property
    def panel_palette(self) -> np.ndarray:
        """The panel's colours, uint8 [panel_colors, 3]; colour 0 is the reference's."""
        return np.rint(self._plate.panel_palette).astype(np.uint8)

    def panel_color(self, start: int, stop: int) -> np.ndarray:
        """True panel colour per frame, uint8 [T, 3]."""
        return self.panel_palette[self.panel_index(start, stop)]

    # ---- rendering
    def _geometry(self, t: np.ndarray):
        m = self.motion
        pts = sd._body_points(m._dofs_at(t), m.prop)
        x_c = 0.5 + self._dancer_u(t) - self._view_centre(t)
        return sd._project(pts, m._facing_at(t), x_c, m.scale, m.ground, m.prop, self.height, self.width)

    def _pixel_u(self, cam: np.ndarray) -> np.ndarray:
        x = (np.arange(self.width, dtype=np.float64) + 0.5) / self.width
        return cam[:, None, None] + x[None, None, :]  # [T, 1, W]

    def _ys(self) -> np.ndarray:
        return ((np.arange(self.height, dtype=np.float64) + 0.5) / self.height)[None, :, None]

    def _scene(self, cam: np.ndarray, panel: np.ndarray):
        """(empty scene float32 [T,H,W,3] with the given panel colours [T,3], inner panel coverage)."""
        img, inner = self._plate.render(self._pixel_u(cam), self._ys(), self.width, self.height)
        pc = self._plate.panel_palette[panel][:, None, None, :]
        img = img * (1 - inner[..., None]) + inner[..., None] * pc
        return img, inner

    def _prop_alpha(self, t: np.ndarray, cam: np.ndarray) -> np.ndarray:
        T = t.shape[0]
        if self._prop is None:
            return np.zeros((T, self.height, self.width), np.float32)
        u, y = self._prop.at(t)
        cx = ((u - cam) * self.width)[:, None, None]
        cy = (y * self.height)[:, None, None]
        X = (np.arange(self.width) + 0.5)[None, None, :]
        Yp = (np.arange(self.height) + 0.5)[None, :, None]
        d = np.sqrt((X - cx) ** 2 + (Yp - cy) ** 2) - self._prop.radius * self.height
        return _cover(d).astype(np.float32)

    def render_world(self, start: int, stop: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Frames uint8 [T, H, W, 3] and masks bool [T, H, W]:

        * ``figure``: the dancer covers at least half of the pixel (``figure_any``: any part of it);
        * ``prop``: the ball covers at least half of the pixel (after the dancer);
        * ``scene``: no dancer or ball coverage at all: exactly :meth:`empty_frames`;
        * ``panel``: scene pixels fully inside the panel's inner area (the switching colour);
        * ``plate``: scene pixels not touched by the panel's inner area;
        * ``revealed``: plate pixels whose world footprint lies wholly outside the first view;
        * ``revisited``: revealed pixels whose footprint was wholly in view at some frame at least
          ``config.revisit_lag`` frames before (a memory of that length could know them).
        """
        frames, masks, _ = self._render(start, stop, False)
        return frames, masks

    def _render(self, start: int, stop: int, want_empty: bool):
        sd._check_range(start, stop)
        H, W = self.height, self.width
        T = stop - start
        frames = np.empty((T, H, W, 3), np.uint8)
        empty = np.empty((T, H, W, 3), np.uint8) if want_empty else None
        names = ("figure", "figure_any", "prop", "scene", "panel", "plate", "revealed", "revisited")
        masks = {k: np.zeros((T, H, W), bool) for k in names}
        if T == 0:
            return frames, masks, empty
        c0 = float(self.camera(0, 1)[0])
        lag = self.config.revisit_lag
        hist = self.camera(0, max(stop - lag, 0))  # cameras of frames that can have been seen
        lo_hist, hi_hist = np.minimum.accumulate(hist), np.maximum.accumulate(hist)
        half = 0.5 / W
        for s in range(start, stop, sd._CHUNK):
            e = min(stop, s + sd._CHUNK)
            t = self._t(s, e)
            cam = self._view_centre(t) - 0.5
            scene, inner = self._scene(cam, self.panel_index(s, e))
            pa = self._prop_alpha(t, cam)
            if self._prop is not None:
                scene_p = scene * (1 - pa[..., None]) + pa[..., None] * self._prop.color.astype(np.float32)
            else:
                scene_p = scene
            g = self._geometry(t)
            y0, x0, rgb, trans = sd._figure_chunk(self.identity, g, H, W)
            Tc, Hp, Wp = trans.shape
            yi = y0[:, None, None] + np.arange(Hp)[None, :, None]
            xi = x0[:, None, None] + np.arange(Wp)[None, None, :]
            ti = np.arange(Tc)[:, None, None]
            tr = np.ones((Tc, H, W), np.float32)
            tr[ti, yi, xi] = trans
            out = scene_p.copy()
            out[ti, yi, xi] = rgb + trans[..., None] * scene_p[ti, yi, xi]
            clean = (tr >= 1.0) & (pa <= 0.0)
            sl = slice(s - start, e - start)
            scene_u8 = np.rint(scene).astype(np.uint8)
            frames[sl] = np.where(clean[..., None], scene_u8, np.rint(out).astype(np.uint8))
            if empty is not None:
                empty[sl] = scene_u8
            masks["figure"][sl] = (1.0 - tr) >= 0.5
            masks["figure_any"][sl] = tr < 1.0
            masks["prop"][sl] = pa * tr >= 0.5
            masks["scene"][sl] = clean
            masks["panel"][sl] = clean & (inner >= 1.0)
            plate = clean & (inner <= 0.0)
            masks["plate"][sl] = plate
            U = self._pixel_u(cam)  # [Tc, 1, W]
            outside = (U - half >= c0 + 1.0) | (U + half <= c0)
            masks["revealed"][sl] = plate & outside
            k = np.arange(s, e) - lag  # latest frame that counts as "before"
            ok = k >= 0
            kk = np.clip(k, 0, max(len(hist) - 1, 0))
            if len(hist):
                lo = np.where(ok, lo_hist[kk], np.inf)[:, None, None]
                hi = np.where(ok, hi_hist[kk], -np.inf)[:, None, None]
                seen = (U - half >= lo) & (U + half <= hi + 1.0)
                masks["revisited"][sl] = plate & outside & seen
        return frames, masks, empty

    def render(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(frames uint8 [T, H, W, 3], figure mask bool [T, H, W]), as Sequence.render."""
        frames, masks = self.render_world(start, stop)
        return frames, masks["figure"]

    def frames(self, start: int, stop: int) -> np.ndarray:
        """RGB frames uint8 [T, H, W, 3]."""
        return self.render_world(start, stop)[0]

    def mask(self, start: int, stop: int) -> np.ndarray:
        """Visible-dancer mask bool [T, H, W]."""
        return self.render_world(start, stop)[1]["figure"]

    def pose(self, start: int, stop: int) -> np.ndarray:
        """Skeleton (driving) video uint8 [T, H, W, 3], in camera coordinates (it moves with the camera)."""
        return sd._render_pose_geometry(self._geometry(self._t(start, stop)), self.height, self.width)

    def joints(self, start: int, stop: int) -> np.ndarray:
        """Joint positions float32 [T, 14, 2] as (x, y) in [0, 1] frame coordinates (camera coordinates)."""
        g = self._geometry(self._t(start, stop))
        return np.stack([g.px[n] / np.array([self.width, self.height]) for n in sd.JOINT_NAMES], 1).astype(np.float32)

    def empty_frames(self, start: int, stop: int) -> np.ndarray:
        """The scene without dancer and ball, with the true camera and panel colour: uint8 [T, H, W, 3]."""
        t = self._t(start, stop)
        return np.rint(self._scene(self._view_centre(t) - 0.5, self.panel_index(start, stop))[0]).astype(np.uint8)

    def first_view(self) -> np.ndarray:
        """The empty scene as the reference shows it (frame 0's camera, panel colour 0), uint8 [H, W, 3]."""
        return self.empty_frames(0, 1)[0]

    def reference(self) -> np.ndarray:
        """Front-facing reference image over the first view only (frame 0's camera and panel colour,
        no ball), uint8 [H, W, 3]; rendered exactly like SynthDance's reference."""
        return sd.render_reference(self.identity, self.first_view(), self.height, self.width, None)

    def describe(self) -> dict:
        """What identifies this clip: split, index, size, fps and the world fingerprint."""
        return {
            "split": self.split, "index": self.index, "height": self.height, "width": self.width,
            "fps": self.fps, "world": self.config.fingerprint(),
        }  # fmt: skip


def make_world_sequence(
    index: int,
    split: str = "test",
    height: int = 64,
    width: int = 64,
    fps: float = 8.0,
    config: WorldConfig | None = None,
    *,
    identity_index: int | None = None,
    motion_index: int | None = None,
) -> WorldSequence:
    """World sequence ``index`` of ``split``. The dancer is SynthDance's identity and motion of the
    same index and split (each can be overridden); the scene is drawn from the world's own stream."""
    cfg = WorldConfig() if config is None else config
    if not isinstance(cfg, WorldConfig):
        raise ConfigError(f"config must be a WorldConfig, got {type(cfg).__name__}")
    if split not in sd.SPLITS:
        raise ConfigError(f"split must be one of {sd.SPLITS}, got {split!r}")
    _check_index(index, split, cfg)
    sd._check_size(height, width)
    motion = sd.make_motion(index if motion_index is None else motion_index, split, fps)
    identity = sd.make_identity(index if identity_index is None else identity_index, split)
    crng = _rng("camera", split, index)
    a1 = cfg.travel * crng.uniform(0.6, 0.75)
    a2 = cfg.travel * crng.uniform(0.15, 0.25)
    travel = (
        (a1, 2 * np.pi / crng.uniform(24.0, 40.0), crng.uniform(0, 2 * np.pi)),
        (a2, 2 * np.pi / crng.uniform(9.0, 14.0), crng.uniform(0, 2 * np.pi)),
    )
    lag = float(crng.uniform(*cfg.lag_s))
    seq = WorldSequence(
        identity=identity, motion=motion, config=cfg, height=int(height), width=int(width), split=split,
        index=int(index), fps=float(fps), lag=lag, _travel=travel, _plate=None, _prop=None,  # type: ignore[arg-type]
    )  # fmt: skip
    c0 = float(seq.camera(0, 1)[0])
    seq._plate = _make_plate(split, index, cfg, c0)
    if cfg.prop:
        prng = _rng("prop", split, index)
        P = cfg.plate_factor
        hz = seq._plate.horizon
        seq._prop = _Prop(
            radius=float(prng.uniform(0.045, 0.065)),
            color=_muted_array(prng, sat=(0.35, 0.7), val=(0.45, 0.85)),
            u_lo=0.1, u_hi=P - 0.1, speed=float(prng.uniform(0.08, 0.16)), phase=float(prng.uniform(0.0, 2.0)),
            floor_y=float(prng.uniform(hz + 0.12, min(hz + 0.24, 0.97))),
            bounce_h=float(prng.uniform(0.08, 0.18)), bounce_t=float(prng.uniform(0.8, 1.6)),
            bounce_p=float(prng.uniform(0, np.pi)),
        )  # fmt: skip
    return seq


def require_world(seq: WorldSequence, config: WorldConfig | str) -> None:
    """Refuse ``seq`` unless it belongs to the world ``config`` (a WorldConfig or its fingerprint)."""
    if not isinstance(seq, WorldSequence):
        raise ConfigError(f"expected a WorldSequence (make_world_sequence), got {type(seq).__name__}")
    want = config.fingerprint() if isinstance(config, WorldConfig) else str(config)
    have = seq.config.fingerprint()
    if want != have:
        detail = ""
        if isinstance(config, WorldConfig):
            diff = [f.name for f in fields(WorldConfig) if getattr(config, f.name) != getattr(seq.config, f.name)]
            detail = f"; differing settings: {', '.join(diff)}"
        raise ConfigError(
            f"world sequence {seq.split}/{seq.index} comes from another world configuration "
            f"(fingerprint {have}, expected {want}){detail}. Make it with the same WorldConfig."
        )


# --------------------------------------------------------------------------- scene-state metrics


def _levels(x, name: str) -> np.ndarray:
    """uint8 stays uint8 (0..255); float (ComfyUI IMAGE, 0..1) becomes float32 levels."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32) * np.float32(255.0)
    raise EverAnimateError(f"{name} must be uint8 (0..255) or float (0..1), got {x.dtype}")


def _check_pair(pred, gt, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p, g = _levels(pred, "prediction"), _levels(gt, "ground truth")
    if p.shape != g.shape or p.ndim != 4 or p.shape[-1] != 3:
        raise EverAnimateError(
            f"prediction {p.shape} and ground truth {g.shape} must both be [T, H, W, 3] of one size "
            "(a prediction of another resolution or length belongs to another world clip)"
        )
    m = np.asarray(mask)
    if m.dtype != bool or m.shape != p.shape[:3]:
        raise EverAnimateError(f"mask must be bool [T, H, W] = {p.shape[:3]}, got {m.dtype} {m.shape}")
    return p, g, m


def _sq_error(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Squared error summed over channels, [T, H, W] (exact int64 for uint8 inputs)."""
    if p.dtype == np.uint8 and g.dtype == np.uint8:
        d = p.astype(np.int32) - g.astype(np.int32)
        return np.einsum("thwc,thwc->thw", d, d, dtype=np.int64)
    d = p.astype(np.float64) - g.astype(np.float64)
    return np.einsum("thwc,thwc->thw", d, d)


def _psnr_of(sq: np.ndarray, mask: np.ndarray) -> float:
    n = int(np.count_nonzero(mask))
    if n == 0:
        return math.nan
    mse = float(sq[mask].sum()) / (3 * n)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def region_psnr(pred, gt, mask) -> float:
    """PSNR (dB, peak 255) over the pixels where ``mask`` [T, H, W] is True, all channels pooled.
    Inputs uint8 (0..255) or float (0..1). NaN if the mask is empty, inf if the region matches."""
    p, g, m = _check_pair(pred, gt, mask)
    return _psnr_of(_sq_error(p, g), m)


def panel_color_error(pred, gt, panel_mask, min_pixels: int = 4) -> float:
    """Panel colour error in levels (0..255): per frame, the mean colour of the panel pixels in the
    prediction minus that in the ground truth, mean absolute over channels; averaged over frames
    where at least ``min_pixels`` panel pixels are visible. NaN if there is none."""
    p, g, m = _check_pair(pred, gt, panel_mask)
    cnt = m.sum(axis=(1, 2))
    keep = np.flatnonzero(cnt >= min_pixels)
    if keep.size == 0:
        return math.nan
    w = m[keep].astype(np.float64)
    mp = np.einsum("thwc,thw->tc", p[keep].astype(np.float64), w) / cnt[keep][:, None]
    mg = np.einsum("thwc,thw->tc", g[keep].astype(np.float64), w) / cnt[keep][:, None]
    return float(np.abs(mp - mg).mean())


def score_world(seq: WorldSequence, pred, start: int = 0, config: WorldConfig | str | None = None) -> dict:
    """Scores of predicted frames [T, H, W, 3] of ``seq`` starting at frame ``start``: PSNR over the
    full frame, the plate, the revealed and revisited plate, the dancer, and the panel colour error."""
    if config is not None:
        require_world(seq, config)
    pred = np.asarray(pred)
    if pred.ndim != 4:
        raise EverAnimateError(f"prediction must be [T, H, W, 3], got {pred.shape}")
    gt, m = seq.render_world(start, start + pred.shape[0])
    full = np.ones(m["figure"].shape, bool)
    return {
        "psnr": region_psnr(pred, gt, full),
        "plate_psnr": region_psnr(pred, gt, m["plate"]),
        "revealed_psnr": region_psnr(pred, gt, m["revealed"]),
        "revisited_psnr": region_psnr(pred, gt, m["revisited"]),
        "figure_psnr": region_psnr(pred, gt, m["figure"]),
        "panel_error": panel_color_error(pred, gt, m["panel"]),
    }


# --------------------------------------------------------------------------- the memoryless bound

PREDICTORS = {
    "reference": "the reference repeated (first view frozen, dancer in the rest pose)",
    "time_average": "the time-average frame of the ground truth (an oracle constant image)",
    "first_view": "the empty first view (frame 0's camera and panel colour, no dancer)",
    "dancer_first_view": "the true dancer over the first view (perfect dancer, no scene memory)",
    "dancer_average_scene": "the true dancer over the time-average empty scene (perfect dancer, best constant scene)",
    "true_state_empty": "WITH STATE, for scale: the empty scene at the true camera and panel colour",
}
MEMORYLESS = ("reference", "time_average", "first_view", "dancer_first_view", "dancer_average_scene")
METRICS = ("psnr", "plate_psnr", "revealed_psnr", "revisited_psnr", "panel_error")


def _score_all(gt: np.ndarray, m: dict, preds: dict) -> dict:
    full = np.ones(gt.shape[:3], bool)
    out = {}
    for name, p in preds.items():
        sq = _sq_error(*_check_pair(p, gt, full)[:2])
        out[name] = {
            "psnr": _psnr_of(sq, full),
            "plate_psnr": _psnr_of(sq, m["plate"]),
            "revealed_psnr": _psnr_of(sq, m["revealed"]),
            "revisited_psnr": _psnr_of(sq, m["revisited"]),
            "panel_error": panel_color_error(p, gt, m["panel"]),
        }
    return out


def sequence_bounds(seq: WorldSequence, frames: int) -> dict:
    """Scores of every predictor of PREDICTORS on frames [0, frames) of ``seq``, plus facts of the
    clip (camera range, panel switches, share of revealed pixels)."""
    gt, m, empty = seq._render(0, frames, True)
    T = gt.shape[0]
    fv = seq.first_view()
    touched = m["figure_any"][..., None]  # every pixel the dancer touches (the ball is scene state)
    avg_scene = np.rint(empty.mean(axis=0, dtype=np.float64)).astype(np.uint8)
    preds = {
        "reference": np.broadcast_to(seq.reference(), gt.shape),
        "time_average": np.broadcast_to(np.rint(gt.mean(axis=0, dtype=np.float64)).astype(np.uint8), gt.shape),
        "first_view": np.broadcast_to(fv, gt.shape),
        "dancer_first_view": np.where(touched, gt, fv[None]),
        "dancer_average_scene": np.where(touched, gt, avg_scene[None]),
        "true_state_empty": empty,
    }
    cam = seq.camera(0, frames)
    return {
        "scores": _score_all(gt, m, preds),
        "camera_range_px": float((cam.max() - cam.min()) * seq.width),
        "panel_switches": int(len(seq.panel_switches(0, frames))),
        "revealed_share": float(m["revealed"].sum() / m["revealed"].size),
        "revisited_share": float(m["revisited"].sum() / m["revisited"].size),
        "panel_visible_share": float((m["panel"].sum(axis=(1, 2)) >= 4).mean()),
        "frames": T,
    }


def memoryless_bounds(
    sequences: int = 20, seconds: float = 90.0, height: int = 64, width: int = 64, fps: float = 8.0,
    config: WorldConfig | None = None, split: str = "test", first_index: int = 0,
) -> dict:  # fmt: skip
    """Scores of the trivial predictors on ``sequences`` held-out world clips of ``seconds``;
    the bound is the best memoryless score (highest PSNR, lowest panel error) over predictors."""
    cfg = WorldConfig() if config is None else config
    frames = int(round(seconds * fps))
    if sequences < 1 or frames < 1:
        raise ConfigError(f"need at least one sequence and one frame, got {sequences} and {frames}")
    per = []
    for i in range(first_index, first_index + sequences):
        per.append(sequence_bounds(make_world_sequence(i, split, height, width, fps, cfg), frames))
    agg: dict = {}
    for name in PREDICTORS:
        agg[name] = {}
        for k in METRICS:
            v = np.array([p["scores"][name][k] for p in per], np.float64)
            v = v[np.isfinite(v)]
            agg[name][k] = {"mean": float(v.mean()), "min": float(v.min()), "max": float(v.max())} if v.size else None
    bound = {}
    for k in METRICS:
        vals = [agg[n][k] for n in MEMORYLESS if agg[n][k] is not None]
        if k == "panel_error":
            bound[k] = {"best_mean": min(v["mean"] for v in vals), "best_sequence": min(v["min"] for v in vals)}
        else:
            bound[k] = {"best_mean": max(v["mean"] for v in vals), "best_sequence": max(v["max"] for v in vals)}
    keys = ("camera_range_px", "panel_switches", "revealed_share", "revisited_share", "panel_visible_share")
    facts = {k: float(np.mean([p[k] for p in per])) for k in keys}
    facts["min_panel_switches"] = int(min(p["panel_switches"] for p in per))
    return {
        "world": cfg.fingerprint(), "config": asdict(cfg), "split": split,
        "indices": [first_index, first_index + sequences - 1], "size": [height, width], "fps": fps,
        "frames": frames, "predictors": agg, "bound": bound, "facts": facts,
    }  # fmt: skip


def plain_reference_psnr(sequences: int, seconds: float, height: int, width: int, fps: float) -> float:
    """For scale: the reference repeated on PLAIN SynthDance test clips (static scene), mean PSNR."""
    frames = int(round(seconds * fps))
    out = []
    for i in range(sequences):
        s = sd.make_sequence(i, "test", height, width, fps)
        gt = s.frames(0, frames)
        out.append(region_psnr(np.broadcast_to(s.reference(), gt.shape), gt, np.ones(gt.shape[:3], bool)))
    return float(np.mean(out))


def _table(res: dict) -> str:
    def cell(v, k):
        if v is None:
            return "-"
        return f"{v['mean']:.2f} ({v['min']:.2f}-{v['max']:.2f})"

    head = "| prediction | full frame dB | plate dB | revealed plate dB | revisited plate dB | panel colour error |"
    lines = [head, "|---|---|---|---|---|---|"]
    for name, desc in PREDICTORS.items():
        a = res["predictors"][name]
        lines.append(f"| {desc} | " + " | ".join(cell(a[k], k) for k in METRICS) + " |")
    return "\n".join(lines)


def _summary(res: dict) -> str:
    b = res["bound"]
    st = res["predictors"]["true_state_empty"]["psnr"]["mean"]
    n = res["indices"][1] - res["indices"][0] + 1
    return (
        f"Bound ({n} held-out world clips, {res['frames']} frames at {res['fps']:g} fps, "
        f"{res['size'][0]}x{res['size'][1]}): a memoryless predictor of these scores at most "
        f"{b['psnr']['best_mean']:.2f} dB full frame on average ({b['psnr']['best_sequence']:.2f} on its best clip), "
        f"{b['revealed_psnr']['best_mean']:.2f} dB on revealed plate ({b['revealed_psnr']['best_sequence']:.2f}), "
        f"and misses the panel colour by at least {b['panel_error']['best_mean']:.1f} levels "
        f"({b['panel_error']['best_sequence']:.1f}). The empty scene with the true state scores {st:.2f} dB; "
        f"the reference repeated on plain SynthDance {res.get('plain_synthdance_reference_psnr', math.nan):.2f} dB."
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m everanimate_core bench world``: the scores of memoryless predictors in the world."""
    p = argparse.ArgumentParser(prog="everanimate_core bench world", description=main.__doc__)
    p.add_argument("--sequences", type=int, default=20)
    p.add_argument("--seconds", type=float, default=90.0)
    p.add_argument("--size", type=int, default=64, help="frame height and width")
    p.add_argument("--fps", type=float, default=8.0)
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    a = p.parse_args(argv)
    try:  # metrics are numpy; keep any torch the process has on one thread (shared CPUs)
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    t = time.perf_counter()
    res = memoryless_bounds(a.sequences, a.seconds, a.size, a.size, a.fps)
    res["plain_synthdance_reference_psnr"] = plain_reference_psnr(a.sequences, a.seconds, a.size, a.size, a.fps)
    res["wall_s"] = round(time.perf_counter() - t, 1)
    print(_table(res))
    print()
    print(_summary(res))
    print()
    keys = ("world", "frames", "bound", "facts", "plain_synthdance_reference_psnr", "wall_s")
    print(json.dumps({k: res[k] for k in keys}, indent=1))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
