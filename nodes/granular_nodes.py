"""The granular nodes: Latent Memory Init -> Chunk Sampler -> Memory Propagate -> ... -> Decode & Stitch.

Each node calls the same core functions as the Long Animation node; state crosses nodes only in the
EVERANIMATE_MEMORY / EVERANIMATE_CHUNK sockets and in the session folder on disk.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from .api_version import io

from everanimate_core.errors import ConfigError, DrivingVideoError
from everanimate_core.infra.identity import array_digest, reference_identity
from everanimate_core.infra.runs import RunStore
from everanimate_core.pipeline import AnimationSettings, ChunkLoop, RunInputs, kept_frames
from everanimate_core.plan import ChunkSettings, ChunkWindow

from .comfy_backend import ComfyWanBackend, DecodeOptions, refuse_restoration_with_sampler, require_even_resolution
from .sockets import CHUNK_TYPE, MEMORY_TYPE, ChunkHandle, GraphMemory, check_chunk_follows, plan_to_dicts
from .images import RESIZE_MODES, prepare_reference
from .output import VideoOutput, output_inputs
from .progress import ChunkProgress, check_cancel
from .settings import anchor_inputs, build_settings, cfg_of, chunk_inputs, sampler_inputs, sampling_inputs, seed_inputs, size_inputs
from .video_input import choose_audio, close_sources, driving_video, fit_note, replacement_inputs, replacement_source, resolve_fps
from .wan_patch import require_wan_animate, with_k_anchor_patch

log = logging.getLogger("EverAnimate")

Memory = io.Custom(MEMORY_TYPE)
Chunk = io.Custom(CHUNK_TYPE)


def everanimate_root() -> Path:
    import folder_paths

    return Path(folder_paths.get_output_directory()) / "everanimate"


class LatentMemoryInit(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EverAnimateLatentMemoryInit",
            display_name="EverAnimate Latent Memory Init",
            category="EverAnimate",
            description=(
                "Starts an EverAnimate session: encodes the reference image on its own (one latent) "
                "and fills the K anchor slots for chunk 0. The anchors for later chunks are built "
                "once, after chunk 0, by Memory Propagate."
            ),
            inputs=[
                io.Vae.Input("vae", tooltip="The Wan 2.1 VAE (wan_2.1_vae.safetensors)."),
                io.Image.Input("reference_image", tooltip="The character to animate (first image is used)."),
                *size_inputs(),
                io.Combo.Input("resize_mode", options=list(RESIZE_MODES), default="crop", tooltip="How the reference (and the pose video) are fitted to width x height."),
                *anchor_inputs(),
                io.String.Input("session_name", default="everanimate", tooltip="Name of the session folder under output/everanimate where chunk latents are kept."),
                io.Image.Input("anchor_images", optional=True, tooltip="Optional extra views of the character for the 'user' anchor policy (up to K-1 images)."),
            ],
            outputs=[Memory.Output(display_name="memory", tooltip="The latent memory before chunk 0.")],
        )

    @classmethod
    def execute(cls, vae, reference_image, width, height, resize_mode, anchors, anchor_policy, anchor_seed, session_name, anchor_images=None) -> io.NodeOutput:
        require_even_resolution(width, height)
        ref, users = prepare_reference(reference_image, anchor_images, width, height, resize_mode)
        # Only K and the anchor pick matter here; the sampler's settings come with the Chunk Sampler.
        settings = AnimationSettings(chunk=ChunkSettings(anchors=anchors), anchor_policy=anchor_policy, anchor_seed=anchor_seed)
        memory = ChunkLoop(ComfyWanBackend(_LatentOnly(), vae, None, None), settings).start(ref, users)
        session = {
            "session": "granular", **reference_identity(ref), "anchors": anchors, "anchor_policy": anchor_policy,
            "anchor_seed": anchor_seed, "users": len(users), "users_sha256": array_digest(*users),
        }
        store = RunStore.open(everanimate_root(), session, prefix=session_name)
        return io.NodeOutput(GraphMemory(memory, ref, store, width, height, resize_mode))


class _LatentOnly:
    """Stand-in MODEL for VAE-only backends: the Wan 2.1 latent format without a model."""

    def get_model_object(self, name):
        import comfy.latent_formats

        if name != "latent_format":
            raise KeyError(name)
        return comfy.latent_formats.Wan21()


def _chunk_inputs(settings: list) -> list:
    """The inputs the Chunk Sampler and Chunk Conditioning share, around their own settings."""
    return [
        io.Model.Input("model", tooltip="Wan2.2-Animate-14B, ideally through Load EverAnimate LoRA (or your own LoRA and shift nodes)."),
        io.Conditioning.Input("positive", tooltip="Text conditioning (UMT5)."),
        io.Conditioning.Input("negative", tooltip="Negative text conditioning (unused at cfg 1)."),
        io.Vae.Input("vae", tooltip="The Wan 2.1 VAE."),
        Memory.Input("memory", tooltip="From Latent Memory Init (chunk 0) or Memory Propagate."),
        io.MultiType.Input("pose_video", types=[io.Video, io.Image], tooltip="The whole driving pose video (rendered skeletons): a VIDEO from Load Video (only the chunk's window is decoded from the file; its fps and sound reach Decode & Stitch) or an IMAGE batch. Fitted to the size with Memory Init's resize_mode."),
        *chunk_inputs(),
        *settings,
        io.Int.Input("total_frames", default=0, min=0, max=1_000_000, tooltip="Output length in frames; 0 = the pose video's length."),
        io.MultiType.Input("face_video", types=[io.Video, io.Image], optional=True, tooltip="Optional face crops (512x512), a VIDEO or an IMAGE batch, read with the same window mode over its own length."),
        io.ClipVision.Input("clip_vision", optional=True, tooltip="CLIP vision model (clip_vision_h): encodes the reference for chunk 0, the previous chunk's last frame after."),
        *replacement_inputs(),
    ]


class ChunkSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EverAnimateChunkSampler",
            display_name="EverAnimate Chunk Sampler (Restorative Flow)",
            category="EverAnimate",
            description=(
                "Generates the next chunk from the latent memory: builds the EverAnimate layout "
                "[anchors | motion latent | zero padding] exactly as the release, encodes the chunk's "
                "pose window, and samples with Euler on the release's sigma schedule. Optional "
                "inference-time anchor restoration (off = release)."
            ),
            inputs=[*_chunk_inputs(sampling_inputs()), *sampler_inputs()],
            outputs=[
                Chunk.Output(display_name="chunk", tooltip="The sampled chunk (latents kept in the session folder)."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, positive, negative, vae, memory: GraphMemory, pose_video, frames_per_chunk, overlap, total_frames, face_video=None, clip_vision=None, **kw) -> io.NodeOutput:
        job = _ChunkJob(cls, "EverAnimate Chunk Sampler", model, positive, negative, vae, memory, pose_video, face_video, clip_vision,
                        dict(kw, frames_per_chunk=frames_per_chunk, overlap=overlap, total_frames=total_frames))
        with job.running():
            generated, pose_frames = job.loop.sample(job.memory.memory, job.chunk, job.inputs, on_step=lambda i, n, x: job.progress.on_step(0, i, n))
        memory.store.save_latents(job.chunk.index, generated)
        return io.NodeOutput(job.handle(pose_frames))


class _ChunkJob:
    """What the Chunk Sampler and Chunk Conditioning share: settings, the driving windows, the
    backend, the loop and the chunk the memory is ready for."""

    def __init__(self, node, what, model, positive, negative, vae, memory: GraphMemory, pose_video, face_video, clip_vision, kw):
        require_wan_animate(model, what)
        mem = memory.memory
        kw.update(anchors=mem.num_anchors, anchor_policy=mem.anchor_policy, anchor_seed=mem.anchor_seed)
        self.settings = settings = build_settings(kw)
        self.memory = memory
        self.driving = driving_video(pose_video, "pose video", memory.width, memory.height, memory.resize_mode)
        self.pose = self.driving.frames
        self.face = None if face_video is None else driving_video(face_video, "face video").frames
        self.replacement = replacement_source(
            kw.get("background_video"), kw.get("character_mask"), memory.width, memory.height, memory.resize_mode, self.driving
        )
        self.inputs = RunInputs(
            memory.reference, self.pose, self.face, total_frames=kw["total_frames"] or None,
            replacement=None if self.replacement is None else self.replacement.source,
        )
        if settings.restoration is not None or settings.background_restoration is not None:
            refuse_restoration_with_sampler(kw.get("sampler"))
        self.model = with_k_anchor_patch(model, mem.num_anchors)
        self.backend = ComfyWanBackend(self.model, vae, positive, negative, clip_vision, cfg_of(kw), sampler=kw.get("sampler"))
        self.loop = ChunkLoop(self.backend, settings)
        try:
            self.plan = plan = self.loop.plan(self.inputs)
        except Exception:
            self.close()
            raise
        if mem.chunk_index >= len(plan):
            self.close()
            raise ConfigError(
                f"The video is complete: all {len(plan)} chunks for {plan.total_frames} frames are done. "
                f"Remove this node or raise total_frames."
            )
        self.chunk = plan[mem.chunk_index]
        self.progress = ChunkProgress(1, settings.num_steps, node.hidden.unique_id)
        if self.chunk.index == 0:
            for video in (self.driving, None if self.replacement is None else self.replacement.background):
                note = None if video is None else fit_note(video, memory.width, memory.height, memory.resize_mode)
                if note:
                    self.progress.text(note)
        self.progress.text(f"EverAnimate: chunk {self.chunk.index + 1} of {len(plan)}")

    @contextmanager
    def running(self):
        """Around the chunk's work: a driving-video error names the chunk and where the earlier
        chunks are kept; the driving files are closed however it ends."""
        try:
            yield self
        except DrivingVideoError as e:
            raise DrivingVideoError(
                f"Chunk {self.chunk.index + 1} of {len(self.plan)} stopped: {e} The earlier chunks' latents stay in "
                f"{self.memory.store.path}."
            ) from None
        finally:
            self.close()

    def close(self) -> None:
        close_sources(self.pose, self.face, *(() if self.replacement is None else self.replacement.sources))

    def handle(self, pose_frames, sampled_here: bool = True) -> ChunkHandle:
        mem = self.memory.memory
        return ChunkHandle(
            store=self.memory.store,
            index=self.chunk.index,
            plan_total=self.plan.total_frames,
            settings=self.settings.chunk.as_dict(),
            chunks=plan_to_dicts(self.plan),
            fps_hint=None if self.driving.fps is None else float(self.driving.fps),
            pose_window=pose_frames if (self.chunk.index == 0 and mem.anchor_policy == "pose_diverse") else None,
            audio=self.driving.audio,
            reference=self.memory.reference,
            sampled=sampled_here,
        )


class ChunkConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EverAnimateChunkConditioning",
            display_name="EverAnimate Chunk Conditioning",
            category="EverAnimate",
            description=(
                "The next chunk's conditioning for ANY sampler (KSampler, KSamplerAdvanced, "
                "SamplerCustomAdvanced, a multi-GPU sampler): the EverAnimate layout [anchors | motion "
                "latent | zero padding], the chunk's pose (and face) window and CLIP image in positive / "
                "negative, the chunk's empty LATENT (K anchor + generated slots), the chunk's seed and a "
                "MODEL with the K-anchor patch. Sample, then give the LATENT to Memory Propagate."
            ),
            inputs=_chunk_inputs(seed_inputs()),
            outputs=[
                io.Model.Output(display_name="model", tooltip="The MODEL with the K-anchor patch (pose and face start at slot K): sample with this one."),
                io.Conditioning.Output(display_name="positive", tooltip="Positive conditioning of this chunk."),
                io.Conditioning.Output(display_name="negative", tooltip="Negative conditioning of this chunk."),
                io.Latent.Output(display_name="latent", tooltip="The chunk's empty LATENT (K + G slots): sample it at denoise 1."),
                io.Int.Output(display_name="seed", tooltip="This chunk's seed (seed x chunk with the multiply policy): link it to the sampler's seed to keep the release's per-chunk seeds."),
                Chunk.Output(display_name="chunk", tooltip="Which chunk this is; give it to Memory Propagate with the sampled LATENT."),
            ],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, model, positive, negative, vae, memory: GraphMemory, pose_video, frames_per_chunk, overlap, total_frames, face_video=None, clip_vision=None, **kw) -> io.NodeOutput:
        job = _ChunkJob(cls, "EverAnimate Chunk Conditioning", model, positive, negative, vae, memory, pose_video, face_video, clip_vision,
                        dict(kw, frames_per_chunk=frames_per_chunk, overlap=overlap, total_frames=total_frames))
        with job.running():
            request, pose_frames = job.loop.request(memory.memory, job.chunk, job.inputs)
        pos, neg = job.backend.conditioning(request)
        latent = {"samples": torch.zeros(request.noise.shape, dtype=torch.float32)}
        return io.NodeOutput(job.model, pos, neg, latent, request.seed, job.handle(pose_frames, sampled_here=False))


def chunk_frames(vae, handle: ChunkHandle, index: int, decode: DecodeOptions) -> np.ndarray:
    """Kept frames of chunk ``index``: from the lossless segment if one exists, else decoded now."""
    frames = handle.store.load_frames(index)
    if frames is not None:
        return frames
    backend = ComfyWanBackend(_LatentOnly(), vae, None, None, decode=decode)
    return kept_frames(ChunkWindow(**handle.chunks[index]), backend.decode(handle.store.load_latents(index)))


class MemoryPropagate(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EverAnimateMemoryPropagate",
            display_name="EverAnimate Memory Propagate",
            category="EverAnimate",
            description=(
                "Carries the latent memory to the next chunk: the motion latent is the chunk's last "
                "latent, taken in latent space (no VAE round trip). After chunk 0 only, the anchors "
                "are built from chunk 0's frames, each encoded on its own. The chunk is decoded once "
                "here (for its last frame) and kept losslessly for Decode & Stitch."
            ),
            inputs=[
                Memory.Input("memory", tooltip="The memory the chunk was sampled from."),
                Chunk.Input("chunk", tooltip="The chunk from the Chunk Sampler that used this memory."),
                io.Vae.Input("vae", tooltip="The Wan 2.1 VAE (decodes the chunk; encodes the anchor frames after chunk 0)."),
                io.Boolean.Input("tiled_decode", default=False, tooltip="Decode in tiles to save VRAM at large sizes."),
                io.Latent.Input("samples", optional=True, tooltip="The sampled LATENT of a chunk from Chunk Conditioning (any sampler's output). Leave empty after a Chunk Sampler."),
            ],
            outputs=[
                Memory.Output(display_name="memory", tooltip="The memory for the next chunk."),
                Chunk.Output(display_name="chunk", tooltip="The same chunk, now decoded and stored: give the last one to Decode & Stitch."),
            ],
        )

    @classmethod
    def execute(cls, memory: GraphMemory, chunk: ChunkHandle, vae, tiled_decode, samples=None) -> io.NodeOutput:
        check_chunk_follows(memory, chunk)
        check_cancel()
        backend = ComfyWanBackend(_LatentOnly(), vae, None, None, decode=DecodeOptions(tiled=tiled_decode))
        loop = ChunkLoop(backend, AnimationSettings(chunk=chunk.chunk_settings))
        if samples is not None:
            generated = loop.generated(chunk.window, sampled_latents(backend, samples, chunk))
            chunk.store.save_latents(chunk.index, generated)
            chunk = replace(chunk, sampled=True)
        elif not chunk.sampled:
            raise ConfigError(
                f"Chunk {chunk.index + 1} comes from Chunk Conditioning: connect the sampler's LATENT output "
                "to this node's samples input."
            )
        else:
            generated = chunk.store.load_latents(chunk.index)
        frames = loop.decode(generated)
        chunk.store.save_frames(chunk.index, kept_frames(chunk.window, frames))
        new = loop.advance(memory.memory, generated, frames, chunk.pose_window)
        return io.NodeOutput(replace(memory, memory=new), chunk)


def sampled_latents(backend: ComfyWanBackend, samples: dict, chunk: ChunkHandle) -> torch.Tensor:
    """A stock sampler's LATENT of one chunk -> model-space latents [C, K+G, h, w]."""
    x = samples["samples"] if isinstance(samples, dict) else samples
    expected = chunk.chunk_settings.anchors + chunk.window.latents
    if x.dim() != 5 or x.shape[0] != 1 or x.shape[2] != expected:
        raise ConfigError(
            f"The samples input has shape {tuple(x.shape)} but chunk {chunk.index + 1} needs one latent of "
            f"{expected} slots ([1, C, {expected}, h, w]): connect the LATENT sampled from this chunk's "
            "Chunk Conditioning output, at batch size 1."
        )
    return backend.to_model_space(x)[0]


