"""Load Video's VIDEO straight into Long Animation and the Chunk Sampler, in a real ComfyUI: the
output is as long as the driving video, follows its fps, carries sound, the IMAGE path still works,
and bad videos fail with errors that say what to do while finished work is kept."""

from __future__ import annotations

import json
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

pytestmark = pytest.mark.integration

FRAMES = 23  # 4 chunks of 9 frames with overlap 4
SIZE = 32



COLOUR_OFF = {"color_match": "none", "color_match_strength": 1.0, "color_match_target": "reference"}  # the output widgets' defaults

def _write_clip(path: Path, frames: int, fps, size=(96, 64), sound_seconds: float | None = None) -> None:
    """A SynthDance pose clip (width x height = size) at ``fps``, with a tone track if asked."""
    from everanimate_core.infra.audio import WaveformAudio
    from everanimate_core.tiny.synthdance import make_sequence
    from everanimate_core.infra.video import StreamingVideoWriter

    w, h = size
    pose = make_sequence(0, "test", h, w).pose(0, frames)
    audio = None
    if sound_seconds:
        t = np.arange(int(44100 * sound_seconds)) / 44100
        audio = WaveformAudio((0.2 * np.sin(2 * np.pi * 330 * t))[None].repeat(2, 0).astype(np.float32), 44100)
    with StreamingVideoWriter(path, fps, crf=0, options={"preset": "ultrafast", "g": "6"}, audio=audio) as wr:
        wr.write(pose)


@pytest.fixture(scope="module")
def inputs(server):
    from PIL import Image

    from everanimate_core.tiny.synthdance import make_sequence

    inp = server.base / "input"
    Image.fromarray(make_sequence(0, "test", SIZE, SIZE).reference()).save(inp / "va_reference.png")
    _write_clip(inp / "va_dance30.mp4", FRAMES, 30, sound_seconds=3.0)  # 30 fps, 96x64 (not square), with sound
    _write_clip(inp / "va_tone.mp4", 48, 16, size=(64, 64), sound_seconds=5.0)  # only its 3 s of sound are used
    _write_clip(inp / "va_long.mp4", 33, 16, size=(64, 64))
    junk = inp / "va_junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    container = av.open(str(inp / "va_empty.mp4"), "w")
    stream = container.add_stream("libx264", rate=16)
    stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
    container.start_encoding()
    container.close()
    return inp


def _models() -> dict:
    return {
        "unet": {"class_type": "UNETLoader", "inputs": {"unet_name": "tiny_wan_animate.safetensors", "weight_dtype": "default"}},
        "vae": {"class_type": "VAELoader", "inputs": {"vae_name": "tiny_wan21_vae.safetensors"}},
        "text": {"class_type": "EATestZeroTextConditioning", "inputs": {}},
        "ref": {"class_type": "LoadImage", "inputs": {"image": "va_reference.png"}},
    }


def _long_prompt(pose_file: str, image_path: bool = False, **widgets) -> dict:
    api = _models()
    api["pose"] = {"class_type": "LoadVideo", "inputs": {"file": pose_file}}
    pose = ["pose", 0]
    if image_path:
        api["parts"] = {"class_type": "GetVideoComponents", "inputs": {"video": ["pose", 0]}}
        pose = ["parts", 0]
    api["long"] = {
        "class_type": "EverAnimateLongAnimation",
        "inputs": {
            "model": ["unet", 0], "positive": ["text", 0], "negative": ["text", 0], "vae": ["vae", 0],
            "reference_image": ["ref", 0], "pose_video": pose, "width": SIZE, "height": SIZE, "resize_mode": "crop",
            "duration_seconds": 0.0, "frames_per_chunk": 9, "overlap": 4, "anchors": 4,
            "anchor_policy": "random_plus_reference", "anchor_seed": 12345, "steps": 1, "cfg": 1.0, "shift": 5.0,
            "seed": 42, "seed_policy": "multiply", "window_mode": "pingpong", "restoration": "off",
            "restoration_strength": 1.0, "restoration_schedule": "gaussian_timestep", "tiled_decode": False,
            "run_name": "", "run_folder": "remove_when_done", "filename_prefix": "everanimate/va", "fps": 0.0,
            "return_images": False, **COLOUR_OFF,
        },
    }
    api["long"]["inputs"].update(widgets)
    return api


