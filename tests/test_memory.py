"""Latent memory: init, propagate, anchor policies, no re-encoding after chunk 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from everanimate_core.errors import ConfigError, ResumeStateError
from everanimate_core.memory import (
    LatentMemory,
    init_memory,
    pose_diverse_indices,
    propagate,
    random_anchor_indices,
)


class CountingEncoder:
    """Encodes a frame to a latent that remembers the frame (its mean colour per channel)."""

    def __init__(self, c=16, h=2, w=2):
        self.calls = []
        self.c, self.h, self.w = c, h, w

    def __call__(self, frame):
        self.calls.append(np.array(frame))
        return torch.full((self.c, 1, self.h, self.w), float(np.asarray(frame).mean()))


def _frames(n=77):
    return np.stack([np.full((8, 8, 3), i, dtype=np.uint8) for i in range(n)])


def test_init_repeats_reference_k_times():
    ref = torch.randn(16, 1, 2, 2)
    m = init_memory(ref, 4)
    assert m.anchors.shape == (16, 4, 2, 2) and all(torch.equal(m.anchors[:, i : i + 1], ref) for i in range(4))
    assert m.motion is None and m.chunk_index == 0


def test_release_random_anchor_pick_is_seeded_and_matches_parity():
    assert random_anchor_indices(77, 3, 12345) == [5, 33, 45]
    assert random_anchor_indices(77, 3, 7) == random_anchor_indices(77, 3, 7)
    assert random_anchor_indices(77, 3, 7) != random_anchor_indices(77, 3, 8)


def test_propagate_builds_anchors_once_from_chunk_zero_then_never_encodes():
    enc = CountingEncoder()
    ref = torch.full((16, 1, 2, 2), -1.0)
    m = init_memory(ref, 4, "random_plus_reference", anchor_seed=12345)
    lat0 = torch.randn(16, 20, 2, 2)
    m1 = propagate(m, lat0, _frames(), enc)
    assert len(enc.calls) == 3, "K-1 frames encoded, one by one"
    assert all(c.shape == (8, 8, 3) for c in enc.calls)
    assert m1.anchor_indices == (5, 33, 45)
    assert [float(m1.anchors[0, i, 0, 0]) for i in range(4)] == [5.0, 33.0, 45.0, -1.0], "reference last"
    assert torch.equal(m1.motion, lat0[:, -1:]), "motion = last generated latent, no VAE round trip"
    assert m1.chunk_index == 1 and m1.last_frame[0, 0, 0] == 76
    lat1 = torch.randn(16, 20, 2, 2)
    m2 = propagate(m1, lat1, _frames(), enc)
    assert len(enc.calls) == 3, "after chunk 0 nothing generated is re-encoded"
    assert torch.equal(m2.anchors, m1.anchors) and torch.equal(m2.motion, lat1[:, -1:])
    assert m.chunk_index == 0 and m.motion is None, "records are immutable"


def test_repeat_reference_never_encodes():
    enc = CountingEncoder()
    ref = torch.randn(16, 1, 2, 2)
    m = propagate(init_memory(ref, 4, "repeat_reference"), torch.randn(16, 20, 2, 2), _frames(), enc)
    assert enc.calls == [] and torch.equal(m.anchors, ref.repeat(1, 4, 1, 1))


def test_user_anchors_fill_first_slots_and_reference_last():
    ref = torch.zeros(16, 1, 2, 2)
    user = [torch.ones(16, 1, 2, 2), 2 * torch.ones(16, 1, 2, 2)]
    m = init_memory(ref, 4, "user", user_anchor_latents=user)
    assert [float(m.anchors[0, i, 0, 0]) for i in range(4)] == [1.0, 2.0, 0.0, 0.0]
    with pytest.raises(ConfigError, match="anchor images"):
        init_memory(ref, 4, "user")
    with pytest.raises(ConfigError, match="Raise K"):
        init_memory(ref, 2, "user", user_anchor_latents=user)


def test_pose_diverse_picks_the_most_different_frames():
    poses = np.zeros((10, 4, 4, 3), dtype=np.uint8)
    poses[7] = 255
    poses[3, :2] = 255
    assert pose_diverse_indices(poses, 2) == [3, 7]
    enc = CountingEncoder()
    m = init_memory(torch.zeros(16, 1, 2, 2), 4, "pose_diverse")
    m1 = propagate(m, torch.randn(16, 3, 2, 2), _frames(10), enc, pose_frames=poses)
    assert m1.anchor_indices == (3, 7) and len(enc.calls) == 2
    assert torch.equal(m1.anchors[:, 2:], torch.zeros(16, 2, 2, 2)), "reference fills the rest"


def test_state_round_trip_and_missing_keys():
    m = propagate(init_memory(torch.randn(16, 1, 2, 2), 4, anchor_seed=3), torch.randn(16, 5, 2, 2), _frames(17), CountingEncoder())
    t, meta = m.to_state()
    back = LatentMemory.from_state(t, meta)
    assert torch.equal(back.anchors, m.anchors) and torch.equal(back.motion, m.motion)
    assert back.anchor_indices == m.anchor_indices and np.array_equal(back.last_frame, m.last_frame)
    del meta["chunk_index"]
    with pytest.raises(ResumeStateError, match="chunk_index"):
        LatentMemory.from_state(t, meta)


def test_propagate_refuses_latents_of_another_vae():
    m = init_memory(torch.zeros(16, 1, 2, 2), 1)
    with pytest.raises(ConfigError, match="another VAE"):
        propagate(m, torch.zeros(8, 5, 2, 2), None, None)


def test_bad_policy_and_k():
    with pytest.raises(ConfigError, match="policy"):
        init_memory(torch.zeros(16, 1, 2, 2), 4, "best")
    with pytest.raises(ConfigError, match="at least 1"):
        init_memory(torch.zeros(16, 1, 2, 2), 0)
