"""Audio in the output MP4: AAC cut to the video's length, also in partial files; none = unchanged."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from everanimate_core.infra.audio import FileAudio, WaveformAudio, file_audio
from everanimate_core.errors import ConfigError
from everanimate_core.infra.video import StreamingVideoWriter

FAST = {"preset": "ultrafast"}


def frames(n: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float64)[:, None, None]
    yy, xx = np.mgrid[0:32, 0:48].astype(np.float64)
    v = 128 + 100 * np.sin(xx / 5.0 + yy / 7.0 + t / 3.0)
    return np.rint(np.repeat(v[..., None], 3, axis=-1)).astype(np.uint8)


def tone(seconds: float, rate: int = 44100, channels: int = 2) -> np.ndarray:
    s = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * s))[None].repeat(channels, 0).astype(np.float32)


def streams(path: Path) -> dict:
    with av.open(str(path)) as c:
        out = {"video": len(c.streams.video), "audio": len(c.streams.audio)}
        if c.streams.audio:
            a = c.streams.audio[0]
            out.update(seconds=float(a.duration * a.time_base), rate=a.sample_rate, channels=len(a.layout.channels), codec=a.codec_context.name)
        return out


def video_packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as c:
        return [bytes(p) for p in c.demux(c.streams.video[0]) if p.size]


def test_audio_is_muxed_as_aac_and_cut_to_the_video(tmp_path):
    out = tmp_path / "a.mp4"
    audio = WaveformAudio(torch.from_numpy(tone(5.0))[None], 44100)  # ComfyUI AUDIO layout [B, C, S]
    with StreamingVideoWriter(out, 16, options=FAST, audio=audio) as w:
        for s in range(0, 40, 9):
            w.write(frames(40)[s : s + 9])
    info = streams(out)
    assert info["video"] == 1 and info["audio"] == 1 and info["codec"] == "aac"
    assert info["rate"] == 44100 and info["channels"] == 2
    assert info["seconds"] == pytest.approx(40 / 16, abs=0.03), "5 s of sound cut to 2.5 s of video"


def test_shorter_audio_keeps_its_length_and_odd_rates_and_channels_are_converted(tmp_path):
    out = tmp_path / "b.mp4"
    with StreamingVideoWriter(out, Fraction(30000, 1001), options=FAST, audio=WaveformAudio(tone(0.5, 22000, 6), 22000)) as w:
        w.write(frames(60))
    info = streams(out)
    assert info["seconds"] == pytest.approx(0.5, abs=0.03)
    assert info["rate"] == 48000, "AAC cannot store 22 kHz: resampled to 48 kHz"
    assert info["channels"] == 2, "six channels mixed down to stereo"


def test_without_audio_the_video_stream_is_unchanged(tmp_path):
    plain, sound = tmp_path / "plain.mp4", tmp_path / "sound.mp4"
    with StreamingVideoWriter(plain, 16, options=FAST) as w:
        w.write(frames(30))
    with StreamingVideoWriter(sound, 16, options=FAST, audio=WaveformAudio(tone(3.0), 44100)) as w:
        w.write(frames(30))
    assert streams(plain) == {"video": 1, "audio": 0}
    assert video_packets(plain) == video_packets(sound), "adding sound does not touch the video packets"


def test_a_failed_render_keeps_a_partial_file_with_the_sound_of_its_frames(tmp_path):
    out = tmp_path / "c.mp4"
    with pytest.raises(RuntimeError):
        with StreamingVideoWriter(out, 16, options=FAST, audio=WaveformAudio(tone(5.0), 44100)) as w:
            w.write(frames(24))
            raise RuntimeError("chunk 3 failed")
    assert not out.exists()
    info = streams(tmp_path / "c.partial.mp4")
    assert info["audio"] == 1 and info["seconds"] == pytest.approx(24 / 16, abs=0.03)


def test_a_files_own_audio_track_is_read_and_reused(tmp_path):
    src = tmp_path / "dance.mp4"
    with StreamingVideoWriter(src, 16, options=FAST, audio=WaveformAudio(tone(2.0, 48000, 1), 48000)) as w:
        w.write(frames(32))
    track = file_audio(src)
    assert isinstance(track, FileAudio) and track.sample_rate == 48000 and track.channels == 1
    assert sum(b.shape[1] for b in track.blocks()) >= 2 * 48000
    out = tmp_path / "out.mp4"
    with StreamingVideoWriter(out, 8, options=FAST, audio=track) as w:
        w.write(frames(12))
    assert streams(out)["seconds"] == pytest.approx(12 / 8, abs=0.03)
    silent = tmp_path / "silent.mp4"
    with StreamingVideoWriter(silent, 16, options=FAST) as w:
        w.write(frames(4))
    assert file_audio(silent) is None


def test_bad_waveforms_are_refused_with_what_to_connect():
    with pytest.raises(ConfigError, match="batch, channels, samples"):
        WaveformAudio(np.zeros((1, 1, 2, 3), np.float32), 44100)
    with pytest.raises(ConfigError, match="NaN"):
        WaveformAudio(np.full((1, 10), np.nan, np.float32), 44100)
    with pytest.raises(ConfigError, match="sample rate"):
        WaveformAudio(np.zeros((1, 10), np.float32), 0)
    with pytest.raises(ConfigError, match="Mix it down"):
        WaveformAudio(np.zeros((9, 10), np.float32), 44100)
