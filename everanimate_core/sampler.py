"""The chunk sampler: Euler over the sigma list, given any denoiser.

A denoiser is any callable ``(x, sigma, cond) -> prediction`` with an attribute ``prediction``
that says whether it returns a velocity (the release's DiT) or a denoised x0 (ComfyUI models).
The loop is a short pure function in the style of k-diffusion: state is explicit, nothing global.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Literal, Protocol

import torch

from . import defaults
from .errors import ConfigError
from .flow import AlphaSchedule, add_noise, euler_step, restorative_velocity, velocity_from_x0
from .replace import restore_background_in_chunk

Prediction = Literal["velocity", "x0"]


@dataclass
class ChunkCondition:
    """Everything the denoiser needs for one chunk besides x and sigma.

    y: [B, mask_channels + C, K+G, h, w], the channel concat ``[mask | condition latent]``.
    pose: [B, C, G, h, w] pose latents for the generated slots (None for models without pose).
    anchors: K, so models know where generated slots start.
    extras: host-specific inputs (face pixels, CLIP features, text context).
    """

    y: torch.Tensor
    pose: torch.Tensor | None
    anchors: int
    extras: dict[str, Any]


class Denoiser(Protocol):
    """The model seam: ``(x [B,C,T,h,w], sigma, cond) -> velocity or x0``."""

    prediction: Prediction

    def __call__(self, x: torch.Tensor, sigma: float, cond: ChunkCondition) -> torch.Tensor: ...


@dataclass(frozen=True)
class AnchorRestoration:
    """Opt-in inference-time restoration of the anchor slots (off in the release).

    At every step the velocity on the anchor slots gets ``alpha(s) * (x_s - x_s_ref)`` with
    ``x_s_ref = (1-s)*a + s*eps`` built from the anchors ``a`` and the chunk's own initial noise.
    ``strength`` scales the schedule's weight.
    """

    schedule: AlphaSchedule = AlphaSchedule()
    strength: float = defaults.RESTORATION_STRENGTH


@dataclass(frozen=True)
class BackgroundRestoration:
    """Opt-in pull of the KNOWN background of a replacement chunk toward the background video's
    trajectory (off by default): ``alpha(s) * w * (x_s - x_s_ref)`` on the background slots, with
    ``x_s_ref = (1-s)*bg + s*eps`` from the encoded background window and the chunk's own noise, and
    ``w`` the packed mask's known weight (0 where the character goes)."""

    schedule: AlphaSchedule = AlphaSchedule()
    strength: float = defaults.RESTORATION_STRENGTH


@dataclass(frozen=True)
class BackgroundTarget:
    """What the background term needs of one chunk: its replacement condition, mask and layout."""

    restoration: BackgroundRestoration
    condition: torch.Tensor
    mask: torch.Tensor
    layout: Any


StepCallback = Callable[[int, int, torch.Tensor], None]


def sample_chunk(
    denoiser: Denoiser,
    noise: torch.Tensor,
    cond: ChunkCondition,
    sigmas: torch.Tensor,
    anchor_latents: torch.Tensor | None = None,
    restoration: AnchorRestoration | None = None,
    on_step: StepCallback | None = None,
    background: BackgroundTarget | None = None,
) -> torch.Tensor:
    """Integrate from pure ``noise`` (sigmas[0] = 1) to sigmas[-1] with Euler; returns the final x.

    ``anchor_latents`` [B, C, K, h, w] are needed only with ``restoration``; ``background`` adds the
    replacement-mode background term. ``on_step(i, n, x)`` runs after every step (progress bars,
    previews, and cancellation by raising).
    """
    x = noise.clone()
    k = cond.anchors
    n = len(sigmas) - 1
    if restoration is not None and anchor_latents is None:
        raise ConfigError(
            "Anchor restoration needs the anchor latents: pass the memory's anchors as anchor_latents, "
            "or turn restoration off."
        )
    for i in range(n):
        s, s_next = float(sigmas[i]), float(sigmas[i + 1])
        out = denoiser(x, s, cond)
        v = out if denoiser.prediction == "velocity" else velocity_from_x0(x, out, s)
        if restoration is not None:
            alpha = restoration.strength * restoration.schedule(s)
            if alpha:
                ref = add_noise(anchor_latents, noise[:, :, :k], s)
                v = v.clone()
                v[:, :, :k] = restorative_velocity(v[:, :, :k], x[:, :, :k], ref, alpha)
        if background is not None:
            alpha = background.restoration.strength * background.restoration.schedule(s)
            if alpha:
                v = restore_background_in_chunk(v, x, noise, background.condition, background.mask, background.layout, s, alpha)
        x = euler_step(x, v, s, s_next)
        if on_step is not None:
            on_step(i + 1, n, x)
    return x


def chunk_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Initial noise of a chunk: CPU float32 randn seeded with ``seed``.

    The same stream as ComfyUI's ``prepare_noise`` and the release, so a latent of the same shape
    (all K+G slots) and seed starts from bit-identical noise.
    """
    g = torch.Generator(device="cpu")
    g.manual_seed(int(seed))
    return torch.randn(shape, generator=g, dtype=torch.float32, device="cpu")


SEED_POLICIES: tuple[str, ...] = ("multiply", "increment", "fixed")


def chunk_seed(seed: int, chunk_index: int, policy: str = "multiply") -> int:
    """Seed of chunk ``c``: release ``multiply`` gives seed*c (42*c); ``increment`` seed+c; ``fixed``."""
    if policy == "multiply":
        return int(seed) * int(chunk_index)
    if policy == "increment":
        return int(seed) + int(chunk_index)
    if policy == "fixed":
        return int(seed)
    raise ConfigError(f"Unknown seed policy {policy!r}; choose one of {SEED_POLICIES}.")
