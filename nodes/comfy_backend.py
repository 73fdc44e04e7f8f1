"""ComfyUI's MODEL/VAE/CLIP vision as a chunk backend for the core loop.

The core works in the model's normalized latent space; ComfyUI's LATENTs and conditioning latents are
RAW. The conversions happen here and only here: ``process_out`` (normalized -> raw) before a latent
goes into ``concat_latent_image`` / ``pose_video_latent`` (ComfyUI applies ``process_in`` itself), and
``process_in`` on what the VAE or the sampler returns. Normalized zero padding therefore reaches the
model as exactly zero (it is ``latents_mean`` in raw space).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from everanimate_core.errors import ConfigError
from everanimate_core.pipeline import ChunkRequest
from everanimate_core.sampler import ChunkCondition, sample_chunk

from .images import frames_to_image, image_to_frames


@dataclass
class DecodeOptions:
    """VAE decode options: tiled decoding trades speed for memory at large resolutions."""

    tiled: bool = False
    tile_size: int = 512
    overlap: int = 64
    temporal_size: int = 64
    temporal_overlap: int = 8


class ComfyWanBackend:
    """ChunkBackend over a ComfyUI Wan2.2-Animate MODEL, a VAE and (optionally) CLIP vision.

    CLIP vision sees the whole frame resized (no centre crop), as ComfyUI's own Wan Animate template
    sets CLIPVisionEncode's crop to none.
    """

    def __init__(
        self,
        model,
        vae,
        positive,
        negative,
        clip_vision=None,
        cfg: float = 1.0,
        clip_crop: bool = False,
        decode: DecodeOptions | None = None,
        sampler=None,
    ):
        self.model = model
        self.vae = vae
        self.positive = positive
        self.negative = negative
        self.clip_vision = clip_vision
        self.cfg = float(cfg)
        self.clip_crop = clip_crop
        self.decode_options = decode or DecodeOptions()
        self.sampler = sampler  # a ComfyUI SAMPLER (KSamplerSelect, ...); None = the release's Euler
        self.latent_format = model.get_model_object("latent_format")
        self.frame_encodes = 0
        self.video_encodes = 0
        self.decodes = 0

    # -- spaces ----------------------------------------------------------------------------
    def to_model_space(self, raw: torch.Tensor) -> torch.Tensor:
        return self.latent_format.process_in(raw.float().cpu())

    def to_raw(self, latent: torch.Tensor) -> torch.Tensor:
        return self.latent_format.process_out(latent.float().cpu())

    # -- VAE ---------------------------------------------------------------------------------
    def _encode(self, frames: np.ndarray) -> torch.Tensor:
        raw = self.vae.encode(frames_to_image(frames)[..., :3])
        return self.to_model_space(raw)[0]

    def encode_frame(self, frame: np.ndarray) -> torch.Tensor:
        self.frame_encodes += 1
        return self._encode(np.asarray(frame)[None])

    def encode_pose(self, frames: np.ndarray) -> torch.Tensor:
        self.video_encodes += 1
        return self._encode(np.asarray(frames))

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        self.decodes += 1
        raw = self.to_raw(latents[None])
        o = self.decode_options
        if o.tiled:
            images = self.vae.decode_tiled(
                raw,
                tile_x=o.tile_size // 8,
                tile_y=o.tile_size // 8,
                overlap=o.overlap // 8,
                tile_t=max(1, o.temporal_size // 4),
                overlap_t=max(1, o.temporal_overlap // 4),
            )
        else:
            images = self.vae.decode(raw)
        if images.dim() == 5:
            images = images.reshape(-1, *images.shape[-3:])
        return image_to_frames(images, rounding="floor")  # the release truncates (x+1)*127.5

    # -- conditioning ------------------------------------------------------------------------
    def _clip_vision_output(self, image_u8: np.ndarray):
        if self.clip_vision is None:
            return None
        return self.clip_vision.encode_image(frames_to_image(np.asarray(image_u8)[None]), crop=self.clip_crop)

    def conditioning(self, request: ChunkRequest) -> tuple[Any, Any]:
        """Positive and negative conditioning of one chunk, exactly as the release builds y."""
        import node_helpers

        values: dict[str, Any] = {
            "concat_latent_image": self.to_raw(request.condition[None]),
            "concat_mask": 1.0 - request.mask[None],  # ComfyUI convention: 0 = known
        }
        if request.pose is not None:
            values["pose_video_latent"] = self.to_raw(request.pose[None])
        clip = self._clip_vision_output(request.clip_image)
        if clip is not None:
            values["clip_vision_output"] = clip
        negative_values = dict(values)
        if request.face_frames is not None:
            face = torch.from_numpy(np.ascontiguousarray(request.face_frames)).float()
            face = (face / 255.0 * 2.0 - 1.0).permute(3, 0, 1, 2).unsqueeze(0)
            if face.shape[-2:] != (512, 512):
                face = torch.nn.functional.interpolate(
                    face[0].permute(1, 0, 2, 3), size=(512, 512), mode="bilinear", align_corners=False
                ).permute(1, 0, 2, 3).unsqueeze(0)
            values["face_video_pixels"] = face
            negative_values["face_video_pixels"] = face * 0.0 - 1.0
        pos = node_helpers.conditioning_set_values(self.positive, values)
        neg = node_helpers.conditioning_set_values(self.negative, negative_values)
        return pos, neg

    # -- sampling ----------------------------------------------------------------------------
    def sample(self, request: ChunkRequest) -> torch.Tensor:
        import comfy.sample
        import comfy.samplers

        pos, neg = self.conditioning(request)
        noise = request.noise
        latent_image = torch.zeros_like(noise)
        n = len(request.sigmas) - 1

        def callback(step, x0, x, total):
            if request.on_step is not None:
                request.on_step(step + 1, n, x)

        if request.restoration is not None or request.background is not None:
            refuse_restoration_with_sampler(self.sampler)
            sampler = comfy.samplers.KSAMPLER(_restorative_euler(request))
        else:
            sampler = self.sampler if self.sampler is not None else comfy.samplers.sampler_object("euler")
        samples = comfy.sample.sample_custom(
            self.model,
            noise,
            self.cfg,
            sampler,
            request.sigmas.clone(),
            pos,
            neg,
            latent_image,
            noise_mask=None,
            callback=callback,
            disable_pbar=True,
            seed=request.seed,
        )
        return self.to_model_space(samples)[0]  # NaN is caught by the core, which names the chunk


def _restorative_euler(request: ChunkRequest):
    """A ComfyUI sampler function running the core's Euler loop with anchor restoration."""

    def sample_fn(model, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = extra_args or {}
        s_in = x.new_ones([x.shape[0]])

        class ComfyDenoiser:
            prediction = "x0"

            def __call__(self, xx, sigma, cond):
                return model(xx, sigma * s_in, **extra_args)

        def on_step(i, n, xx):
            if callback is not None:
                callback({"x": xx, "i": i - 1, "sigma": sigmas[i - 1], "sigma_hat": sigmas[i - 1], "denoised": xx})

        anchors = request.anchors[None].to(x.device, x.dtype)
        cond = ChunkCondition(y=None, pose=None, anchors=request.layout.anchors, extras={})
        return sample_chunk(ComfyDenoiser(), x, cond, sigmas, anchors, request.restoration, on_step, request.background)

    return sample_fn


def refuse_restoration_with_sampler(sampler) -> None:
    """Anchor restoration is a term inside the pack's own Euler steps: it cannot run in another sampler."""
    if sampler is not None:
        raise ConfigError(
            "restoration (anchors or background) runs inside the pack's own Euler steps, so it cannot be "
            "combined with a SAMPLER input. Disconnect the sampler (a SIGMAS input still works) or set "
            "restoration to off."
        )


def require_even_resolution(width: int, height: int) -> None:
    """Wan needs width and height in multiples of 16 (VAE factor 8 x patch 2)."""
    if width % 16 or height % 16:
        raise ConfigError(
            f"Width and height must be multiples of 16 for Wan2.2-Animate; got {width}x{height}. "
            f"Try {width // 16 * 16}x{height // 16 * 16}."
        )
