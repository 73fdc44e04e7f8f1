"""TinyVAE: a small causal video autoencoder with Wan's temporal layout.

``1 + 4*(G-1)`` frames map to G latents: latent 0 encodes frame 0 alone, latent i >= 1 encodes
frames ``4i-3 .. 4i``. Encoding one frame gives one latent, exactly like encoding an anchor frame on
its own with the Wan VAE. Spatial factor 8 (v1) or 4 (v2), 16 latent channels (Wan 2.1's shape of latent).

It is honestly lossy (a 48x compression for 4-frame groups), so a decode/encode round trip at
every chunk boundary degrades a video the way the Wan VAE does; ``benchmarks/vae_roundtrip.py``
reports the numbers. Latents are returned in the normalized model space ``(z - mean) / std`` with
per-channel statistics measured after training, so zero is the dataset mean (Wan's convention).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

SPATIAL_FACTOR = 8
TEMPORAL_FACTOR = 4
GROUPS: tuple[str, ...] = ("free", "still")


class _Residual(nn.Module):
    """x + conv(silu(conv(silu(x)))): extra depth at latent resolution (v2)."""

    def __init__(self, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.SiLU(), nn.Conv2d(width, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, width, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class _FrameEncoder(nn.Module):
    """Space-to-depth (factor x factor pixel blocks) then convolutions at latent resolution: cheap
    and quick to train on a CPU, with 3x3 context across neighbouring blocks."""

    def __init__(self, width: int, feat: int, factor: int = SPATIAL_FACTOR, blocks: int = 0):
        super().__init__()
        self.net = nn.Sequential(
            nn.PixelUnshuffle(factor),
            nn.Conv2d(3 * factor**2, width, 1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            *(_Residual(width) for _ in range(blocks)),
            nn.SiLU(),
            nn.Conv2d(width, feat, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _FrameDecoder(nn.Module):
    def __init__(self, width: int, feat: int, factor: int = SPATIAL_FACTOR, blocks: int = 0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(feat, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            *(_Residual(width) for _ in range(blocks)),
            nn.SiLU(),
            nn.Conv2d(width, 3 * factor**2, 1),
            nn.PixelShuffle(factor),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TinyVAE(nn.Module):
    """Causal video autoencoder: pixels in [-1, 1] [B, 3, F, H, W] <-> latents [B, C, G, h, w]."""

    def __init__(
        self,
        latent_channels: int = 16,
        width: int = 256,
        feat: int = 64,
        factor: int = SPATIAL_FACTOR,
        blocks: int = 0,
        group: str = "free",
    ):
        """``group``: how a 4-frame latent is formed. ``"free"`` (v1): its own convolution of the four
        frames' features. ``"still"``: the single-frame head applied to the group's mean feature, plus
        a bias-free convolution of each frame's deviation from that mean, so a group of four equal
        frames encodes to exactly the latent of one of them (anchors and reference share the code of
        a still scene)."""
        super().__init__()
        if group not in GROUPS:
            raise ConfigError(f"vae_group must be one of {GROUPS}, got {group!r} (the tiny config's vae_group).")
        self.group = group
        self.latent_channels = latent_channels
        self.feat = feat
        self.factor = factor
        self.frame_encoder = _FrameEncoder(width, feat, factor, blocks)
        self.frame_decoder = _FrameDecoder(width, feat, factor, blocks)
        self.first_to_latent = nn.Conv2d(feat, latent_channels, 3, padding=1)
        self.group_to_latent = nn.Conv2d(feat * TEMPORAL_FACTOR, latent_channels, 3, padding=1, bias=group == "free")
        self.latent_to_first = nn.Conv2d(latent_channels, feat, 3, padding=1)
        self.latent_to_group = nn.Conv2d(latent_channels, feat * TEMPORAL_FACTOR, 3, padding=1)
        self.register_buffer("latents_mean", torch.zeros(latent_channels))
        self.register_buffer("latents_std", torch.ones(latent_channels))

    # -- raw space -------------------------------------------------------------------------
    def encode_raw(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, F, H, W] in [-1, 1] with F = 1 mod 4 -> raw latents [B, C, G, h, w]."""
        b, _, f, h, w = video.shape
        if (f - 1) % TEMPORAL_FACTOR:
            raise ConfigError(f"TinyVAE encodes 1 + 4k frames; got {f}.")
        r = self.factor
        if h % r or w % r:
            raise ConfigError(f"Resolution {w}x{h} is not divisible by the VAE factor {r}; resize to a multiple of 16.")
        frames = video.permute(0, 2, 1, 3, 4).reshape(b * f, 3, h, w)
        feats = self.frame_encoder(frames).reshape(b, f, self.feat, h // r, w // r)
        first = self.first_to_latent(feats[:, 0])
        out = [first.unsqueeze(2)]
        if f > 1:
            g = (f - 1) // TEMPORAL_FACTOR
            rest = feats[:, 1:].reshape(b * g, TEMPORAL_FACTOR, self.feat, h // r, w // r)
            if self.group == "free":
                z = self.group_to_latent(rest.flatten(1, 2))
            else:  # still: a group of equal frames is the single-frame code of that frame
                mean = rest.mean(dim=1)
                z = self.first_to_latent(mean) + self.group_to_latent((rest - mean.unsqueeze(1)).flatten(1, 2))
            out.append(z.reshape(b, g, -1, h // r, w // r).permute(0, 2, 1, 3, 4))
        return torch.cat(out, dim=2)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """raw latents [B, C, G, h, w] -> [B, 3, 1 + 4(G-1), H, W] in about [-1, 1]."""
        b, c, g, h, w = z.shape
        first = self.latent_to_first(z[:, :, 0])
        feats = [first.unsqueeze(1)]
        if g > 1:
            rest = z[:, :, 1:].permute(0, 2, 1, 3, 4).reshape(b * (g - 1), c, h, w)
            grp = self.latent_to_group(rest).reshape(b, (g - 1) * TEMPORAL_FACTOR, self.feat, h, w)
            feats.append(grp)
        feats = torch.cat(feats, dim=1)
        f = feats.shape[1]
        frames = self.frame_decoder(feats.reshape(b * f, self.feat, h, w))
        return frames.reshape(b, f, 3, h * self.factor, w * self.factor).permute(0, 2, 1, 3, 4)

    # -- model (normalized) space ----------------------------------------------------------
    def normalize(self, z: torch.Tensor) -> torch.Tensor:
        """raw -> model space: (z - mean) / std per channel."""
        return (z - self.latents_mean.view(1, -1, 1, 1, 1)) / self.latents_std.view(1, -1, 1, 1, 1)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        """model space -> raw."""
        return z * self.latents_std.view(1, -1, 1, 1, 1) + self.latents_mean.view(1, -1, 1, 1, 1)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Pixels [B, 3, F, H, W] in [-1, 1] -> model-space latents [B, C, G, h, w]."""
        return self.normalize(self.encode_raw(video))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Model-space latents -> pixels in [-1, 1] (clamped)."""
        return self.decode_raw(self.denormalize(z)).clamp(-1, 1)


def frames_to_tensor(frames_u8) -> torch.Tensor:
    """uint8 [F, H, W, 3] (numpy or torch) -> float [1, 3, F, H, W] in [-1, 1]."""
    x = torch.as_tensor(frames_u8)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    return (x.float() / 127.5 - 1.0).permute(3, 0, 1, 2).unsqueeze(0)


def tensor_to_frames(video: torch.Tensor) -> torch.Tensor:
    """float [1, 3, F, H, W] in [-1, 1] -> uint8 [F, H, W, 3] (rounded)."""
    x = ((video[0].permute(1, 2, 3, 0).clamp(-1, 1) + 1.0) * 127.5).round()
    return x.to(torch.uint8)
