"""Fitting frames to the generation size: one resize for every input path.

The pose video reaches the pack either as a ComfyUI IMAGE batch (float in 0..1) or as a video file
read window by window. Both go through :func:`resize_images`, so the same frames give the same
pixels whichever way they came in. :func:`fit_frames` is the uint8 door to it: it converts exactly
as ComfyUI does when it turns a decoded video into an IMAGE (``uint8 / 255`` in float32) and rounds
back the way the nodes round IMAGE inputs.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError

RESIZE_MODES: tuple[str, ...] = ("crop", "pad", "stretch")


def resize_images(images: torch.Tensor, width: int, height: int, mode: str = "crop") -> torch.Tensor:
    """Resize an IMAGE batch [N, H, W, C] (float, 0..1) to width x height.

    ``crop`` fills the frame and cuts the centre out, ``pad`` fits the whole frame with black bars,
    ``stretch`` scales each axis on its own. Bilinear with antialiasing; returned unchanged when it
    already has that size.
    """
    if mode not in RESIZE_MODES:
        raise ConfigError(f"Unknown resize mode {mode!r}; choose one of {RESIZE_MODES}.")
    n, h, w, c = images.shape
    if (h, w) == (height, width):
        return images
    x = images.permute(0, 3, 1, 2).float()
    if mode == "stretch":
        out = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        return out.permute(0, 2, 3, 1).clamp(0, 1)
    scale = max(width / w, height / h) if mode == "crop" else min(width / w, height / h)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    x = torch.nn.functional.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    if mode == "crop":
        top, left = (nh - height) // 2, (nw - width) // 2
        x = x[:, :, top : top + height, left : left + width]
    else:
        canvas = x.new_zeros((n, c, height, width))
        top, left = (height - nh) // 2, (width - nw) // 2
        canvas[:, :, top : top + nh, left : left + nw] = x
        x = canvas
    return x.permute(0, 2, 3, 1).clamp(0, 1)


def fit_frames(frames: np.ndarray, width: int | None, height: int | None, mode: str = "crop") -> np.ndarray:
    """uint8 frames [N, H, W, 3] -> uint8 frames [N, height, width, 3] through :func:`resize_images`.

    The float conversion is ComfyUI's own (``uint8 / 255`` in float32) and the result is rounded,
    so an IMAGE made from the same decoded frames resizes to the same pixels. No size = unchanged.
    """
    frames = np.ascontiguousarray(frames)
    if width is None or height is None or frames.shape[1:3] == (height, width):
        return frames
    x = torch.from_numpy(frames) / 255.0
    out = resize_images(x, int(width), int(height), mode)
    return (out.clamp(0, 1) * 255.0).round().to(torch.uint8).numpy()


def describe_fit(src_width: int, src_height: int, width: int, height: int, mode: str, what: str = "the pose video") -> str | None:
    """A sentence saying how a frame of another aspect ratio is fitted, and how to change it.

    None when the aspect ratios agree (only scaling, nothing is cut or padded).
    """
    if src_width <= 0 or src_height <= 0:
        return None
    src, dst = src_width / src_height, width / height
    if abs(src - dst) <= 0.01 * dst:
        return None
    if mode == "crop":
        scale = max(width / src_width, height / src_height)
        nw, nh = round(src_width * scale), round(src_height * scale)
        cut = f"{nw - width} columns from the sides" if nw > width else f"{nh - height} rows from top and bottom"
        how = f"it is scaled to {nw}x{nh} and its centre is kept ({cut} are cut off)"
        other = "choose resize_mode 'pad' to keep the whole frame with black bars, or 'stretch' to distort it to fit"
    elif mode == "pad":
        scale = min(width / src_width, height / src_height)
        nw, nh = round(src_width * scale), round(src_height * scale)
        how = f"it is scaled to {nw}x{nh} and centred on black bars"
        other = "choose resize_mode 'crop' to fill the frame (cutting the edges), or 'stretch' to distort it to fit"
    else:
        how = "it is stretched to fit (people look wider or narrower)"
        other = "choose resize_mode 'crop' to fill the frame by cutting the edges, or 'pad' to keep it whole with black bars"
    return (
        f"{what[0].upper()}{what[1:]} is {src_width}x{src_height} but the animation is {width}x{height}: with "
        f"resize_mode '{mode}' {how}. To change that, {other}, or set width and height to the video's aspect."
    )
