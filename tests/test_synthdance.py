"""Tests for everanimate_core.tiny.synthdance: synthetic dance videos with exact ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from everanimate_core.errors import ConfigError
from everanimate_core.tiny import synthdance as sd

N_MINUTE = 480  # one minute at 8 fps


@pytest.fixture(scope="module")
def seq() -> sd.Sequence:
    return sd.make_sequence(0, "train", 64, 64)


@pytest.fixture(scope="module")
def minute(seq: sd.Sequence) -> tuple[np.ndarray, np.ndarray]:
    """One minute of frames and masks of ``seq`` (with its occluder)."""
    return seq.render(0, N_MINUTE)


def _dilate(mask: np.ndarray, r: int = 1) -> np.ndarray:
    """Binary dilation of [T, H, W] masks by a (2r+1)^2 square."""
    out = mask.copy()
    padded = np.pad(mask, ((0, 0), (r, r), (r, r)))
    H, W = mask.shape[1:]
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= padded[:, dy : dy + H, dx : dx + W]
    return out


def _near(frames: np.ndarray, color: tuple[int, int, int], tol: int) -> np.ndarray:
    """bool [..., H, W]: pixels within ``tol`` levels (max over channels) of ``color``."""
    return np.abs(frames.astype(np.int16) - np.array(color, np.int16)).max(-1) <= tol


def _proportional_to(frames: np.ndarray, color: tuple[int, int, int], min_level: int = 128) -> np.ndarray:
    """bool [..., H, W]: pixels equal to intensity * ``color`` (up to rounding), reasonably bright."""
    c = np.array(color, np.float32)
    f = frames.astype(np.float32)
    s = f.max(-1) / c.max()
    return (np.abs(f - s[..., None] * c).max(-1) <= 1.5) & (f.max(-1) >= min_level)


# --------------------------------------------------------------------------- shapes and arguments


@pytest.mark.parametrize("height,width", [(32, 32), (48, 96), (64, 64), (256, 128)])
def test_shapes_and_dtypes(height: int, width: int):
    s = sd.make_sequence(3, "test", height, width)
    frames, mask = s.render(5, 9)
    assert frames.shape == (4, height, width, 3) and frames.dtype == np.uint8
    assert mask.shape == (4, height, width) and mask.dtype == bool
    pose = s.pose(5, 9)
    assert pose.shape == (4, height, width, 3) and pose.dtype == np.uint8
    ref = s.reference()
    assert ref.shape == (height, width, 3) and ref.dtype == np.uint8
    assert s.background.shape == (height, width, 3) and s.background.dtype == np.uint8
    assert mask.any(axis=(1, 2)).all(), "the figure is visible in every frame"
    assert pose.any(axis=(1, 2, 3)).all()
    joints = s.motion.joints(5, 9, aspect=width / height)
    assert joints.shape == (4, len(sd.JOINT_NAMES), 2) and joints.dtype == np.float32
    assert s.motion.depth(5, 9).shape == (4, len(sd.JOINT_NAMES))
    assert s.motion.facing(5, 9).shape == (4,) and s.motion.is_back(5, 9).dtype == bool
    assert s.frames(0, 0).shape == (0, height, width, 3)


def test_joints_match_rendered_figure():
    """Joint coordinates are in the frame's normalised coordinates, also for non-square frames."""
    s = sd.make_sequence(1, "train", 48, 96)
    joints = s.motion.joints(0, 40, aspect=96 / 48)
    mask = s.render(0, 40)[1] | (s.frames(0, 40) != s.plate()).any(-1)  # figure pixels, occluded or not
    px = np.clip((joints * np.array([96, 48])).astype(int), 0, [95, 47])
    for name in ("neck", "r_hip", "l_hip"):  # always inside the torso
        j = sd.JOINT_NAMES.index(name)
        hit = mask[np.arange(40), px[:, j, 1], px[:, j, 0]]
        unoccluded = s.occluder.alpha(48, 96)[px[:, j, 1], px[:, j, 0]] < 0.5
        assert hit[unoccluded].all()


