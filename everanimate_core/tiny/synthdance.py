"""SynthDance: synthetic human-animation videos with exact ground truth, cheap enough for a CPU.

A sequence (:func:`make_sequence`) is an **identity** (:class:`Identity`: an articulated 2D figure
with per-identity colours, a clothing pattern and a **back marker** drawn only while the figure
faces away, so it is never in the front-facing reference and only memory can get later turns
right), a static textured **background** with a foreground **occluder** (pillar or crate), and a
**motion** (:class:`Motion`): joint angles as sums of incommensurate sinusoids, wandering and
turning front -> side -> back several times a minute, a pure function of time. Renderers give RGB
frames with a visibility mask (:func:`render_frames`), an OpenPose-like skeleton video
(:func:`render_pose`) and the reference (:func:`render_reference`).

Colour rules: scene and identity colours stay at or below ``SCENE_MAX_LEVEL`` (217); marker and
skeleton colours are saturated with a channel at 255, so they are never confused with the scene.
Rendering: a 3D skeleton rotated by the facing angle and projected orthographically; tapered
capsules and discs with analytic signed-distance anti-aliasing, composited in per-frame depth
order; pure elementwise numpy, so any frame range renders alone and identically (1000 frames at
64x64 in under two seconds on one core). Splits ``train``/``test`` use disjoint seed streams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from everanimate_core.errors import ConfigError

__all__ = [
    "BACK_COS",
    "JOINT_NAMES",
    "MARKER_COLORS",
    "POSE_JOINT_COLORS",
    "POSE_LIMBS",
    "POSE_LIMB_COLORS",
    "POSE_NOSE_COLOR",
    "SCENE_MAX_LEVEL",
    "SPLITS",
    "Identity",
    "Motion",
    "Occluder",
    "Sequence",
    "make_background",
    "make_identity",
    "make_motion",
    "make_occluder",
    "make_sequence",
    "render_frames",
    "render_pose",
    "render_reference",
]

RGB = tuple[int, int, int]

SPLITS = ("train", "test")
#: Seed-stream prefixes: the split is part of every seed, so train and test never share one.
_SPLIT_SEED = {"train": 0x5EED_0001, "test": 0x7E57_0002}
_KIND_SEED = {"identity": 11, "background": 23, "background_noise": 29, "occluder": 37, "motion": 41}

#: The figure faces away from the camera (back marker drawn) when cos(facing) < BACK_COS.
BACK_COS = -0.5
#: No scene/identity colour channel exceeds this level; markers and skeletons reach 255.
SCENE_MAX_LEVEL = 217

#: The 14 joints returned by :meth:`Motion.joints`, in this order. Left/right are the figure's own.
JOINT_NAMES = (
    "head", "neck",
    "r_shoulder", "r_elbow", "r_wrist",
    "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle",
    "l_hip", "l_knee", "l_ankle",
)  # fmt: skip
_J = {name: i for i, name in enumerate(JOINT_NAMES)}

#: Skeleton limbs drawn by :func:`render_pose`, as joint-name pairs, in drawing order.
POSE_LIMBS = (
    ("neck", "r_hip"), ("r_hip", "r_knee"), ("r_knee", "r_ankle"),
    ("neck", "l_hip"), ("l_hip", "l_knee"), ("l_knee", "l_ankle"),
    ("neck", "r_shoulder"), ("r_shoulder", "r_elbow"), ("r_elbow", "r_wrist"),
    ("neck", "l_shoulder"), ("l_shoulder", "l_elbow"), ("l_elbow", "l_wrist"),
    ("neck", "head"),
)  # fmt: skip


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """One HSV colour (all in [0, 1]) to RGB floats in [0, 1]."""
    h6 = (h % 1.0) * 6.0
    i = int(h6) % 6
    f = h6 - math.floor(h6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _saturated(hue: float) -> RGB:
    r, g, b = (int(round(c * 255)) for c in _hsv_to_rgb(hue, 1.0, 1.0))
    return (r, g, b)


#: Fixed, fully saturated limb colours. Right limbs are warm, left limbs cool, so the
#: colour layout in the image flips when the figure turns its back (as with an anatomically
#: correct pose detector).
POSE_LIMB_COLORS: tuple[RGB, ...] = tuple(
    _saturated(h)
    for h in (
        0.00, 0.06, 0.12,   # neck-r_hip, r thigh, r shin      (reds/oranges)
        0.50, 0.56, 0.62,   # neck-l_hip, l thigh, l shin      (cyans/blues)
        0.17, 0.23, 0.30,   # r shoulder, r upper arm, r forearm (yellows/greens)
        0.70, 0.78, 0.86,   # l shoulder, l upper arm, l forearm (violets/magentas)
        0.40,               # neck-head
    )
)  # fmt: skip
#: Fixed joint-dot colours, one per entry of JOINT_NAMES.
POSE_JOINT_COLORS: tuple[RGB, ...] = tuple(
    _saturated((0.03 + i / len(JOINT_NAMES)) % 1.0) for i in range(len(JOINT_NAMES))
)
#: The nose dot, drawn only while the face is towards the camera (cos(facing) > 0).
POSE_NOSE_COLOR: RGB = (255, 0, 128)

#: Back-marker colours: saturated, so never present in the muted scene.
MARKER_COLORS: tuple[RGB, ...] = (
    (255, 0, 255), (0, 255, 255), (255, 255, 0), (0, 255, 64), (255, 96, 0), (255, 0, 80),
)
_MARKER_SHAPES = ("square", "cross", "diamond")
_PATTERNS = ("stripes", "checks", "dots")


def _check(index: int, split: str) -> None:
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {SPLITS}, got {split!r}")
    if not isinstance(index, (int, np.integer)) or index < 0:
        raise ConfigError(f"index must be a non-negative integer, got {index!r}")


def _rng(kind: str, split: str, index: int, *extra: int) -> np.random.Generator:
    """Deterministic generator for one (kind, split, index); splits use disjoint seed streams."""
    _check(index, split)
    return np.random.default_rng(np.random.SeedSequence([_SPLIT_SEED[split], _KIND_SEED[kind], int(index), *extra]))


def _check_size(height: int, width: int) -> None:
    if height < 16 or width < 16:
        raise ConfigError(f"height and width must be at least 16 pixels, got {height}x{width}")


def _check_range(start: int, stop: int) -> None:
    if start < 0 or stop < start:
        raise ConfigError(f"frame range must satisfy 0 <= start <= stop, got [{start}, {stop})")


def _muted(
    rng: np.random.Generator,
    hue: tuple[float, float] = (0.0, 1.0),
    sat: tuple[float, float] = (0.25, 0.65),
    val: tuple[float, float] = (0.3, 0.85),
    avoid: tuple[RGB, ...] = (),
    min_dist: float = 60.0,
) -> RGB:
    """A muted colour (value <= 0.85, so no channel above SCENE_MAX_LEVEL) at least
    ``min_dist`` (RGB Euclidean) from every colour in ``avoid``."""
    best, best_d = None, -1.0
    for _ in range(64):
        c = _hsv_to_rgb(rng.uniform(*hue), rng.uniform(*sat), min(rng.uniform(*val), 0.85)) * 255
        d = min((float(np.linalg.norm(c - np.array(a))) for a in avoid), default=1e9)
        if d > best_d:
            best, best_d = c, d
        if d >= min_dist:
            break
    r, g, b = (min(int(round(x)), SCENE_MAX_LEVEL) for x in best)
    return (r, g, b)


# --------------------------------------------------------------------------- identities


@dataclass(frozen=True)
class Identity:
    """Appearance of one figure. Colours are RGB uint8 triples; sizes are in figure-height units."""

    index: int
    split: str
    skin: RGB  #: head and hands
    hair: RGB
    torso: RGB
    pattern: str  #: "stripes", "checks" or "dots"
    pattern_color: RGB
    pattern_period: float
    upper_arm: RGB
    lower_arm: RGB
    thigh: RGB
    shin: RGB
    marker_shape: str  #: "square", "cross" or "diamond"; drawn on the back only
    marker_color: RGB  #: one of MARKER_COLORS
    build: float  #: limb thickness multiplier

    def appearance_colors(self) -> dict[str, RGB]:
        """Every colour of the figure except the back marker."""
        return {
            "skin": self.skin, "hair": self.hair, "torso": self.torso, "pattern": self.pattern_color,
            "upper_arm": self.upper_arm, "lower_arm": self.lower_arm, "thigh": self.thigh, "shin": self.shin,
        }  # fmt: skip


def make_identity(index: int, split: str = "train") -> Identity:
    """The ``index``-th identity of ``split``. Deterministic; train and test never coincide."""
    rng = _rng("identity", split, index)
    skin = _muted(rng, hue=(0.03, 0.11), sat=(0.25, 0.6), val=(0.4, 0.85))
    hair = _muted(rng, hue=(0.0, 1.0), sat=(0.2, 0.6), val=(0.12, 0.6), avoid=(skin,), min_dist=80)
    torso = _muted(rng, avoid=(skin, hair), min_dist=60)
    pattern_color = _muted(rng, avoid=(torso,), min_dist=90)
    upper_arm = _muted(rng, avoid=(torso,), min_dist=70)
    lower_arm = _muted(rng, avoid=(torso, upper_arm), min_dist=60)
    thigh = _muted(rng, avoid=(torso,), min_dist=70)
    shin = _muted(rng, avoid=(thigh, torso), min_dist=60)
    return Identity(
        index=int(index),
        split=split,
        skin=skin,
        hair=hair,
        torso=torso,
        pattern=_PATTERNS[int(rng.integers(len(_PATTERNS)))],
        pattern_color=pattern_color,
        pattern_period=float(rng.uniform(0.075, 0.11)),
        upper_arm=upper_arm,
        lower_arm=lower_arm,
        thigh=thigh,
        shin=shin,
        marker_shape=_MARKER_SHAPES[int(rng.integers(len(_MARKER_SHAPES)))],
        marker_color=MARKER_COLORS[int(rng.integers(len(MARKER_COLORS)))],
        build=float(rng.uniform(0.85, 1.2)),
    )


# --------------------------------------------------------------------------- scene


def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates, normalised to [0, 1]: y [H, 1], x [1, W] (float32)."""
    y = ((np.arange(height, dtype=np.float32) + 0.5) / height)[:, None]
    x = ((np.arange(width, dtype=np.float32) + 0.5) / width)[None, :]
    return y, x


