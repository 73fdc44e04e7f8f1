"""TinyAnimateDiT: a miniature Wan-Animate-like video diffusion transformer.

Read top to bottom:
- input: the noisy latent x [B, C, T, h, w] channel-concatenated with y = [mask(4) | condition(C)]
  (Wan-Animate's in_dim = 16 + 4 + 16 = 36), patchified 1x2x2 into tokens;
- pose latents [B, C, G, h, w] are patch-embedded and ADDED to the tokens of slots K.. only: the K
  anchor slots come first in time and get no pose term (the EverAnimate K-anchor layout);
- 3D rotary positional encoding over (time, height, width) so any K + G works; with
  ``attention="factorized"`` each block attends within each slot (2D rotary), then along time at
  each position (1D rotary), then runs its FFN;
- with ``pose_blocks``, the pose tokens are added again before every block, each through its own
  zero-initialised linear layer (on slots K.. only);
- with ``ref_attention`` (factorized blocks only), every block then lets each token attend to all
  tokens of the K anchor slots (2D rotary, gated from zero), so a generated token can fetch the
  dancer's colours from anywhere in the reference in one step;
- timestep modulation (adaLN-Zero) in every block; the model predicts the flow velocity.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

ATTENTION: tuple[str, ...] = ("full", "factorized")
OUTPUTS: tuple[str, ...] = ("velocity", "x0", "x0_skip", "velocity_motion", "velocity_prior")


def skip_scalings(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(c_skip, c_out)`` of the ``x0_skip`` head: ``x0 = c_skip * x_t + c_out * F`` (the EDM
    preconditioning for ``x_t = (1 - s) x0 + s eps`` with unit-variance data). At s = 1 the head
    predicts x0 outright; as s -> 0 it passes x_t through and only adds a small correction, so the
    network never has to reproduce the noise (a velocity head must at s = 1) nor the input (an x0
    head must at s = 0). Its training target ``(x0 - c_skip x_t) / c_out`` has unit variance."""
    r = torch.sqrt((1 - sigma) ** 2 + sigma**2)
    return (1 - sigma) / r**2, sigma / r


PRIOR_HEADS: tuple[str, ...] = ("velocity_motion", "velocity_prior")


def head_prior(y: torch.Tensor, num_anchors: int, mask_channels: int, output: str = "velocity_motion") -> torch.Tensor:
    """The prior for x0 of a prior head, shaped like ``x``. The head predicts ``F = v + prior``, so
    the DiT's velocity is ``F - prior``: the network models what differs from the prior
    (``eps - (x0 - prior)``), not the whole scene again. Anchor slots get no prior (not predicted).

    - ``velocity_motion``: the carried motion latent (condition slot K) on generated slots K+1..,
      zeros on slot K. The motion latent is a 4-frame code of the previous chunk's last frames, slot
      K a single-frame code of the causal VAE's free group. Chunk 0 carries no motion latent (its
      slot K is zeros), so the prior is zero there and the head is a plain velocity head.
    - ``velocity_prior``: on every generated slot, the carried motion latent, or the reference (the
      last anchor) where none is carried. Meant for a VAE whose codes agree on a still scene
      (``vae_group="still"``), where the reference is the code of the background behind every slot.

    Zeros in place of a carried latent read as no latent carried, so the zero-motion probe measures
    what the carried latent gives."""
    if output not in PRIOR_HEADS:
        raise ConfigError(f"{output!r} is not a prior head; these are {PRIOR_HEADS}.")
    k = num_anchors
    cond = y[:, mask_channels:]
    motion = cond[:, :, k : k + 1]
    present = (motion.flatten(1).abs().amax(dim=1) > 0).view(-1, 1, 1, 1, 1)
    prior = torch.zeros_like(cond)
    if output == "velocity_motion":
        prior[:, :, k + 1 :] = motion * present.to(cond.dtype)
    else:
        prior[:, :, k:] = torch.where(present, motion, cond[:, :, k - 1 : k])
    return prior