def test_invalid_arguments_raise():
    with pytest.raises(ConfigError):
        sd.make_identity(0, "val")
    with pytest.raises(ConfigError):
        sd.make_background(-1, "train", 64, 64)
    with pytest.raises(ConfigError):
        sd.make_motion(0, "train", fps=0)
    s = sd.make_sequence(0)
    with pytest.raises(ConfigError):
        s.frames(5, 4)
    with pytest.raises(ConfigError):
        sd.render_frames(s.identity, s.background[:32], s.motion, 0, 2, 64, 64)


# --------------------------------------------------------------------------- determinism, splits, ranges


def test_deterministic():
    a, b = sd.make_sequence(7, "test", 64, 64), sd.make_sequence(7, "test", 64, 64)
    assert a.identity == b.identity
    assert sd.make_occluder(7, "test") == sd.make_occluder(7, "test")
    np.testing.assert_array_equal(a.background, b.background)
    fa, ma = a.render(100, 140)
    fb, mb = b.render(100, 140)
    np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(ma, mb)
    np.testing.assert_array_equal(a.pose(100, 140), b.pose(100, 140))
    np.testing.assert_array_equal(a.reference(), b.reference())
    np.testing.assert_array_equal(a.motion.joints(0, 50), b.motion.joints(0, 50))
    # and different indices differ
    c = sd.make_sequence(8, "test", 64, 64)
    assert c.identity != a.identity
    assert not np.array_equal(c.background, a.background)
    assert not np.array_equal(c.motion.joints(0, 50), a.motion.joints(0, 50))


def test_train_and_test_identities_are_disjoint():
    n = 60
    train = [sd.make_identity(i, "train") for i in range(n)]
    test = [sd.make_identity(i, "test") for i in range(n)]
    key = lambda ident: tuple(ident.appearance_colors().values())  # noqa: E731
    assert len({key(i) for i in train}) == n and len({key(i) for i in test}) == n
    assert not {key(i) for i in train} & {key(i) for i in test}
    # not merely shuffled: no test torso colour is a train torso colour either
    assert not {i.torso for i in train} & {i.torso for i in test}


def test_train_and_test_backgrounds_are_disjoint():
    n = 12
    train = np.stack([sd.make_background(i, "train", 32, 32) for i in range(n)]).astype(np.int16)
    test = np.stack([sd.make_background(i, "test", 32, 32) for i in range(n)]).astype(np.int16)
    diff = np.abs(train[:, None] - test[None]).mean(axis=(2, 3, 4))  # [n, n] mean abs difference
    assert diff.min() > 5.0
    within = np.abs(train[:, None] - train[None]).mean(axis=(2, 3, 4)) + np.eye(n) * 1e9
    assert within.min() > 5.0
    assert {sd.make_occluder(i, "train") for i in range(n)}.isdisjoint({sd.make_occluder(i, "test") for i in range(n)})


def test_range_equals_slice_of_longer_render(seq: sd.Sequence, minute):
    frames, mask = minute
    for a, b in ((37, 120), (119, 120), (200, 263)):
        f, m = seq.render(a, b)
        np.testing.assert_array_equal(f, frames[a:b])
        np.testing.assert_array_equal(m, mask[a:b])
    pose = seq.pose(0, 120)
    np.testing.assert_array_equal(seq.pose(45, 120), pose[45:])
    np.testing.assert_array_equal(seq.motion.joints(45, 120), seq.motion.joints(0, 120)[45:])


def test_motion_is_a_function_of_time():
    """The same instant at another frame rate gives the same pose: no hidden per-frame state."""
    m8, m16 = sd.make_motion(4, "train", fps=8.0), sd.make_motion(4, "train", fps=16.0)
    np.testing.assert_allclose(m16.joints(0, 200)[::2], m8.joints(0, 100), atol=1e-6)
    np.testing.assert_allclose(m16.facing(0, 200)[::2], m8.facing(0, 100), atol=1e-9)


# --------------------------------------------------------------------------- appearance


