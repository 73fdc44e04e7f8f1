"""Rectified-flow maths: sigma schedules, the Euler step, and the restorative velocity term.

Conventions (as in the release): sigma in [0, 1], sigma = 1 is pure noise,
``x_s = (1 - s) * x0 + s * eps``; the model predicts a velocity whose clean target is
``eps - x0``; an Euler step is ``x <- x + (s_next - s) * v``.

Restorative Flow Matching adds ``alpha(s) * (x_s_drifted - x_s_ref)`` to the velocity. One Euler
step of size ``d = s - s_next`` then multiplies a deviation from the reference path by
``(1 - alpha * d)``. The same function, ``restorative_velocity``, builds the stage-2 training target
and the opt-in inference-time anchor restoration, so the two can never disagree.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

import torch

from . import defaults
from .errors import ConfigError

AlphaScheduleName = Literal[
    "fixed", "sigma_ramp", "scheduler_weight", "gaussian_timestep", "augmented_velocity"
]
ALPHA_SCHEDULES: tuple[str, ...] = (
    "fixed",
    "sigma_ramp",
    "scheduler_weight",
    "gaussian_timestep",
    "augmented_velocity",
)
NUM_TRAIN_TIMESTEPS = 1000


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """The SD3/Wan time shift: ``shift*s / (1 + (shift-1)*s)``."""
    return shift * sigma / (1 + (shift - 1) * sigma)


def sampling_sigmas(steps: int = defaults.STEPS, shift: float = defaults.SHIFT, denoise: float = 1.0) -> torch.Tensor:
    """Shifted sigma list of ``steps`` steps followed by a final 0 (``steps + 1`` values).

    Equals the release's Wan scheduler (linspace(1, 0, steps+1)[:-1], shifted) and ComfyUI's
    ModelSamplingSD3(shift) + ``simple`` scheduler: 20 steps at shift 5 give 1.0, 0.9896, ...,
    0.2083, then 0.
    """
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}.")
    if shift <= 0:
        raise ConfigError(f"shift must be > 0, got {shift}.")
    if not 0 < denoise <= 1:
        raise ConfigError(f"denoise must be in (0, 1], got {denoise}.")
    s = torch.linspace(denoise, 0.0, steps + 1, dtype=torch.float32)[:-1]
    s = shift_sigma(s, shift)
    return torch.cat([s, torch.zeros(1, dtype=torch.float32)])


def training_sigmas(shift: float = defaults.SHIFT) -> torch.Tensor:
    """The 1000-entry training grid (sigmas, no trailing 0) that alpha schedules are defined on."""
    return sampling_sigmas(NUM_TRAIN_TIMESTEPS, shift)[:-1]


def euler_step(x: torch.Tensor, velocity: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """One Euler step of the probability-flow ODE: ``x + (sigma_next - sigma) * v``."""
    return x + (sigma_next - sigma) * velocity


def velocity_from_x0(x: torch.Tensor, x0: torch.Tensor, sigma: float) -> torch.Tensor:
    """Velocity of an x0 (denoised) prediction: ``(x - x0) / sigma``."""
    return (x - x0) / sigma


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma) -> torch.Tensor:
    """``x_s = (1 - s) * x0 + s * eps``; sigma may be a float or a tensor broadcastable to x0."""
    return (1 - sigma) * x0 + sigma * noise


def clean_velocity(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Flow-matching target on the clean path: ``eps - x0``."""
    return noise - x0


def _bell(grid: torch.Tensor) -> torch.Tensor:
    """The release's bell over a sigma grid, in float64: ``exp(-2((t-500)/1000)^2)``, t = 1000*sigma.
    Both the training weight and the gaussian_timestep alpha are built from it."""
    t = grid.double() * NUM_TRAIN_TIMESTEPS
    return torch.exp(-2 * ((t - NUM_TRAIN_TIMESTEPS / 2) / NUM_TRAIN_TIMESTEPS) ** 2)


def _training_weight_table(grid: torch.Tensor) -> torch.Tensor:
    """The release's bell-shaped training weight over the timestep grid (peak ~2.08 at 1000 steps)."""
    y = _bell(grid)
    y = y - y.min()
    w = y * (NUM_TRAIN_TIMESTEPS / y.sum())
    if len(grid) != NUM_TRAIN_TIMESTEPS:
        w = w * (len(grid) / NUM_TRAIN_TIMESTEPS)
        w = w + w[1]
    return w.float()