class _PoseFacts:
    """What Decode & Stitch knows of the pose video through the chunk handle: its fps and sound."""

    label = "pose video"

    def __init__(self, fps, audio):
        from fractions import Fraction

        self.fps = None if fps is None else Fraction(fps).limit_denominator(1001)
        self.audio = audio


class DecodeStitch(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EverAnimateDecodeStitch",
            display_name="EverAnimate Decode & Stitch",
            category="EverAnimate",
            description=(
                "Decodes the session's chunks one by one (reusing what Memory Propagate already "
                "decoded), drops each chunk's overlap, and streams the frames to an MP4 in the output "
                "folder. Host memory does not grow with the video's length."
            ),
            inputs=[
                Chunk.Input("chunk", tooltip="The LAST chunk of the video; all earlier chunks of its session are stitched before it."),
                io.Vae.Input("vae", tooltip="The Wan 2.1 VAE."),
                io.Boolean.Input("tiled_decode", default=False, tooltip="Decode in tiles to save VRAM at large sizes."),
                *output_inputs(),
                io.Audio.Input("audio", optional=True, tooltip="Sound for the MP4 (e.g. Get Video Components' audio of the original dance), cut to the animation's length. Empty = the pose VIDEO's own audio track, if it has one."),
            ],
            outputs=VideoOutput.outputs(),
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, chunk: ChunkHandle, vae, tiled_decode, audio=None, **kw) -> io.NodeOutput:
        if not chunk.sampled:
            raise ConfigError(
                "This chunk comes from Chunk Conditioning and is not sampled yet: connect Decode & Stitch to "
                "the chunk output of the last Memory Propagate (which takes the sampled LATENT)."
            )
        pose = _PoseFacts(chunk.fps_hint, chunk.audio)
        fps, fps_note = resolve_fps(kw.get("fps", 0.0), pose)
        out = VideoOutput.from_widgets(kw, fps)
        sound, sound_note = choose_audio(audio, pose)
        progress = ChunkProgress(chunk.index + 1, 1, cls.hidden.unique_id)
        for note in (fps_note, sound_note):
            if note:
                progress.text(note)
        decode = DecodeOptions(tiled=tiled_decode)
        with out.writer(sound, chunk.reference) as sink:
            for i in range(chunk.index + 1):
                check_cancel()
                frames = chunk_frames(vae, chunk, i, decode)
                sink.write(frames)
                progress.chunk_done(i, frames[-1])
        if chunk.index + 1 < chunk.num_chunks:
            log.warning("EverAnimate: stitched chunks 0..%d of %d; the driving video needs %d chunks for %d frames.", chunk.index, chunk.num_chunks, chunk.num_chunks, chunk.plan_total)
        return out.node_output()
