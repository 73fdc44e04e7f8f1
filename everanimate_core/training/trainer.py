"""LoRA post-training for any velocity-predicting video DiT: latent memory (stage 1) and Restorative
Flow Matching (stage 2), resumable, exported in the authors' released key format.

The model seam is the denoiser protocol ``denoiser(x, sigma, cond) -> velocity`` (one sigma per
sample here). :func:`add_lora` injects PEFT adapters (``lora_alpha = rank``) on the Linear modules
named by ``spec.targets`` and freezes the rest; :func:`rfm_loss` is METHOD.md section 3 (one eps
shared by the clean and degraded paths, degraded pair with probability ``p ** draws`` where
``sigma >= sigma_gate``, release 0.8, 2, 0.5; loss over all K + G slots with the release's timestep
weight); :func:`train_lora` runs AdamW with checkpoints that refuse another configuration;
:func:`export_released` writes ``<module>.lora_A.default.weight`` / ``lora_B``. For Wan2.2-Animate
(not run here): ``LoraSpec(rank=32)`` (``lora.WAN_ANIMATE_TARGETS``, 400 modules), ``lr=1e-4``,
batch 1, and a batch source built like ``tiny/rfm_data.py`` (docs/training.md).
"""

from __future__ import annotations

import json

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .. import defaults
from ..errors import ConfigError, ResumeStateError
from ..flow import AlphaSchedule, add_noise, clean_velocity, rfm_target, training_sigmas, training_weight
from ..infra.lora import WAN_ANIMATE_TARGETS, LoraFile, parse_lora_state_dict, to_released_keys
from ..sampler import ChunkCondition
from ..infra.checkpoint import load_state, save_state
from ..infra.identity import config_diff, config_fingerprint

CHECKPOINT = "checkpoint"


# --------------------------------------------------------------------------------------- LoRA


@dataclass(frozen=True)
class LoraSpec:
    """Rank and target modules of a LoRA; ``alpha`` None means alpha = rank (scale 1, released)."""

    rank: int = 32
    targets: tuple[str, ...] = WAN_ANIMATE_TARGETS
    alpha: float | None = None

    def as_dict(self) -> dict:
        return {"rank": self.rank, "targets": list(self.targets), "alpha": self.alpha}


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def target_modules(model: nn.Module, spec: LoraSpec) -> dict[str, nn.Linear]:
    """The Linear modules a spec selects; ConfigError when a target matches nothing or does not fit."""
    if spec.rank < 1:
        raise ConfigError(f"LoRA rank must be >= 1, got {spec.rank}.")
    if not spec.targets:
        raise ConfigError("A LoRA needs at least one target module name.")
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    chosen: dict[str, nn.Linear] = {}
    for t in spec.targets:
        hits = {n: m for n, m in linears.items() if _matches(n, t)}
        if not hits:
            suffixes = sorted({n.split(".", 2)[-1] if n.startswith("blocks.") else n for n in linears})
            raise ConfigError(
                f"LoRA target {t!r} matches no Linear module of this model. Its Linear modules end in: "
                f"{', '.join(suffixes[:12])}{' ...' if len(suffixes) > 12 else ''}. For Wan2.2-Animate "
                f"use {list(WAN_ANIMATE_TARGETS)}; for EverAnimate-Tiny use ['qkv', 'o', 'ffn.0', 'ffn.2']."
            )
        chosen.update(hits)
    for n, m in chosen.items():
        if spec.rank > min(m.in_features, m.out_features):
            raise ConfigError(
                f"LoRA rank {spec.rank} does not fit {n} ({m.in_features} -> {m.out_features}): the rank "
                f"must be at most {min(m.in_features, m.out_features)}. Lower the rank."
            )
    return chosen


def add_lora(model: nn.Module, spec: LoraSpec, adapter: str = "default") -> nn.Module:
    """Inject PEFT LoRA layers in place (B = 0, so the model's output is unchanged) and freeze the
    base weights. Returns the same model object."""
    from peft import LoraConfig, inject_adapter_in_model

    names = sorted(target_modules(model, spec))
    cfg = LoraConfig(
        r=spec.rank,
        lora_alpha=spec.alpha if spec.alpha is not None else spec.rank,
        target_modules=names,
        lora_dropout=0.0,
        bias="none",
    )
    inject_adapter_in_model(cfg, model, adapter_name=adapter)
    for n, p in model.named_parameters():
        p.requires_grad_(".lora_" in n)
    return model


