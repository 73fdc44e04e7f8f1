"""EverAnimate Long Animation: any number of chunks in one node, resumable, with progress and Cancel.

It runs the core loop (``everanimate_core.pipeline.run_animation``) with ComfyUI's model: the same
functions the granular nodes call. Every finished chunk is checkpointed in a run folder under
output/everanimate/runs; queueing the same prompt again after a Cancel or a crash resumes after the
last finished chunk and produces the same video as an uninterrupted run.
"""

from __future__ import annotations

import json
import logging

from .api_version import io

from everanimate_core.pipeline import LoopHooks, run_animation, run_config
from everanimate_core.plan import plan_for_driving
from everanimate_core.runs import AnimationRun

from .comfy_backend import ComfyWanBackend, DecodeOptions, require_even_resolution
from .granular_nodes import everanimate_root
from .graph_state import upstream_signature
from .images import RESIZE_MODES, ImageFrames, prepare_reference
from .output import VideoOutput, output_inputs
from .progress import ChunkProgress
from .settings import anchor_inputs, build_settings, chunk_inputs, sampling_inputs
from .wan_patch import require_wan_animate, with_k_anchor_patch

log = logging.getLogger("EverAnimate")

class LongAnimation(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="EverAnimateLongAnimation",
            display_name="EverAnimate Long Animation",
            category="EverAnimate",
            description=(
                "Generates a whole long animation chunk by chunk with EverAnimate's latent memory: "
                "as many chunks as the driving video (or the requested duration) needs, streamed to "
                "an MP4. Progress shows chunk k of N and the steps, with a preview per chunk; Cancel "
                "stops between steps; every chunk is checkpointed and re-queueing resumes."
            ),
            inputs=[
                io.Model.Input("model", tooltip="Wan2.2-Animate-14B, ideally through Load EverAnimate LoRA."),
                io.Conditioning.Input("positive", tooltip="Text conditioning (UMT5)."),
                io.Conditioning.Input("negative", tooltip="Negative text conditioning (unused at cfg 1)."),
                io.Vae.Input("vae", tooltip="The Wan 2.1 VAE."),
                io.Image.Input("reference_image", tooltip="The character to animate."),
                io.Image.Input("pose_video", tooltip="The driving pose video (rendered skeletons)."),
                io.Int.Input("width", default=832, min=16, max=4096, step=16, tooltip="Video width, a multiple of 16 (release 832)."),
                io.Int.Input("height", default=480, min=16, max=4096, step=16, tooltip="Video height, a multiple of 16 (release 480)."),
                io.Combo.Input("resize_mode", options=list(RESIZE_MODES), default="crop", tooltip="How the reference and pose frames are fitted to width x height."),
                io.Float.Input("duration_seconds", default=0.0, min=0.0, max=3600.0, step=1.0, tooltip="0 = exactly as long as the pose video; otherwise this many seconds at fps (a shorter pose video is read with the window mode)."),
                *chunk_inputs(),
                *anchor_inputs(),
                *sampling_inputs(),
                io.Boolean.Input("tiled_decode", default=False, tooltip="Decode in tiles to save VRAM at large sizes."),
                io.String.Input("run_name", default="", tooltip="Run folder under output/everanimate/runs. Empty = named after the settings, so the same prompt resumes its own run. A named folder made with other settings is refused."),
                *output_inputs(),
                io.Image.Input("face_video", optional=True, tooltip="Optional face crops (512x512), read with the same window mode over its own length."),
                io.ClipVision.Input("clip_vision", optional=True, tooltip="CLIP vision model (clip_vision_h): the reference for chunk 0, the previous chunk's last frame after."),
                io.Image.Input("anchor_images", optional=True, tooltip="Extra views of the character for the 'user' anchor policy."),
            ],
            outputs=VideoOutput.outputs(),
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
            is_output_node=True,
        )

    @classmethod
    def execute(
        cls, model, positive, negative, vae, reference_image, pose_video, width, height, resize_mode,
        duration_seconds, tiled_decode, run_name, face_video=None, clip_vision=None, anchor_images=None, **kw,
    ) -> io.NodeOutput:
        require_wan_animate(model, "EverAnimate Long Animation")
        require_even_resolution(width, height)
        settings = build_settings(kw)
        out = VideoOutput.from_widgets(kw)
        ref, users = prepare_reference(reference_image, anchor_images, width, height, resize_mode)
        pose = ImageFrames(pose_video, width, height, resize_mode)
        face = None if face_video is None else ImageFrames(face_video)
        if face is not None and len(face) != len(pose):
            log.warning(
                "EverAnimate: the face video has %d frames and the pose video %d; each is read over its "
                "own length with the '%s' window mode (the release does the same).", len(face), len(pose), settings.window_mode,
            )
        total = int(round(duration_seconds * out.fps)) if duration_seconds > 0 else None
        plan = plan_for_driving(len(pose), settings.chunk, total, settings.window_mode)
        config = run_config(
            settings, ref, len(pose), plan.total_frames,
            extra={"face_frames": 0 if face is None else len(face), "cfg": float(kw.get("cfg", 1.0)), "upstream": upstream_signature(cls.hidden.prompt, cls.hidden.unique_id), "users": len(users)},
        )
        runs = everanimate_root() / "runs"
        folder = runs / run_name if run_name else runs / f"run_{AnimationRun(runs / '_', config).fingerprint[:16]}"
        run = AnimationRun(folder, config)
        done = run.finished() if (folder / "progress.json").exists() else 0
        progress = ChunkProgress(len(plan), settings.steps, cls.hidden.unique_id, first_chunk=done)
        if done:
            progress.text(f"EverAnimate: resuming after chunk {done} of {len(plan)} from {folder}")
        backend = ComfyWanBackend(
            with_k_anchor_patch(model, settings.chunk.anchors), vae, positive, negative, clip_vision,
            float(kw.get("cfg", 1.0)), decode=DecodeOptions(tiled=tiled_decode),
        )
        hooks = LoopHooks(
            on_step=progress.on_step,
            between_chunks=progress.between_chunks,
            on_chunk=lambda o, n: progress.chunk_done(o.chunk.index, o.kept_frames[-1]),
        )
        with out.writer() as sink:
            _, _, stats = run_animation(backend, ref, pose, settings, sink, plan.total_frames, face, users, run, hooks)
        log.info("EverAnimate: %d frames in %d chunks written to %s", plan.total_frames, len(plan), out.path)
        log.info(
            "EverAnimate stats: %s",
            json.dumps({
                "chunks_run": stats.chunks, "wall_s": round(stats.total, 3), "sample_s": round(stats.sample, 3),
                "decode_s": round(stats.decode, 3), "encode_s": round(stats.encode_pose + stats.encode_anchor, 3),
                "loop_overhead_pct": round(100 * stats.overhead_fraction, 3),
                "overhead_over_sampler_pct": round(100 * (stats.total - stats.model_and_vae) / max(stats.sample, 1e-9), 3),
                "anchor_encodes": stats.anchor_encodes, "pose_encodes": stats.pose_encodes,
                "vae_frame_encodes": backend.frame_encodes, "vae_video_encodes": backend.video_encodes,
            }),
        )
        return out.node_output()
