"""What flows through the pack's custom sockets, and where it lives on disk.

The granular nodes pass small handles, never growing tensors, so a graph of any number of chunks
keeps memory bounded even though ComfyUI caches every node output:

- EVERANIMATE_MEMORY carries a ``GraphMemory``: the latent memory (K anchors, the motion latent,
  the last frame), the reference frame and the session folder;
- EVERANIMATE_CHUNK carries a ``ChunkHandle``: which chunk of which plan, and the session folder in
  which the chunk's latents were saved (``latents_00003.safetensors``). Memory Propagate stores the
  decoded, overlap-trimmed frames next to them (``frames_00003.mkv``, lossless), so Decode & Stitch
  streams finished chunks from disk and only decodes what no one decoded yet.

This module does not import ComfyUI.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from everanimate_core.errors import ConfigError, ResumeStateError
from everanimate_core.memory import LatentMemory
from everanimate_core.plan import ChunkPlan, ChunkSettings, ChunkWindow

MEMORY_TYPE = "EVERANIMATE_MEMORY"
CHUNK_TYPE = "EVERANIMATE_CHUNK"


@dataclass
class GraphMemory:
    """The EVERANIMATE_MEMORY socket value."""

    memory: LatentMemory
    reference: np.ndarray  # uint8 [H, W, 3], already resized to the generation size
    session_dir: str
    width: int
    height: int
    resize_mode: str = "crop"  # how Memory Init fitted the reference; the pose video is fitted alike

    @property
    def chunk_index(self) -> int:
        return self.memory.chunk_index


@dataclass
class ChunkHandle:
    """The EVERANIMATE_CHUNK socket value: a pointer to one sampled chunk on disk."""

    session_dir: str
    index: int
    plan_total: int
    settings: dict
    chunks: list[dict] = field(default_factory=list)
    fps_hint: float | None = None  # the pose VIDEO's frame rate (None for an IMAGE pose input)
    pose_window: np.ndarray | None = None  # chunk 0 only, for the pose_diverse anchor policy
    audio: Any = None  # the pose VIDEO's own sound (an AudioTrack), for Decode & Stitch

    @property
    def window(self) -> ChunkWindow:
        return ChunkWindow(**self.chunks[self.index])

    @property
    def num_chunks(self) -> int:
        return len(self.chunks)

    @property
    def chunk_settings(self) -> ChunkSettings:
        return ChunkSettings(**self.settings)


def plan_to_dicts(plan: ChunkPlan) -> list[dict]:
    return [asdict(c) for c in plan.chunks]


def session_dir_for(root: Path, name: str, parts: dict) -> Path:
    """A session folder named after the user's prefix and a hash of what defines the session."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "everanimate"
    return root / f"{safe}_{digest}"


def latents_path(session_dir: str | Path, index: int) -> Path:
    return Path(session_dir) / f"latents_{int(index):05d}.safetensors"


def frames_path(session_dir: str | Path, index: int) -> Path:
    return Path(session_dir) / f"frames_{int(index):05d}.mkv"


def save_chunk_latents(session_dir: str | Path, index: int, latents: torch.Tensor) -> Path:
    """Save a chunk's generated latents (model space) atomically."""
    p = latents_path(session_dir, index)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    save_file({"latents": latents.detach().float().cpu().contiguous()}, str(tmp))
    tmp.replace(p)
    return p


def load_chunk_latents(session_dir: str | Path, index: int) -> torch.Tensor:
    p = latents_path(session_dir, index)
    if not p.exists():
        raise ResumeStateError(
            f"Chunk {index}'s latents are missing from {p.parent}. Run its Chunk Sampler again "
            "(the session folder may have been deleted)."
        )
    try:
        return load_file(str(p))["latents"]
    except Exception as e:  # safetensors raises several types for damaged files
        raise ResumeStateError(f"{p} is damaged ({e}); run chunk {index}'s sampler again.") from None


def check_chunk_follows(memory: GraphMemory, handle: ChunkHandle) -> None:
    """Memory Propagate must get the chunk made FROM this memory."""
    if handle.index != memory.chunk_index:
        raise ConfigError(
            f"This memory is ready for chunk {memory.chunk_index} but the chunk input is chunk "
            f"{handle.index}. Connect the Chunk Sampler that used this memory."
        )
    if Path(handle.session_dir) != Path(memory.session_dir):
        raise ConfigError(
            "The chunk and the memory belong to different sessions (Latent Memory Init nodes). "
            "Wire the chunk sampler to the memory it should continue."
        )


UPSTREAM_INPUTS = ("model", "positive", "negative", "vae", "clip_vision", "reference_image", "pose_video", "face_video", "anchor_images")


def upstream_signature(prompt: dict | None, node_id: str | None) -> str:
    """Hash of every node feeding this one (models, LoRAs, prompts, input files) from the API
    prompt, so a run folder is never resumed with another model or other inputs."""
    if not prompt or node_id is None or node_id not in prompt:
        return ""
    seen: dict[str, dict] = {}

    def visit(nid: str) -> None:
        if nid in seen or nid not in prompt:
            return
        # ComfyUI writes each loader's IS_CHANGED result (a file's mtime, for Load Video) into the
        # prompt as "is_changed": leave it out, so a video copied back in place still resumes. The
        # content of the inputs enters the run configuration on its own (reference and video digests).
        node = {k: v for k, v in prompt[nid].items() if k != "is_changed"}
        seen[nid] = node
        for v in node.get("inputs", {}).values():
            if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str):
                visit(v[0])

    for name in UPSTREAM_INPUTS:
        v = prompt[node_id].get("inputs", {}).get(name)
        if isinstance(v, list) and len(v) == 2:
            visit(str(v[0]))
    return hashlib.sha256(json.dumps(seen, sort_keys=True, default=str).encode()).hexdigest()[:16]
