"""The shared chunk loop on a small random tiny model: lengths, resume, encode counts, failures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from everanimate_core.errors import ConfigError, DrivingVideoError, NonFiniteError, ResumeStateError
from everanimate_core.pipeline import AnimationSettings, LoopHooks, RunInputs, run_animation, run_config
from everanimate_core.plan import ChunkSettings
from everanimate_core.infra.runs import RunStore, read_segment, write_segment
from everanimate_core.tiny.backend import TinyBackend, TinyModelConfig, build_models
from everanimate_core.infra.video import StreamingVideoWriter, read_video

SETTINGS = AnimationSettings(chunk=ChunkSettings(13, 4, 3), steps=3)


def _random_backend(seed: int = 0) -> TinyBackend:
    """A tiny model with random (non-zero) output layers, so every input matters."""
    mc = TinyModelConfig(dim=32, depth=1, heads=2, vae_width=8, vae_feat=16)
    torch.manual_seed(seed)
    vae, dit = build_models(mc)
    for p in list(dit.head.parameters()) + list(dit.mod_out.parameters()):
        torch.nn.init.normal_(p, std=0.05)
    for blk in dit.blocks:
        torch.nn.init.normal_(blk.modulation.weight, std=0.05)
    return TinyBackend(vae, dit, mc)


class ListSink:
    def __init__(self):
        self.batches = []

    def write(self, frames):
        self.batches.append(np.array(frames))

    @property
    def frames(self):
        return np.concatenate(self.batches)


def _inputs(n=60, seed=0):
    rng = np.random.default_rng(seed)
    pose = rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)
    ref = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    return ref, pose


@pytest.mark.parametrize("n", [1, 7, 13, 14, 22, 23, 40])
def test_output_length_equals_driving_length(n):
    ref, pose = _inputs(n)
    sink = ListSink()
    plan, memory, stats = run_animation(_random_backend(), RunInputs(ref, pose), SETTINGS, sink)
    assert len(sink.frames) == n
    assert memory.chunk_index == len(plan) == stats.chunks


def test_requested_duration_uses_pingpong_driving():
    ref, pose = _inputs(10)
    sink = ListSink()
    run_animation(_random_backend(), RunInputs(ref, pose, total_frames=45), SETTINGS, sink)
    assert len(sink.frames) == 45


def test_no_generated_frame_is_reencoded_after_chunk_zero():
    be = _random_backend()
    ref, pose = _inputs(60)
    encodes_by_chunk = {}

    def on_chunk(out, n):
        encodes_by_chunk[out.chunk.index] = be.frame_encodes

    plan, memory, stats = run_animation(be, RunInputs(ref, pose), SETTINGS, ListSink(), hooks=LoopHooks(on_chunk=on_chunk))
    k = SETTINGS.chunk.anchors
    assert len(plan) >= 5
    assert encodes_by_chunk[0] == 1 + (k - 1), "reference + K-1 anchor frames of chunk 0, each alone"
    assert all(encodes_by_chunk[c] == encodes_by_chunk[0] for c in range(1, len(plan))), "zero encodes after chunk 0"
    assert be.video_encodes == len(plan), "only the pose windows are encoded as video"
    assert stats.anchor_encodes == 1 + (k - 1)


def test_motion_latent_is_carried_in_latent_space():
    be = _random_backend()
    ref, pose = _inputs(30)
    seen = []
    plan, memory, _ = run_animation(be, RunInputs(ref, pose), SETTINGS, ListSink(), hooks=LoopHooks(on_chunk=lambda o, n: seen.append(o)))
    for prev, nxt in zip(seen, seen[1:]):
        assert torch.equal(nxt.memory.motion, nxt.latents[:, -1:])
        assert torch.equal(prev.memory.motion, prev.latents[:, -1:])


def test_resume_after_any_chunk_is_bit_identical(tmp_path):
    be = _random_backend()
    ref, pose = _inputs(50)
    full = ListSink()
    plan, mem_full, _ = run_animation(be, RunInputs(ref, pose), SETTINGS, full)
    cfg = run_config(SETTINGS, RunInputs(ref, pose), len(pose))
    for k in (1, 3):
        folder = tmp_path / f"run{k}"
        run_animation(_random_backend(), RunInputs(ref, pose), SETTINGS, ListSink(), store=RunStore(folder, cfg), hooks=LoopHooks(stop_after=k))
        assert RunStore(folder, cfg).finished() == k
        resumed = ListSink()
        _, mem_res, _ = run_animation(_random_backend(), RunInputs(ref, pose), SETTINGS, resumed, store=RunStore(folder, cfg))
        assert np.array_equal(resumed.frames, full.frames)
        assert torch.equal(mem_res.anchors, mem_full.anchors) and torch.equal(mem_res.motion, mem_full.motion)


def test_resume_refuses_other_settings_and_names_the_key(tmp_path):
    be = _random_backend()
    ref, pose = _inputs(30)
    run_animation(be, RunInputs(ref, pose), SETTINGS, None, store=RunStore(tmp_path, run_config(SETTINGS, RunInputs(ref, pose), 30)), hooks=LoopHooks(stop_after=1))
    other = AnimationSettings(chunk=SETTINGS.chunk, steps=4)
    with pytest.raises(ResumeStateError, match="steps"):
        run_animation(be, RunInputs(ref, pose), other, None, store=RunStore(tmp_path, run_config(other, RunInputs(ref, pose), 30)))


def test_corrupted_or_truncated_resume_state_is_refused(tmp_path):
    be = _random_backend()
    ref, pose = _inputs(30)
    cfg = run_config(SETTINGS, RunInputs(ref, pose), 30)
    run_animation(be, RunInputs(ref, pose), SETTINGS, None, store=RunStore(tmp_path, cfg), hooks=LoopHooks(stop_after=2))
    st = tmp_path / "chunk_00001.safetensors"
    st.write_bytes(st.read_bytes()[:-7])
    with pytest.raises(ResumeStateError, match="start over|truncated|corrupt"):
        run_animation(be, RunInputs(ref, pose), SETTINGS, ListSink(), store=RunStore(tmp_path, cfg))
    seg = tmp_path / "frames_00000.mkv"
    seg.write_bytes(b"not a video")
    with pytest.raises(ResumeStateError):
        read_segment(seg)


def test_segments_are_lossless(tmp_path):
    frames = np.random.default_rng(1).integers(0, 256, (7, 18, 22, 3), dtype=np.uint8)
    write_segment(tmp_path / "s.mkv", frames)
    assert np.array_equal(read_segment(tmp_path / "s.mkv"), frames)


class NaNAt:
    """Wraps a backend so that chunk ``bad`` returns NaN latents."""

    def __init__(self, be, bad):
        self.be, self.bad = be, bad

    def __getattr__(self, name):
        return getattr(self.be, name)

    def sample(self, request):
        out = self.be.sample(request)
        return out * float("nan") if request.chunk.index == self.bad else out


def test_nan_chunk_stops_names_the_chunk_and_keeps_finished_work(tmp_path):
    ref, pose = _inputs(60)
    cfg = run_config(SETTINGS, RunInputs(ref, pose), 60)
    run = RunStore(tmp_path / "run", cfg)
    out = tmp_path / "video.mp4"
    with pytest.raises(NonFiniteError, match="Chunk 2") as e:
        with StreamingVideoWriter(out, 8) as w:
            run_animation(NaNAt(_random_backend(), 2), RunInputs(ref, pose), SETTINGS, w, store=run)
    assert e.value.chunk_index == 2
    assert run.finished() == 2, "chunks 0 and 1 are checkpointed"
    partial = tmp_path / "video.partial.mp4"
    assert partial.exists() and not out.exists()
    assert len(read_video(partial)) == 13 + 9, "the finished frames are in the partial video"
    sink = ListSink()
    run_animation(_random_backend(), RunInputs(ref, pose), SETTINGS, sink, store=RunStore(tmp_path / "run", cfg))
    assert len(sink.frames) == 60, "re-running resumes after the failure"


def test_bad_inputs_get_clear_errors():
    be = _random_backend()
    ref, pose = _inputs(20)
    with pytest.raises(DrivingVideoError, match="empty"):
        run_animation(be, RunInputs(ref, pose[:0]), SETTINGS, None)
    strict = AnimationSettings(chunk=SETTINGS.chunk, steps=2, window_mode="strict")
    with pytest.raises(DrivingVideoError, match="Strict"):
        run_animation(be, RunInputs(ref, pose, total_frames=40), strict, None)
    with pytest.raises(ConfigError, match="multiple of 16"):
        run_animation(be, RunInputs(ref[:, :20], pose[:, :, :20]), SETTINGS, None)
    with pytest.raises(ConfigError, match="1 mod 4"):
        AnimationSettings(chunk=ChunkSettings(12, 4, 3))


def test_loop_stats_summary_is_what_the_long_node_logs():
    from everanimate_core.pipeline import LoopStats

    s = LoopStats(total=2.0, sample=1.5, decode=0.2, encode_pose=0.1, encode_anchor=0.05, anchor_encodes=4, pose_encodes=3, chunks=3)
    assert s.as_dict() == {
        "chunks_run": 3, "wall_s": 2.0, "sample_s": 1.5, "decode_s": 0.2, "encode_s": 0.15,
        "loop_overhead_pct": 7.5, "overhead_over_sampler_pct": 10.0, "anchor_encodes": 4, "pose_encodes": 3,
    }


def test_a_users_sigma_list_replaces_steps_and_shift_and_enters_the_fingerprint_only_when_given():
    from dataclasses import replace

    from everanimate_core.flow import sampling_sigmas
    from everanimate_core.pipeline import ChunkLoop, run_fingerprint

    release = sampling_sigmas(3, SETTINGS.shift)
    same = replace(SETTINGS, sigmas=tuple(release.tolist()), steps=9)
    assert same.num_steps == 3 and torch.equal(same.sigma_list(), release)
    assert "sigmas" not in SETTINGS.as_dict() and run_fingerprint(SETTINGS) != run_fingerprint(same)
    ref, pose = _inputs(13)
    inputs = RunInputs(ref, pose)
    base = ChunkLoop(_random_backend(), SETTINGS)
    run_plan = base.plan(inputs)[0]
    a, _, _ = base.generate(base.start(ref), run_plan, inputs)
    loop = ChunkLoop(_random_backend(), same)
    b, _, _ = loop.generate(loop.start(ref), run_plan, inputs)
    assert torch.equal(a, b), "the same sigma list given by hand samples the same chunk"
    steps = []
    few = ChunkLoop(_random_backend(), replace(SETTINGS, sigmas=(1.0, 0.6, 0.0)))
    c, _, _ = few.generate(few.start(ref), run_plan, RunInputs(ref, pose), on_step=lambda i, n, x: steps.append((i, n)))
    assert steps == [(1, 2), (2, 2)] and not torch.equal(a, c)
    for bad in ((1.0,), (0.5, 0.9, 0.0), (1.0, float("nan"), 0.0), (1.0, 0.5, 0.1)):
        with pytest.raises(ConfigError, match="SIGMAS"):
            replace(SETTINGS, sigmas=bad)


def test_request_then_generated_is_what_sample_does_and_nan_names_the_chunk():
    from everanimate_core.pipeline import ChunkLoop

    ref, pose = _inputs(13)
    inputs = RunInputs(ref, pose)
    loop = ChunkLoop(_random_backend(), SETTINGS)
    memory = loop.start(ref)
    chunk = loop.plan(inputs)[0]
    direct, _ = loop.sample(memory, chunk, inputs)
    request, pose_frames = loop.request(memory, chunk, inputs)
    assert request.seed == 0 and request.noise.shape[2] == SETTINGS.chunk.anchors + chunk.latents
    assert torch.equal(loop.generated(chunk, loop.backend.sample(request)), direct)
    assert pose_frames.shape[0] == chunk.frames
    with pytest.raises(NonFiniteError, match="Chunk 0"):
        loop.generated(chunk, loop.backend.sample(request) * float("nan"))