def _box_alpha(
    y: np.ndarray, x: np.ndarray, box: tuple[float, float, float, float], height: int, width: int
) -> np.ndarray:
    """Anti-aliased coverage of the box (x0, y0, x1, y1) in normalised coordinates."""
    x0, y0, x1, y1 = box
    dx = np.maximum((x0 - x) * width, (x - x1) * width)
    dy = np.maximum((y0 - y) * height, (y - y1) * height)
    return np.clip(0.5 - np.maximum(dx, dy), 0.0, 1.0).astype(np.float32)


def _band(coord: np.ndarray, period: float) -> np.ndarray:
    """Anti-aliased square wave in [0, 1] along ``coord`` (pixels), half of each period on."""
    q = np.mod(coord / period, 1.0)
    return np.clip(0.5 + (period * 0.25 - np.abs(q - 0.5) * period), 0.0, 1.0)


def make_background(index: int, split: str = "train", height: int = 64, width: int = 64) -> np.ndarray:
    """Static textured background, uint8 [height, width, 3]; deterministic, train/test disjoint.

    A wall (vertical colour gradient, optional wallpaper stripes, a few framed pictures and
    discs) over a floor (gradient, optional boards), with low-amplitude smooth and fine noise.
    The layout is resolution independent; only the fine noise depends on the size.
    The occluder for the same index is :func:`make_occluder` (not drawn here).
    """
    _check_size(height, width)
    rng = _rng("background", split, index)
    y, x = _grid(height, width)
    horizon = rng.uniform(0.58, 0.74)
    wall_top = _muted(rng, sat=(0.05, 0.5), val=(0.35, 0.85))
    wall_bottom = _muted(rng, sat=(0.05, 0.5), val=(0.3, 0.8), avoid=(wall_top,), min_dist=30)
    floor_far = _muted(rng, sat=(0.05, 0.5), val=(0.25, 0.7), avoid=(wall_bottom,), min_dist=50)
    floor_near = _muted(rng, sat=(0.05, 0.5), val=(0.25, 0.75), avoid=(floor_far,), min_dist=30)
    tilt = rng.uniform(-0.3, 0.3)

    gw = np.clip(y / horizon + tilt * (x - 0.5), 0.0, 1.0)[..., None]
    wall = np.array(wall_top, np.float32) * (1 - gw) + np.array(wall_bottom, np.float32) * gw
    gf = np.clip((y - horizon) / (1 - horizon), 0.0, 1.0)[..., None]
    floor = np.array(floor_far, np.float32) * (1 - gf) + np.array(floor_near, np.float32) * gf
    if rng.random() < 0.6:  # wallpaper stripes
        period = rng.uniform(0.05, 0.13) * width
        wall = wall * (1 + rng.uniform(0.04, 0.09) * (2 * _band(x * width, period) - 1))[..., None]
    if rng.random() < 0.5:  # floor boards
        period = rng.uniform(0.04, 0.08) * height
        floor = floor * (1 + rng.uniform(0.04, 0.08) * (2 * _band(y * height, period) - 1))[..., None]
    a = np.clip((y - horizon) * height + 0.5, 0.0, 1.0)[..., None]
    img = wall * (1 - a) + floor * a

    for _ in range(int(rng.integers(2, 5))):  # pictures, windows, discs on the wall
        col = np.array(_muted(rng, sat=(0.1, 0.6), val=(0.2, 0.85)), np.float32)
        if rng.random() < 0.6:
            w, h = rng.uniform(0.08, 0.25), rng.uniform(0.08, 0.22)
            x0, y0 = rng.uniform(0.0, 1 - w), rng.uniform(0.03, max(0.04, horizon - h - 0.03))
            frame = _box_alpha(y, x, (x0, y0, x0 + w, y0 + h), height, width)[..., None]
            inner = _box_alpha(y, x, (x0 + 0.2 * w, y0 + 0.2 * h, x0 + 0.8 * w, y0 + 0.8 * h), height, width)[..., None]
            shade = col * rng.uniform(0.55, 0.8)
            img = img * (1 - frame) + frame * (shade * (1 - inner) + col * inner)
        else:
            r = rng.uniform(0.04, 0.09)
            cx, cy = rng.uniform(r, 1 - r), rng.uniform(r + 0.02, max(r + 0.03, horizon - r))
            d = np.sqrt(((x - cx) * width) ** 2 + ((y - cy) * height) ** 2) - r * min(height, width)
            disc = np.clip(0.5 - d, 0.0, 1.0)[..., None]
            img = img * (1 - disc) + disc * col

    # mild texture: smooth lattice noise (resolution independent) plus fine per-pixel grain
    lattice = rng.normal(0.0, 5.0, size=(10, 10)).astype(np.float32)
    ly, lx = (y[:, 0] * 9.0), (x[0] * 9.0)
    iy, ix = np.minimum(ly.astype(int), 8), np.minimum(lx.astype(int), 8)
    fy, fx = (ly - iy)[:, None], (lx - ix)[None, :]
    smooth = (
        lattice[iy][:, ix] * (1 - fy) * (1 - fx) + lattice[iy + 1][:, ix] * fy * (1 - fx)
        + lattice[iy][:, ix + 1] * (1 - fy) * fx + lattice[iy + 1][:, ix + 1] * fy * fx
    )  # fmt: skip
    grain = _rng("background_noise", split, index, height, width).uniform(-2.5, 2.5, size=(height, width))
    img = img + (smooth + grain)[..., None]
    return np.rint(np.clip(img, 0, SCENE_MAX_LEVEL)).astype(np.uint8)


