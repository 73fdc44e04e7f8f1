"""Writing the animation: an MP4 streamed into ComfyUI's output folder, returned as a VIDEO (usable
by the stock Save Video / Get Video Components nodes) and, only when asked, as an IMAGE batch."""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from .api_version import io, ui

from everanimate_core.colour import COLOUR_METHODS, COLOUR_TARGETS, ColourMatch, MatchedSink
from everanimate_core.errors import ConfigError
from everanimate_core.infra.video import StreamingVideoWriter

from .images import frames_to_image


def output_inputs() -> list:
    return [
        io.String.Input("filename_prefix", default="everanimate/EverAnimate", tooltip="Where the MP4 goes, relative to ComfyUI's output folder."),
        io.Float.Input("fps", default=0.0, min=0.0, max=120.0, step=1.0, tooltip="Frame rate of the output video. 0 = follow the pose VIDEO (16, Wan-Animate's rate, for an IMAGE pose input). A value that differs from the pose video's rate wins, but frames are still used one for one, so the motion plays faster or slower."),
        io.Boolean.Input("return_images", default=False, tooltip="Also return every frame as an IMAGE batch. Off by default: a minute at 480x832 is ~7 GB of float32; the VIDEO output is streamed from disk instead."),
        io.Combo.Input("color_match", options=list(COLOUR_METHODS), default="none", tooltip="Match each chunk's colours to the target, one transform per chunk, against colour drift at the joins: reinhard (mean/std in Lab), mkl (colour covariance), histogram (per channel). Only the video's frames change: the latent memory, checkpoints and previews keep the generated colours, so it can be changed without generating again (run_folder keep). none = the release."),
        io.Float.Input("color_match_strength", default=1.0, min=0.0, max=1.0, step=0.05, tooltip="Blend of the generated (0) and the matched (1) colours."),
        io.Combo.Input("color_match_target", options=list(COLOUR_TARGETS), default="reference", tooltip="reference: the reference image's colours. anchors: chunk 0's frames (where the anchors come from); chunk 0 itself is left as generated."),
    ]


def colour_match_of(kw: dict) -> ColourMatch:
    """The colour match the widgets ask for (none when the widgets are absent)."""
    method = kw.get("color_match", "none")
    if method not in COLOUR_METHODS:
        raise ConfigError(f"color_match must be one of {COLOUR_METHODS}; got {method!r}.")
    return ColourMatch(method, float(kw.get("color_match_strength", 1.0)), kw.get("color_match_target", "reference"))


@dataclass
class VideoOutput:
    """One output MP4 and what the node returns for it."""

    filename_prefix: str
    fps: float | Fraction
    return_images: bool
    path: Path | None = None
    subfolder: str = ""
    collected: list = field(default_factory=list)
    last_frame: np.ndarray | None = None
    colour: ColourMatch = field(default_factory=ColourMatch)

    @staticmethod
    def outputs() -> list:
        return [
            io.Video.Output(display_name="video", tooltip="The animation as a VIDEO (the MP4 in the output folder)."),
            io.Image.Output(display_name="images", tooltip="All frames when return_images is on; otherwise only the last frame."),
        ]

    @classmethod
    def from_widgets(cls, kw: dict, fps: float | Fraction | None = None) -> "VideoOutput":
        """The output named by the widgets, at ``fps`` (resolved by the node) or the fps widget."""
        rate = fps if fps is not None else (float(kw.get("fps", 0.0)) or 16.0)
        out = cls(str(kw.get("filename_prefix", "everanimate/EverAnimate")), rate, bool(kw.get("return_images", False)), colour=colour_match_of(kw))
        out._choose_path()
        return out

    def _choose_path(self) -> None:
        import folder_paths

        full_dir, name, counter, subfolder, _ = folder_paths.get_save_image_path(self.filename_prefix, folder_paths.get_output_directory())
        os.makedirs(full_dir, exist_ok=True)
        self.path = Path(full_dir) / f"{name}_{counter:05}_.mp4"
        self.subfolder = subfolder

    @property
    def partial_path(self) -> Path:
        return self.path.with_name(f"{self.path.stem}.partial{self.path.suffix}")

    @contextmanager
    def writer(self, audio=None, reference: np.ndarray | None = None):
        """A frame sink streaming to the MP4 (with ``audio``, an AudioTrack, muxed as AAC and cut to
        the video's length), colour-matched as the widgets ask (to ``reference`` or chunk 0); on
        failure the frames so far stay in .partial.mp4."""
        outer = self

        class Sink:
            def write(self, frames: np.ndarray) -> None:
                w.write(frames)
                outer.last_frame = np.array(frames[-1])
                if outer.return_images:
                    outer.collected.append(np.array(frames))

        with StreamingVideoWriter(self.path, self.fps, audio=audio) as w:
            yield MatchedSink(Sink(), self.colour, reference)

    def node_output(self) -> io.NodeOutput:
        from .api_version import InputImpl

        if self.return_images and self.collected:
            images = frames_to_image(np.concatenate(self.collected))
        elif self.last_frame is not None:
            images = frames_to_image(self.last_frame[None])
        else:
            images = torch.zeros(1, 64, 64, 3)
        preview = ui.PreviewVideo([ui.SavedResult(self.path.name, self.subfolder, io.FolderType.output)])
        return io.NodeOutput(InputImpl.VideoFromFile(str(self.path)), images, ui=preview)