def _lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """module path -> PEFT LoRA layer (a module with a non-empty ``lora_A`` ModuleDict)."""
    return {
        n: m for n, m in model.named_modules()
        if isinstance(getattr(m, "lora_A", None), nn.ModuleDict) and len(m.lora_A)
    }


def lora_pairs(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """module path -> (A [r, in], B [out, r]) of the model's (first) LoRA adapter."""
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for n, m in _lora_layers(model).items():
        key = next(iter(m.lora_A.keys()))
        scale = float(m.scaling[key])
        b = m.lora_B[key].weight.detach()
        pairs[n] = (m.lora_A[key].weight.detach(), b * scale if scale != 1.0 else b)
    if not pairs:
        raise ConfigError("The model carries no LoRA adapter; call add_lora first.")
    return pairs


def export_released(model: nn.Module, path: str | Path, metadata: dict | None = None) -> dict[str, torch.Tensor]:
    """Write the model's LoRA in the authors' released format (``.lora_A.default.weight``, no alpha)."""
    from safetensors.torch import save_file

    sd = {k: v.detach().float().contiguous() for k, v in to_released_keys(lora_pairs(model)).items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(sd, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
    _sort_header(tmp)
    tmp.replace(path)
    return sd


def _sort_header(path: Path) -> None:
    """Rewrite a safetensors header as sorted JSON: safetensors writes its metadata map in a
    per-process order, so two runs of one seeded command gave files differing in the header only.
    Offsets are relative to the data section, so only the header length changes."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.dumps(json.loads(raw[8 : 8 + n]), sort_keys=True, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)  # keep the data 8-byte aligned, as safetensors does
    path.write_bytes(len(header).to_bytes(8, "little") + header + raw[8 + n :])


def load_lora_weights(model: nn.Module, lora: LoraFile | dict) -> None:
    """Copy a LoRA file's A/B into the model's PEFT layers (shapes must match exactly)."""
    if not isinstance(lora, LoraFile):
        lora = parse_lora_state_dict(lora)
    layers = _lora_layers(model)
    missing = [n for n in lora.modules if n not in layers]
    if missing:
        raise ConfigError(f"LoRA modules not in this model: {missing[:5]}.")
    for name, mod in lora.modules.items():
        layer = layers[name]
        key = next(iter(layer.lora_A.keys()))
        a, b = layer.lora_A[key].weight, layer.lora_B[key].weight
        if tuple(a.shape) != tuple(mod.A.shape) or tuple(b.shape) != tuple(mod.B.shape):
            raise ConfigError(
                f"LoRA module {name}: file has A {tuple(mod.A.shape)}, B {tuple(mod.B.shape)}; the model's "
                f"adapter has A {tuple(a.shape)}, B {tuple(b.shape)} (another rank or model)."
            )
        with torch.no_grad():
            a.copy_(mod.A.to(a.dtype))
            b.copy_((mod.B.float() * mod.scale / float(layer.scaling[key])).to(b.dtype))


@torch.no_grad()
def merge_lora(model: nn.Module, lora: LoraFile | dict, strength: float = 1.0) -> list[str]:
    """Add ``strength * B @ A * scale`` to the weights of a plain model (no PEFT layers), the way
    ComfyUI patches weights. Returns the merged module names; ConfigError on any unmatched module."""
    if not isinstance(lora, LoraFile):
        lora = parse_lora_state_dict(lora)
    modules = dict(model.named_modules())
    missing = [n for n in lora.modules if not isinstance(modules.get(n), nn.Linear)]
    if missing:
        raise ConfigError(
            f"{len(missing)} of {len(lora.modules)} LoRA modules are not Linear modules of this model "
            f"(first: {missing[:5]}). The LoRA was made for another model."
        )
    for name, mod in lora.modules.items():
        w = modules[name].weight
        delta = mod.delta_weight(torch.float32)
        if tuple(delta.shape) != tuple(w.shape):
            raise ConfigError(f"LoRA module {name}: update {tuple(delta.shape)} does not fit weight {tuple(w.shape)}.")
        w.add_((strength * delta).to(w.dtype))
    return list(lora.modules)


# ---------------------------------------------------------------------------------- objective


LOSS_SLOTS = ("all", "generated")


@dataclass(frozen=True)
class RFMObjective:
    """Stage 1 (latent memory: plain flow matching on memory windows) or stage 2 (restorative).

    schedule: alpha(s) (release: gaussian_timestep, w 1; ``fixed`` with weight 0 is the alpha = 0
    ablation). degrade_p / draws / sigma_gate: the degraded pair is used with probability
    ``degrade_p ** draws`` where ``sigma >= sigma_gate``. weighting: multiply each sample's loss by
    the release's timestep weight. slots: ``all`` K + G slots (the release) or ``generated`` (slots
    K.. only, as EverAnimate-Tiny's base was trained: its anchor slots are thrown away after sampling).
    """

    stage: int = 2
    schedule: AlphaSchedule = AlphaSchedule()
    degrade_p: float = 0.8
    draws: int = 2
    sigma_gate: float = 0.5
    shift: float = defaults.SHIFT
    weighting: bool = True
    slots: str = "all"

    def __post_init__(self) -> None:
        if self.slots not in LOSS_SLOTS:
            raise ConfigError(f"slots must be one of {LOSS_SLOTS}, got {self.slots!r}.")
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 (latent memory) or 2 (restorative), got {self.stage}.")
        if not 0 <= self.degrade_p <= 1:
            raise ConfigError(f"degrade_p must be in [0, 1], got {self.degrade_p}.")

    def as_dict(self) -> dict:
        d = asdict(self)
        d["schedule"] = asdict(self.schedule)
        if self.slots == "all":  # the default stays out, so earlier run folders keep their fingerprint
            del d["slots"]
        return d


@dataclass
class TrainingBatch:
    """x0 [B, C, K+G, h, w] clean latents (anchor slots first); x0_degraded: the same with the
    generated slots degraded (anchor slots clean), or None; cond: the chunk condition."""

    x0: torch.Tensor
    cond: ChunkCondition
    x0_degraded: torch.Tensor | None = None


def rfm_loss(
    denoiser: Callable[[torch.Tensor, torch.Tensor, ChunkCondition], torch.Tensor],
    batch: TrainingBatch,
    objective: RFMObjective,
    gen: torch.Generator,
) -> tuple[torch.Tensor, dict]:
    """The training loss of one batch and a few statistics (fraction degraded, mean sigma)."""
    x0 = batch.x0
    b = x0.shape[0]
    grid = training_sigmas(objective.shift)
    sig = grid[torch.randint(len(grid), (b,), generator=gen)]
    noise = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    draws = torch.rand((b, max(1, objective.draws)), generator=gen)
    use = (draws < objective.degrade_p).all(dim=1) & (sig >= objective.sigma_gate)
    if objective.stage == 1 or batch.x0_degraded is None:
        use = torch.zeros_like(use)
    view = (-1,) + (1,) * (x0.dim() - 1)
    s = sig.view(view).to(x0.dtype)
    x_in = add_noise(x0, noise, s)
    target = clean_velocity(x0, noise)
    if bool(use.any()):
        x_aug, t_aug = rfm_target(x0, batch.x0_degraded, noise, sig, objective.schedule)
        u = use.view(view)
        x_in = torch.where(u, x_aug, x_in)
        target = torch.where(u, t_aug, target)
    pred = denoiser(x_in, sig, batch.cond)
    err = (pred.float() - target.float()) ** 2
    if objective.slots == "generated":
        err = err[:, :, batch.cond.anchors :]
    per = err.flatten(1).mean(dim=1)
    if objective.weighting:
        per = per * training_weight(sig, objective.shift)
    return per.mean(), {"degraded": float(use.float().mean()), "sigma": float(sig.mean())}


# ----------------------------------------------------------------------------------- the loop


@dataclass(frozen=True)
class LoopConfig:
    steps: int = 800
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup: int = 50
    grad_clip: float = 1.0
    seed: int = 0
    checkpoint_every: int = 100

    def as_dict(self) -> dict:
        return asdict(self)


def warmup_cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine decay to 0 at ``total``."""
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def _lr_at(step: int, cfg: LoopConfig) -> float:
    return warmup_cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup)


@dataclass
class TrainResult:
    steps_done: int
    resumed_from: int
    wall_s: float
    losses: list[float] = field(default_factory=list)
    degraded_fraction: float = 0.0


def opt_tensors(opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """AdamW's state of ``params`` as named tensors (for :func:`infra.checkpoint.save_state`)."""
    out = {}
    for i, p in enumerate(params):
        st = opt.state.get(p, {})
        for k in ("exp_avg", "exp_avg_sq"):
            if k in st:
                out[f"opt.{i}.{k}"] = st[k]
        if "step" in st:
            out[f"opt.{i}.step"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1)
    return out


def restore_opt(opt: torch.optim.Optimizer, params: list[torch.Tensor], tensors: dict[str, torch.Tensor]) -> None:
    """The inverse of :func:`opt_tensors`."""
    for i, p in enumerate(params):
        if f"opt.{i}.exp_avg" in tensors:
            opt.state[p] = {
                "step": torch.tensor(float(tensors[f"opt.{i}.step"][0])),
                "exp_avg": tensors[f"opt.{i}.exp_avg"].clone(),
                "exp_avg_sq": tensors[f"opt.{i}.exp_avg_sq"].clone(),
            }


def train_lora(
    model: nn.Module,
    denoiser: Callable[[torch.Tensor, torch.Tensor, ChunkCondition], torch.Tensor],
    next_batch: Callable[[torch.Generator], TrainingBatch],
    objective: RFMObjective,
    loop: LoopConfig,
    out_dir: str | Path,
    config: dict,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_after: int | None = None,
) -> TrainResult:
    """Train the LoRA parameters of ``model`` (see :func:`add_lora`); resumable.

    ``config`` describes everything that shapes the run (model, data, LoRA spec); together with
    the objective and loop settings it forms the checkpoint fingerprint. ``next_batch(gen)`` draws
    a batch with the run's generator, so a resumed run draws exactly what an uninterrupted one
    would. ``stop_after`` ends the call after that many steps (checkpointing first).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    full = {"run": config, "objective": objective.as_dict(), "loop": loop.as_dict()}
    fp = config_fingerprint(full)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise ConfigError("No trainable parameters: add a LoRA (add_lora) before training.")
    params = [p for _, p in named]
    opt = torch.optim.AdamW(params, lr=loop.lr, weight_decay=loop.weight_decay)
    gen = torch.Generator().manual_seed(loop.seed)
    start = 0
    if (out / f"{CHECKPOINT}.json").exists():
        tensors, meta = load_state(out, CHECKPOINT)
        if meta.get("fingerprint") != fp:
            diff = config_diff(meta.get("config", {}), full) if meta.get("config") else []
            raise ResumeStateError(
                f"The checkpoint in {out} was made with another configuration"
                + (f" ({'; '.join(diff[:6])})" if diff else "")
                + ". Use a new --out folder, or rerun with the settings it was made with."
            )
        with torch.no_grad():
            for i, (n, p) in enumerate(named):
                p.copy_(tensors[f"param.{i}"])
        restore_opt(opt, params, tensors)
        gen.set_state(tensors["rng"].to(torch.uint8))
        start = int(meta["step"])
        log(f"resuming at step {start} of {loop.steps} from {out}")

    def checkpoint(step: int) -> None:
        tensors = {f"param.{i}": p.detach() for i, (_, p) in enumerate(named)}
        tensors.update(opt_tensors(opt, params))
        tensors["rng"] = gen.get_state()
        save_state(out, CHECKPOINT, tensors, {"fingerprint": fp, "config": full, "step": step,
                                              "names": [n for n, _ in named]})

    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=loop.steps, initial=start, desc=f"stage {objective.stage}", dynamic_ncols=True, mininterval=1.0)
        except ImportError:  # pragma: no cover
            bar = None
    result = TrainResult(steps_done=start, resumed_from=start, wall_s=0.0)
    t0 = time.perf_counter()
    model.train()
    degraded = []
    step = start
    for step in range(start, loop.steps):
        if stop_after is not None and step - start >= stop_after:
            break
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, loop)
        batch = next_batch(gen)
        loss, info = rfm_loss(denoiser, batch, objective, gen)
        if not torch.isfinite(loss):
            checkpoint(step)
            raise ConfigError(f"The loss became {loss.item()} at step {step}; lower the learning rate.")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if loop.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, loop.grad_clip)
        opt.step()
        result.losses.append(loss.item())
        degraded.append(info["degraded"])
        result.steps_done = step + 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", degraded=f"{info['degraded']:.2f}")
        elif step % 100 == 0:
            log(f"stage {objective.stage} step {step} loss {loss.item():.4f}")
        if (step + 1) % loop.checkpoint_every == 0:
            checkpoint(step + 1)
    if bar is not None:
        bar.close()
    model.eval()
    checkpoint(result.steps_done)
    result.wall_s = time.perf_counter() - t0
    result.degraded_fraction = float(sum(degraded) / len(degraded)) if degraded else 0.0
    return result


__all__ = [
    "CHECKPOINT",
    "LoopConfig",
    "LoraSpec",
    "RFMObjective",
    "TrainResult",
    "TrainingBatch",
    "add_lora",
    "export_released",
    "load_lora_weights",
    "lora_pairs",
    "merge_lora",
    "warmup_cosine_lr",
    "rfm_loss",
    "target_modules",
    "train_lora",
]
