"""Tests for everanimate_core.tiny.world: a SynthDance world whose state only earlier frames show."""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
import pytest

from everanimate_core.errors import ConfigError, EverAnimateError
from everanimate_core.tiny import synthdance as sd
from everanimate_core.tiny import world as w

FPS = 8.0
N90 = 720  # 90 s at 8 fps

#: The memoryless bound stated in docs/world.md for 32x32 clips of 90 s (every trivial memoryless
#: predictor of world.MEMORYLESS stays below it on every measured held-out sequence).
BOUND32 = {"psnr": 21.5, "revealed_psnr": 23.0, "panel_error": 30.0}


def _hash(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def seq() -> w.WorldSequence:
    return w.make_world_sequence(0, "test", 64, 64, FPS)


# --------------------------------------------------------------------------- plain SynthDance unchanged


@pytest.mark.parametrize(
    "split,index,size,start,stop,want_frames,want_pose,want_ref",
    [
        ("train", 0, 64, 0, 24, "c2ab9df87ef1dff8", "c044602029604fb4", "2c09b8c750feaa90"),
        ("test", 7, 96, 700, 712, "706abb1a86d32d39", "32c1e378acacbedf", "7aa13019164cf8a7"),
    ],
)
def test_plain_synthdance_is_bit_for_bit_unchanged(split, index, size, start, stop, want_frames, want_pose, want_ref):
    """Hashes computed with main's code (commit 5234f30) before the world existed."""
    s = sd.make_sequence(index, split, size, size)
    frames, mask = s.render(start, stop)
    assert _hash(frames, mask) == want_frames
    assert _hash(s.pose(start, stop)) == want_pose
    assert _hash(s.reference()) == want_ref


# --------------------------------------------------------------------------- determinism and ranges


def test_deterministic_and_distinct():
    a = w.make_world_sequence(3, "test", 48, 64)
    b = w.make_world_sequence(3, "test", 48, 64)
    fa, ma = a.render_world(100, 110)
    fb, mb = b.render_world(100, 110)
    ha = _hash(fa, *ma.values(), a.pose(100, 110), a.reference())
    assert ha == _hash(fb, *mb.values(), b.pose(100, 110), b.reference())
    c = w.make_world_sequence(4, "test", 48, 64)
    d = w.make_world_sequence(3, "train", 48, 64)
    assert not np.array_equal(c.frames(100, 110), fa)
    assert not np.array_equal(d.frames(100, 110), fa)
    assert not np.allclose(a.camera(0, N90), d.camera(0, N90))
    # the dancer is SynthDance's of the same split and index; the scene comes from the world stream
    assert a.identity == sd.make_identity(3, "test") and a.motion.index == 3


@pytest.mark.parametrize("height,width,start,stop", [(32, 32, 37, 70), (48, 96, 37, 70), (96, 96, 30, 36)])
def test_any_range_equals_the_slice_of_a_longer_render(height: int, width: int, start: int, stop: int):
    s = w.make_world_sequence(2, "test", height, width)
    full, fm = s.render_world(0, stop)
    part, pm = s.render_world(start, stop)  # render chunks start at other frames
    assert np.array_equal(part, full[start:])
    for k in fm:
        assert np.array_equal(pm[k], fm[k][start:]), k
    assert np.array_equal(s.pose(start, stop), s.pose(0, stop)[start:])
    assert s.frames(5, 5).shape == (0, height, width, 3)
    assert full.dtype == np.uint8 and full.shape == (stop, height, width, 3)
    assert s.reference().shape == (height, width, 3)


def test_scene_pixels_are_the_empty_scene_and_muted(seq: w.WorldSequence):
    frames, m = seq.render_world(0, 64)
    empty = seq.empty_frames(0, 64)
    assert np.array_equal(frames[m["scene"]], empty[m["scene"]])
    assert frames[m["scene"]].max() <= sd.SCENE_MAX_LEVEL
    assert m["figure"].any(axis=(1, 2)).all(), "the dancer is in every frame"
    assert not (m["figure"] & m["scene"]).any() and not (m["panel"] & m["plate"]).any()
    assert not (m["revealed"] & ~m["plate"]).any() and not (m["revisited"] & ~m["revealed"]).any()
    # panel pixels carry exactly the panel's colour of the frame
    pc = seq.panel_color(0, 64)
    t = np.nonzero(m["panel"])[0]
    assert len(t) and np.array_equal(frames[m["panel"]], pc[t])


# --------------------------------------------------------------------------- state


def test_reference_shows_only_the_first_view(seq: w.WorldSequence):
    ref = seq.reference()
    fv = seq.first_view()
    f0, m0 = seq.render_world(0, 1)
    over_black = sd.render_reference(seq.identity, np.zeros_like(fv), 64, 64)
    over_grey = sd.render_reference(seq.identity, np.full_like(fv, 200), 64, 64)
    ref_bg = (over_black == 0).all(-1) & (over_grey == 200).all(-1)  # pixels the dancer does not touch
    both = ref_bg & m0["scene"][0]
    assert both.mean() > 0.6
    assert np.array_equal(ref[both], f0[0][both]), "the reference's scene is frame 0's view"
    assert np.array_equal(ref[ref_bg], fv[ref_bg])
    # a later view (camera moved >= 8 px) is not what the reference shows
    cam = seq.camera(0, N90)
    k = int(np.argmax(np.abs(cam - cam[0])))
    assert abs(cam[k] - cam[0]) * 64 >= 8
    fk, mk = seq.render_world(k, k + 1)
    sel = mk["plate"][0] & ref_bg
    assert w.region_psnr(ref[None], fk, sel[None]) < 20.0
    # the panel is in the reference with colour 0, and the ball is not
    assert seq.panel_index(0, 1)[0] == 0
    inner = m0["panel"][0] & ref_bg
    assert inner.sum() >= 20 and (ref[inner] == seq.panel_palette[0]).all()
    assert not m0["prop"][0].any() or not np.array_equal(f0[0][m0["prop"][0]], ref[m0["prop"][0]])


def test_panel_changes_colour_in_90_seconds():
    switches, held = [], []
    for i in range(12):
        s = w.make_world_sequence(i, "test", 32, 32)
        idx = s.panel_index(0, N90)
        sw = s.panel_switches(0, N90)
        assert idx[0] == 0
        assert np.array_equal(np.flatnonzero(np.diff(idx) != 0) + 1, sw)
        switches.append(len(sw))
        held.append(len(np.unique(idx)))
    assert sum(n >= 1 for n in switches) >= 11, switches
    assert 6 <= np.mean(switches) <= 30, "mean interval about 6 s: ~15 switches in 90 s"
    assert np.mean(held) > 2.5, "most sequences show all three colours"
    # the switch times extend past the first event block (60 s) without a seam
    s = w.make_world_sequence(0, "test", 32, 32)
    assert np.array_equal(s.panel_index(400, 600), s.panel_index(0, 600)[400:])


def test_revealed_regions_exist_and_are_new():
    seen_revisit = 0
    for i in range(4):
        s = w.make_world_sequence(i, "test", 32, 32)
        cam = s.camera(0, N90)
        assert cam.min() >= 0 and cam.max() <= s.config.plate_factor - 1, "the camera stays on the plate"
        assert (cam.max() - cam.min()) * 32 > 8, "the camera pans"
        _, m0 = s.render_world(0, 1)
        assert not m0["revealed"].any()
        k = int(np.argmax(np.abs(cam - cam[0])))
        fk, mk = s.render_world(k, k + 1)
        assert mk["revealed"].mean() > 0.08
        fv = np.broadcast_to(s.first_view(), fk.shape)
        assert w.region_psnr(fv, fk, mk["revealed"]) < 20.0, "revealed plate is not the first view"
        # a revisited region: outside the first view, in view now and at least revisit_lag frames ago
        lag = s.config.revisit_lag
        lo = np.minimum.accumulate(cam)[:-lag]
        hi = np.maximum.accumulate(cam)[:-lag] + 1
        now = cam[lag:]
        right = np.minimum(hi, now + 1) - np.maximum(cam[0] + 1, now)  # width revisited right of the first view
        left = np.minimum(cam[0], now + 1) - np.maximum(lo, now)
        ok = np.flatnonzero(np.maximum(left, right) * 32 >= 4)
        if len(ok):
            kr = int(ok[0]) + lag
            _, mr = s.render_world(kr, kr + 1)
            seen_revisit += bool(mr["revisited"].any())
    assert seen_revisit >= 2


def test_pose_moves_with_the_camera(seq: w.WorldSequence):
    j = seq.joints(0, 200)
    hips = 0.5 * (j[:, sd.JOINT_NAMES.index("l_hip"), 0] + j[:, sd.JOINT_NAMES.index("r_hip"), 0])
    np.testing.assert_allclose(hips, seq.dancer_world_x(0, 200) - seq.camera(0, 200), atol=1e-5)
    # another camera (only the follow lag changed): the skeleton shifts by minus the camera change
    other = dataclasses.replace(seq, lag=seq.lag * 3.0)
    dcam = other.camera(0, 200) - seq.camera(0, 200)
    assert np.abs(dcam).max() * 64 > 3
    shift = np.broadcast_to(-dcam[:, None], j.shape[:2])
    np.testing.assert_allclose(other.joints(0, 200)[..., 0] - j[..., 0], shift, atol=1e-5)
    np.testing.assert_allclose(other.joints(0, 200)[..., 1], j[..., 1], atol=1e-6)
    # the rendered skeleton follows: its centroid moves with the screen position of the dancer
    pose = seq.pose(0, 200)
    on = pose.max(-1) > 0
    xs = (np.arange(64) + 0.5)[None, None, :]
    cx = (on * xs).sum(axis=(1, 2)) / on.sum(axis=(1, 2))
    assert np.corrcoef(cx, hips * 64)[0, 1] > 0.9
    # it is not SynthDance's pose of the same motion (which ignores the camera)
    plain = sd.render_pose(seq.motion, 0, 200, 64, 64)
    assert not np.array_equal(plain, pose)


def test_camera_is_the_lagged_dancer_position(seq: w.WorldSequence):
    """v' = (u - v) / lag: the camera is recoverable from the dancer's history, not from one window."""
    t = np.arange(N90) / FPS
    v = seq.camera(0, N90) + 0.5
    u = seq.dancer_world_x(0, N90)
    dv = np.gradient(v, t)
    np.testing.assert_allclose(dv, (u - v) / seq.lag, atol=2e-3)


def test_default_world_keeps_its_fingerprint():
    """``still_s`` at 0 stays out of the hash: run folders and results of the world as it was
    (before the field) still match it."""
    assert w.WorldConfig().fingerprint() == "63618ac90afd8ca8"
    assert w.WorldConfig(still_s=4.0).fingerprint() != w.WorldConfig().fingerprint()


STILL_S = 4.0


@pytest.mark.parametrize("index", [0, 1, 7])
def test_still_start_holds_the_view_then_follows_from_rest(index: int):
    """With ``still_s``: the view, the slow travel and the panel hold until still_s (the frames
    there differ only by the dancer's wander and the prop), then the camera obeys the lag ODE from
    its first view, continuously, and pans."""
    cfg = w.WorldConfig(still_s=STILL_S)
    s = w.make_world_sequence(index, "test", 64, 64, FPS, cfg)
    t = np.arange(N90) / FPS
    v = s.camera(0, N90) + 0.5
    still = t <= STILL_S
    assert np.all(v[still] == v[0]) and np.all(s.panel_index(0, N90)[still] == 0)
    # the dancer only wanders while the view holds: its centre stays on the frame
    assert np.abs(s.center_x(0, N90)[still] - 0.5).max() <= w._WANDER_MAX + 1e-9
    after = t >= STILL_S + 0.5
    dv = np.gradient(v, t)
    u = s.dancer_world_x(0, N90)
    np.testing.assert_allclose(dv[after], ((u - v) / s.lag)[after], atol=2e-3)
    assert np.abs(np.diff(v)).max() < 0.05  # no jump at still_s (a frame moves at most 0.05 widths)
    assert np.ptp(v) > 0.2  # it pans over the 90 s
    # the same clip of the panning world: the same dancer and plate, another camera
    plain = w.make_world_sequence(index, "test", 64, 64, FPS)
    assert s.lag == plain.lag and not np.allclose(s.camera(0, N90), plain.camera(0, N90))


# --------------------------------------------------------------------------- the memoryless bound


def test_memoryless_predictors_score_below_the_stated_bound():
    res = w.memoryless_bounds(sequences=1, seconds=90, height=32, width=32)
    for name in w.MEMORYLESS:
        a = res["predictors"][name]
        assert a["psnr"]["max"] < BOUND32["psnr"], (name, a["psnr"])
        assert a["revealed_psnr"]["max"] < BOUND32["revealed_psnr"], (name, a["revealed_psnr"])
        assert a["panel_error"]["min"] > BOUND32["panel_error"], (name, a["panel_error"])
    # with the state known, the empty scene alone is far above the bound: the gap is memory's to win
    st = res["predictors"]["true_state_empty"]
    assert st["psnr"]["min"] > 22.5 and st["panel_error"]["max"] == 0.0
    assert res["facts"]["min_panel_switches"] >= 1 and res["facts"]["revealed_share"] > 0.1


def test_scene_metrics():
    s = w.make_world_sequence(1, "test", 32, 32)
    gt, m = s.render_world(0, 40)
    r = w.score_world(s, gt, 0, s.config)
    assert r["psnr"] == math.inf and r["panel_error"] == 0.0
    shifted = np.clip(gt.astype(np.int16) + 10, 0, 255).astype(np.uint8)
    assert w.panel_color_error(shifted, gt, m["panel"]) == pytest.approx(10.0)
    assert w.region_psnr(shifted, gt, m["plate"]) == pytest.approx(20 * math.log10(25.5), abs=1e-6)
    assert w.region_psnr(gt.astype(np.float32) / 255, gt.astype(np.float32) / 255, m["plate"]) == math.inf
    assert math.isnan(w.region_psnr(gt, gt, np.zeros(gt.shape[:3], bool)))


# --------------------------------------------------------------------------- refusals


def test_refusals():
    cfg = w.WorldConfig()
    with pytest.raises(ConfigError, match="outside the 'test' split"):
        w.make_world_sequence(cfg.test_size, "test")
    with pytest.raises(ConfigError, match="outside"):
        w.make_world_sequence(-1, "train")
    with pytest.raises(ConfigError, match="integer"):
        w.make_world_sequence(True, "train")
    with pytest.raises(ConfigError, match="split"):
        w.make_world_sequence(0, "val")
    with pytest.raises(ConfigError, match="at least 16"):
        w.make_world_sequence(0, "test", 8, 64)
    with pytest.raises(ConfigError, match="travel"):
        w.WorldConfig(travel=0.9)
    with pytest.raises(ConfigError, match="plate_factor"):
        w.WorldConfig(plate_factor=1.0)
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ConfigError, match="still_s"):
            w.WorldConfig(still_s=bad)
    with pytest.raises(ConfigError, match="config must be a WorldConfig"):
        w.make_world_sequence(0, "test", config={"travel": 0.3})
    s = w.make_world_sequence(0, "test", 32, 32)
    with pytest.raises(ConfigError, match="frame range"):
        s.frames(5, 3)
    other = w.WorldConfig(panel_mean_s=3.0)
    with pytest.raises(ConfigError, match="another world configuration.*panel_mean_s"):
        w.require_world(s, other)
    with pytest.raises(ConfigError, match="another world configuration"):
        w.score_world(s, s.frames(0, 4), 0, other.fingerprint())
    w.require_world(s, w.WorldConfig())  # the default world is accepted
    with pytest.raises(EverAnimateError, match="one size"):
        w.score_world(s, np.zeros((4, 64, 64, 3), np.uint8))
    gt = s.frames(0, 4)
    with pytest.raises(EverAnimateError, match="mask must be bool"):
        w.region_psnr(gt, gt, np.ones((4, 16, 16), bool))
    with pytest.raises(EverAnimateError, match="uint8"):
        w.region_psnr(gt.astype(np.int32), gt.astype(np.int32), np.ones((4, 32, 32), bool))
