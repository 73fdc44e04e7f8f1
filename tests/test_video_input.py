"""VIDEO or IMAGE on the pose/face sockets (nodes/video_input.py), with stand-ins for ComfyUI's
VideoInput classes: which reader is used, the output fps, the sound, and the notes the node shows."""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
import torch

from everanimate_core.infra.audio import FileAudio, WaveformAudio
from everanimate_core.errors import ConfigError, DrivingVideoError
from everanimate_core.infra.video import StreamingVideoWriter, read_video
from everanimate_core.infra.video_source import VideoFileFrames
from nodes.images import ImageFrames
from nodes.video_input import choose_audio, driving_video, fit_note, resolve_fps


@dataclass
class Components:  # shaped like comfy_api's VideoComponents
    images: torch.Tensor
    frame_rate: Fraction
    audio: dict | None = None


class VideoInput:  # the abstract base's name and fallback, as in comfy_api
    def get_stream_source(self):
        raise AssertionError("the base fallback re-encodes in-memory frames: it must not be used")


class VideoFromFile(VideoInput):
    def __init__(self, source):
        self.source = source

    def get_stream_source(self):
        return self.source

    def get_components(self):
        raise AssertionError("a file VIDEO must not be decoded whole")


class VideoFromComponents(VideoInput):
    def __init__(self, components):
        self.components = components

    def get_components(self):
        return self.components


@pytest.fixture(scope="module")
def dance(tmp_path_factory):
    """A 30 fps 64x48 clip with a stereo sound track, like a phone video of the dance."""
    path = tmp_path_factory.mktemp("dance") / "dance.mp4"
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (20, 48, 64, 3), dtype=np.uint8)
    sound = WaveformAudio(np.zeros((2, 44100), np.float32), 44100)
    with StreamingVideoWriter(path, 30, options={"preset": "ultrafast"}, audio=sound) as w:
        w.write(frames)
    return path


def test_a_file_video_is_read_from_the_file_with_its_fps_and_sound(dance):
    d = driving_video(VideoFromFile(str(dance)), "pose video", 32, 32, "pad")
    assert isinstance(d.frames, VideoFileFrames) and d.kind == "VIDEO file"
    assert len(d) == 20 and d.fps == 30 and (d.source_width, d.source_height) == (64, 48)
    assert isinstance(d.audio, FileAudio) and d.audio.channels == 2
    assert d.frames[np.array([3, 2])].shape == (2, 32, 32, 3)
    from_bytes = driving_video(VideoFromFile(io.BytesIO(dance.read_bytes())), "pose video")
    assert len(from_bytes) == 20 and from_bytes.audio is not None


def test_an_in_memory_video_and_an_image_batch_are_wrapped_without_reencoding(dance):
    images = torch.from_numpy(read_video(dance)) / 255.0
    audio = {"waveform": torch.zeros(1, 1, 800), "sample_rate": 8000}
    v = driving_video(VideoFromComponents(Components(images, Fraction(24), audio)), "pose video", 32, 32)
    assert isinstance(v.frames, ImageFrames) and v.kind == "VIDEO" and v.fps == 24
    assert isinstance(v.audio, WaveformAudio) and v.audio.sample_rate == 8000
    img = driving_video(images, "pose video", 32, 32)
    assert img.kind == "IMAGE" and img.fps is None and img.audio is None
    file = driving_video(VideoFromFile(str(dance)), "pose video", 32, 32)
    idx = np.array([0, 19, 5, 5])
    assert np.array_equal(img.frames[idx], file.frames[idx]), "IMAGE and VIDEO of the same frames agree"


def test_empty_and_foreign_inputs_are_refused_with_what_to_connect():
    with pytest.raises(ConfigError, match="empty"):
        driving_video(torch.zeros(0, 8, 8, 3), "pose video")
    with pytest.raises(ConfigError, match="connect a VIDEO .* or an IMAGE"):
        driving_video("pose.mp4", "pose video")
    with pytest.raises(ConfigError, match="face video is empty"):
        driving_video(VideoFromComponents(Components(torch.zeros(0, 8, 8, 3), Fraction(16))), "face video")