def test_back_marker_only_when_facing_back():
    for index, split in ((0, "train"), (1, "test")):
        s = sd.make_sequence(index, split, 64, 64)
        frames, _ = sd.render_frames(s.identity, s.background, s.motion, 0, N_MINUTE, 64, 64, occluder=None)
        back = s.motion.is_back(0, N_MINUTE)
        assert np.array_equal(back, np.cos(s.motion.facing(0, N_MINUTE)) < sd.BACK_COS)
        # the figure turns its back several times a minute, but not always
        assert 0.1 < back.mean() < 0.6
        assert np.sum(np.diff(back.astype(int)) == 1) >= 2
        marker = _near(frames, s.identity.marker_color, 30).sum(axis=(1, 2))
        assert marker[~back].max() == 0, "marker colour seen while not facing back"
        assert (marker[back] > 0).mean() > 0.9, "marker missing in back-facing frames"
        assert not _near(s.reference(), s.identity.marker_color, 30).any()


def test_background_outside_mask_is_the_static_scene(seq: sd.Sequence, minute):
    frames, mask = minute
    plate = seq.plate()
    np.testing.assert_array_equal(plate, seq.occluder.composite(seq.background))
    # the anti-aliased rim of the figure is within one pixel of the mask, except where the
    # figure is behind the occluder and only its rim shows beside it
    occ = np.broadcast_to(seq.occluder.alpha(64, 64) > 0, mask.shape)
    outside = ~_dilate(mask, 1) & ~_dilate(occ, 1)
    assert np.array_equal(frames[outside], np.broadcast_to(plate, frames.shape)[outside])
    # where even the unoccluded figure is absent, the scene is untouched
    _, bare = sd.render_frames(seq.identity, seq.background, seq.motion, 0, N_MINUTE, 64, 64, occluder=None)
    away = ~_dilate(bare, 1)
    assert np.array_equal(frames[away], np.broadcast_to(plate, frames.shape)[away])
    # and the figure really is drawn where the mask says
    changed = (frames != plate).any(-1)
    assert changed[mask].mean() > 0.95
    assert mask.sum(axis=(1, 2)).min() > 0


def test_mask_is_consistent_across_resolutions():
    """The scene scales with the frame: the 64x64 mask is the 128x128 mask's majority downsample."""
    lo, hi = sd.make_sequence(3, "train", 64, 64).mask(0, 60), sd.make_sequence(3, "train", 128, 128).mask(0, 60)
    down = hi.reshape(60, 64, 2, 64, 2).mean(axis=(2, 4))
    assert (lo == (down >= 0.5)).mean() > 0.98
    ratio = lo.sum() * 4 / hi.sum()
    assert 0.96 < ratio < 1.04


def test_reference_is_front_facing_and_centred():
    s = sd.make_sequence(2, "test", 64, 64)
    ref = s.reference()
    changed = (ref != s.plate()).any(-1)
    ys, xs = np.nonzero(changed)
    assert abs(xs.mean() - 31.5) < 2.0 and changed.sum() > 200
    assert changed[:, :12].sum() == 0 and changed[:, -12:].sum() == 0
    assert _near(ref, s.identity.torso, 2).sum() > 20
    assert _near(ref, s.identity.skin, 2).sum() > 5


def test_figure_moves(seq: sd.Sequence, minute):
    frames, mask = minute
    consecutive = (frames[1:201] != frames[:200]).any(axis=(1, 2, 3))
    assert consecutive.all()
    inter = (mask[0] & mask[200]).sum()
    union = (mask[0] | mask[200]).sum()
    assert inter / union < 0.8
    assert not np.array_equal(frames[0], frames[200])


def test_occluder_hides_the_figure(seq: sd.Sequence, minute):
    frames, mask = minute
    _, bare = sd.render_frames(seq.identity, seq.background, seq.motion, 0, N_MINUTE, 64, 64, occluder=None)
    alpha = seq.occluder.alpha(64, 64)
    assert not (mask & ~bare).any(), "the occluder can only hide figure pixels"
    free = alpha == 0
    np.testing.assert_array_equal(mask[:, free], bare[:, free])
    assert not mask[:, alpha >= 0.5].any()
    # the occluder is drawn over the figure: behind it, frames show the static scene only
    covered = alpha == 1
    assert np.array_equal(frames[:, covered], np.broadcast_to(seq.plate()[covered], frames[:, covered].shape))
    hidden = bare.sum(axis=(1, 2)) - mask.sum(axis=(1, 2))
    assert (hidden > 0).sum() >= 10, "the figure should pass behind the occluder within a minute"
    # frames with a joint well inside the occluder's box are (partly) hidden, others are not
    x0, y0, x1, y1 = seq.occluder.box
    j = seq.motion.joints(0, N_MINUTE)
    inside = ((j[..., 0] > x0 + 0.03) & (j[..., 0] < x1 - 0.03) & (j[..., 1] > y0 + 0.03) & (j[..., 1] < y1 - 0.03))
    behind = inside.any(1)
    assert behind.sum() >= 5 and (hidden[behind] > 0).all()
    # the whole figure (with its thickest parts) well clear of the box: nothing hidden
    clear = ((j[..., 0] < x0 - 0.12) | (j[..., 0] > x1 + 0.12)).all(1)
    assert clear.sum() >= 5 and (hidden[clear] == 0).all()