def _run(server, api: dict) -> dict:
    return server.wait(server.queue(api))


def _error(hist: dict) -> str:
    assert hist["status"]["status_str"] == "error", "the prompt should have failed"
    return json.dumps(hist["status"]["messages"])


def _mp4s(server, hist: dict) -> list[Path]:
    files = []
    for out in hist["outputs"].values():
        for item in out.get("images", []) + out.get("videos", []):
            if isinstance(item, dict) and item.get("filename", "").endswith(".mp4"):
                files.append(server.base / "output" / item["subfolder"] / item["filename"])
    assert files, hist["outputs"]
    return files


def _facts(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        facts = {"frames": sum(1 for _ in c.decode(v)), "fps": Fraction(v.average_rate), "audio_s": None}
        if c.streams.audio:
            a = c.streams.audio[0]
            facts["audio_s"] = float(a.duration * a.time_base)
        return facts


def _log_since(server, mark: int) -> str:
    return server.log.read_text()[mark:]


def test_long_animation_reads_load_videos_video_follows_its_fps_and_keeps_its_sound(server, inputs):
    mark = len(server.log.read_text())
    hist = _run(server, _long_prompt("va_dance30.mp4", run_name="va_video", filename_prefix="everanimate/va_video"))
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000]
    facts = _facts(_mp4s(server, hist)[0])
    assert facts["frames"] == FRAMES, "as long as the driving video"
    assert facts["fps"] == 30, "fps 0 follows the pose VIDEO"
    assert facts["audio_s"] == pytest.approx(FRAMES / 30, abs=0.05), "its sound, cut to the animation"
    log = _log_since(server, mark)
    assert "96x64" in log and "resize_mode 'crop'" in log, "the aspect mismatch is explained"
    assert not (server.base / "output" / "everanimate" / "runs" / "va_video").exists(), "remove_when_done"


def test_the_audio_input_and_an_fps_widget_win_and_the_node_says_so(server, inputs):
    api = _long_prompt("va_dance30.mp4", run_name="va_keep", run_folder="keep", fps=16.0, filename_prefix="everanimate/va_override")
    api["tone"] = {"class_type": "LoadVideo", "inputs": {"file": "va_tone.mp4"}}
    api["tone_parts"] = {"class_type": "GetVideoComponents", "inputs": {"video": ["tone", 0]}}
    api["long"]["inputs"]["audio"] = ["tone_parts", 1]
    mark = len(server.log.read_text())
    hist = _run(server, api)
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000]
    facts = _facts(_mp4s(server, hist)[0])
    assert facts["frames"] == FRAMES and facts["fps"] == 16
    assert facts["audio_s"] == pytest.approx(FRAMES / 16, abs=0.05), "the 3 s tone cut to 23 frames at 16 fps"
    log = _log_since(server, mark)
    assert "runs at 30 fps but the fps widget is 16: the widget wins" in log and "one for one" in log
    assert "sound from the audio input" in log
    kept = server.base / "output" / "everanimate" / "runs" / "va_keep"
    assert (kept / "progress.json").exists() and len(list(kept.glob("frames_*.mkv"))) == 4, "run_folder keep"


def test_the_image_path_still_works_and_gives_the_same_frames(server, inputs):
    hist = _run(server, _long_prompt("va_dance30.mp4", image_path=True, run_name="va_image", run_folder="keep", filename_prefix="everanimate/va_image"))
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000]
    facts = _facts(_mp4s(server, hist)[0])
    assert facts["frames"] == FRAMES and facts["fps"] == 16, "an IMAGE carries no rate: 16"
    assert facts["audio_s"] is None
    from everanimate_core.infra.runs import read_segment

    runs = server.base / "output" / "everanimate" / "runs"
    for i in range(4):  # the VIDEO run of the previous test kept its folder: same pose frames, same chunks
        assert np.array_equal(read_segment(runs / "va_image" / f"frames_{i:05d}.mkv"), read_segment(runs / "va_keep" / f"frames_{i:05d}.mkv"))


