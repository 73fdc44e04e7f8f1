"""EverAnimate-Tiny as a chunk backend: the embedded default model, runnable on any CPU."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from ..errors import ConfigError
from ..pipeline import ChunkRequest
from ..plan import ChunkSettings
from ..sampler import ChunkCondition, sample_chunk
from ..layout import model_input_condition
from .dit import OUTPUTS, PRIOR_HEADS, TinyAnimateDiT, head_prior, skip_scalings
from .vae import TinyVAE, frames_to_tensor, tensor_to_frames

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"  # EverAnimate-Tiny v2, the embedded default (docs/tiny_v2.md)
VAE_FILE = "tiny_vae.safetensors"
DIT_FILE = "tiny_dit.safetensors"
CONFIG_FILE = "tiny_config.json"


@dataclass
class TinyModelConfig:
    """Architecture and native settings of EverAnimate-Tiny (stored next to its weights)."""

    height: int = 64
    width: int = 64
    fps: float = 8.0
    latent_channels: int = 16
    vae_width: int = 256
    vae_feat: int = 64
    vae_factor: int = 8
    vae_blocks: int = 0
    vae_group: str = "free"  # how the VAE forms a 4-frame latent: "free" (v1) or "still" (tiny/vae.py)
    patch: int = 2
    output: str = "velocity"  # the DiT's head: velocity (v1), x0, x0_skip (dit.skip_scalings), velocity_motion or velocity_prior (dit.head_prior)
    dim: int = 128
    depth: int = 6
    heads: int = 4
    attention: str = "full"  # "full" 3D attention (v1) or "factorized": within a slot, then along time
    pose_blocks: bool = False  # the pose tokens added again before every block (v1: at the input only)
    ref_attention: bool = False  # every block also attends to all anchor tokens (factorized only; tiny/dit.py)
    frames: int = 33
    overlap: int = 4
    anchors: int = 4

    @classmethod
    def load(cls, path: Path) -> "TinyModelConfig":
        data = json.loads(Path(path).read_text())
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def chunk_settings(self) -> ChunkSettings:
        """The model's native chunking (frames, overlap, K)."""
        return ChunkSettings(self.frames, self.overlap, self.anchors)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.__dict__, indent=1))


X0_SIGMA_FLOOR = 1e-3  # an x0 head's velocity (x - x0) / sigma divides by at least this