def timestep_embedding(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    """Sinusoidal embedding of timesteps t (Wan uses t = 1000*sigma)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def rope_angles(t: int, h: int, w: int, dims: tuple[int, int, int], device=None) -> torch.Tensor:
    """Rotation angles [t*h*w, sum(dims)/2] of 3D RoPE, one band of frequencies per axis."""
    parts = []
    for n, d, axis in ((t, dims[0], 0), (h, dims[1], 1), (w, dims[2], 2)):
        freqs = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=torch.float32, device=device) / d))
        pos = torch.arange(n, dtype=torch.float32, device=device)
        ang = pos[:, None] * freqs[None]
        shape = [t, h, w, d // 2]
        view = [1, 1, 1, d // 2]
        view[axis] = n
        parts.append(ang.view(view).expand(shape))
    return torch.cat(parts, dim=-1).reshape(t * h * w, -1)


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate pairs of channels of x [B, heads, N, Dh] by the angles whose (cos, sin) are given."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = rope
    out = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return out.flatten(-2)


def _attend(h: torch.Tensor, qkv: nn.Linear, o: nn.Linear, heads: int, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Multi-head self-attention with RoPE over the token axis of h [B, N, D]."""
    b, n, d = h.shape
    q, k, v = qkv(h).view(b, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
    q, k = apply_rope(q, rope), apply_rope(k, rope)
    return o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d))


class TemporalAttention(nn.Module):
    """Attention along time at each token position (factorized blocks): every slot of a position
    reads the same position of every other slot, so the anchors and the motion slot are one step
    away from each generated token."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.o = nn.Linear(dim, dim)
        self.modulation = nn.Linear(dim, 3 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)


class AnchorAttention(nn.Module):
    """Cross-attention from every token to the tokens of the K anchor slots (2D rotary over the
    spatial offset). Its gate starts at zero, so a DiT with it starts as the one without."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.o = nn.Linear(dim, dim)
        self.modulation = nn.Linear(dim, 3 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, heads: int, rope, grid: tuple[int, int], anchors: int) -> torch.Tensor:
        """x [B, T*S, D] -> the gated update of x; rope is the within-slot (cos, sin) of S tokens."""
        b, n, d = x.shape
        t, s = grid
        sh, sc, g = self.modulation(temb).unsqueeze(1).chunk(3, dim=-1)
        h = self.norm(x) * (1 + sc) + sh
        hd = d // heads
        q = self.q(h).view(b, t, s, heads, hd).permute(0, 3, 1, 2, 4)  # [B, H, T, S, hd]
        k, v = self.kv(h[:, : anchors * s]).view(b, anchors, s, 2, heads, hd).permute(3, 0, 4, 1, 2, 5)  # [B, H, K, S, hd]
        q = apply_rope(q, rope).reshape(b, heads, n, hd)
        k = apply_rope(k, rope).reshape(b, heads, anchors * s, hd)
        v = v.reshape(b, heads, anchors * s, hd)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)
        return g * self.o(a)


