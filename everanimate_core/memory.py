"""Persistent Latent Propagation: the latent memory carried from chunk to chunk.

The memory is an immutable record. ``init_memory`` makes the state before chunk 0 (the reference
latent repeated K times, no motion latent); ``propagate`` makes the state before the next chunk:

- motion: the chunk's last generated latent(s), taken from the sampler output in latent space,
  never decoded and re-encoded;
- anchors: built ONCE, after chunk 0, from chunk 0's decoded frames by the anchor policy, each frame
  encoded on its own (a batch of frames encoded as a video would be merged by the causal VAE); the
  reference latent sits in the last slot; frozen afterwards;
- last_frame: the previous chunk's last decoded frame (the CLIP image of the next chunk).

After chunk 0 nothing generated is ever re-encoded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import ConfigError, ResumeStateError

ANCHOR_POLICIES: tuple[str, ...] = (
    "random_plus_reference",
    "repeat_reference",
    "pose_diverse",
    "user",
)

EncodeFrame = Callable[[np.ndarray], torch.Tensor]
"""Encodes ONE uint8 frame [H, W, 3] into a single latent [C, 1, h, w] in model space."""


@dataclass(frozen=True)
class LatentMemory:
    """What chunk ``chunk_index`` needs from the past.

    anchors: [C, K, h, w] model-space anchor latents. motion: [C, M, h, w] or None before chunk 0.
    reference: [C, 1, h, w] the reference latent. last_frame: uint8 [H, W, 3] or None.
    anchor_policy / anchor_seed / anchor_indices: how the anchors were (or will be) chosen; the
    indices are recorded once picked, so a run is reproducible and resumable.
    fingerprint: the configuration this memory belongs to (refuses to mix runs).
    """

    anchors: torch.Tensor
    reference: torch.Tensor
    motion: torch.Tensor | None = None
    chunk_index: int = 0
    last_frame: np.ndarray | None = None
    anchor_policy: str = "random_plus_reference"
    anchor_seed: int = 0
    anchor_indices: tuple[int, ...] = field(default_factory=tuple)
    fingerprint: str = ""

    @property
    def num_anchors(self) -> int:
        return int(self.anchors.shape[1])

    def to_state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, meta) for a safetensors + JSON checkpoint (no pickle)."""
        tensors = {"anchors": self.anchors, "reference": self.reference}
        if self.motion is not None:
            tensors["motion"] = self.motion
        if self.last_frame is not None:
            tensors["last_frame"] = torch.from_numpy(np.ascontiguousarray(self.last_frame))
        meta = {
            "chunk_index": self.chunk_index,
            "anchor_policy": self.anchor_policy,
            "anchor_seed": self.anchor_seed,
            "anchor_indices": list(self.anchor_indices),
            "fingerprint": self.fingerprint,
        }
        return tensors, meta

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict) -> "LatentMemory":
        """Inverse of ``to_state``; raises ResumeStateError when something is missing."""
        try:
            last = tensors.get("last_frame")
            return cls(
                anchors=tensors["anchors"],
                reference=tensors["reference"],
                motion=tensors.get("motion"),
                chunk_index=int(meta["chunk_index"]),
                last_frame=None if last is None else last.numpy(),
                anchor_policy=str(meta["anchor_policy"]),
                anchor_seed=int(meta["anchor_seed"]),
                anchor_indices=tuple(int(i) for i in meta["anchor_indices"]),
                fingerprint=str(meta["fingerprint"]),
            )
        except KeyError as e:
            raise ResumeStateError(
                f"The memory checkpoint lacks {e}; it was not written by this version. "
                "Start the run over in a new run folder."
            ) from None


def init_memory(
    reference_latent: torch.Tensor,
    num_anchors: int,
    policy: str = "random_plus_reference",
    anchor_seed: int = 0,
    user_anchor_latents: Sequence[torch.Tensor] = (),
    fingerprint: str = "",
) -> LatentMemory:
    """The memory before chunk 0.

    reference_latent: [C, 1, h, w] the reference image encoded on its own. For every policy but
    ``user`` chunk 0 sees the reference repeated K times; ``user`` uses the given anchor latents
    (each [C, 1, h, w]) in the first slots and the reference in the last, from chunk 0 on.
    """
    if policy not in ANCHOR_POLICIES:
        raise ConfigError(f"Unknown anchor policy {policy!r}; choose one of {ANCHOR_POLICIES}.")
    if num_anchors < 1:
        raise ConfigError(f"K (anchor latents) must be at least 1, got {num_anchors}.")
    ref = _check_single_latent(reference_latent, "reference latent")
    if policy == "user":
        if not user_anchor_latents:
            raise ConfigError(
                "The 'user' anchor policy needs anchor images; connect them or pick another policy."
            )
        if len(user_anchor_latents) > num_anchors - 1:
            raise ConfigError(
                f"{len(user_anchor_latents)} anchor images were given but K = {num_anchors} leaves "
                f"room for {num_anchors - 1} besides the reference. Raise K or give fewer images."
            )
        user = [_check_single_latent(a, "anchor image latent") for a in user_anchor_latents]
        slots = user + [ref] * (num_anchors - len(user))
        anchors = torch.cat(slots, dim=1)
    else:
        anchors = ref.repeat(1, num_anchors, 1, 1)
    return LatentMemory(
        anchors=anchors,
        reference=ref,
        anchor_policy=policy,
        anchor_seed=int(anchor_seed),
        fingerprint=fingerprint,
    )