@dataclass(frozen=True)
class AlphaSchedule:
    """alpha(sigma) of Restorative Flow Matching.

    name: fixed | sigma_ramp | scheduler_weight | gaussian_timestep | augmented_velocity.
    weight: w, the scale of every schedule (released: gaussian_timestep, w = 1).
    shift: the shift of the 1000-step training grid the schedules are defined on (release 5).
    Lookups snap sigma to the nearest grid entry, as the release does.
    """

    name: str = defaults.RESTORATION_SCHEDULE
    weight: float = defaults.RESTORATION_WEIGHT
    shift: float = defaults.SHIFT

    def __post_init__(self) -> None:
        if self.name not in ALPHA_SCHEDULES:
            raise ConfigError(f"Unknown alpha schedule {self.name!r}; choose one of {ALPHA_SCHEDULES}.")

    def __call__(self, sigma: float) -> float:
        """alpha at noise level ``sigma`` (a Python float)."""
        return float(self.values(torch.tensor([float(sigma)]))[0])

    def values(self, sigmas: torch.Tensor) -> torch.Tensor:
        """alpha at every sigma of a 1-D tensor (one per sample of a training batch)."""
        sigmas = torch.as_tensor(sigmas, dtype=torch.float32).reshape(-1)
        if self.name == "fixed":
            return torch.full_like(sigmas, float(self.weight))
        if self.name == "augmented_velocity":
            raise ConfigError(
                "augmented_velocity replaces the target instead of weighting a term; it has no alpha."
            )
        grid = _grid(self.shift)
        i = torch.argmin((grid[None, :] - sigmas[:, None]).abs(), dim=1)
        if self.name == "sigma_ramp":
            lo, hi = float(grid.min()), float(grid.max())
            return self.weight * (grid[i] - lo) / max(hi - lo, 1e-8)
        if self.name == "scheduler_weight":
            return self.weight * _weights(self.shift)[i]
        return self.weight * _gaussian_table(self.shift)[i]


@functools.lru_cache(maxsize=8)
def _grid(shift: float) -> torch.Tensor:
    return training_sigmas(shift)


@functools.lru_cache(maxsize=8)
def _weights(shift: float) -> torch.Tensor:
    return _training_weight_table(_grid(shift))


@functools.lru_cache(maxsize=8)
def _gaussian_table(shift: float) -> torch.Tensor:
    """gaussian_timestep: the bell, min-max normalized over the grid."""
    g = _bell(_grid(shift))
    return ((g - g.min()) / max(float(g.max() - g.min()), 1e-8)).float()


def training_weight(sigmas: torch.Tensor, shift: float = defaults.SHIFT) -> torch.Tensor:
    """The release's per-timestep loss weight (bell curve over the 1000-step grid, mean ~1)."""
    sigmas = torch.as_tensor(sigmas, dtype=torch.float32).reshape(-1)
    grid = _grid(shift)
    i = torch.argmin((grid[None, :] - sigmas[:, None]).abs(), dim=1)
    return _weights(shift)[i]


def restorative_velocity(
    velocity: torch.Tensor, x_current: torch.Tensor, x_reference: torch.Tensor, alpha: "float | torch.Tensor"
) -> torch.Tensor:
    """``v + alpha * (x_current - x_reference)``: the restorative velocity.

    Training (stage 2): ``velocity`` = clean target ``eps - x0``, ``x_current`` = the degraded
    noisy input ``x_s_aug``, ``x_reference`` = the clean noisy point ``x_s`` (same eps).
    Inference (opt-in): ``velocity`` = the model's, ``x_current`` = the sampler state on slots whose
    clean value is known, ``x_reference = (1-s)*a + s*eps``. Euler then shrinks the deviation by
    ``(1 - alpha*d)`` per step of size d.
    """
    return velocity + alpha * (x_current - x_reference)


def rfm_target(
    x0: torch.Tensor,
    x0_degraded: torch.Tensor,
    noise: torch.Tensor,
    sigma,
    schedule: AlphaSchedule,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage-2 training pair: (model input, velocity target) for degraded samples.

    Both paths share ``noise``. For ``augmented_velocity`` the target is ``(x_s_aug - x0)/s``;
    otherwise ``(eps - x0) + alpha(s) * (x_s_aug - x_s)``. ``sigma`` is a float, or a tensor of one
    sigma per sample (leading dimension of ``x0``).
    """
    if isinstance(sigma, torch.Tensor) and sigma.numel() > 1:
        s = sigma.reshape(-1, *([1] * (x0.dim() - 1))).to(x0.dtype)
        flat = sigma.reshape(-1)
    else:
        s = float(sigma)
        flat = torch.tensor([s])
    x_s = add_noise(x0, noise, s)
    x_s_aug = add_noise(x0_degraded, noise, s)
    if schedule.name == "augmented_velocity":
        return x_s_aug, (x_s_aug - x0) / (s.clamp_min(1e-8) if isinstance(s, torch.Tensor) else max(s, 1e-8))
    alpha = schedule.values(flat)
    alpha = alpha.reshape(-1, *([1] * (x0.dim() - 1))).to(x0.dtype) if alpha.numel() > 1 else float(alpha[0])
    return x_s_aug, restorative_velocity(clean_velocity(x0, noise), x_s_aug, x_s, alpha)


def deviation_factor(alpha: float, sigma: float, sigma_next: float) -> float:
    """Factor one Euler step applies to a deviation under the restorative term: 1 - alpha*d."""
    return 1.0 - alpha * (sigma - sigma_next)


def is_finite(x: torch.Tensor) -> bool:
    """True when no element is NaN or inf."""
    return bool(torch.isfinite(x).all())


def timestep_from_sigma(sigma: float) -> float:
    """Model timestep of a sigma (Wan conditions on t = 1000*s)."""
    return float(sigma) * NUM_TRAIN_TIMESTEPS


__all__ = [
    "ALPHA_SCHEDULES",
    "AlphaSchedule",
    "add_noise",
    "clean_velocity",
    "deviation_factor",
    "euler_step",
    "is_finite",
    "restorative_velocity",
    "rfm_target",
    "sampling_sigmas",
    "shift_sigma",
    "timestep_from_sigma",
    "training_sigmas",
    "training_weight",
    "velocity_from_x0",
]
