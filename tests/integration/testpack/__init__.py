"""Test-only ComfyUI pack: stands in for the UMT5 text encoder (no small one exists for Wan) and for
CLIP vision (the parity fixtures use an image-dependent fake). Loaded only by the integration tests."""

import torch
from comfy_api.v0_0_2 import ComfyExtension, io


class ZeroTextConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EATestZeroTextConditioning",
            category="testing",
            description="CONDITIONING of zeros [1, 512, 4096] (the Wan text context shape).",
            inputs=[],
            outputs=[io.Conditioning.Output(display_name="conditioning")],
        )

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput([[torch.zeros(1, 512, 4096), {}]])


class TestExtension(ComfyExtension):
    async def get_node_list(self):
        return [ZeroTextConditioning]


async def comfy_entrypoint():
    return TestExtension()
