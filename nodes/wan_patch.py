"""Model-side patches for native Wan2.2-Animate in ComfyUI: the K-anchor offset and the shift.

ComfyUI's ``AnimateWanModel.after_patch_embedding`` assumes ONE reference slot: pose latents are
added from slot 1 on and one zero face vector is put in front. EverAnimate puts K anchor latents
first, so pose and face must start at slot K. ``KAnchorPatch`` does exactly what the native function
does with 1 replaced by K (for K = 1 it is the native computation, operation for operation).

The native code also runs the face/motion encoders on the same face crops at every model call
(minutes per step on a CPU for a 77-frame chunk). ``KAnchorPatch`` runs them once per distinct face
input of a sampling run (``FaceMotionCache``, opened and emptied around each run by an OUTER_SAMPLE
wrapper) and without autograd; the motion it returns is the one the uncached computation gives.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch

from everanimate_core.errors import ConfigError

PATCH_TARGET = "diffusion_model.after_patch_embedding"
FACE_ENCODE_BATCH = 8
FACE_CACHE_WRAPPER_KEY = "everanimate_face_motion_cache"


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


class FaceMotionCache:
    """The face motion of one sampling run, computed once per distinct face input.

    Every model call of a run hands ``after_patch_embedding`` the same face frames (at cfg > 1 also
    the negative's, alone or concatenated with the positive's), and the motion/face encoders were
    run on them again at every step. This cache keeps at most ``entries`` (input, motion) pairs:
    the key is a private copy of the input, compared with ``torch.equal`` (shape, dtype and device
    first), so a value is reused only for an input that is equal element for element, whatever
    object it arrives in. It is active only inside :meth:`session`, which the sampling wrapper opens
    around one sampling run (one chunk) and which empties it on entry and exit: nothing carries over
    to the next chunk, to other weights or to another model clone sharing this patch. Memory: at most
    ``entries`` copies of the face input (77 frames at 512x512 in float32: 242 MB each, twice that
    for a cond+uncond batch) plus the tiny motion vectors, for the length of one run.
    """

    def __init__(self, entries: int = 2):
        if entries < 1:
            raise ConfigError(f"FaceMotionCache needs at least one entry (2 covers cond + uncond), got {entries}.")
        self.entries = int(entries)
        self._items: list[tuple[torch.Tensor, torch.Tensor]] = []  # most recently used first
        self._depth = 0
        self.encodes = 0  # encoder runs (misses and uncached calls), over the cache's lifetime
        self.hits = 0

    @property
    def active(self) -> bool:
        return self._depth > 0

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()

    @contextmanager
    def session(self):
        """Cache within the block (one sampling run); empty before and after it."""
        self._depth += 1
        self.clear()
        try:
            yield self
        finally:
            self._depth -= 1
            if self._depth == 0:
                self.clear()

    @staticmethod
    def _same(key: torch.Tensor, face: torch.Tensor) -> bool:
        return (
            key.shape == face.shape
            and key.dtype == face.dtype
            and key.device == face.device
            and bool(torch.equal(key, face))
        )

    def lookup(self, face: torch.Tensor) -> torch.Tensor | None:
        for i, (key, motion) in enumerate(self._items):
            if self._same(key, face):
                if i:
                    self._items.insert(0, self._items.pop(i))
                self.hits += 1
                return motion
        return None

    def store(self, face: torch.Tensor, motion: torch.Tensor) -> None:
        self._items.insert(0, (face.detach().clone(), motion))
        del self._items[self.entries :]


class KAnchorPatch:
    """Replacement for ``after_patch_embedding`` with pose and face offset by K anchor slots.

    ``anchors=None`` infers K from the inputs (slots minus pose latents), which is the native
    offset of 1 whenever the pose covers all slots but the first.

    The face motion (motion encoder + face encoder, the expensive part: seconds per frame at 512x512
    on a CPU) runs without autograd and, inside a :class:`FaceMotionCache` session (one per
    sampling run, opened by the wrapper ``with_k_anchor_patch`` installs), once per distinct face
    input instead of at every model call. The values are the ones the uncached computation gives:
    the same inputs go through the same encoder calls in the same batches of
    ``FACE_ENCODE_BATCH`` frames. ``cache_face=False`` runs the encoders at every call (as ComfyUI's
    native code does).
    """

    def __init__(self, diffusion_model, anchors: int | None, cache_face: bool = True):
        self.diffusion_model = diffusion_model
        self.anchors = anchors
        self.cache_face = cache_face
        self.face_cache = FaceMotionCache()

    def _offset(self, slots: int, pose_slots: int | None) -> int:
        if self.anchors is not None:
            return int(self.anchors)
        if pose_slots is not None and 0 < pose_slots < slots:
            return slots - pose_slots
        return 1

    def encode_face(self, face_pixel_values: torch.Tensor) -> torch.Tensor:
        """[B, 3, T, H, W] face crops -> face-encoder motion [B, T', heads, C] (no autograd)."""
        dm = self.diffusion_model
        self.face_cache.encodes += 1
        b, c, t, h, w = face_pixel_values.shape
        with torch.no_grad():
            frames = face_pixel_values.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)
            parts = [
                dm.motion_encoder.get_motion(frames[i * FACE_ENCODE_BATCH : (i + 1) * FACE_ENCODE_BATCH])
                for i in range(math.ceil(frames.shape[0] / FACE_ENCODE_BATCH))
            ]
            return dm.face_encoder(torch.cat(parts).reshape(b, t, -1))

    def face_motion(self, face_pixel_values: torch.Tensor) -> torch.Tensor:
        """The face-encoder motion of these crops: cached inside a session, computed otherwise."""
        cache = self.face_cache
        if not (self.cache_face and cache.active):
            return self.encode_face(face_pixel_values)
        motion = cache.lookup(face_pixel_values)
        if motion is None:
            motion = self.encode_face(face_pixel_values)
            cache.store(face_pixel_values, motion)
        return motion

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
        motion = self.face_motion(face_pixel_values)
        bb, _, heads, ch = motion.shape
        # a new tensor at every call: the cached motion itself never leaves the cache
        motion = torch.cat([motion.new_zeros(bb, k, heads, ch), motion], dim=1)
        if motion.shape[1] < slots:
            motion = torch.cat([motion, motion.new_zeros(bb, slots - motion.shape[1], heads, ch)], dim=1)
        else:
            motion = motion[:, :slots]
        return x, motion