# --------------------------------------------------------------------------- pose video


def test_pose_is_black_outside_skeleton_and_has_no_identity_colours():
    s = sd.make_sequence(5, "train", 64, 64)
    pose = s.pose(0, 120)
    joints = s.motion.joints(0, 120) * 64  # pixels
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    near = np.zeros(pose.shape[:3], bool)
    for t in range(len(pose)):
        d = np.hypot(xx - joints[t, 0, 0], yy - joints[t, 0, 1]) < 6.0  # head joint and nose
        for a, b in sd.POSE_LIMBS:
            pa, pb = joints[t, sd.JOINT_NAMES.index(a)], joints[t, sd.JOINT_NAMES.index(b)]
            e = pb - pa
            h = np.clip(((xx - pa[0]) * e[0] + (yy - pa[1]) * e[1]) / max(e @ e, 1e-9), 0, 1)
            d |= np.hypot(xx - pa[0] - h * e[0], yy - pa[1] - h * e[1]) < 2.5
        near[t] = d
    lit = pose.any(-1)
    assert not lit[~near].any(), "pose pixels away from the skeleton"
    assert lit.sum(axis=(1, 2)).min() > 60
    # every pose pixel is (intensity x) a saturated palette colour, so has a zero channel ...
    assert pose.min(-1).max() == 0
    palette = [*sd.POSE_LIMB_COLORS, *sd.POSE_JOINT_COLORS, sd.POSE_NOSE_COLOR]
    explained = np.zeros_like(lit)
    for c in palette:
        explained |= _proportional_to(pose, c, min_level=1)
    assert explained[lit].all()
    # ... while no identity colour has one: identity colours cannot appear in the pose video
    for i in range(30):
        for split in sd.SPLITS:
            for c in sd.make_identity(i, split).appearance_colors().values():
                assert min(c) > 0
    # and it does not depend on who dances
    other = sd.make_sequence(5, "train", 64, 64, identity_index=9, background_index=3)
    np.testing.assert_array_equal(other.pose(0, 120), pose)


def test_pose_shows_facing():
    """Nose dot only when the face is towards the camera; left/right colours swap sides on turning."""
    m = sd.make_motion(2, "test")
    pose = sd.render_pose(m, 0, N_MINUTE, 64, 64)
    cos_f = np.cos(m.facing(0, N_MINUTE))
    nose = _proportional_to(pose, sd.POSE_NOSE_COLOR).any(axis=(1, 2))
    assert np.array_equal(nose[np.abs(cos_f) > 0.05], (cos_f > 0)[np.abs(cos_f) > 0.05])
    r_thigh = sd.POSE_LIMB_COLORS[sd.POSE_LIMBS.index(("r_hip", "r_knee"))]
    l_thigh = sd.POSE_LIMB_COLORS[sd.POSE_LIMBS.index(("l_hip", "l_knee"))]
    xs = np.arange(64)
    swaps = []
    for t in np.nonzero(np.abs(cos_f) > 0.9)[0]:
        r, lft = _proportional_to(pose[t], r_thigh), _proportional_to(pose[t], l_thigh)
        if r.any() and lft.any():
            right_on_left = (r.sum(0) @ xs) / r.sum() < (lft.sum(0) @ xs) / lft.sum()
            swaps.append(right_on_left == (cos_f[t] > 0))
    assert len(swaps) > 50 and np.mean(swaps) > 0.95