@dataclass(frozen=True)
class Occluder:
    """A static foreground object in front of the figure: a pillar or a crate.

    ``box`` is (x0, y0, x1, y1) in normalised image coordinates. It always sits in the left
    or right third of the frame, so the centred figure of the reference image is never hidden,
    while the wandering figure regularly passes behind it.
    """

    kind: str  #: "pillar" or "crate"
    box: tuple[float, float, float, float]
    color: RGB

    def alpha(self, height: int, width: int) -> np.ndarray:
        """Coverage, float32 [height, width]: 1 where the pixel centre is inside the box, else 0.

        Hard-edged on purpose: every pixel is either hidden or not, so the visibility mask
        and the occlusion ground truth are exact.
        """
        y, x = _grid(height, width)
        x0, y0, x1, y1 = self.box
        return ((x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)).astype(np.float32)

    def rgb(self, height: int, width: int) -> np.ndarray:
        """Shaded colour (meaningful where alpha > 0), float32 [height, width, 3]."""
        y, x = _grid(height, width)
        x0, y0, x1, y1 = self.box
        u = np.clip((x - x0) / (x1 - x0), 0.0, 1.0)
        v = np.clip((y - y0) / (y1 - y0), 0.0, 1.0)
        if self.kind == "pillar":  # round column lit from the left
            shade = np.broadcast_to(0.72 + 0.28 * np.cos(np.pi * (u - 0.35)), (height, width))
        else:  # crate: darker frame and a middle plank
            e = np.minimum(np.minimum(u, 1 - u) * (x1 - x0) * width, np.minimum(v, 1 - v) * (y1 - y0) * height)
            plank = np.abs(v - 0.5) * (y1 - y0) * height
            shade = np.where((e < 0.09 * (x1 - x0) * width + 0.5) | (plank < 0.6), 0.7, 1.0)
        return np.minimum(np.array(self.color, np.float32) * shade[..., None].astype(np.float32), SCENE_MAX_LEVEL)

    def composite(self, image: np.ndarray) -> np.ndarray:
        """``image`` (uint8 [..., H, W, 3]) with the occluder drawn over it, uint8."""
        h, w = image.shape[-3:-1]
        a = self.alpha(h, w)[..., None]
        return np.rint(a * self.rgb(h, w) + (1 - a) * image.astype(np.float32)).astype(np.uint8)


def make_occluder(index: int, split: str = "train") -> Occluder:
    """The occluder belonging to background ``index`` of ``split`` (deterministic)."""
    rng = _rng("occluder", split, index)
    if rng.random() < 0.5:
        kind, w = "pillar", rng.uniform(0.09, 0.14)
        y0, y1 = 0.0, 1.0
    else:
        kind, w = "crate", rng.uniform(0.17, 0.25)
        y0, y1 = 1.0 - rng.uniform(0.24, 0.34), 1.0
    inner = rng.uniform(0.25, 0.33)  # inner edge: within the wander range, clear of the centre
    x0, x1 = inner - w, inner
    if rng.random() < 0.5:
        x0, x1 = 1.0 - x1, 1.0 - x0
    color = _muted(rng, sat=(0.1, 0.55), val=(0.3, 0.8))
    return Occluder(kind=kind, box=(float(x0), float(y0), float(x1), float(y1)), color=color)


# --------------------------------------------------------------------------- skeleton and motion


@dataclass(frozen=True)
class _Proportions:
    """Skeleton sizes in units of the standing figure height."""

    torso: float = 0.30  # hip centre to neck
    shoulder: float = 0.105  # half shoulder width
    hip: float = 0.06  # half hip width
    upper_arm: float = 0.16
    forearm: float = 0.15
    thigh: float = 0.245
    shin: float = 0.24
    neck_to_head: float = 0.10
    head_r: float = 0.068
    hand_r: float = 0.03
    chest_depth: float = 0.055  # half thickness of the torso, front to back


_REST = _Proportions()

# (mean, half-range) of the dance's joint angles in radians, per side
_PAIRED_DOFS = {
    "arm_abd": (0.75, 1.05),  # arm raised sideways (negative: across the body)
    "arm_flex": (0.35, 0.85),  # arm raised forwards (negative: backwards)
    "elbow": (0.95, 0.80),
    "hip_flex": (0.12, 0.40),
    "hip_abd": (0.12, 0.10),
    "knee": (0.45, 0.40),
}
_SINGLE_DOFS = {"spine_side": (0.0, 0.12), "spine_lean": (0.03, 0.08), "head_tilt": (0.0, 0.15)}


