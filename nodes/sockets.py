"""What flows through the pack's custom sockets.

The granular nodes pass small handles, never growing tensors, so a graph of any number of chunks
keeps memory bounded even though ComfyUI caches every node output:

- EVERANIMATE_MEMORY carries a ``GraphMemory``: the latent memory (K anchors, the motion latent,
  the CLIP image), the reference frame and the session's run store;
- EVERANIMATE_CHUNK carries a ``ChunkHandle``: which chunk of which plan, in which store. The
  Chunk Sampler saves the chunk's latents there; Memory Propagate adds its decoded,
  overlap-trimmed frames, so Decode & Stitch streams finished chunks from disk and only decodes
  what no one decoded yet (``everanimate_core.infra.runs.RunStore``).

This module does not import ComfyUI.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from everanimate_core.errors import ConfigError
from everanimate_core.infra.runs import RunStore
from everanimate_core.memory import LatentMemory
from everanimate_core.plan import ChunkPlan, ChunkSettings, ChunkWindow

MEMORY_TYPE = "EVERANIMATE_MEMORY"
CHUNK_TYPE = "EVERANIMATE_CHUNK"


@dataclass
class GraphMemory:
    """The EVERANIMATE_MEMORY socket value."""

    memory: LatentMemory
    reference: np.ndarray  # uint8 [H, W, 3], already resized to the generation size
    store: RunStore
    width: int
    height: int
    resize_mode: str = "crop"  # how Memory Init fitted the reference; the pose video is fitted alike

    @property
    def chunk_index(self) -> int:
        return self.memory.chunk_index


@dataclass
class ChunkHandle:
    """The EVERANIMATE_CHUNK socket value: a pointer to one sampled chunk in a run store."""

    store: RunStore
    index: int
    plan_total: int
    settings: dict
    chunks: list[dict] = field(default_factory=list)
    fps_hint: float | None = None  # the pose VIDEO's frame rate (None for an IMAGE pose input)
    pose_window: np.ndarray | None = None  # chunk 0 only, for the pose_diverse anchor policy
    audio: Any = None  # the pose VIDEO's own sound (an AudioTrack), for Decode & Stitch
    reference: np.ndarray | None = None  # the reference frame, for Decode & Stitch's colour match
    sampled: bool = True  # False for a chunk from Chunk Conditioning until Memory Propagate gets its LATENT

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


def check_chunk_follows(memory: GraphMemory, handle: ChunkHandle) -> None:
    """Memory Propagate must get the chunk made FROM this memory."""
    if handle.index != memory.chunk_index:
        raise ConfigError(
            f"This memory is ready for chunk {memory.chunk_index} but the chunk input is chunk "
            f"{handle.index}. Connect the Chunk Sampler that used this memory."
        )
    if handle.store.path != memory.store.path:
        raise ConfigError(
            "The chunk and the memory belong to different sessions (Latent Memory Init nodes). "
            "Wire the chunk sampler to the memory it should continue."
        )


UPSTREAM_INPUTS = ("model", "positive", "negative", "vae", "clip_vision", "reference_image", "pose_video", "face_video", "anchor_images", "sampler", "sigmas")


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