def _check_single_latent(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.dim() != 4 or x.shape[1] != 1:
        raise ConfigError(f"The {what} must be one latent [C, 1, h, w]; got {tuple(x.shape)}.")
    return x


def random_anchor_indices(num_frames: int, count: int, seed: int) -> list[int]:
    """The release's pick: ``count`` distinct frames in 1..num_frames-1, sorted, but SEEDED."""
    candidates = np.arange(1, num_frames)
    if count > len(candidates):
        raise ConfigError(
            f"Cannot pick {count} anchor frames from a {num_frames}-frame chunk; lower K."
        )
    rng = np.random.RandomState(seed)
    return sorted(int(i) for i in rng.choice(candidates, count, replace=False))


def pose_diverse_indices(pose_frames: np.ndarray, count: int) -> list[int]:
    """Frames whose skeletons differ most from frame 0 and from each other (greedy farthest point).

    pose_frames: uint8 [F, H, W, 3] rendered skeletons of chunk 0's window.
    """
    f = len(pose_frames)
    if count > f - 1:
        raise ConfigError(f"Cannot pick {count} pose-diverse frames from {f} frames; lower K.")
    x = torch.as_tensor(np.asarray(pose_frames)).float().reshape(f, -1) / 255.0
    chosen = [0]
    dist = (x - x[0]).abs().mean(dim=1)
    picks: list[int] = []
    for _ in range(count):
        d = dist.clone()
        d[chosen] = -1
        i = int(torch.argmax(d))
        picks.append(i)
        chosen.append(i)
        dist = torch.minimum(dist, (x - x[i]).abs().mean(dim=1))
    return sorted(picks)


def propagate(
    memory: LatentMemory,
    chunk_latents: torch.Tensor,
    decoded_frames: np.ndarray | None,
    encode_frame: EncodeFrame | None,
    motion_latents: int = 1,
    pose_frames: np.ndarray | None = None,
) -> LatentMemory:
    """The memory after the chunk ``memory.chunk_index`` produced ``chunk_latents`` [C, G, h, w].

    The motion latent is sliced from ``chunk_latents`` (latent space, no VAE round trip). After
    chunk 0 only, the anchors are rebuilt from chunk 0's ``decoded_frames`` (uint8 [F, H, W, 3])
    with ``encode_frame`` per picked frame; later chunks never call ``encode_frame``.
    """
    if chunk_latents.dim() != 4:
        raise ConfigError(f"chunk latents must be [C, G, h, w]; got {tuple(chunk_latents.shape)}.")
    if chunk_latents.shape[0] != memory.anchors.shape[0] or chunk_latents.shape[2:] != memory.anchors.shape[2:]:
        raise ConfigError(
            f"chunk latents {tuple(chunk_latents.shape)} do not match the memory's anchors "
            f"{tuple(memory.anchors.shape)}: was the memory made with another VAE or resolution?"
        )
    motion = chunk_latents[:, chunk_latents.shape[1] - motion_latents:].clone() if motion_latents else None
    anchors, indices = memory.anchors, memory.anchor_indices
    if memory.chunk_index == 0 and memory.anchor_policy in ("random_plus_reference", "pose_diverse"):
        k = memory.num_anchors
        if k > 1:
            if decoded_frames is None or encode_frame is None:
                raise ConfigError(
                    f"Anchor policy {memory.anchor_policy!r} builds anchors from chunk 0's frames: "
                    "pass the decoded frames and a VAE."
                )
            # A chunk 0 shorter than K frames (a video shorter than one chunk) gives fewer picks;
            # the reference fills the remaining slots.
            room = len(decoded_frames) - 1
            if memory.anchor_policy == "random_plus_reference":
                indices = tuple(random_anchor_indices(len(decoded_frames), min(k - 1, room), memory.anchor_seed))
            else:
                if pose_frames is None:
                    raise ConfigError("The pose_diverse anchor policy needs chunk 0's pose frames.")
                indices = tuple(pose_diverse_indices(pose_frames, min(max(1, k - 2), room)))
            picked = [encode_frame(np.asarray(decoded_frames[i])) for i in indices]
            slots = picked + [memory.reference] * (k - len(picked))
            anchors = torch.cat([s.to(memory.anchors.dtype) for s in slots], dim=1)
    last = None if decoded_frames is None else np.array(decoded_frames[-1], copy=True)
    return replace(
        memory,
        anchors=anchors,
        motion=motion,
        chunk_index=memory.chunk_index + 1,
        last_frame=last,
        anchor_indices=tuple(indices),
    )


def describe(memory: LatentMemory) -> str:
    """One-line human summary (for logs and node previews)."""
    info = {
        "chunk": memory.chunk_index,
        "K": memory.num_anchors,
        "policy": memory.anchor_policy,
        "anchor_frames": list(memory.anchor_indices),
        "motion": None if memory.motion is None else list(memory.motion.shape),
    }
    return json.dumps(info)
