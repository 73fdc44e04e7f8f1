"""Run folders: resumable long animations whose memory does not grow with the video.

A run folder holds, per finished chunk, the latent memory after it (safetensors + JSON, see
``state.RunFolder``) and the frames it contributed as a lossless FFV1 segment
(``frames_00007.mkv``). Nothing else is kept in RAM between chunks, which is also how a graph of
the granular ComfyUI nodes stays bounded: their sockets carry a run-folder path and a chunk index,
not growing tensors.

Resuming replays the finished segments into the new output video, then continues with the memory
of the last finished chunk: the result is identical to an uninterrupted run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import av
import numpy as np

from .errors import ResumeStateError
from .memory import LatentMemory
from .state import RunFolder


def write_segment(path: str | os.PathLike[str], frames: np.ndarray) -> None:
    """Write uint8 frames [N, H, W, 3] losslessly (FFV1 in Matroska), atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    frames = np.ascontiguousarray(frames)
    n, h, w, _ = frames.shape
    try:
        with av.open(str(tmp), "w", format="matroska") as container:
            stream = container.add_stream("ffv1", rate=1)
            stream.width, stream.height, stream.pix_fmt = w, h, "bgr0"
            for f in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_segment(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a segment written by ``write_segment`` back to identical uint8 frames."""
    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.error.FFmpegError, OSError) as e:
        raise ResumeStateError(
            f"The frame segment {str(path)!r} cannot be read ({e}); it is corrupted or missing. "
            "Delete the run folder (or choose another) to start over."
        ) from None
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)


class AnimationRun:
    """A resumable run in ``path`` for the given configuration (any JSON-able mapping)."""

    def __init__(self, path: str | os.PathLike[str], config: Mapping[str, Any]):
        self.folder = RunFolder(path, config)
        self.path = self.folder.path

    @property
    def fingerprint(self) -> str:
        return self.folder.fingerprint

    def segment_path(self, index: int) -> Path:
        return self.path / f"frames_{int(index):05d}.mkv"

    def finished(self) -> int:
        """Number of chunks finished in a row from chunk 0."""
        last = self.folder.last_finished()
        return 0 if last is None else last + 1

    def resume(self, sink=None) -> LatentMemory | None:
        """Validate the folder; replay finished frames into ``sink``; return the memory to go on.

        Returns None for a new (or empty) run. Raises ResumeStateError for a folder made with
        other settings, or a corrupted/truncated checkpoint or segment.
        """
        self.folder.open_or_create()
        done = self.finished()
        if done == 0:
            return None
        if sink is not None:
            for i in range(done):
                seg = self.segment_path(i)
                if not seg.exists():
                    raise ResumeStateError(
                        f"The run folder lacks {seg.name} for finished chunk {i}. "
                        "Delete the run folder (or choose another) to start over."
                    )
                sink.write(read_segment(seg))
        tensors, meta = self.folder.load_chunk(done - 1)
        memory = LatentMemory.from_state(tensors, meta.get("memory", {}))
        if memory.fingerprint and memory.fingerprint != self.fingerprint:
            raise ResumeStateError("The memory checkpoint belongs to another configuration; start over.")
        return memory

    def save_chunk(self, index: int, memory: LatentMemory, kept_frames: np.ndarray) -> None:
        """Store the chunk's frames, then its memory; the chunk counts once both are on disk."""
        self.folder.open_or_create()
        write_segment(self.segment_path(index), kept_frames)
        tensors, meta = memory.to_state()
        self.folder.save_chunk(index, tensors, {"memory": meta, "frames": int(len(kept_frames))})

    def remove(self) -> int:
        """Delete the run's checkpoints, frame segments and progress record once the video is done.

        Only files a run writes are removed (``chunk_*``, ``frames_*``, ``progress.json`` and their
        temporary or backup copies); the folder goes too when nothing else is left in it. Returns
        the number of bytes freed.
        """
        freed = 0
        if not self.path.is_dir():
            return 0
        for p in self.path.iterdir():
            name = p.name.lstrip(".")
            if p.is_file() and (name.startswith(("chunk_", "frames_", "progress")) or name == RunFolder.PROGRESS):
                freed += p.stat().st_size
                p.unlink()
        try:
            self.path.rmdir()
        except OSError:
            pass  # the user keeps other files there
        return freed

    def load_memory(self, index: int) -> LatentMemory:
        """Memory after finished chunk ``index`` (granular nodes use this)."""
        tensors, meta = self.folder.load_chunk(index)
        return LatentMemory.from_state(tensors, meta.get("memory", {}))
