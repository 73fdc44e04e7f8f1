"""The run store: everything a run keeps on disk, for Long Animation and the granular nodes alike.

A run lives in one folder, tied to one configuration (settings + input identities, see
``identity``): ``progress.json`` (the ledger of finished chunks), per finished chunk the latent
memory after it (``chunk_00007``, a checked checkpoint) and the frames it contributed as a lossless
FFV1 segment (``frames_00007.mkv``), and, for the granular nodes, each sampled chunk's latents
(``latents_00007``). A folder made with another configuration is refused, naming what differs;
every tensor file is verified against its recorded sha256 before it is read. Nothing grows in RAM
with the video: the granular nodes' sockets carry a store and a chunk index, not tensors.

Resuming replays the finished segments into the new output video, then continues with the memory
of the last finished chunk: the result is identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import av
import numpy as np
import torch

from ..errors import ConfigError, ResumeStateError
from ..memory import LatentMemory
from .checkpoint import START_OVER, load_state, save_state, write_text_atomic
from .identity import canonical_config, config_fingerprint, mismatch_message

RUN_FORMAT_VERSION = 1
"""Version of ``progress.json`` written by :class:`RunFolder`."""
_RUN_KIND = "everanimate-run"


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


def folder_name(text: str) -> str:
    """A user's name made safe as one folder name (letters, digits, '-' and '_')."""
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text) or "everanimate"




