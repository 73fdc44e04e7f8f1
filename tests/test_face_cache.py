"""The K-anchor patch's face-motion cache, without ComfyUI: a fake Wan-Animate whose encoders count.

The fake motion encoder depends on the composition of each batch of frames (like a real kernel may,
bit for bit), so a cache that regrouped frames (per sample instead of over the whole (b t) axis)
would give other values and fail here.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from nodes.wan_patch import FACE_ENCODE_BATCH, PATCH_TARGET, FaceMotionCache, KAnchorPatch, face_cache_outer_sample

HEADS = 2


class _CountingMotion(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([1.5, -0.5, 0.25, 2.0]))
        self.calls = 0
        self.frames = 0

    def get_motion(self, x):  # [n, 3, h, w] -> [n, 4]
        self.calls += 1
        self.frames += x.shape[0]
        per_frame = x.mean(dim=(1, 2, 3))[:, None] * self.w
        return per_frame + 1e-3 * x.mean() * self.w  # depends on the whole batch


class _CountingFace(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.calls = 0

    def forward(self, m):  # [b, t, 4] -> [b, t', heads + 1, 4], halving t like the causal convs
        self.calls += 1
        m = self.lin(m[:, ::2])
        return torch.cat([m.unsqueeze(2).repeat(1, 1, HEADS, 1), torch.zeros_like(m).unsqueeze(2)], dim=2)


class _FakeAnimate(torch.nn.Module):
    def __init__(self, dim=8):
        super().__init__()
        self.pose_patch_embedding = torch.nn.Conv3d(16, dim, (1, 2, 2), stride=(1, 2, 2))
        self.motion_encoder = _CountingMotion()
        self.face_encoder = _CountingFace()


def _today(dm, x, pose, face, k):
    """The patch as it was before the cache: encoders at every call, frames grouped over (b t)."""
    x = x.clone()
    p = dm.pose_patch_embedding(pose)
    n = min(p.shape[2], x.shape[2] - k)
    x[:, :, k : k + n] += p[:, :, :n]
    b, c, t, h, w = face.shape
    frames = face.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
    parts = [dm.motion_encoder.get_motion(frames[i : i + FACE_ENCODE_BATCH]) for i in range(0, b * t, FACE_ENCODE_BATCH)]
    m = dm.face_encoder(torch.cat(parts).reshape(b, t, -1))
    m = torch.cat([m.new_zeros(m.shape[0], k, *m.shape[2:]), m], dim=1)
    if m.shape[1] < x.shape[2]:
        m = torch.cat([m, m.new_zeros(m.shape[0], x.shape[2] - m.shape[1], *m.shape[2:])], dim=1)
    return x, m[:, : x.shape[2]]


def _inputs(seed=0, t=13, slots=8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 8, slots, 2, 2, generator=g)
    pose = torch.randn(1, 16, slots - 4, 4, 4, generator=g)
    face = torch.rand(1, 3, t, 8, 8, generator=g) * 2 - 1
    return x, pose, face


def _counts(dm):
    return dm.motion_encoder.calls, dm.face_encoder.calls


def test_one_encode_per_face_input_over_many_steps_and_equal_to_today():
    torch.manual_seed(0)
    dm = _FakeAnimate()
    x, pose, face = _inputs()
    patch = KAnchorPatch(dm, 4)
    with torch.no_grad():
        ref_x, ref_m = _today(dm, x, pose, face, 4)
    per_encode = math.ceil(face.shape[2] / FACE_ENCODE_BATCH)
    base = _counts(dm)
    with patch.face_cache.session():
        for step in range(20):
            arrives = face if step % 2 else face.clone()  # the same object, or an equal copy
            px, pm = patch(x.clone(), pose, arrives)
            assert torch.equal(px, ref_x) and torch.equal(pm, ref_m), f"step {step}"
    assert _counts(dm) == (base[0] + per_encode, base[1] + 1), "encoders ran more than once for one face input"
    assert patch.face_cache.hits == 19 and patch.face_cache.encodes == 1


def test_without_a_session_the_encoders_run_at_every_call():
    dm = _FakeAnimate()
    x, pose, face = _inputs()
    patch = KAnchorPatch(dm, 4)
    for _ in range(3):
        patch(x.clone(), pose, face)
    assert dm.face_encoder.calls == 3 and len(patch.face_cache) == 0


def test_cache_face_false_runs_the_encoders_at_every_call_inside_a_session():
    dm = _FakeAnimate()
    x, pose, face = _inputs()
    patch = KAnchorPatch(dm, 4, cache_face=False)
    with patch.face_cache.session():
        outs = [patch(x.clone(), pose, face)[1] for _ in range(3)]
    assert dm.face_encoder.calls == 3 and all(torch.equal(o, outs[0]) for o in outs)


def test_cfg_cond_and_uncond_separately_or_batched():
    """cfg > 1: the negative face (all -1) alone, or concatenated with the positive (either order)."""
    dm = _FakeAnimate()
    x, pose, face = _inputs(t=5)  # 2 x 5 frames: one encode batch mixes cond and uncond frames
    neg = face * 0.0 - 1.0
    patch = KAnchorPatch(dm, 4)
    with torch.no_grad():
        ref_pos = _today(dm, x, pose, face, 4)[1]
        ref_neg = _today(dm, x, pose, neg, 4)[1]
        x2, pose2 = torch.cat([x, x]), torch.cat([pose, pose])
        ref_batch = _today(dm, x2, pose2, torch.cat([face, neg]), 4)[1]
    # batching cond with uncond changes the fake encoder's values: the cache must not mix them up
    assert not torch.equal(ref_batch[:1], ref_pos)
    calls = dm.face_encoder.calls
    with patch.face_cache.session():
        for _ in range(10):  # separate calls, alternating
            assert torch.equal(patch(x.clone(), pose, face)[1], ref_pos)
            assert torch.equal(patch(x.clone(), pose, neg)[1], ref_neg)
    assert dm.face_encoder.calls == calls + 2
    calls = dm.face_encoder.calls
    with patch.face_cache.session():
        for _ in range(10):  # one batch, rebuilt by torch.cat at every step as ComfyUI does
            assert torch.equal(patch(x2.clone(), pose2, torch.cat([face, neg]))[1], ref_batch)
    assert dm.face_encoder.calls == calls + 1


def test_a_new_face_window_is_encoded_and_never_served_stale():
    dm = _FakeAnimate()
    x, pose, face = _inputs(seed=0)
    other = _inputs(seed=1)[2]
    nudged = face.clone()
    nudged[0, 1, 7, 3, 3] += 1e-6  # one element differs: another window
    patch = KAnchorPatch(dm, 4)
    with torch.no_grad():
        refs = {n: _today(dm, x, pose, f, 4)[1] for n, f in (("face", face), ("other", other), ("nudged", nudged))}
    with patch.face_cache.session():
        calls = dm.face_encoder.calls
        for name, f in (("face", face), ("other", other), ("nudged", nudged), ("face", face)):
            assert torch.equal(patch(x.clone(), pose, f)[1], refs[name]), name
        assert dm.face_encoder.calls == calls + 4, "three distinct windows through two entries, then the first again"
        assert len(patch.face_cache) == 2, "bounded: two entries"
        # equal values in another dtype are another input (the encoders would compute in that dtype)
        assert patch.face_cache.lookup(face) is not None and patch.face_cache.lookup(face.double()) is None
        # an input changed in place after it was cached is a new input (the key is a private copy)
        mutable = face.clone() * 0.75  # not equal to anything cached
        patch(x.clone(), pose, mutable)
        mutable.mul_(0.5)
        calls = dm.face_encoder.calls
        with torch.no_grad():
            expect = _today(dm, x, pose, mutable, 4)[1]
        assert torch.equal(patch(x.clone(), pose, mutable)[1], expect)
        assert dm.face_encoder.calls == calls + 2  # _today + the re-encode


def test_sessions_start_and_end_empty():
    dm = _FakeAnimate()
    x, pose, face = _inputs()
    patch = KAnchorPatch(dm, 4)
    for chunk in range(5):
        with patch.face_cache.session():
            assert len(patch.face_cache) == 0
            for _ in range(3):
                patch(x.clone(), pose, face)
            assert len(patch.face_cache) == 1
        assert len(patch.face_cache) == 0 and not patch.face_cache.active
    assert dm.face_encoder.calls == 5, "one encode per chunk, even when the next chunk's window is equal"


def test_k_offset_unchanged_by_the_cache():
    dm = _FakeAnimate()
    for k, anchors in ((1, 1), (3, 3), (4, 4), (4, None)):
        x, pose, face = _inputs(t=9, slots=8)
        pose = pose[:, :, : 8 - k]
        patch = KAnchorPatch(dm, anchors)
        with torch.no_grad():
            ref_x, ref_m = _today(dm, x, pose, face, k)
        with patch.face_cache.session():
            for _ in range(3):
                px, pm = patch(x.clone(), pose, face)
                assert torch.equal(px, ref_x) and torch.equal(pm, ref_m), (k, anchors)
                assert pm.shape[1] == 8 and pm[:, :k].abs().sum() == 0 and pm[:, k:].abs().sum() > 0
                assert torch.equal(px[:, :, :k], x[:, :, :k]), "anchors get no pose term"


def test_cached_motion_is_not_handed_out():
    """The model gets a new tensor at every call: changing it in place cannot reach the cache."""
    dm = _FakeAnimate()
    x, pose, face = _inputs()
    patch = KAnchorPatch(dm, 4)
    with patch.face_cache.session():
        first = patch(x.clone(), pose, face)[1]
        ref = first.clone()
        first.mul_(0)
        assert torch.equal(patch(x.clone(), pose, face)[1], ref)


def test_no_autograd_graph_is_kept():
    dm = _FakeAnimate()
    x, pose, face = _inputs()
    face.requires_grad_(True)
    assert torch.is_grad_enabled() and dm.motion_encoder.w.requires_grad
    for cached in (True, False):
        patch = KAnchorPatch(dm, 4, cache_face=cached)
        with patch.face_cache.session():
            m = patch(x.clone(), pose, face)[1]
        assert m.grad_fn is None and not m.requires_grad


def _guider(patch, conds=None, hook_patches=None):
    patcher = SimpleNamespace(object_patches={PATCH_TARGET: patch}, hook_patches=hook_patches or {})
    return SimpleNamespace(model_patcher=patcher, conds=conds or {"positive": [{"model_conds": {}}]})


class _Executor:
    def __init__(self, guider, run):
        self.class_obj = guider
        self.run = run

    def __call__(self, *args, **kwargs):
        return self.run(*args, **kwargs)


def test_sampling_wrapper_opens_one_session_per_run():
    dm = _FakeAnimate()
    x, pose, face = _inputs()
    patch = KAnchorPatch(dm, 4)
    seen = []

    def run(steps):
        for _ in range(steps):
            seen.append(patch.face_cache.active)
            patch(x.clone(), pose, face)
        return "samples"

    for _ in range(3):  # three chunks
        assert face_cache_outer_sample(_Executor(_guider(patch), run), 4) == "samples"
        assert len(patch.face_cache) == 0 and not patch.face_cache.active
    assert all(seen) and dm.face_encoder.calls == 3


@pytest.mark.parametrize(
    "guider_kw",
    [{"conds": {"positive": [{"hooks": object()}]}}, {"hook_patches": {"some_hook": {}}}],
    ids=["cond hooks", "registered weight hooks"],
)
def test_sampling_wrapper_leaves_the_cache_off_with_hooks(guider_kw):
    dm = _FakeAnimate()
    x, pose, face = _inputs()
    patch = KAnchorPatch(dm, 4)

    def run():
        assert not patch.face_cache.active
        for _ in range(3):
            patch(x.clone(), pose, face)

    face_cache_outer_sample(_Executor(_guider(patch, **guider_kw), run))
    assert dm.face_encoder.calls == 3


def test_sampling_wrapper_ignores_a_replaced_patch():
    ran = []
    guider = SimpleNamespace(model_patcher=SimpleNamespace(object_patches={PATCH_TARGET: lambda *a: a}), conds={})
    face_cache_outer_sample(_Executor(guider, lambda: ran.append(1)))
    assert ran == [1]


def test_cache_entries_must_be_positive():
    with pytest.raises(Exception, match="at least one entry"):
        FaceMotionCache(0)