class TinyDenoiser:
    """Adapts TinyAnimateDiT to the sampler's denoiser protocol. It always returns a velocity: a DiT
    whose head predicts x0 (``dit.output == "x0"``, or ``"x0_skip"`` through ``dit.skip_scalings``)
    is converted with ``(x - x0) / sigma``, and a prior head (``"velocity_motion"``,
    ``"velocity_prior"``) has its prior (``dit.head_prior``) taken off, so the sampler, the
    restoration terms and the LoRA objectives see the same velocity either way."""

    prediction = "velocity"

    def __init__(self, dit: TinyAnimateDiT):
        self.dit = dit
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma, cond: ChunkCondition) -> torch.Tensor:
        """sigma: a float (sampling) or one sigma per sample [B] (training)."""
        self.calls += 1
        if isinstance(sigma, torch.Tensor) and sigma.numel() > 1:
            t = sigma.reshape(-1).float() * 1000.0
        else:
            t = torch.full((x.shape[0],), float(sigma) * 1000.0)
        out = self.dit(x, t, cond.y, cond.pose, cond.anchors)
        kind = getattr(self.dit, "output", "velocity")
        if kind == "velocity":
            return out
        if kind in PRIOR_HEADS:
            return out - head_prior(cond.y, cond.anchors, self.dit.mask_channels, kind)
        s = (t / 1000.0).clamp_min(X0_SIGMA_FLOOR).view(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        if kind == "x0_skip":
            c_skip, c_out = skip_scalings(s)
            out = c_skip * x + c_out * out
        return (x - out) / s


class TinyBackend:
    """ChunkBackend over TinyVAE + TinyAnimateDiT; counts VAE calls for the benchmarks."""

    def __init__(self, vae: TinyVAE, dit: TinyAnimateDiT, config: TinyModelConfig):
        self.vae = vae.eval()
        self.dit = dit.eval()
        self.config = config
        self.denoiser = TinyDenoiser(self.dit)
        self.frame_encodes = 0
        self.video_encodes = 0
        self.decodes = 0

    def _check_frames(self, frames: np.ndarray) -> None:
        h, w = frames.shape[-3], frames.shape[-2]
        m = self.config.vae_factor * self.config.patch
        if h % m or w % m:
            raise ConfigError(
                f"Frames of {w}x{h} are not divisible by {m} (VAE factor {self.config.vae_factor} x "
                f"patch {self.config.patch}); resize or crop to a multiple of {m}."
            )

    @torch.no_grad()
    def encode_frame(self, frame: np.ndarray) -> torch.Tensor:
        self._check_frames(frame)
        self.frame_encodes += 1
        return self.vae.encode(frames_to_tensor(np.asarray(frame)[None]))[0]

    @torch.no_grad()
    def encode_pose(self, frames: np.ndarray) -> torch.Tensor:
        self._check_frames(frames)
        self.video_encodes += 1
        return self.vae.encode(frames_to_tensor(frames))[0]

    @torch.no_grad()
    def sample(self, request: ChunkRequest) -> torch.Tensor:
        y = model_input_condition(request.condition, request.mask)[None]
        cond = ChunkCondition(y=y, pose=request.pose[None], anchors=request.layout.anchors, extras={})
        x = sample_chunk(
            self.denoiser,
            request.noise,
            cond,
            request.sigmas,
            anchor_latents=request.anchors[None],
            restoration=request.restoration,
            on_step=request.on_step,
            background=request.background,
        )
        return x[0]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        self.decodes += 1
        return tensor_to_frames(self.vae.decode(latents[None])).numpy()


def build_models(config: TinyModelConfig) -> tuple[TinyVAE, TinyAnimateDiT]:
    """Untrained TinyVAE and TinyAnimateDiT of the given configuration."""
    vae = TinyVAE(config.latent_channels, config.vae_width, config.vae_feat, config.vae_factor, config.vae_blocks, config.vae_group)
    dit = TinyAnimateDiT(config.latent_channels, 4, config.dim, config.depth, config.heads, config.patch, config.attention, config.pose_blocks, config.ref_attention)
    if config.output not in OUTPUTS:
        raise ConfigError(f"output must be one of {OUTPUTS}, got {config.output!r} in the tiny config.")
    dit.output = config.output
    return vae, dit


def load_tiny(weights_dir: str | Path | None = None, dit_file: str = DIT_FILE) -> TinyBackend:
    """Load the shipped EverAnimate-Tiny weights (no download: they are in the package)."""
    d = Path(weights_dir) if weights_dir else WEIGHTS_DIR
    for name in (CONFIG_FILE, VAE_FILE, dit_file):
        if not (d / name).exists():
            raise FileNotFoundError(
                f"EverAnimate-Tiny weight file {d / name} is missing. Reinstall the package, or "
                f"rebuild it with `python -m everanimate_core train-tiny --v2 --out {d}`."
            )
    config = TinyModelConfig.load(d / CONFIG_FILE)
    vae, dit = build_models(config)
    for model, name in ((vae, VAE_FILE), (dit, dit_file)):
        try:
            model.load_state_dict(load_file(str(d / name)))
        except RuntimeError as e:
            raise ConfigError(
                f"{d / name} does not fit the model described by {d / CONFIG_FILE} (weights of another "
                f"configuration?). Keep each weights file with the config it was trained with. {str(e)[:300]}"
            ) from e
    return TinyBackend(vae, dit, config)
