"""The conditioning layout of one chunk, defined in ONE place.

A chunk is one model call over ``K + G`` latent slots::

    slot:        0 .. K-1   | K .. K+M-1      | K+M .. K+G-1
    y latent:    anchors    | motion latents  | padding (normalized zero)
    y mask:      1          | 0               | 0            (model-side convention: 1 = known)

All tensors here are in the MODEL's normalized latent space, where padding is exactly zero. Hosts
whose conditioning is given in raw VAE space (ComfyUI) convert with ``to_raw`` of their latent
format: normalized zero becomes ``latents_mean``. The motion slot carries the previous chunk's last
latent but is marked unknown (mask 0): that is how the released LoRA was trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import ConfigError


@dataclass(frozen=True)
class SlotLayout:
    """Which latent slots hold what, for K anchors, M motion latents and G generated latents."""

    anchors: int
    motion: int
    generated: int

    @property
    def total(self) -> int:
        """Latent slots of the model call (K + G)."""
        return self.anchors + self.generated

    @property
    def anchor_slots(self) -> slice:
        return slice(0, self.anchors)

    @property
    def motion_slots(self) -> slice:
        return slice(self.anchors, self.anchors + self.motion)

    @property
    def generated_slots(self) -> slice:
        return slice(self.anchors, self.total)

    def mask(self, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
        """Known-mask over slots, model convention: 1 on anchor slots only, shape [K+G]."""
        m = torch.zeros(self.total, dtype=dtype, device=device)
        m[self.anchor_slots] = 1
        return m


def build_condition(
    anchors: torch.Tensor,
    motion: torch.Tensor | None,
    generated: int,
    mask_channels: int = 4,
) -> tuple[torch.Tensor, torch.Tensor, SlotLayout]:
    """Build the condition latent and mask of one chunk in model (normalized) space.

    anchors: [C, K, h, w]; motion: [C, M, h, w] or None (chunk 0: zeros, i.e. nothing);
    generated: G. Returns ``(latent [C, K+G, h, w], mask [mask_channels, K+G, h, w], layout)``.
    The motion latent occupies the first generated slot(s) with mask 0; the rest is zero padding.
    """
    if anchors.dim() != 4:
        raise ConfigError(f"anchors must be [C, K, h, w]; got shape {tuple(anchors.shape)}.")
    c, k, h, w = anchors.shape
    m = 0 if motion is None else motion.shape[1]
    if motion is not None and (motion.dim() != 4 or motion.shape[0] != c or motion.shape[2:] != (h, w)):
        raise ConfigError(
            f"motion latent shape {tuple(motion.shape)} does not match anchors {tuple(anchors.shape)}."
        )
    if m > generated:
        raise ConfigError(f"{m} motion latents do not fit in a chunk of {generated} latents.")
    layout = SlotLayout(anchors=k, motion=m, generated=generated)
    latent = anchors.new_zeros((c, layout.total, h, w))
    latent[:, layout.anchor_slots] = anchors
    if m:
        latent[:, layout.motion_slots] = motion.to(latent.dtype)
    mask = layout.mask(dtype=anchors.dtype, device=anchors.device)
    mask = mask.view(1, -1, 1, 1).expand(mask_channels, -1, h, w).contiguous()
    return latent, mask, layout


def model_input_condition(latent: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``y`` as a Wan-Animate-style model consumes it: channel concat ``[mask | latent]``."""
    return torch.cat([mask, latent], dim=0)