class RunFolder:
    """Bookkeeping for a run directory holding one checkpoint per finished chunk.

    Layout: ``chunk_00000.safetensors``/``.json``, ... and ``progress.json`` (format
    version, fingerprint, config, sorted list of finished chunks). A chunk counts as
    finished only once ``progress.json`` lists it, and that update happens after the
    chunk's checkpoint is fully written; a crash in between only means that chunk is
    recomputed. All state lives on disk (nothing that matters is cached in the object),
    so separate processes can use the same folder one after another, e.g. a ComfyUI
    restart resuming a run.
    """

    PROGRESS = "progress.json"

    def __init__(self, path: str | os.PathLike[str], config: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.config = canonical_config(config)
        self._fingerprint = config_fingerprint(self.config)

    @property
    def fingerprint(self) -> str:
        """:func:`config_fingerprint` of this run's config."""
        return self._fingerprint

    @property
    def progress_path(self) -> Path:
        """Path of ``progress.json``."""
        return self.path / self.PROGRESS

    @staticmethod
    def chunk_name(index: int) -> str:
        """Checkpoint name of chunk ``index`` (``chunk_00042``)."""
        if index < 0:
            raise ConfigError(f"chunk index must be >= 0, got {index}.")
        return f"chunk_{int(index):05d}"

    def _read_progress(self) -> dict[str, Any] | None:
        """Parsed and validated ``progress.json``, or None if it does not exist."""
        p = self.progress_path
        if not p.is_file():
            return None
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("top level is not an object")
        except (OSError, ValueError) as exc:
            raise ResumeStateError(
                f"{str(p)!r} is not valid JSON (corrupted: {exc}); {START_OVER}."
            ) from None
        if data.get("format") != _RUN_KIND:
            raise ResumeStateError(
                f"{str(p)!r} is not an EverAnimate run progress file; {START_OVER}."
            )
        if data.get("format_version") != RUN_FORMAT_VERSION:
            raise ResumeStateError(
                f"{str(p)!r} has format version {data.get('format_version')!r}, but this "
                f"EverAnimate reads version {RUN_FORMAT_VERSION}. Resume it with the "
                f"EverAnimate version that wrote it, or {START_OVER}."
            )
        chunks = data.get("finished_chunks")
        if not isinstance(data.get("fingerprint"), str) or not isinstance(chunks, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in chunks
        ):
            raise ResumeStateError(f"{str(p)!r} is incomplete (corrupted); {START_OVER}.")
        return data

    def _write_progress(self, finished: list[int]) -> None:
        data = {
            "format": _RUN_KIND,
            "format_version": RUN_FORMAT_VERSION,
            "fingerprint": self._fingerprint,
            "config": self.config,
            "finished_chunks": sorted(set(finished)),
        }
        write_text_atomic(self.progress_path, json.dumps(data, indent=1, sort_keys=True))

    def check_compatible(self) -> None:
        """Raise ResumeStateError if the folder was created with another config.

        The message names the differing keys. A folder without ``progress.json`` (not
        created yet) is compatible.
        """
        data = self._read_progress()
        if data is not None:
            self._raise_if_other_config(data)

    def _raise_if_other_config(self, data: dict[str, Any]) -> None:
        if data["fingerprint"] != self._fingerprint:
            raise ResumeStateError(mismatch_message(
                f"run folder {str(self.path)!r}", data.get("config"), self.config
            ))

    def open_or_create(self) -> "RunFolder":
        """Create the folder and an empty ``progress.json`` if absent; else validate it.

        Returns self, so ``run = RunFolder(path, cfg).open_or_create()`` works.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        if self._read_progress() is None:
            self._write_progress([])
        else:
            self.check_compatible()
        return self

    def finished_chunks(self) -> list[int]:
        """Sorted indices of the chunks recorded as finished ([] for a new folder)."""
        data = self._read_progress()
        if data is None:
            return []
        self._raise_if_other_config(data)
        return sorted(set(data["finished_chunks"]))

    def last_finished(self) -> int | None:
        """Highest k such that chunks 0..k are all finished, or None if chunk 0 is not.

        This is where a sequential run can resume from (at chunk k+1): a chunk finished
        after a gap is not counted, because the chunks after the gap depend on it.
        """
        done = set(self.finished_chunks())
        k = -1
        while k + 1 in done:
            k += 1
        return k if k >= 0 else None

    def save_chunk(
        self,
        index: int,
        tensors: Mapping[str, torch.Tensor],
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Checkpoint chunk ``index`` and then record it as finished in ``progress.json``.

        ``meta`` gets ``fingerprint``, ``config`` and ``chunk_index`` added. Creates the
        folder if needed and refuses (ResumeStateError) to write into a folder made with
        another config.
        """
        name = self.chunk_name(index)
        self.open_or_create()
        full_meta = dict(meta or {})
        full_meta.update(fingerprint=self._fingerprint, config=self.config, chunk_index=int(index))
        save_state(self.path, name, tensors, full_meta)
        data = self._read_progress()
        finished = list(data["finished_chunks"]) if data else []
        finished.append(int(index))
        self._write_progress(finished)

    def load_chunk(self, index: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Load chunk ``index`` (verified, and checked against this run's config)."""
        if index not in self.finished_chunks():
            last = self.last_finished()
            raise ResumeStateError(
                f"chunk {index} is not recorded as finished in {str(self.progress_path)!r}; "
                f"resume from chunk {0 if last is None else last + 1} instead."
            )
        return load_state(self.path, self.chunk_name(index), expected_config=self.config)


class RunStore:
    """One run on disk (see the module docstring): open it by root and config, resume it, save
    and load chunks. Both Long Animation and the granular nodes use it; they only say the root."""

    def __init__(self, path: str | os.PathLike[str], config: Mapping[str, Any]):
        self.ledger = RunFolder(path, config)
        self.path = self.ledger.path

    @classmethod
    def open(cls, root: str | os.PathLike[str], config: Mapping[str, Any], name: str = "", prefix: str = "run") -> "RunStore":
        """``root/name`` when a name is given (the user's folder: refused if made with another
        config), else ``root/<prefix>_<fingerprint16>``, so the same config finds its own run."""
        root = Path(root)
        if name:
            if name != Path(name).name or name in (".", ".."):
                raise ConfigError(f"The run name {name!r} must be a plain folder name (no '/' or '..').")
            return cls(root / name, config)
        fingerprint = config_fingerprint(config)
        return cls(root / f"{folder_name(prefix)}_{fingerprint[:16]}", config)

    @property
    def config(self) -> dict[str, Any]:
        return self.ledger.config

    @property
    def fingerprint(self) -> str:
        return self.ledger.fingerprint

    def segment_path(self, index: int) -> Path:
        return self.path / f"frames_{int(index):05d}.mkv"

    def finished(self) -> int:
        """Number of chunks finished in a row from chunk 0 (refuses a folder of another config)."""
        last = self.ledger.last_finished()
        return 0 if last is None else last + 1

    # -- Long Animation: checkpointed chunks --------------------------------------------------
    def resume(self, sink=None) -> LatentMemory | None:
        """Validate the folder; replay finished frames into ``sink``; return the memory to go on.

        Returns None for a new (or empty) run. Raises ResumeStateError for a folder made with
        other settings, or a corrupted/truncated checkpoint or segment.
        """
        self.ledger.open_or_create()
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
        tensors, meta = self.ledger.load_chunk(done - 1)
        memory = LatentMemory.from_state(tensors, meta.get("memory", {}))
        if memory.fingerprint and memory.fingerprint != self.fingerprint:
            raise ResumeStateError("The memory checkpoint belongs to another configuration; start over.")
        return memory

    def save_chunk(self, index: int, memory: LatentMemory, kept_frames: np.ndarray) -> None:
        """Store the chunk's frames, then its memory; the chunk counts once both are on disk."""
        self.save_frames(index, kept_frames)
        tensors, meta = memory.to_state()
        self.ledger.save_chunk(index, tensors, {"memory": meta, "frames": int(len(kept_frames))})

    # -- granular nodes: a chunk's latents and frames ------------------------------------------
    def save_latents(self, index: int, latents: torch.Tensor) -> None:
        """A sampled chunk's generated latents (model space), checksummed; replaces an older one."""
        self.ledger.open_or_create()
        meta = {"fingerprint": self.fingerprint, "config": self.config, "chunk_index": int(index)}
        save_state(self.path, self._latents_name(index), {"latents": latents.detach().float()}, meta)

    def load_latents(self, index: int) -> torch.Tensor:
        name = self._latents_name(index)
        if not (self.path / f"{name}.json").exists():
            raise ResumeStateError(
                f"Chunk {index}'s latents are missing from {self.path}. Run its Chunk Sampler again "
                "(the folder may have been deleted)."
            )
        try:
            tensors, _ = load_state(self.path, name, expected_config=self.config)
        except ResumeStateError as e:
            raise ResumeStateError(f"Chunk {index}'s latents are damaged ({e}). Run chunk {index}'s sampler again.") from None
        return tensors["latents"]

    def save_frames(self, index: int, frames: np.ndarray) -> None:
        """The frames chunk ``index`` contributes to the video, losslessly."""
        self.ledger.open_or_create()
        write_segment(self.segment_path(index), frames)

    def load_frames(self, index: int) -> np.ndarray | None:
        """Chunk ``index``'s saved frames, or None when they were never saved."""
        seg = self.segment_path(index)
        return read_segment(seg) if seg.exists() else None

    @staticmethod
    def _latents_name(index: int) -> str:
        return f"latents_{int(index):05d}"

    def remove(self) -> int:
        """Delete the run's files once the video is done; returns the bytes freed.

        Only files a run writes are removed (``chunk_*``, ``latents_*``, ``frames_*``,
        ``progress.json`` and their temporary or backup copies); the folder goes too when nothing
        else is left in it.
        """
        freed = 0
        if not self.path.is_dir():
            return 0
        for p in self.path.iterdir():
            name = p.name.lstrip(".")
            if p.is_file() and name.startswith(("chunk_", "latents_", "frames_", "progress")):
                freed += p.stat().st_size
                p.unlink()
        try:
            self.path.rmdir()
        except OSError:
            pass  # the user keeps other files there
        return freed