def test_a_zero_frame_video_file_is_refused(tmp_path):
    import av

    path = tmp_path / "empty.mp4"
    c = av.open(str(path), "w")
    s = c.add_stream("libx264", rate=16)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    c.start_encoding()
    c.close()
    with pytest.raises(DrivingVideoError, match="'empty.mp4' has no video frames"):
        driving_video(VideoFromFile(str(path)), "pose video")


def test_fps_follows_the_video_unless_the_widget_is_set(dance):
    video = driving_video(VideoFromFile(str(dance)), "pose video")
    image = driving_video(torch.zeros(2, 8, 8, 3), "pose video")
    assert resolve_fps(0, video) == (Fraction(30), None)
    assert resolve_fps(0, image) == (Fraction(16), None), "an IMAGE has no rate: Wan-Animate's 16"
    assert resolve_fps(12, image) == (Fraction(12), None)
    assert resolve_fps(30, video) == (Fraction(30), None)
    fps, note = resolve_fps(16, video)
    assert fps == 16
    assert "30 fps" in note and "16" in note and "widget wins" in note and "one for one" in note
    assert "1.88x slower" in note and "Set fps to 0" in note


def test_an_aspect_mismatch_is_explained_not_refused(dance):
    video = driving_video(VideoFromFile(str(dance)), "pose video", 32, 64, "crop")
    note = fit_note(video, 32, 64, "crop")
    assert "64x48" in note and "32x64" in note and "resize_mode 'crop'" in note and "'pad'" in note
    assert fit_note(video, 128, 96, "crop") is None


def test_sound_comes_from_the_audio_input_else_from_the_pose_video(dance):
    video = driving_video(VideoFromFile(str(dance)), "pose video")
    mine = {"waveform": torch.zeros(1, 2, 100), "sample_rate": 48000}
    track, note = choose_audio(mine, video)
    assert isinstance(track, WaveformAudio) and track.sample_rate == 48000 and "audio input" in note
    track, note = choose_audio(None, video)
    assert track is video.audio and "own audio track" in note
    assert choose_audio(None, driving_video(torch.zeros(2, 8, 8, 3), "pose video")) == (None, None)
    with pytest.raises(ConfigError, match="must be a ComfyUI AUDIO"):
        choose_audio(torch.zeros(3), video)


def test_run_folders_recognise_a_video_by_content_not_by_file_date(dance, tmp_path):
    from nodes.sockets import upstream_signature

    copy = tmp_path / "copy.mp4"
    copy.write_bytes(dance.read_bytes())
    a = driving_video(VideoFromFile(str(dance)), "pose video")
    b = driving_video(VideoFromFile(str(copy)), "pose video")
    assert a.identity == b.identity and a.identity.startswith("file:")
    other = tmp_path / "other.mp4"
    with StreamingVideoWriter(other, 30, options={"preset": "ultrafast"}) as w:
        w.write(np.zeros((20, 48, 64, 3), np.uint8))
    assert driving_video(VideoFromFile(str(other)), "pose video").identity != a.identity
    images = torch.rand(30, 8, 8, 3)
    same = driving_video(images.clone(), "pose video").identity
    assert same == driving_video(images, "pose video").identity and same.startswith("frames:")
    images[29] = 0.0
    assert driving_video(images, "pose video").identity != same, "the last frame is among the sampled ones"
    # ComfyUI writes Load Video's mtime into the prompt as is_changed: a restored file must still resume.
    prompt = {"9": {"class_type": "LoadVideo", "inputs": {"file": "pose.mp4"}, "is_changed": [1.0]},
              "11": {"class_type": "EverAnimateLongAnimation", "inputs": {"pose_video": ["9", 0]}}}
    touched = {**prompt, "9": {**prompt["9"], "is_changed": [2.0]}}
    renamed = {**prompt, "9": {**prompt["9"], "inputs": {"file": "other.mp4"}}}
    assert upstream_signature(prompt, "11") == upstream_signature(touched, "11") != upstream_signature(renamed, "11")
