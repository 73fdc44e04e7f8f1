"""Two-level progress (chunk k of N, and sampler steps), per-chunk previews, and Cancel."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("EverAnimate")


def check_cancel() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed Cancel."""
    import comfy.model_management

    comfy.model_management.throw_exception_if_processing_interrupted()


def _preview(frame: np.ndarray):
    from PIL import Image

    return ("JPEG", Image.fromarray(np.ascontiguousarray(frame)), 512)


class ChunkProgress:
    """Drives one ComfyUI progress bar over chunks x steps, with a preview image per chunk."""

    def __init__(self, num_chunks: int, steps: int, node_id: str | None = None, first_chunk: int = 0):
        import comfy.utils

        self.num_chunks, self.steps, self.node_id = num_chunks, steps, node_id
        self.bar = comfy.utils.ProgressBar(max(1, num_chunks * steps), node_id=node_id)
        self.bar.update_absolute(first_chunk * steps)

    def text(self, message: str) -> None:
        log.info(message)
        if self.node_id is None:
            return
        try:
            from server import PromptServer

            PromptServer.instance.send_progress_text(message, self.node_id)
        except Exception:  # headless use without a server
            pass

    def on_step(self, chunk: int, step: int, total: int, x=None) -> None:
        check_cancel()
        self.bar.update_absolute(chunk * self.steps + step)

    def between_chunks(self, chunk: int) -> None:
        check_cancel()
        self.text(f"EverAnimate: chunk {chunk + 1} of {self.num_chunks}")

    def chunk_done(self, chunk: int, last_frame: np.ndarray | None) -> None:
        preview = None if last_frame is None else _preview(last_frame)
        self.bar.update_absolute((chunk + 1) * self.steps, preview=preview)