def _limb_dir(abd: np.ndarray, flex: np.ndarray, side: float) -> np.ndarray:
    """Unit direction of a limb hanging down, raised sideways by ``abd`` then forwards by ``flex``."""
    cb = np.cos(flex)
    return np.stack([side * np.sin(abd) * cb, -np.cos(abd) * cb, np.sin(flex)], axis=-1)


def _body_points(dof: dict[str, np.ndarray], prop: _Proportions) -> dict[str, np.ndarray]:
    """3D points [T, 3] in the body frame (x: figure's left, y: up, z: forward), lowest ankle at y=0."""
    side, lean, tilt = dof["spine_side"], dof["spine_lean"], dof["head_tilt"]
    T = side.shape[0]
    cl = np.cos(lean)
    up = np.stack([np.sin(side) * cl, np.cos(side) * cl, np.sin(lean)], axis=-1)
    across = np.stack([np.cos(side), -np.sin(side), np.zeros(T)], axis=-1)
    head_dir = np.stack([np.sin(side + tilt) * cl, np.cos(side + tilt) * cl, np.sin(lean)], axis=-1)
    hip_c = np.zeros((T, 3))
    neck = prop.torso * up
    head = neck + prop.neck_to_head * head_dir
    fwd = np.array([0.0, 0.0, 1.0])
    p = {
        "hip_c": hip_c,
        "neck": neck,
        "chest": neck - 0.055 * up,
        "head": head,
        "nose": head + prop.head_r * (0.95 * fwd - 0.35 * head_dir),
    }
    for s, n in ((1.0, "l"), (-1.0, "r")):
        sh = neck - 0.03 * up + s * prop.shoulder * across
        d1 = _limb_dir(dof[f"arm_abd_{n}"], dof[f"arm_flex_{n}"], s)
        el = sh + prop.upper_arm * d1
        bend = dof[f"elbow_{n}"]
        gam = dof[f"elbow_mix_{n}"]
        abd2 = np.minimum(dof[f"arm_abd_{n}"] + bend * np.cos(gam), 2.9)
        d2 = _limb_dir(abd2, dof[f"arm_flex_{n}"] + bend * np.sin(gam), s)
        wr = el + prop.forearm * d2
        hp = hip_c + np.array([s * prop.hip, 0.0, 0.0])
        d3 = _limb_dir(dof[f"hip_abd_{n}"], dof[f"hip_flex_{n}"], s)
        kn = hp + prop.thigh * d3
        d4 = _limb_dir(0.5 * dof[f"hip_abd_{n}"], dof[f"hip_flex_{n}"] - dof[f"knee_{n}"], s)
        p.update({
            f"{n}_shoulder": sh, f"{n}_elbow": el, f"{n}_wrist": wr, f"{n}_hand": wr + 0.6 * prop.hand_r * d2,
            f"{n}_hip": hp, f"{n}_knee": kn, f"{n}_ankle": kn + prop.shin * d4,
        })  # fmt: skip
    low = np.minimum(p["l_ankle"][:, 1], p["r_ankle"][:, 1])[:, None]
    shift = np.concatenate([np.zeros((T, 1)), low, np.zeros((T, 1))], axis=1)
    return {k: v - shift for k, v in p.items()}


@dataclass(frozen=True)
class _Geometry:
    """Projected figure for T frames: pixel positions, depth towards the camera, facing."""

    px: dict[str, np.ndarray]  # name -> [T, 2] (x, y) in pixels, pixel centres at +0.5
    dz: dict[str, np.ndarray]  # name -> [T], towards the camera, body units
    cos_f: np.ndarray  # [T]
    sin_f: np.ndarray  # [T]
    unit: float  # pixels per body unit
    prop: _Proportions


def _project(
    pts: dict[str, np.ndarray], facing: np.ndarray, x_c: np.ndarray, scale: float, ground: float,
    prop: _Proportions, height: int, width: int,
) -> _Geometry:  # fmt: skip
    c, s = np.cos(facing), np.sin(facing)
    unit = scale * height
    px, dz = {}, {}
    for k, v in pts.items():
        ix = v[:, 0] * c + v[:, 2] * s
        dz[k] = -v[:, 0] * s + v[:, 2] * c
        px[k] = np.stack([x_c * width + ix * unit, ground * height - v[:, 1] * unit], axis=1)
    return _Geometry(px=px, dz=dz, cos_f=c, sin_f=s, unit=unit, prop=prop)