def _conds_use_hooks(guider) -> bool:
    """Whether a run may change weights between model calls (ComfyUI hooks, per cond or per step)."""
    if getattr(getattr(guider, "model_patcher", None), "hook_patches", None):
        return True
    conds = getattr(guider, "conds", None) or {}
    return any(isinstance(c, dict) and c.get("hooks") is not None for lst in conds.values() for c in (lst or ()))


def face_cache_outer_sample(executor, *args, **kwargs):
    """OUTER_SAMPLE wrapper: one face-motion cache session around one sampling run (one chunk).

    It finds the KAnchorPatch the sampled model actually carries, so a clone whose patch was
    replaced uses the new one. With ComfyUI weight hooks in the run (the encoders' weights may then
    differ between steps or between cond and uncond) it leaves the cache off.
    """
    guider = getattr(executor, "class_obj", None)
    patcher = getattr(guider, "model_patcher", None)
    patch = getattr(patcher, "object_patches", {}).get(PATCH_TARGET) if patcher is not None else None
    if not isinstance(patch, KAnchorPatch) or _conds_use_hooks(guider):
        return executor(*args, **kwargs)
    with patch.face_cache.session():
        return executor(*args, **kwargs)


def with_k_anchor_patch(model_patcher, anchors: int | None, cache_face: bool = True):
    """A clone of the MODEL whose Wan-Animate pose/face path is offset by K anchors.

    ``cache_face=False`` runs the face encoders at every model call (benchmarks and tests of the
    cache; the result is the same).
    """
    require_wan_animate(model_patcher, "The K-anchor patch")
    m = model_patcher.clone()
    m.add_object_patch(PATCH_TARGET, KAnchorPatch(m.get_model_object("diffusion_model"), anchors, cache_face))
    if hasattr(m, "add_wrapper_with_key"):  # ComfyUI >= 0.3.x: sampling wrappers
        import comfy.patcher_extension

        outer = comfy.patcher_extension.WrappersMP.OUTER_SAMPLE
        m.remove_wrappers_with_key(outer, FACE_CACHE_WRAPPER_KEY)
        m.add_wrapper_with_key(outer, FACE_CACHE_WRAPPER_KEY, face_cache_outer_sample)
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