def test_granular_graph_with_a_video_input_follows_its_fps_and_sound(server, inputs):
    api = _models()
    api["pose"] = {"class_type": "LoadVideo", "inputs": {"file": "va_dance30.mp4"}}
    api["init"] = {"class_type": "EverAnimateLatentMemoryInit", "inputs": {
        "vae": ["vae", 0], "reference_image": ["ref", 0], "width": SIZE, "height": SIZE, "resize_mode": "pad", "anchors": 4,
        "anchor_policy": "random_plus_reference", "anchor_seed": 12345, "session_name": "va_granular"}}
    memory = ["init", 0]
    for c in range(3):
        api[f"s{c}"] = {"class_type": "EverAnimateChunkSampler", "inputs": {
            "model": ["unet", 0], "positive": ["text", 0], "negative": ["text", 0], "vae": ["vae", 0], "memory": memory,
            "pose_video": ["pose", 0], "frames_per_chunk": 9, "overlap": 4, "steps": 1, "cfg": 1.0, "shift": 5.0, "seed": 42,
            "seed_policy": "multiply", "window_mode": "pingpong", "restoration": "off", "restoration_strength": 1.0,
            "restoration_schedule": "gaussian_timestep", "total_frames": 19}}
        if c < 2:
            api[f"p{c}"] = {"class_type": "EverAnimateMemoryPropagate", "inputs": {"memory": memory, "chunk": [f"s{c}", 0], "vae": ["vae", 0], "tiled_decode": False}}
            memory = [f"p{c}", 0]
    api["stitch"] = {"class_type": "EverAnimateDecodeStitch", "inputs": {
        "chunk": ["s2", 0], "vae": ["vae", 0], "tiled_decode": False, "filename_prefix": "everanimate/va_granular", "fps": 0.0, "return_images": False, **COLOUR_OFF}}
    mark = len(server.log.read_text())
    hist = _run(server, api)
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000]
    facts = _facts(_mp4s(server, hist)[0])
    assert facts["frames"] == 19 and facts["fps"] == 30
    assert facts["audio_s"] == pytest.approx(19 / 30, abs=0.05), "the pose video's own sound reaches Decode & Stitch"
    assert "resize_mode 'pad'" in _log_since(server, mark), "the Chunk Sampler fits with Memory Init's resize_mode"


@pytest.mark.parametrize("file,message", [
    ("va_empty.mp4", "has no video frames"),
    ("va_junk.mp4", "cannot be read as a video"),
])
def test_empty_and_unreadable_videos_are_refused_with_what_to_do(server, inputs, file, message):
    err = _error(_run(server, _long_prompt(file, run_name=f"va_bad_{file}")))
    assert message in err and file in err and ("Load a video" in err or "Re-export" in err)


def test_a_video_cut_mid_run_fails_at_that_chunk_keeps_finished_work_and_resumes(server, inputs):
    path = inputs / "va_live.mp4"
    original = (inputs / "va_long.mp4").read_bytes()
    path.write_bytes(original)
    runs = server.base / "output" / "everanimate" / "runs" / "va_live"
    api = _long_prompt("va_live.mp4", run_name="va_live", filename_prefix="everanimate/va_live")
    pid = server.queue(api)
    deadline = time.time() + 600
    while time.time() < deadline:
        p = runs / "progress.json"
        if p.exists() and json.loads(p.read_text())["finished_chunks"]:
            break
        time.sleep(0.05)
    path.write_bytes(original[: len(original) // 3])
    err = _error(server.wait(pid))
    assert "changed on disk" in err and "queue again to resume" in err and "stopped" in err
    finished = len(json.loads((runs / "progress.json").read_text())["finished_chunks"])
    assert 1 <= finished < 6, "six chunks: it stopped part-way"
    assert list((server.base / "output" / "everanimate").glob("va_live*.partial.mp4")), "the frames so far are kept"
    path.write_bytes(original)  # put the video back and queue again
    hist = _run(server, api)
    assert hist["status"]["status_str"] == "success", json.dumps(hist["status"])[:3000]
    assert _facts(_mp4s(server, hist)[0])["frames"] == 33
    assert not runs.exists(), "done: the run folder is removed"
