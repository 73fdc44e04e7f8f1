"""The pack's ComfyExtension: the list of nodes ComfyUI registers."""

from __future__ import annotations

from .api_version import ComfyExtension, io

from .granular_nodes import ChunkConditioning, ChunkSampler, DecodeStitch, LatentMemoryInit, MemoryPropagate
from .long_node import LongAnimation
from .lora_node import LoadEverAnimateLoRA

NODES: list[type[io.ComfyNode]] = [
    LoadEverAnimateLoRA,
    LatentMemoryInit,
    ChunkSampler,
    ChunkConditioning,
    MemoryPropagate,
    DecodeStitch,
    LongAnimation,
]


class EverAnimateExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)
