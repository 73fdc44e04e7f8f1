"""Conversions between ComfyUI IMAGE tensors ([N, H, W, C] float in 0..1) and uint8 frames."""

from __future__ import annotations

import numpy as np
import torch

from everanimate_core.errors import ConfigError
from everanimate_core.infra.resize import RESIZE_MODES, resize_images  # noqa: F401  (one resize for IMAGE and VIDEO inputs)


def image_to_frames(images: torch.Tensor, rounding: str = "round") -> np.ndarray:
    """IMAGE -> uint8 [N, H, W, 3]. ``round`` for inputs (exact for images loaded from 8-bit files);
    ``floor`` for decoded outputs, matching the release's truncation of (x+1)*127.5."""
    x = images[..., :3].detach().float().cpu().clamp(0, 1) * 255.0
    x = x.round() if rounding == "round" else x.floor()
    return x.to(torch.uint8).numpy()


def frames_to_image(frames: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> IMAGE float [N, H, W, 3] in 0..1."""
    return torch.from_numpy(np.ascontiguousarray(frames)).float() / 255.0


class ImageFrames:
    """A lazy uint8 frame source over an IMAGE batch: resizes and converts only the frames asked
    for, so a long driving video is never duplicated in memory."""

    def __init__(self, images: torch.Tensor, width: int | None = None, height: int | None = None, mode: str = "crop"):
        if images is None or images.dim() != 4 or images.shape[0] == 0:
            raise ConfigError("The video input is empty: connect a video with at least one frame.")
        self.images, self.width, self.height, self.mode = images, width, height, mode

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, idx) -> np.ndarray:
        batch = self.images[torch.as_tensor(np.asarray(idx), dtype=torch.long)]
        if self.width is not None and self.height is not None:
            batch = resize_images(batch, self.width, self.height, self.mode)
        return image_to_frames(batch)


def prepare_reference(reference_image: torch.Tensor, anchor_images, width: int, height: int, mode: str):
    """The reference (first image) and any user anchor images as uint8 frames of width x height."""
    ref = image_to_frames(resize_images(reference_image[:1], width, height, mode))[0]
    users = [] if anchor_images is None else list(image_to_frames(resize_images(anchor_images, width, height, mode)))
    return ref, users