@dataclass(frozen=True, eq=False)
class Motion:
    """A dance as a pure function of time (frame index / fps); any range renders independently.

    Joint angles are sums of three sinusoids per degree of freedom with incommensurate
    frequencies around a per-motion beat and slow amplitude envelopes (the style drifts over
    a minute or two, so long sequences do not repeat). Facing is a steady turn (a full turn
    every 14-24 s, either direction) plus a back-and-forth wobble; the figure wanders left and
    right across the frame; the lowest ankle always stands on the ground line.
    """

    index: int
    split: str
    fps: float
    scale: float  #: figure height as a fraction of the frame height
    ground: float  #: normalised y of the ground line
    prop: _Proportions = field(repr=False)
    _dofs: dict = field(repr=False)  # name -> (mean, amp[C], freq[C], phase[C], env_freq[C], env_phase[C])
    _elbow_mix: tuple[float, float] = field(repr=False)
    _facing: tuple[float, ...] = field(repr=False)  # theta0, spin rate, wobble amp, freq, phase (x2)
    _wander: tuple[float, ...] = field(repr=False)  # a1, f1, p1, a2, f2, p2

    # ---- time functions (t in seconds, float64 arrays)
    def _times(self, start: int, stop: int) -> np.ndarray:
        _check_range(start, stop)
        return np.arange(start, stop, dtype=np.float64) / self.fps

    def _facing_at(self, t: np.ndarray) -> np.ndarray:
        th0, rate, a1, f1, p1, a2, f2, p2 = self._facing
        return th0 + rate * t + a1 * np.sin(2 * np.pi * f1 * t + p1) + a2 * np.sin(2 * np.pi * f2 * t + p2)

    def _wander_at(self, t: np.ndarray) -> np.ndarray:
        a1, f1, p1, a2, f2, p2 = self._wander
        return 0.5 + a1 * np.sin(2 * np.pi * f1 * t + p1) + a2 * np.sin(2 * np.pi * f2 * t + p2)

    def _dofs_at(self, t: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for name, (mean, amp, freq, phase, env_f, env_p) in self._dofs.items():
            v = np.full_like(t, mean)
            for j in range(len(amp)):  # explicit sum: identical per frame whatever the range
                env = 0.65 + 0.35 * np.sin(2 * np.pi * env_f[j] * t + env_p[j])
                v = v + amp[j] * env * np.sin(2 * np.pi * freq[j] * t + phase[j])
            out[name] = v
        for n in ("l", "r"):
            out[f"elbow_{n}"] = np.maximum(out[f"elbow_{n}"], 0.0)
            out[f"knee_{n}"] = np.maximum(out[f"knee_{n}"], 0.0)
        out["elbow_mix_l"] = np.full_like(t, self._elbow_mix[0])
        out["elbow_mix_r"] = np.full_like(t, self._elbow_mix[1])
        return out

    def _geometry(self, start: int, stop: int, height: int, width: int) -> _Geometry:
        t = self._times(start, stop)
        pts = _body_points(self._dofs_at(t), self.prop)
        return _project(pts, self._facing_at(t), self._wander_at(t), self.scale, self.ground, self.prop, height, width)

    # ---- public accessors
    def facing(self, start: int, stop: int) -> np.ndarray:
        """Facing angle in radians per frame, float64 [T]: 0 towards the camera, pi away."""
        return self._facing_at(self._times(start, stop))

    def is_back(self, start: int, stop: int) -> np.ndarray:
        """bool [T]: the figure faces away (cos(facing) < BACK_COS), so its back marker is drawn."""
        return np.cos(self.facing(start, stop)) < BACK_COS

    def joints(self, start: int, stop: int, aspect: float = 1.0) -> np.ndarray:
        """Joint positions, float32 [T, 14, 2] as (x, y) in [0, 1] image coordinates (y down),
        in JOINT_NAMES order; ``aspect`` = width / height of the target frame."""
        g = self._geometry(start, stop, 1.0, float(aspect))  # "pixels" of a 1 x aspect frame
        return np.stack([g.px[n] / np.array([aspect, 1.0]) for n in JOINT_NAMES], axis=1).astype(np.float32)

    def depth(self, start: int, stop: int) -> np.ndarray:
        """Joint depth towards the camera in figure-height units, float32 [T, 14]."""
        g = self._geometry(start, stop, 64, 64)
        return np.stack([g.dz[n] for n in JOINT_NAMES], axis=1).astype(np.float32)

    def center_x(self, start: int, stop: int) -> np.ndarray:
        """Normalised x of the figure's wandering centre (hips), float64 [T]."""
        return self._wander_at(self._times(start, stop))


def make_motion(index: int, split: str = "train", fps: float = 8.0) -> Motion:
    """The ``index``-th dance of ``split`` at ``fps`` frames per second (deterministic)."""
    if not fps > 0:
        raise ConfigError(f"fps must be positive, got {fps}")
    rng = _rng("motion", split, index)
    beat = rng.uniform(0.30, 0.50)  # Hz
    env_rng = (0.008, 0.04)
    dofs: dict[str, tuple] = {}
    for name, (mean, half) in _PAIRED_DOFS.items():
        amp = rng.uniform(0.2, 1.0, 3)
        amp = amp / amp.sum() * half * rng.uniform(0.75, 1.0)
        freq = beat * rng.choice([0.5, 1.0, 1.5], 3) * rng.uniform(0.93, 1.07, 3)
        phase = rng.uniform(0, 2 * np.pi, 3)
        # right side: mirrored (same phase), alternating (opposite) or independent
        rel = np.where(rng.random(3) < 0.4, np.pi, np.where(rng.random(3) < 0.5, 0.0, rng.uniform(0, 2 * np.pi, 3)))
        env_f = rng.uniform(*env_rng, 3)
        env_p = rng.uniform(0, 2 * np.pi, 3)
        for n, ph, ep in (("l", phase, env_p), ("r", phase + rel, env_p + rng.normal(0, 0.6, 3))):
            m = mean + rng.uniform(-0.08, 0.08)
            dofs[f"{name}_{n}"] = (m, amp.copy(), freq.copy(), ph.copy(), env_f.copy(), ep.copy())
    for name, (mean, half) in _SINGLE_DOFS.items():
        amp = rng.uniform(0.2, 1.0, 3)
        amp = amp / amp.sum() * half
        freq = beat * rng.choice([0.25, 0.5, 1.0], 3) * rng.uniform(0.93, 1.07, 3)
        phase, env_f, env_p = rng.uniform(0, 2 * np.pi, 3), rng.uniform(*env_rng, 3), rng.uniform(0, 2 * np.pi, 3)
        dofs[name] = (mean, amp, freq, phase, env_f, env_p)
    spin = 2 * np.pi / rng.uniform(14.0, 24.0) * rng.choice([-1.0, 1.0])
    facing = (
        rng.uniform(-0.5, 0.5), spin,
        rng.uniform(0.4, 1.0), 1 / rng.uniform(4.5, 8.0), rng.uniform(0, 2 * np.pi),
        rng.uniform(0.1, 0.3), 1 / rng.uniform(2.0, 3.5), rng.uniform(0, 2 * np.pi),
    )  # fmt: skip
    wander = (
        rng.uniform(0.14, 0.18), 1 / rng.uniform(25.0, 45.0), rng.uniform(0, 2 * np.pi),
        rng.uniform(0.03, 0.05), 1 / rng.uniform(9.0, 15.0), rng.uniform(0, 2 * np.pi),
    )  # fmt: skip
    j = lambda: rng.uniform(0.95, 1.05)  # noqa: E731  (per-motion skeleton variation)
    prop = _Proportions(
        torso=_REST.torso * j(), shoulder=_REST.shoulder * j(), hip=_REST.hip * j(),
        upper_arm=_REST.upper_arm * j(), forearm=_REST.forearm * j(),
        thigh=_REST.thigh * j(), shin=_REST.shin * j(),
    )  # fmt: skip
    mix = rng.uniform(0.0, np.pi / 2)
    return Motion(
        index=int(index), split=split, fps=float(fps),
        scale=float(rng.uniform(0.66, 0.76)), ground=float(rng.uniform(0.88, 0.93)), prop=prop,
        _dofs=dofs, _elbow_mix=(float(mix), float(np.clip(mix + rng.normal(0, 0.3), 0, np.pi / 2))),
        _facing=tuple(float(v) for v in facing), _wander=tuple(float(v) for v in wander),
    )  # fmt: skip


# --------------------------------------------------------------------------- rasterisation

_CHUNK = 32  # frames rendered together; small enough that the working set stays in cache


def _capsule(
    X: np.ndarray, Y: np.ndarray, a: np.ndarray, b: np.ndarray, ra: np.ndarray, rb: np.ndarray,
    local: bool = False,
) -> tuple[np.ndarray, ...]:  # fmt: skip
    """Anti-aliased coverage [T, Hp, Wp] of tapered capsules a->b (radii ra->rb), all in pixels.

    X [T, 1, Wp] and Y [T, Hp, 1] are pixel-centre coordinates; a, b [T, 2]; ra, rb [T].
    With ``local`` also returns (u, v): distance along a->b and signed distance across it.
    """
    f32 = np.float32
    ex, ey = (b[:, 0] - a[:, 0]).astype(f32), (b[:, 1] - a[:, 1]).astype(f32)
    inv = (1.0 / np.maximum(ex * ex + ey * ey, 1e-6)).astype(f32)
    dx = X - a[:, 0].astype(f32)[:, None, None]
    dy = Y - a[:, 1].astype(f32)[:, None, None]
    h = dx * (ex * inv)[:, None, None] + dy * (ey * inv)[:, None, None]
    hc = np.clip(h, 0.0, 1.0)
    qx = dx - hc * ex[:, None, None]
    qy = dy - hc * ey[:, None, None]
    d = np.sqrt(qx * qx + qy * qy)
    d -= ra.astype(f32)[:, None, None] + hc * (rb - ra).astype(f32)[:, None, None]
    cov = np.clip(0.5 - d, 0.0, 1.0, out=d)
    if not local:
        return (cov,)
    ln = np.sqrt(ex * ex + ey * ey).astype(f32)
    u = h * ln[:, None, None]
    il = (1.0 / np.maximum(ln, 1e-3)).astype(f32)
    v = dx * (ey * il)[:, None, None] - dy * (ex * il)[:, None, None]
    return cov, u, v


def _disc(X: np.ndarray, Y: np.ndarray, c: np.ndarray, r: np.ndarray | float) -> np.ndarray:
    """Anti-aliased coverage [T, Hp, Wp] of discs centred at c [T, 2] with radius r (pixels)."""
    f32 = np.float32
    dx = X - c[:, 0].astype(f32)[:, None, None]
    dy = Y - c[:, 1].astype(f32)[:, None, None]
    d = np.sqrt(dx * dx + dy * dy)
    d -= np.asarray(r, f32).reshape(-1, 1, 1)
    return np.clip(0.5 - d, 0.0, 1.0, out=d)


def _windows(points: list[np.ndarray], margin: float, height: int, width: int):
    """Per-frame windows covering ``points`` (each [T, 2] pixels) +- margin, of one common size.

    Returns (y0 [T], x0 [T], Hp, Wp, Y [T, Hp, 1], X [T, 1, Wp]) with float32 pixel centres.
    """
    xs = np.stack([p[:, 0] for p in points], axis=1)
    ys = np.stack([p[:, 1] for p in points], axis=1)
    lo_x = np.clip(np.floor(xs.min(1) - margin), 0, width - 1).astype(np.int64)
    hi_x = np.clip(np.ceil(xs.max(1) + margin), 1, width).astype(np.int64)
    lo_y = np.clip(np.floor(ys.min(1) - margin), 0, height - 1).astype(np.int64)
    hi_y = np.clip(np.ceil(ys.max(1) + margin), 1, height).astype(np.int64)
    Wp = int(min(width, max(1, (hi_x - lo_x).max())))
    Hp = int(min(height, max(1, (hi_y - lo_y).max())))
    x0 = np.minimum(lo_x, width - Wp)
    y0 = np.minimum(lo_y, height - Hp)
    X = (x0[:, None] + np.arange(Wp)[None, :]).astype(np.float32)[:, None, :] + np.float32(0.5)
    Y = (y0[:, None] + np.arange(Hp)[None, :]).astype(np.float32)[:, :, None] + np.float32(0.5)
    return y0, x0, Hp, Wp, Y, X


def _slice_geometry(g: _Geometry, sl: slice) -> _Geometry:
    return _Geometry(
        px={k: v[sl] for k, v in g.px.items()}, dz={k: v[sl] for k, v in g.dz.items()},
        cos_f=g.cos_f[sl], sin_f=g.sin_f[sl], unit=g.unit, prop=g.prop,
    )  # fmt: skip


# colour groups of the figure, in the order of the colour table
_GROUPS = ("skin", "hair", "torso", "pattern", "marker", "upper_arm", "lower_arm", "thigh", "shin")


def _figure_chunk(ident: Identity, g: _Geometry, height: int, width: int):
    """Figure layer for a chunk of frames inside per-frame windows.

    Returns (y0, x0, colour [T, Hp, Wp, 3] premultiplied, transmittance [T, Hp, Wp]).
    """
    f32 = np.float32
    T, u, pr, b = g.cos_f.shape[0], g.unit, g.prop, ident.build
    P = g.px
    ones = np.ones(T)
    torso_r_top = np.hypot(pr.shoulder * 0.95 * g.cos_f, pr.chest_depth * g.sin_f) * u
    torso_r_bot = np.hypot((pr.hip + 0.035) * g.cos_f, pr.chest_depth * 0.9 * g.sin_f) * u
    margin = max(float(torso_r_top.max()), pr.head_r * u, 0.05 * b * u) + 2.0
    y0, x0, Hp, Wp, Y, X = _windows(list(P.values()), margin, height, width)

    # parts: name -> (coverage, depth [T], colour group)
    cov_t, tu, tv = _capsule(X, Y, P["chest"], P["hip_c"], torso_r_top, torso_r_bot, local=True)
    parts = [("torso", cov_t, 0.5 * (g.dz["chest"] + g.dz["hip_c"]))]
    parts.append(("head", _disc(X, Y, P["head"], pr.head_r * u), g.dz["head"] + 0.03))
    limb = [
        ("upper_arm", "shoulder", "elbow", 0.034, 0.029), ("lower_arm", "elbow", "wrist", 0.028, 0.024),
        ("thigh", "hip", "knee", 0.050, 0.040), ("shin", "knee", "ankle", 0.040, 0.032),
    ]  # fmt: skip
    for n in ("l", "r"):
        for grp, j0, j1, r0, r1 in limb:
            a, c = f"{n}_{j0}", f"{n}_{j1}"
            cov = _capsule(X, Y, P[a], P[c], r0 * b * u * ones, r1 * b * u * ones)[0]
            parts.append((grp, cov, 0.5 * (g.dz[a] + g.dz[c])))
        parts.append(("skin", _disc(X, Y, P[f"{n}_hand"], pr.hand_r * u), g.dz[f"{n}_wrist"] + 0.01))

    # front-to-back compositing in per-frame depth order
    covs = np.stack([p[1] for p in parts])  # [K, T, Hp, Wp]
    depth = np.stack([p[2] for p in parts], axis=1)  # [T, K]
    order = np.argsort(-depth, axis=1, kind="stable")
    weights = np.empty_like(covs)
    trans = np.ones((T, Hp, Wp), f32)
    ar = np.arange(T)
    for k in range(len(parts)):
        idx = order[:, k]
        w = covs[idx, ar] * trans
        weights[idx, ar] = w
        trans -= w

    # torso: clothing pattern and (back-facing frames only) the back marker
    period = f32(ident.pattern_period * u)
    if ident.pattern == "stripes":
        pat = _band(tu, period)
    elif ident.pattern == "checks":
        s1, s2 = _band(tu, period), _band(tv + 0.25 * period, period)
        pat = s1 + s2 - 2 * s1 * s2
    else:
        du = np.mod(tu / period, 1.0) - 0.5
        dv = np.mod(tv / period + 0.5, 1.0) - 0.5
        pat = np.clip(0.5 + (0.3 - np.sqrt(du * du + dv * dv)) * period, 0.0, 1.0)
    back = (g.cos_f < BACK_COS).astype(f32)[:, None, None]
    length = np.hypot(*(P["hip_c"] - P["chest"]).T)
    mu = (tu - (0.3 * length).astype(f32)[:, None, None])
    mv = (tv - (-pr.chest_depth * g.sin_f * u).astype(f32)[:, None, None])
    su = f32(0.065 * u)
    sv = (0.065 * u * np.maximum(np.abs(g.cos_f), 0.2)).astype(f32)[:, None, None]
    au, av = np.abs(mu), np.abs(mv)
    if ident.marker_shape == "square":
        md = np.maximum(au - su, av - sv)
    elif ident.marker_shape == "cross":
        md = np.minimum(np.maximum(au - su, av - 0.35 * sv), np.maximum(au - 0.35 * su, av - sv))
    else:
        md = (au * sv + av * su - su * sv) / np.sqrt(su * su + sv * sv)
    marker = np.clip(0.5 - md, 0.0, 1.0) * back

    # head: hair on top and at the back of the head (seen through the facing angle)
    hr = f32(pr.head_r * u)
    nx = (X - P["head"][:, 0].astype(f32)[:, None, None]) / hr
    ny = (Y - P["head"][:, 1].astype(f32)[:, None, None]) / hr
    nz = np.sqrt(np.maximum(1.0 - nx * nx - ny * ny, 0.0))
    fwd = nx * g.sin_f.astype(f32)[:, None, None] + nz * g.cos_f.astype(f32)[:, None, None]
    upc = -ny
    hair = np.clip(0.5 + np.maximum(upc - 0.3, np.minimum(0.1 - fwd, upc + 0.45)) * hr, 0.0, 1.0)

    gw = {name: np.zeros((T, Hp, Wp), f32) for name in _GROUPS}
    for (grp, _, _), w in zip(parts, weights):
        if grp == "torso":
            wm = w * marker
            rest = w - wm
            wp = rest * pat
            gw["marker"] += wm
            gw["pattern"] += wp
            gw["torso"] += rest - wp
        elif grp == "head":
            wh = w * hair
            gw["hair"] += wh
            gw["skin"] += w - wh
        else:
            gw[grp] += w
    colors = {**ident.appearance_colors(), "marker": ident.marker_color}
    rgb = np.zeros((T, Hp, Wp, 3), f32)
    for name in _GROUPS:
        rgb += gw[name][..., None] * np.array(colors[name], f32)
    return y0, x0, rgb, trans


def _scene_layers(background: np.ndarray, occluder: Occluder | None, height: int, width: int):
    """(occluder alpha [H, W], premultiplied occluder colour [H, W, 3], plate uint8 [H, W, 3])."""
    if background.shape != (height, width, 3) or background.dtype != np.uint8:
        raise ConfigError(f"background must be uint8 [{height}, {width}, 3], got {background.dtype} {background.shape}")
    if occluder is None:
        oa = np.zeros((height, width), np.float32)
        orgb = np.zeros((height, width, 3), np.float32)
    else:
        oa = occluder.alpha(height, width)
        orgb = oa[..., None] * occluder.rgb(height, width)
    bgf = background.astype(np.float32)
    plate = np.rint(orgb + (1 - oa)[..., None] * bgf).astype(np.uint8)
    return oa, orgb, bgf, plate


def _render_geometry(
    ident: Identity, g: _Geometry, background: np.ndarray, occluder: Occluder | None, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    oa, orgb, bgf, plate = _scene_layers(background, occluder, height, width)
    T = g.cos_f.shape[0]
    frames = np.broadcast_to(plate, (T, height, width, 3)).copy()
    mask = np.zeros((T, height, width), bool)
    for s in range(0, T, _CHUNK):
        sl = slice(s, min(T, s + _CHUNK))
        y0, x0, rgb, trans = _figure_chunk(ident, _slice_geometry(g, sl), height, width)
        Tc, Hp, Wp = trans.shape
        yi = y0[:, None, None] + np.arange(Hp)[None, :, None]
        xi = x0[:, None, None] + np.arange(Wp)[None, None, :]
        ti = np.arange(s, s + Tc)[:, None, None]
        a = oa[yi, xi]
        out = orgb[yi, xi] + (1 - a)[..., None] * (rgb + trans[..., None] * bgf[yi, xi])
        covered = trans < 1.0
        pix = np.where(covered[..., None], np.rint(out).astype(np.uint8), plate[yi, xi])
        frames[ti, yi, xi] = pix
        mask[ti, yi, xi] = (1.0 - trans) * (1.0 - a) >= 0.5
    return frames, mask


def render_frames(
    identity: Identity,
    background: np.ndarray,
    motion: Motion,
    start: int,
    stop: int,
    height: int = 64,
    width: int = 64,
    occluder: Occluder | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render frames [start, stop) of ``identity`` dancing ``motion`` over ``background``.

    ``occluder`` (see :func:`make_occluder`) is drawn over the figure; ``None`` draws none.
    Returns (frames uint8 [T, H, W, 3], figure_mask bool [T, H, W]); the mask marks pixels
    where the figure covers at least half of the pixel after the occluder. Pixels with no
    figure coverage at all are exactly the static plate (background with occluder).
    Frame k depends only on k: rendering [a, b) equals the slice of rendering [0, b).
    """
    _check_size(height, width)
    _check_range(start, stop)
    return _render_geometry(identity, motion._geometry(start, stop, height, width), background, occluder, height, width)


def render_reference(
    identity: Identity, background: np.ndarray, height: int = 64, width: int = 64, occluder: Occluder | None = None
) -> np.ndarray:
    """The identity in a canonical front-facing rest pose (arms slightly out), centred, over
    ``background`` (and ``occluder``, which never covers the centred figure); uint8 [H, W, 3].
    The back marker is not visible in it."""
    _check_size(height, width)
    z = np.zeros(1)
    dof = {k: z.copy() for k in _SINGLE_DOFS}
    for n in ("l", "r"):
        dof.update({
            f"arm_abd_{n}": z + 0.32, f"arm_flex_{n}": z + 0.0, f"elbow_{n}": z + 0.15, f"elbow_mix_{n}": z + 0.0,
            f"hip_flex_{n}": z + 0.0, f"hip_abd_{n}": z + 0.07, f"knee_{n}": z + 0.02,
        })  # fmt: skip
    g = _project(_body_points(dof, _REST), z, z + 0.5, 0.72, 0.9, _REST, height, width)
    return _render_geometry(identity, g, background, occluder, height, width)[0][0]


def render_pose(motion: Motion, start: int, stop: int, height: int = 64, width: int = 64) -> np.ndarray:
    """OpenPose-like skeleton video of frames [start, stop): uint8 [T, H, W, 3], black background.

    Each limb has a fixed saturated colour (POSE_LIMB_COLORS; left and right differ and labels
    are anatomical, so the colours swap sides in the image when the figure turns its back),
    joints are dots (POSE_JOINT_COLORS), and a nose dot (POSE_NOSE_COLOR) is drawn only while
    the face is towards the camera (cos(facing) > 0), offset towards the way the figure faces.
    Lines are about 1.3 px wide at 64x64 and scale with the frame.

    Edges are anti-aliased by intensity only: every pixel is ``coverage * one palette colour``
    (solid primitives follow the drawing order, fringes yield to solids), never a mix of two
    colours. All palette colours are fully saturated (one channel 0), so no pose pixel can
    take an identity colour, and the video carries no identity information at all.
    """
    _check_size(height, width)
    _check_range(start, stop)
    return _render_pose_geometry(motion._geometry(start, stop, height, width), height, width)


def _render_pose_geometry(g: _Geometry, height: int, width: int) -> np.ndarray:
    """The skeleton video of a projected figure (see :func:`render_pose`); also used by the
    stateful world (:mod:`everanimate_core.tiny.world`), whose figure is placed in camera
    coordinates."""
    f32 = np.float32
    T = g.cos_f.shape[0]
    out = np.zeros((T, height, width, 3), np.uint8)
    lw = max(0.6, 0.0105 * min(height, width))  # line half-width, pixels
    jr = 1.5 * lw
    table = np.array([(0, 0, 0), *POSE_LIMB_COLORS, *POSE_JOINT_COLORS, POSE_NOSE_COLOR], f32)
    face = g.cos_f > 0
    for s in range(0, T, _CHUNK):
        sl = slice(s, min(T, s + _CHUNK))
        P = {k: g.px[k][sl] for k in (*JOINT_NAMES, "nose")}
        Tc = sl.stop - sl.start
        y0, x0, Hp, Wp, Y, X = _windows(list(P.values()), jr + 2.0, height, width)
        rl = np.full(Tc, lw)
        prims = [_capsule(X, Y, P[j0], P[j1], rl, rl)[0] for j0, j1 in POSE_LIMBS]
        prims += [_disc(X, Y, P[name], jr) for name in JOINT_NAMES]
        prims.append(_disc(X, Y, P["nose"], jr) * face[sl].astype(f32)[:, None, None])
        best = np.zeros((Tc, Hp, Wp), f32)
        inten = np.zeros((Tc, Hp, Wp), f32)
        label = np.zeros((Tc, Hp, Wp), np.int64)
        for k, cov in enumerate(prims, start=1):
            score = cov + np.where(cov >= 0.5, f32(1.0 + 1e-3 * k), f32(1e-5 * k))
            upd = (cov > 0) & (score > best)
            best = np.where(upd, score, best)
            inten = np.where(upd, cov, inten)
            label = np.where(upd, k, label)
        yi = y0[:, None, None] + np.arange(Hp)[None, :, None]
        xi = x0[:, None, None] + np.arange(Wp)[None, None, :]
        ti = np.arange(s, s + Tc)[:, None, None]
        out[ti, yi, xi] = np.rint(table[label] * inten[..., None]).astype(np.uint8)
    return out


# --------------------------------------------------------------------------- sequences


@dataclass(eq=False)
class Sequence:
    """One SynthDance clip: an identity dancing a motion in a scene, renderable by range."""

    identity: Identity
    background: np.ndarray  # uint8 [H, W, 3], without the occluder
    motion: Motion
    height: int
    width: int
    split: str
    index: int
    occluder: Occluder | None = None

    def render(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """(frames uint8 [T, H, W, 3], figure mask bool [T, H, W]) for frames [start, stop)."""
        return render_frames(
            self.identity, self.background, self.motion, start, stop, self.height, self.width, self.occluder
        )

    def frames(self, start: int, stop: int) -> np.ndarray:
        """RGB frames uint8 [T, H, W, 3]."""
        return self.render(start, stop)[0]

    def mask(self, start: int, stop: int) -> np.ndarray:
        """Visible-figure mask bool [T, H, W] (after the occluder)."""
        return self.render(start, stop)[1]

    def pose(self, start: int, stop: int) -> np.ndarray:
        """Skeleton (driving) video uint8 [T, H, W, 3]."""
        return render_pose(self.motion, start, stop, self.height, self.width)

    def reference(self) -> np.ndarray:
        """Front-facing reference image uint8 [H, W, 3] over the same scene."""
        return render_reference(self.identity, self.background, self.height, self.width, self.occluder)

    def plate(self) -> np.ndarray:
        """The static scene as seen in the frames (background with occluder), uint8 [H, W, 3]."""
        return _scene_layers(self.background, self.occluder, self.height, self.width)[3]


def make_sequence(
    index: int,
    split: str = "train",
    height: int = 64,
    width: int = 64,
    fps: float = 8.0,
    *,
    identity_index: int | None = None,
    background_index: int | None = None,
    motion_index: int | None = None,
) -> Sequence:
    """Sequence ``index`` of ``split``. Identity, background (with its occluder) and motion come
    from independent seed streams; by default all use ``index``, and each can be overridden
    (e.g. one identity with several motions)."""
    _check(index, split)
    _check_size(height, width)
    bi = index if background_index is None else background_index
    return Sequence(
        identity=make_identity(index if identity_index is None else identity_index, split),
        background=make_background(bi, split, height, width),
        motion=make_motion(index if motion_index is None else motion_index, split, fps),
        height=height,
        width=width,
        split=split,
        index=int(index),
        occluder=make_occluder(bi, split),
    )


def training_clip(index: int, split: str, length: int, height: int, width: int, fps: float) -> tuple[Sequence, np.ndarray, np.ndarray]:
    """(sequence, frames, pose) of ``length`` frames for training: sequence ``index`` of ``split``,
    from a start that varies the dance's phase between sequences. Both tiny trainers draw their
    clips here (train_tiny through ``training_render``); the shipped weights and LoRAs were trained
    on exactly these clips."""
    seq, frames, _, pose = training_render(index, split, length, height, width, fps)
    return seq, frames, pose


def training_render(
    index: int, split: str, length: int, height: int, width: int, fps: float
) -> tuple[Sequence, np.ndarray, np.ndarray, np.ndarray]:
    """``training_clip`` with the figure mask of its frames: (sequence, frames, mask, pose)."""
    seq = make_sequence(index, split, height, width, fps)
    start = (index * 37) % 400
    frames, mask = seq.render(start, start + length)
    return seq, frames, mask, seq.pose(start, start + length)
