"""The chunk loop driven straight from a video file: same output as decoded frames, bad files fail
at the chunk that needs them with the finished work kept, and finished run folders can be removed."""

from __future__ import annotations

import numpy as np
import pytest

from everanimate_core.errors import DrivingVideoError
from everanimate_core.pipeline import AnimationSettings, LoopHooks, RunInputs, run_animation, run_config
from everanimate_core.plan import ChunkSettings
from everanimate_core.infra.runs import RunStore
from everanimate_core.infra.video import StreamingVideoWriter, read_video
from everanimate_core.infra.video_source import VideoFileFrames

from test_pipeline import ListSink, _random_backend

SETTINGS = AnimationSettings(chunk=ChunkSettings(13, 4, 3), steps=2)


def _pose_file(tmp_path, n=40):
    rng = np.random.default_rng(1)
    pose = rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    path = tmp_path / "pose.mkv"
    with StreamingVideoWriter(path, 16, codec="ffv1", crf=None, pix_fmt="bgr0") as w:
        w.write(pose)
    return path, pose


def test_a_video_file_drives_the_loop_like_its_decoded_frames(tmp_path):
    path, pose = _pose_file(tmp_path)
    ref = pose[0]
    from_array, from_file = ListSink(), ListSink()
    run_animation(_random_backend(), RunInputs(ref, pose, total_frames=70), SETTINGS, from_array)  # ping-pong past the end
    run_animation(_random_backend(), RunInputs(ref, VideoFileFrames(path), total_frames=70), SETTINGS, from_file)
    assert from_file.frames.shape[0] == 70
    assert np.array_equal(from_file.frames, from_array.frames)


def test_a_file_cut_mid_run_fails_at_that_chunk_and_keeps_finished_chunks_and_the_partial_mp4(tmp_path):
    path, pose = _pose_file(tmp_path)
    original = path.read_bytes()
    cfg = run_config(SETTINGS, RunInputs(pose[0], pose), len(pose))
    run = RunStore(tmp_path / "run", cfg)
    out = tmp_path / "out.mp4"

    def cut_after_chunk_1(o, n):
        if o.chunk.index == 1:
            path.write_bytes(original[: len(original) // 3])

    with pytest.raises(DrivingVideoError, match="changed on disk"):
        with StreamingVideoWriter(out, 16, options={"preset": "ultrafast"}) as w:
            run_animation(_random_backend(), RunInputs(pose[0], VideoFileFrames(path)), SETTINGS, w, store=run, hooks=LoopHooks(on_chunk=cut_after_chunk_1))
    assert run.finished() == 2, "chunks 0 and 1 finished before the cut and stay checkpointed"
    partial = tmp_path / "out.partial.mp4"
    assert partial.exists() and len(read_video(partial)) == 13 + 9
    path.write_bytes(original)  # put the video back: queueing again resumes
    resumed = ListSink()
    run_animation(_random_backend(), RunInputs(pose[0], VideoFileFrames(path)), SETTINGS, resumed, store=RunStore(tmp_path / "run", cfg))
    assert len(resumed.frames) == len(pose)


def test_a_finished_run_folder_can_be_removed_without_touching_other_files(tmp_path):
    path, pose = _pose_file(tmp_path, 22)
    cfg = run_config(SETTINGS, RunInputs(pose[0], pose), len(pose))
    run = RunStore(tmp_path / "run", cfg)
    run_animation(_random_backend(), RunInputs(pose[0], pose), SETTINGS, None, store=run)
    files = sorted(p.name for p in run.path.iterdir())
    assert "progress.json" in files and any(f.startswith("frames_") for f in files) and any(f.startswith("chunk_") for f in files)
    freed = run.remove()
    assert freed > 0 and not run.path.exists()
    run2 = RunStore(tmp_path / "run2", cfg)
    run_animation(_random_backend(), RunInputs(pose[0], pose), SETTINGS, None, store=run2)
    (run2.path / "notes.txt").write_text("mine")
    run2.remove()
    assert sorted(p.name for p in run2.path.iterdir()) == ["notes.txt"]


def test_a_kept_run_folder_re_stitches_without_generating(tmp_path):
    path, pose = _pose_file(tmp_path, 22)
    cfg = run_config(SETTINGS, RunInputs(pose[0], pose), len(pose))
    first = ListSink()
    run_animation(_random_backend(), RunInputs(pose[0], VideoFileFrames(path)), SETTINGS, first, store=RunStore(tmp_path / "run", cfg))
    again = ListSink()
    _, _, stats = run_animation(_random_backend(), RunInputs(pose[0], VideoFileFrames(path)), SETTINGS, again, store=RunStore(tmp_path / "run", cfg))
    assert stats.chunks == 0 and np.array_equal(again.frames, first.frames)
