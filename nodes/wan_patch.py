"""Model-side patches for native Wan2.2-Animate in ComfyUI: the K-anchor offset and the shift.

ComfyUI's ``AnimateWanModel.after_patch_embedding`` assumes ONE reference slot: pose latents are
added from slot 1 on and one zero face vector is put in front. EverAnimate puts K anchor latents
first, so pose and face must start at slot K. ``KAnchorPatch`` does exactly what the native function
does with 1 replaced by K (for K = 1 it is the native computation, operation for operation).
"""

from __future__ import annotations

import math

import torch

from everanimate_core.errors import ConfigError

PATCH_TARGET = "diffusion_model.after_patch_embedding"
FACE_ENCODE_BATCH = 8


def is_wan_animate(model_patcher) -> bool:
    """True when a ComfyUI MODEL runs Wan2.2-Animate (AnimateWanModel)."""
    try:
        import comfy.model_base

        if isinstance(model_patcher.model, comfy.model_base.WAN22_Animate):
            return True
    except Exception:  # pragma: no cover - only without ComfyUI
        pass
    dm = getattr(getattr(model_patcher, "model", None), "diffusion_model", None)
    return type(dm).__name__ == "AnimateWanModel"


def require_wan_animate(model_patcher, what: str = "This node") -> None:
    """Raise a clear error when the MODEL is not Wan2.2-Animate."""
    if not is_wan_animate(model_patcher):
        name = type(getattr(getattr(model_patcher, "model", None), "diffusion_model", None)).__name__
        raise ConfigError(
            f"{what} needs a Wan2.2-Animate-14B model (AnimateWanModel), but the MODEL input is "
            f"{name}. Load Wan2_2-Animate-14B (any precision) with Load Diffusion Model."
        )


class KAnchorPatch:
    """Replacement for ``after_patch_embedding`` with pose and face offset by K anchor slots.

    ``anchors=None`` infers K from the inputs (slots minus pose latents), which is the native
    offset of 1 whenever the pose covers all slots but the first.
    """

    def __init__(self, diffusion_model, anchors: int | None):
        self.diffusion_model = diffusion_model
        self.anchors = anchors

    def _offset(self, slots: int, pose_slots: int | None) -> int:
        if self.anchors is not None:
            return int(self.anchors)
        if pose_slots is not None and 0 < pose_slots < slots:
            return slots - pose_slots
        return 1

    def __call__(self, x: torch.Tensor, pose_latents, face_pixel_values):
        dm = self.diffusion_model
        slots = x.shape[2]
        k = self._offset(slots, None if pose_latents is None else pose_latents.shape[2])
        if pose_latents is not None:
            pose = dm.pose_patch_embedding(pose_latents)
            n = min(pose.shape[2], slots - k)
            if n > 0:
                x[:, :, k : k + n] += pose[:, :, :n]
        if face_pixel_values is None:
            return x, None
        b, c, t, h, w = face_pixel_values.shape
        frames = face_pixel_values.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
        parts = [
            dm.motion_encoder.get_motion(frames[i * FACE_ENCODE_BATCH : (i + 1) * FACE_ENCODE_BATCH])
            for i in range(math.ceil(frames.shape[0] / FACE_ENCODE_BATCH))
        ]
        motion = torch.cat(parts).reshape(b, t, -1)
        motion = dm.face_encoder(motion)
        bb, _, heads, ch = motion.shape
        motion = torch.cat([motion.new_zeros(bb, k, heads, ch), motion], dim=1)
        if motion.shape[1] < slots:
            motion = torch.cat([motion, motion.new_zeros(bb, slots - motion.shape[1], heads, ch)], dim=1)
        else:
            motion = motion[:, :slots]
        return x, motion


def with_k_anchor_patch(model_patcher, anchors: int | None):
    """A clone of the MODEL whose Wan-Animate pose/face path is offset by K anchors."""
    require_wan_animate(model_patcher, "The K-anchor patch")
    m = model_patcher.clone()
    m.add_object_patch(PATCH_TARGET, KAnchorPatch(m.get_model_object("diffusion_model"), anchors))
    return m


def with_shift(model_patcher, shift: float):
    """A clone sampling with SD3-style shift (ComfyUI's default for Wan is 8; the release uses 5)."""
    import comfy.model_sampling

    m = model_patcher.clone()

    class ModelSamplingShifted(comfy.model_sampling.ModelSamplingDiscreteFlow, comfy.model_sampling.CONST):
        pass

    sampling = ModelSamplingShifted(m.model.model_config)
    sampling.set_parameters(shift=shift, multiplier=1000)
    m.add_object_patch("model_sampling", sampling)
    return m
