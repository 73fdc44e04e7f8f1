"""Frame arithmetic and driving windows: output length equals the request, always."""

from __future__ import annotations

import json

import pytest

from everanimate_core.errors import ConfigError, DrivingVideoError
from everanimate_core.plan import (
    ChunkSettings,
    chunk_driving_indices,
    driving_indices,
    frames_for_chunks,
    plan_chunks,
    plan_for_driving,
)

RELEASE = ChunkSettings()


def _tiles_exactly(plan) -> None:
    covered = []
    for c in plan:
        assert (c.frames - 1) % plan.settings.temporal_factor == 0
        assert c.frames <= plan.settings.frames
        assert 0 <= c.drop < c.frames and c.keep >= 1
        assert c.drop + c.keep <= c.frames
        covered.extend(range(c.keep_start, c.keep_start + c.keep))
        assert c.end <= max(plan.total_frames, c.frames)  # never reads past the output (one-chunk case aside)
    assert covered == list(range(plan.total_frames)), "kept frames must tile [0, total) with no gap or repeat"


@pytest.mark.parametrize("n", [1, 2, 3, 10, 30])
def test_release_settings_n_chunks_give_77_plus_73_n_minus_1(n):
    total = frames_for_chunks(n, RELEASE)
    assert total == 77 + 73 * (n - 1)
    plan = plan_chunks(total, RELEASE)
    assert len(plan) == n
    assert all(c.frames == 77 and c.latents == 20 for c in plan)
    assert [c.start for c in plan] == [73 * i for i in range(n)]
    assert [c.drop for c in plan] == [0] + [4] * (n - 1)
    _tiles_exactly(plan)


@pytest.mark.parametrize("total", list(range(1, 400)) + [960, 1441, 2000, 4321])
def test_any_length_is_covered_exactly_with_release_settings(total):
    plan = plan_chunks(total, RELEASE)
    _tiles_exactly(plan)
    assert sum(c.keep for c in plan) == total
    if len(plan) > 1:
        assert plan[-1].end == total, "the last window ends on the last output frame (no padding)"


@pytest.mark.parametrize("settings", [ChunkSettings(33, 4, 4), ChunkSettings(9, 4, 1), ChunkSettings(21, 8, 2), ChunkSettings(5, 0, 1)])
@pytest.mark.parametrize("total", [1, 4, 5, 6, 33, 34, 61, 62, 63, 100, 481])
def test_any_length_is_covered_exactly_with_other_settings(settings, total):
    _tiles_exactly(plan_chunks(total, settings))


def test_seam_frames_are_first_kept_frames_after_chunk_zero():
    plan = plan_chunks(223, RELEASE)
    assert plan.seam_frames == [77, 150]


@pytest.mark.parametrize("frames", [76, 78, 79, 80, 0, -3])
def test_frames_per_chunk_must_be_one_mod_four(frames):
    with pytest.raises(ConfigError, match="1 mod 4"):
        ChunkSettings(frames=frames)


def test_bad_k_and_overlap_are_refused_with_advice():
    with pytest.raises(ConfigError, match="at least 1"):
        ChunkSettings(anchors=0)
    with pytest.raises(ConfigError, match="overlap"):
        ChunkSettings(frames=77, overlap=77)
    with pytest.raises(ConfigError, match="overlap"):
        ChunkSettings(overlap=-1)


def test_pingpong_matches_release_formula():
    frames = list(range(5))
    expected = frames + frames[1:-1][::-1]
    idx = driving_indices(0, 24, 5, "pingpong")
    assert idx.tolist() == [expected[i % len(expected)] for i in range(24)]


def test_window_modes():
    assert driving_indices(3, 5, 4, "loop").tolist() == [3, 0, 1, 2, 3]
    assert driving_indices(3, 5, 4, "hold").tolist() == [3, 3, 3, 3, 3]
    assert driving_indices(0, 4, 4, "strict").tolist() == [0, 1, 2, 3]
    assert driving_indices(0, 3, 1, "pingpong").tolist() == [0, 0, 0]
    with pytest.raises(DrivingVideoError, match="strict"):
        driving_indices(2, 5, 4, "strict")
    with pytest.raises(DrivingVideoError, match="empty"):
        driving_indices(0, 5, 0, "loop")
    with pytest.raises(ConfigError, match="mode"):
        driving_indices(0, 5, 4, "bounce")


def test_driving_plan_defaults_to_video_length_and_strict_refuses_longer():
    assert plan_for_driving(500, ChunkSettings(33, 4, 4)).total_frames == 500
    assert plan_for_driving(500, ChunkSettings(33, 4, 4), total_frames=900).total_frames == 900
    with pytest.raises(DrivingVideoError, match="Strict"):
        plan_for_driving(500, total_frames=900, mode="strict")
    with pytest.raises(DrivingVideoError, match="empty"):
        plan_for_driving(0)


def test_strict_single_short_chunk_holds_the_rounding_tail():
    plan = plan_for_driving(50, ChunkSettings(77, 4, 4), mode="strict")
    idx = chunk_driving_indices(plan[0], 50, "strict")
    assert len(idx) == 53 and idx[-1] == 49 and plan[0].keep == 50


def test_windows_equal_the_parity_fixture(parity_dir):
    meta = json.loads((parity_dir / "meta.json").read_text())
    plan = plan_chunks(frames_for_chunks(3, RELEASE), RELEASE)
    for chunk, m in zip(plan, meta["chunks"]):
        assert chunk.start == m["pose_window_start"]
        assert driving_indices(chunk.start, chunk.frames, 100).tolist() == m["pose_indices"]
        assert driving_indices(chunk.start, chunk.frames, 90).tolist() == m["face_indices"]
        kept = list(range(chunk.drop, chunk.drop + chunk.keep))
        assert kept == m["kept_frames"]
