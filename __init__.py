"""EverAnimate for ComfyUI: ComfyUI loads this file; it exposes ``comfy_entrypoint`` and ``WEB_DIRECTORY``.

Nothing from ComfyUI is imported at module import time, so the core library (everanimate_core)
stays importable and testable without ComfyUI.
"""

import os
import sys

_PACK_DIR = os.path.dirname(os.path.abspath(__file__))
if _PACK_DIR not in sys.path:
    # Lets the nodes import the bundled core library as ``everanimate_core``.
    sys.path.append(_PACK_DIR)


# The frontend extension (new EverAnimate nodes start with a fixed seed control) and node docs.
WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    """ComfyUI's V3 entry point: returns the pack's extension with its node list."""
    from .nodes.extension import EverAnimateExtension

    return EverAnimateExtension()