class Block(nn.Module):
    """Pre-norm transformer block with adaLN-Zero timestep modulation.

    ``temporal=False`` (v1): one full attention over all (time, height, width) tokens, as Wan.
    ``temporal=True``: attention within each latent slot (height, width), then a
    :class:`TemporalAttention` along time at each position, then the FFN."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4, temporal: bool = False, anchor_attention: bool = False):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.o = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ffn = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(approximate="tanh"), nn.Linear(mlp_ratio * dim, dim))
        self.modulation = nn.Linear(dim, 6 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)
        self.temporal = TemporalAttention(dim) if temporal else None
        self.anchor_attention = AnchorAttention(dim) if anchor_attention else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor, rope, grid: tuple[int, int] | None = None, anchors: int = 0) -> torch.Tensor:
        """x [B, N, D]. Full blocks: rope is the (cos, sin) of all N tokens. Factorized blocks: rope
        is ((cos, sin) within a slot, (cos, sin) along time) and grid = (T, tokens per slot)."""
        b, n, d = x.shape
        sh1, sc1, g1, sh2, sc2, g2 = self.modulation(temb).unsqueeze(1).chunk(6, dim=-1)
        h = self.norm1(x) * (1 + sc1) + sh1
        if self.temporal is None:
            x = x + g1 * _attend(h, self.qkv, self.o, self.heads, rope)
        else:
            t, s = grid
            a = _attend(h.reshape(b * t, s, d), self.qkv, self.o, self.heads, rope[0]).reshape(b, n, d)
            x = x + g1 * a
            tm = self.temporal
            sh, sc, g = tm.modulation(temb).unsqueeze(1).chunk(3, dim=-1)
            h = (tm.norm(x) * (1 + sc) + sh).view(b, t, s, d).transpose(1, 2).reshape(b * s, t, d)
            a = _attend(h, tm.qkv, tm.o, self.heads, rope[1]).view(b, s, t, d).transpose(1, 2).reshape(b, n, d)
            x = x + g * a
            if self.anchor_attention is not None and anchors:
                x = x + self.anchor_attention(x, temb, self.heads, rope[0], grid, anchors)
        h = self.norm2(x) * (1 + sc2) + sh2
        return x + g2 * self.ffn(h)


class TinyAnimateDiT(nn.Module):
    """Velocity-predicting video DiT over [K anchor slots | G generated slots]."""

    prediction = "velocity"

    def __init__(
        self,
        latent_channels: int = 16,
        mask_channels: int = 4,
        dim: int = 128,
        depth: int = 6,
        heads: int = 4,
        patch: int = 2,
        attention: str = "full",
        pose_blocks: bool = False,
        ref_attention: bool = False,
    ):
        super().__init__()
        if attention not in ATTENTION:
            raise ConfigError(f"attention must be one of {ATTENTION}, got {attention!r} (the tiny config's attention).")
        if ref_attention and attention != "factorized":
            raise ConfigError("ref_attention needs attention='factorized' (the tiny config's ref_attention and attention).")
        self.attention = attention
        self.latent_channels = latent_channels
        self.mask_channels = mask_channels
        self.patch = patch
        self.dim = dim
        self.heads = heads
        in_dim = 2 * latent_channels + mask_channels
        self.patch_embed = nn.Conv3d(in_dim, dim, (1, patch, patch), stride=(1, patch, patch))
        self.pose_embed = nn.Conv3d(latent_channels, dim, (1, patch, patch), stride=(1, patch, patch))
        self.time_mlp = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, temporal=attention == "factorized", anchor_attention=ref_attention) for _ in range(depth))
        self.pose_in = nn.ModuleList(nn.Linear(dim, dim) for _ in range(depth)) if pose_blocks else None
        for lin in self.pose_in or ():
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mod_out = nn.Linear(dim, 2 * dim)
        self.head = nn.Linear(dim, latent_channels * patch * patch)
        nn.init.zeros_(self.mod_out.weight)
        nn.init.zeros_(self.mod_out.bias)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        hd = dim // heads
        ht = (hd // 3) // 2 * 2
        hs = ((hd - ht) // 2) // 2 * 2
        self.rope_dims = (hd - 2 * hs, hs, hs)

    def forward(
        self,
        x: torch.Tensor,
        timestep: torch.Tensor,
        y: torch.Tensor,
        pose: torch.Tensor | None,
        num_anchors: int,
    ) -> torch.Tensor:
        """x [B, C, T, h, w], timestep [B] (0..1000), y [B, 4+C, T, h, w], pose [B, C, T-K, h, w]."""
        b, c, t, h, w = x.shape
        p = self.patch
        tok = self.patch_embed(torch.cat([x, y], dim=1))  # [B, D, T, h/p, w/p]
        pose_seq = None
        if pose is not None:
            pose_tok = self.pose_embed(pose)
            tok = torch.cat([tok[:, :, :num_anchors], tok[:, :, num_anchors:] + pose_tok], dim=2)
            if self.pose_in is not None:  # the pose again before every block, on slots K.. only
                pose_seq = torch.cat([torch.zeros_like(tok[:, :, :num_anchors]), pose_tok], dim=2).flatten(2).transpose(1, 2)
        hp, wp = h // p, w // p
        tok = tok.flatten(2).transpose(1, 2)  # [B, T*hp*wp, D]
        temb = self.time_mlp(timestep_embedding(timestep.to(x.device)).to(x.dtype))
        if self.attention == "full":
            angles = rope_angles(t, hp, wp, self.rope_dims, device=x.device)
            rope = (angles.cos(), angles.sin())  # once per call, shared by every block
            grid = None
        else:  # within a slot over (height, width); along time over t
            hd = self.dim // self.heads
            hs = (hd // 2) // 2 * 2
            sa = rope_angles(1, hp, wp, (hd - 2 * hs, hs, hs), device=x.device)
            ta = rope_angles(t, 1, 1, (hd, 0, 0), device=x.device)
            rope, grid = ((sa.cos(), sa.sin()), (ta.cos(), ta.sin())), (t, hp * wp)
        for i, blk in enumerate(self.blocks):
            if pose_seq is not None:
                tok = tok + self.pose_in[i](pose_seq)
            tok = blk(tok, temb, rope, grid, num_anchors)
        sh, sc = self.mod_out(temb).unsqueeze(1).chunk(2, dim=-1)
        out = self.head(self.norm_out(tok) * (1 + sc) + sh)  # [B, N, C*p*p]
        out = out.view(b, t, hp, wp, c, p, p).permute(0, 4, 1, 2, 5, 3, 6)
        return out.reshape(b, c, t, h, w)
