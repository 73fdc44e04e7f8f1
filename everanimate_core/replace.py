"""Replacement mode: put the character into the driving video's own scene.

The driving video's background (the character cut out) and a character mask (1 = character) are
read window by window, aligned frame for frame with the pose video, and composed with the K-anchor
layout and the latent memory::

    slot:        0 .. K-1   | K .. K+M-1          | K+M .. K+G-1
    y latent:    anchors    | motion latent(s)    | VAE-encoded background window
    y mask:      1          | 0 (see MOTION_MASKS) | causal-packed background mask

Everything is in the model's normalized latent space and the model-side mask convention
(1 = known, 0 = generate). In the mask, **background pixels are 1** (known: the model keeps the
scene) and **character pixels are 0** (generated): the known mask is ``1 - character_mask``, as in
Wan2.2's reference (``wan/animate.py``: ``mask_pixel_values = 1 - batch["mask_pixel_values"]``,
the mask video being white on the character). ComfyUI's ``concat_mask`` is the opposite
(0 = known), so a ComfyUI host passes ``1 - mask``, which is the character mask packed the same way.

The per-pixel-frame mask is packed with Wan's causal temporal layout (``get_i2v_mask``): latent 0
covers pixel frame 0 only, so frame 0 is repeated four times; latent g >= 1 covers frames
4g-3 .. 4g, one per mask channel. Row ``r = 4g + c`` of the packed mask (channel c of latent g)
holds pixel frame ``max(0, r - 3)``. ComfyUI v0.3.64's ``WanAnimateToVideo`` writes frame f at
row f instead (three rows early); this module never does.

With K = 1, no motion latent and the reference as the one anchor, the condition equals the native
single-reference replacement conditioning of Wan2.2-Animate.

Pure torch/numpy; no ComfyUI import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from . import defaults
from .errors import ConfigError, DrivingVideoError
from .flow import add_noise, restorative_velocity
from .infra.resize import RESIZE_MODES
from .layout import SlotLayout
from .plan import ChunkPlan, ChunkWindow, chunk_driving_indices

MASK_CHANNELS = defaults.TEMPORAL_FACTOR
"""Channels of the packed mask: one per pixel frame a latent covers (Wan: 4)."""

VAE_FACTOR = 8
"""Spatial downsampling of the Wan VAE: the mask is packed at (height/8, width/8)."""

MOTION_MASKS: tuple[str, ...] = ("unknown", "known", "background")
"""What the mask says on the motion slot(s), which hold the memory's motion latent.

- ``unknown`` (default): 0, exactly as the animation layout. The EverAnimate LoRA was trained with
  the motion latent in y and mask 0 at its slot (the release sets the mask to 1 on the K anchor slots
  only); the slot's frames fall in the overlap that chunks >= 1 drop after decoding, so it acts as
  context only and the background is pinned from the next slot on.
- ``known``: 1 on the whole slot, as Wan2.2's reference marks its continuation frames
  (``get_i2v_mask(..., mask_len=refert_num)``); those are freshly re-encoded output pixels, not a
  carried latent, and the LoRA never saw this combination.
- ``background``: the packed background mask, as if the slot held the background latent.
"""
DEFAULT_MOTION_MASK = "unknown"

EncodeVideo = Callable[[np.ndarray], torch.Tensor]
"""uint8 frames [F, H, W, 3] (F = 1 + 4(G-1)) -> model-space latents [C, G, h, w], encoded as ONE
video (a backend's ``encode_pose`` does exactly this)."""


# ----------------------------------------------------------------------------------------------
# The causal packing
# ----------------------------------------------------------------------------------------------


def causal_frame_index(latents: int, channels: int = MASK_CHANNELS) -> torch.Tensor:
    """Which pixel frame each (channel c, latent g) of the packed mask holds: int64 [channels, G].

    ``index[c, g] = max(0, channels*g + c - (channels - 1))``: latent 0 is frame 0 in every
    channel; latent g >= 1 holds frames ``4g-3 .. 4g`` (Wan2.2 ``get_i2v_mask``).
    """
    if latents < 1:
        raise ConfigError(f"A chunk needs at least one latent; got {latents}.")
    rows = torch.arange(latents * channels, dtype=torch.int64)
    return (rows - (channels - 1)).clamp_min(0).view(latents, channels).t().contiguous()


def frames_for_latents(latents: int, channels: int = MASK_CHANNELS) -> int:
    """Pixel frames of G causal latents: 1 + 4(G-1)."""
    return 1 + channels * (latents - 1)


def pack_causal_mask(frame_mask: torch.Tensor) -> torch.Tensor:
    """Per-pixel-frame mask [F, h, w] (F = 1 + 4(G-1), at latent resolution) -> [4, G, h, w].

    Wan's causal layout, the reference's ``get_i2v_mask`` arithmetic: frame 0 repeated four times,
    then frames 1 .. F-1, the 4G rows grouped four per latent into the channels. Values are kept
    as given (soft masks stay soft). Pass the model-side known mask: 1 = background (known),
    0 = character (generated), i.e. ``1 - character_mask``.
    """
    if not isinstance(frame_mask, torch.Tensor) or frame_mask.dim() != 3:
        shape = tuple(frame_mask.shape) if hasattr(frame_mask, "shape") else type(frame_mask).__name__
        raise ConfigError(f"The frame mask must be a tensor [F, h, w] (one mask per pixel frame); got {shape}.")
    if not frame_mask.is_floating_point():
        raise ConfigError(
            f"The frame mask must be floating point (0..1); got {frame_mask.dtype}. "
            "Convert it with as_mask_tensor first."
        )
    f = int(frame_mask.shape[0])
    if f < 1 or (f - 1) % MASK_CHANNELS:
        lo = max(1, f - ((f - 1) % MASK_CHANNELS)) if f >= 1 else 1
        raise ConfigError(
            f"A causal mask needs 1 + {MASK_CHANNELS}*(G-1) frames (e.g. {lo} or {lo + MASK_CHANNELS}); "
            f"got {f}. Give one mask per frame of the chunk's window."
        )
    g = 1 + (f - 1) // MASK_CHANNELS
    return frame_mask[causal_frame_index(g).to(frame_mask.device)]


def mask_rows(packed: torch.Tensor) -> torch.Tensor:
    """The 4G rows of a packed mask [4, G, h, w] in time order (row r = channel r%4 of latent r//4)."""
    c, g, h, w = packed.shape
    return packed.transpose(0, 1).reshape(c * g, h, w)


def known_from_character(character_mask: torch.Tensor) -> torch.Tensor:
    """Model-side known mask of a character mask (1 = character): ``1 - character``."""
    return 1.0 - character_mask


# ----------------------------------------------------------------------------------------------
# Masks: types, sizes, fitting to the latent grid
# ----------------------------------------------------------------------------------------------


def as_mask_tensor(mask: Any, label: str = "character mask") -> torch.Tensor:
    """A mask input as float32 [N, H, W] in 0..1 (1 = character).

    Accepts a ComfyUI MASK (float [N, H, W] or [H, W]), a bool or uint8 array/tensor (uint8 is
    divided by 255), or mask-video frames [N, H, W, C] (channel 0 is used, as the reference reads
    its mask video). Anything else raises ConfigError saying what was given.
    """
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    if not isinstance(mask, torch.Tensor):
        raise ConfigError(
            f"The {label} must be a MASK (float [frames, H, W] in 0..1) or mask-video frames; "
            f"got a {type(mask).__name__}."
        )
    if mask.dim() == 2:
        mask = mask[None]
    elif mask.dim() == 4 and 1 <= mask.shape[-1] <= 4:
        mask = mask[..., 0]
    if mask.dim() != 3 or mask.shape[0] == 0 or mask.shape[1] == 0 or mask.shape[2] == 0:
        raise ConfigError(
            f"The {label} must have the shape [frames, H, W] (a MASK), [H, W] (one mask for every "
            f"frame) or [frames, H, W, C] (mask-video frames); got {tuple(mask.shape)}."
        )
    if mask.dtype == torch.bool:
        return mask.float()
    if mask.dtype == torch.uint8:
        return mask.float() / 255.0
    if not mask.is_floating_point():
        raise ConfigError(
            f"The {label} has dtype {mask.dtype}; it must be float in 0..1 (a ComfyUI MASK), bool, "
            "or uint8 0..255 (mask-video frames)."
        )
    mask = mask.float()
    lo, hi = float(mask.min()), float(mask.max())
    if lo < -1e-3 or hi > 1 + 1e-3 or not (np.isfinite(lo) and np.isfinite(hi)):
        raise ConfigError(
            f"The {label} must hold values in 0..1 (1 = character); its values span {lo:g} .. {hi:g}. "
            + ("Divide it by 255 (it looks like 0..255 pixel values)." if hi > 1.5 else "Clamp or normalize it.")
        )
    return mask.clamp(0, 1)


def _same_aspect(a: tuple[int, int], b: tuple[int, int], tol: float = 0.01) -> bool:
    ra, rb = a[0] / a[1], b[0] / b[1]
    return abs(ra - rb) <= tol * rb


def check_mask_size(mask_size: tuple[int, int], sizes: Mapping[str, tuple[int, int]], label: str = "character mask") -> None:
    """Refuse a mask (width, height) whose aspect ratio fits none of ``sizes`` (name -> (w, h)).

    A mask of the generation size, or of the background or pose video's own size (it is fitted with
    the same resize mode as the video), or any scale of those, is accepted.
    """
    known = {k: v for k, v in sizes.items() if v and v[0] > 0 and v[1] > 0}
    if any(_same_aspect(mask_size, s) for s in known.values()):
        return
    listed = ", ".join(f"the {k} is {w}x{h}" for k, (w, h) in known.items())
    raise ConfigError(
        f"The {label} is {mask_size[0]}x{mask_size[1]}, which fits neither video ({listed}). "
        "Connect the mask made from the same driving video as the background (same size or aspect)."
    )


def _nearest(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[:, None], size=size, mode="nearest")[:, 0]


def fit_mask(mask: torch.Tensor, width: int, height: int, mode: str = "crop", factor: int = VAE_FACTOR) -> torch.Tensor:
    """A mask [N, H, W] (float 0..1) -> [N, height/factor, width/factor] at the latent resolution.

    Nearest neighbour throughout, as the reference (``F.interpolate(..., mode='nearest')``): a mask
    already at width x height is sampled once, exactly like the reference. Another size is first fitted
    to width x height with the same geometry as the videos (``crop`` / ``pad`` / ``stretch`` of
    ``infra.resize``; pad bars are 0: background, like the black bars of the padded background).
    """
    if mode not in RESIZE_MODES:
        raise ConfigError(f"Unknown resize mode {mode!r}; choose one of {RESIZE_MODES}.")
    if width % factor or height % factor:
        raise ConfigError(f"Width and height must be multiples of {factor}; got {width}x{height}.")
    n, h, w = mask.shape
    x = mask.float()
    if (h, w) != (height, width):
        if mode == "stretch":
            x = _nearest(x, (height, width))
        else:
            scale = max(width / w, height / h) if mode == "crop" else min(width / w, height / h)
            nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
            x = _nearest(x, (nh, nw))
            if mode == "crop":
                top, left = (nh - height) // 2, (nw - width) // 2
                x = x[:, top : top + height, left : left + width]
            else:
                canvas = x.new_zeros((n, height, width))
                top, left = (height - nh) // 2, (width - nw) // 2
                canvas[:, top : top + nh, left : left + nw] = x
                x = canvas
    return _nearest(x, (height // factor, width // factor)).contiguous()


# ----------------------------------------------------------------------------------------------
# The chunk layout
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplacementLayout(SlotLayout):
    """SlotLayout of a replacement chunk: the generated slots after the motion hold the background.

    Note ``mask()`` (inherited) is the slot-level animation mask; the replacement mask is the one
    ``build_replacement_condition`` returns.
    """

    motion_mask: str = DEFAULT_MOTION_MASK

    @property
    def background_slots(self) -> slice:
        """Slots whose condition is the background latent and whose mask is the packed mask."""
        return slice(self.anchors + self.motion, self.total)


def _check_latent(t: Any, what: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dim() != 4:
        shape = tuple(t.shape) if hasattr(t, "shape") else type(t).__name__
        raise ConfigError(f"{what} must be a tensor [C, T, h, w]; got {shape}.")
    if not t.is_floating_point():
        raise ConfigError(f"{what} must be floating point; got {t.dtype}.")
    return t


def build_replacement_condition(
    anchors: torch.Tensor,
    motion: torch.Tensor | None,
    background_latents: torch.Tensor,
    frame_mask: torch.Tensor,
    generated: int | None = None,
    motion_mask: str = DEFAULT_MOTION_MASK,
) -> tuple[torch.Tensor, torch.Tensor, ReplacementLayout]:
    """Condition latent and mask of one replacement chunk, in model space (shapes as build_condition).

    anchors: [C, K, h, w]. motion: [C, M, h, w] or None (chunk 0). background_latents: [C, G, h, w],
    the chunk's background window encoded as one video. frame_mask: [F, h, w], F = 1 + 4(G-1), the
    model-side known mask per pixel frame (1 = background, 0 = character; ``1 - character``).
    generated: G, checked against the background latents when given. motion_mask: see MOTION_MASKS.

    Returns ``(latent [C, K+G, h, w], mask [4, K+G, h, w], layout)``: latent = anchors | motion |
    background[M:]; mask = 1 on anchors | motion policy | packed frame mask on the rest.
    """
    anchors = _check_latent(anchors, "anchors")
    background_latents = _check_latent(background_latents, "background latents")
    c, k, h, w = anchors.shape
    g = int(background_latents.shape[1])
    if background_latents.shape[0] != c or tuple(background_latents.shape[2:]) != (h, w):
        raise ConfigError(
            f"background latents {tuple(background_latents.shape)} do not match anchors {tuple(anchors.shape)}: "
            "encode the background window at the generation size with the same VAE."
        )
    if generated is not None and int(generated) != g:
        raise ConfigError(
            f"The background window encodes to {g} latents but the chunk has {generated}: read "
            f"{frames_for_latents(int(generated))} background frames for it."
        )
    if motion_mask not in MOTION_MASKS:
        raise ConfigError(f"Unknown motion mask {motion_mask!r}; choose one of {MOTION_MASKS}.")
    m = 0
    if motion is not None:
        motion = _check_latent(motion, "motion latent")
        if motion.shape[0] != c or tuple(motion.shape[2:]) != (h, w):
            raise ConfigError(f"motion latent shape {tuple(motion.shape)} does not match anchors {tuple(anchors.shape)}.")
        m = int(motion.shape[1])
    if m > g:
        raise ConfigError(f"{m} motion latents do not fit in a chunk of {g} latents.")
    if not isinstance(frame_mask, torch.Tensor) or frame_mask.dim() != 3 or tuple(frame_mask.shape[1:]) != (h, w):
        shape = tuple(frame_mask.shape) if hasattr(frame_mask, "shape") else type(frame_mask).__name__
        raise ConfigError(
            f"The frame mask must be [F, {h}, {w}] (one mask per frame at the latent resolution); got {shape}."
        )
    if int(frame_mask.shape[0]) != frames_for_latents(g):
        raise ConfigError(
            f"The frame mask has {frame_mask.shape[0]} frames but {g} latents need {frames_for_latents(g)}: "
            "read the mask with the same window as the background."
        )
    packed = pack_causal_mask(frame_mask).to(device=anchors.device, dtype=anchors.dtype)
    layout = ReplacementLayout(anchors=k, motion=m, generated=g, motion_mask=motion_mask)
    latent = torch.cat([anchors, background_latents.to(device=anchors.device, dtype=anchors.dtype)], dim=1)
    mask = torch.ones((MASK_CHANNELS, layout.total, h, w), dtype=anchors.dtype, device=anchors.device)
    mask[:, layout.generated_slots] = packed
    if m:
        latent[:, layout.motion_slots] = motion.to(device=anchors.device, dtype=anchors.dtype)
        if motion_mask == "unknown":
            mask[:, layout.motion_slots] = 0
        elif motion_mask == "known":
            mask[:, layout.motion_slots] = 1
    return latent, mask, layout


# ----------------------------------------------------------------------------------------------
# Reading the background and the mask window by window
# ----------------------------------------------------------------------------------------------


def _frame_shape(source: Any) -> tuple[int, ...]:
    if isinstance(source, (torch.Tensor, np.ndarray)):
        return tuple(source.shape)
    first = np.asarray(source[np.array([0])])
    return (len(source), *first.shape[1:])


@dataclass
class ReplacementSource:
    """The background video and the character mask of a replacement run.

    background: a frame source (``len`` and ``[index array] -> uint8 [n, height, width, 3]``), fitted
    to the generation size like the pose video. character_mask: a MASK ([M, H, W] float 0..1,
    1 = character; [H, W] or M = 1 for one mask for every frame) or a mask-video frame source
    (uint8 [M, H, W, C], channel 0 / 255), at any size whose aspect fits a video. driving_frames:
    the pose video's length: background and mask are aligned frame for frame with it and read at
    the pose window's indices (``plan.chunk_driving_indices`` with the run's window mode).
    video_sizes: the source (width, height) of the background / pose videos, for the size check.
    """

    background: Any
    character_mask: Any
    width: int
    height: int
    driving_frames: int
    resize_mode: str = "crop"
    video_sizes: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    motion_mask: str = DEFAULT_MOTION_MASK

    def __post_init__(self) -> None:
        if self.width % VAE_FACTOR or self.height % VAE_FACTOR:
            raise ConfigError(f"Width and height must be multiples of {VAE_FACTOR}; got {self.width}x{self.height}.")
        if self.resize_mode not in RESIZE_MODES:
            raise ConfigError(f"Unknown resize mode {self.resize_mode!r}; choose one of {RESIZE_MODES}.")
        if self.motion_mask not in MOTION_MASKS:
            raise ConfigError(f"Unknown motion mask {self.motion_mask!r}; choose one of {MOTION_MASKS}.")
        if self.driving_frames < 1:
            raise DrivingVideoError("The pose video is empty; replacement reads the background at the pose frames.")
        if self.background is None or len(self.background) == 0:
            raise DrivingVideoError("The background video is empty: connect the driving video's background (character removed).")
        if self.character_mask is None:
            raise ConfigError(
                "Replacement needs a character mask as well as the background video (1 = character, "
                "0 = background): connect a MASK or a mask video."
            )
        shape = _frame_shape(self.character_mask)
        if len(shape) == 2:  # one [H, W] mask
            n, mh, mw = 1, shape[0], shape[1]
        elif len(shape) in (3, 4):
            n, mh, mw = shape[0], shape[1], shape[2]
        else:
            raise ConfigError(f"The character mask must be [frames, H, W]; got the shape {shape}.")
        self._mask_frames = int(n)
        sizes = {"generation size": (self.width, self.height), **dict(self.video_sizes)}
        check_mask_size((int(mw), int(mh)), sizes)
        nb = len(self.background)
        if n != 1 and n not in (nb, self.driving_frames):
            raise DrivingVideoError(
                f"The character mask has {n} frames, which fits neither the background video ({nb} frames) "
                f"nor the pose video ({self.driving_frames} frames). Give one mask per frame of the "
                "driving video, or a single mask for every frame."
            )

    @property
    def mask_frames(self) -> int:
        return self._mask_frames

    def indices(self, chunk: ChunkWindow, mode: str) -> np.ndarray:
        """Driving-frame indices of the chunk (the pose window's), checked against the background
        and mask lengths; DrivingVideoError, naming the window mode, when they are too short."""
        idx = chunk_driving_indices(chunk, self.driving_frames, mode)
        top = int(idx.max()) if len(idx) else -1
        need = top + 1
        for what, n in (("background video", len(self.background)), ("character mask", self.mask_frames)):
            if what == "character mask" and n == 1:
                continue
            if top >= n:
                raise DrivingVideoError(
                    f"The {what} has {n} frames but chunk {chunk.index} (frames {chunk.start}..{chunk.end - 1}, "
                    f"window mode '{mode}' over the {self.driving_frames}-frame pose video) reads driving frame "
                    f"{top}. The {what} is read frame for frame with the pose video: give one at least {need} "
                    f"frames long (the pose video's length, {self.driving_frames}, covers every window)"
                    + ("." if what == "character mask" else ", or shorten the animation.")
                )
        return idx

    def check_plan(self, plan: ChunkPlan, mode: str) -> None:
        """Check every chunk's window up front, so a short background fails before chunk 0."""
        for chunk in plan:
            self.indices(chunk, mode)

    def window(self, chunk: ChunkWindow, mode: str) -> tuple[np.ndarray, torch.Tensor]:
        """(background frames uint8 [F, height, width, 3], known frame mask [F, height/8, width/8])
        of one chunk; the mask is model-side: 1 = background, 0 = character."""
        idx = self.indices(chunk, mode)
        bg = np.asarray(self.background[idx])
        if bg.dtype != np.uint8 or bg.ndim != 4 or bg.shape[1:] != (self.height, self.width, 3):
            raise ConfigError(
                f"The background frames must be uint8 [frames, {self.height}, {self.width}, 3] (fitted to the "
                f"generation size like the pose video); got {bg.dtype} {tuple(bg.shape)}."
            )
        cm = self.character_mask
        if getattr(cm, "ndim", None) == 2:  # one [H, W] mask for every frame
            raw = cm
        else:
            midx = np.zeros(1, dtype=np.int64) if self.mask_frames == 1 else idx
            raw = cm[torch.as_tensor(midx, dtype=torch.long)] if isinstance(cm, torch.Tensor) else cm[midx]
        character = fit_mask(as_mask_tensor(raw), self.width, self.height, self.resize_mode)
        if character.shape[0] == 1 and len(idx) != 1:
            character = character.expand(len(idx), -1, -1)
        return bg, known_from_character(character)


def chunk_replacement_condition(
    source: ReplacementSource,
    anchors: torch.Tensor,
    motion: torch.Tensor | None,
    chunk: ChunkWindow,
    mode: str,
    encode_video: EncodeVideo,
) -> tuple[torch.Tensor, torch.Tensor, ReplacementLayout, np.ndarray]:
    """Everything a replacement chunk adds to its request: ``(condition, mask, layout, background
    frames)``. The background window is encoded as one video (``encode_video``, e.g. a backend's
    ``encode_pose``) into G model-space latents."""
    bg, known = source.window(chunk, mode)
    latents = encode_video(bg)
    if latents.dim() != 4 or latents.shape[1] != chunk.latents:
        raise ConfigError(
            f"The background window of {len(bg)} frames encoded to {tuple(latents.shape)}; chunk {chunk.index} "
            f"needs [C, {chunk.latents}, h, w]."
        )
    h, w = anchors.shape[-2:]
    if tuple(known.shape[-2:]) != (h, w):
        raise ConfigError(
            f"The mask is packed at {tuple(known.shape[-2:])} but the latents are {(h, w)}: the replacement "
            "source must have the generation size of the run."
        )
    condition, mask, layout = build_replacement_condition(
        anchors, motion, latents, known, chunk.latents, source.motion_mask
    )
    return condition, mask, layout, bg


# ----------------------------------------------------------------------------------------------
# The opt-in restorative background term
# ----------------------------------------------------------------------------------------------


def background_known_weight(packed_mask: torch.Tensor) -> torch.Tensor:
    """Per-latent known weight [G, h, w] of a packed mask [4, G, h, w]: the minimum over the four
    frames a latent covers, so a pixel the character crosses in any of them is left to the model."""
    if packed_mask.dim() != 4 or packed_mask.shape[0] != MASK_CHANNELS:
        raise ConfigError(f"A packed mask is [{MASK_CHANNELS}, G, h, w]; got {tuple(packed_mask.shape)}.")
    return packed_mask.amin(dim=0)


def restore_background_velocity(
    velocity: torch.Tensor,
    x: torch.Tensor,
    noise: torch.Tensor,
    background_latents: torch.Tensor,
    packed_mask: torch.Tensor,
    sigma: float,
    alpha: "float | torch.Tensor",
) -> torch.Tensor:
    """``v + alpha(s) * w * (x_s - x_s_ref)`` on the background slots, ``x_s_ref = (1-s)*bg + s*eps``.

    velocity, x, noise: [..., C, G, h, w] (the background slots of the sampler state and of the
    chunk's initial noise); background_latents: [C, G, h, w] (model space); packed_mask: [4, G, h, w]
    model-side (1 = known background); w = ``background_known_weight``. Zero where the mask says
    generate; one Euler step of size d shrinks a deviation from the background trajectory by
    ``1 - alpha*w*d``. The caller passes ``alpha = strength * schedule(s)``.
    """
    if x.shape != velocity.shape or noise.shape != x.shape:
        raise ConfigError(
            f"velocity {tuple(velocity.shape)}, x {tuple(x.shape)} and noise {tuple(noise.shape)} must have one shape."
        )
    if tuple(background_latents.shape) != tuple(x.shape[-4:]):
        raise ConfigError(
            f"background latents {tuple(background_latents.shape)} do not match the slots {tuple(x.shape[-4:])}."
        )
    weight = background_known_weight(packed_mask).to(device=x.device, dtype=x.dtype)
    if tuple(weight.shape) != tuple(x.shape[-3:]):
        raise ConfigError(f"packed mask {tuple(packed_mask.shape)} does not match the slots {tuple(x.shape[-4:])}.")
    reference = add_noise(background_latents.to(device=x.device, dtype=x.dtype), noise, sigma)
    return restorative_velocity(velocity, x, reference, alpha * weight[None])


def restore_background_in_chunk(
    velocity: torch.Tensor,
    x: torch.Tensor,
    noise: torch.Tensor,
    condition: torch.Tensor,
    mask: torch.Tensor,
    layout: ReplacementLayout,
    sigma: float,
    alpha: "float | torch.Tensor",
) -> torch.Tensor:
    """``restore_background_velocity`` on a whole chunk: velocity/x/noise [B, C, K+G, h, w], the
    condition [C, K+G, h, w] and mask [4, K+G, h, w] of ``build_replacement_condition``. Only the
    background slots change (anchors and motion slots are left as they are)."""
    bg = layout.background_slots
    out = velocity.clone()
    out[:, :, bg] = restore_background_velocity(
        velocity[:, :, bg], x[:, :, bg], noise[:, :, bg], condition[:, bg], mask[:, bg], sigma, alpha
    )
    return out


__all__ = [
    "DEFAULT_MOTION_MASK",
    "MASK_CHANNELS",
    "MOTION_MASKS",
    "ReplacementLayout",
    "ReplacementSource",
    "as_mask_tensor",
    "background_known_weight",
    "build_replacement_condition",
    "causal_frame_index",
    "check_mask_size",
    "chunk_replacement_condition",
    "fit_mask",
    "frames_for_latents",
    "known_from_character",
    "mask_rows",
    "pack_causal_mask",
    "restore_background_in_chunk",
    "restore_background_velocity",
]
