"""EverAnimate Long Animation: any number of chunks in one node, resumable, with progress and Cancel.

It runs the core loop (``everanimate_core.pipeline.run_animation``) with ComfyUI's model: the same
functions the granular nodes call. Every finished chunk is checkpointed in a run folder under
output/everanimate/runs; queueing the same prompt again after a Cancel or a crash resumes after the
last finished chunk and produces the same video as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import logging

from .api_version import io

from everanimate_core.errors import ConfigError, DrivingVideoError
from everanimate_core.infra.identity import array_digest
from everanimate_core.infra.runs import RunStore
from everanimate_core.pipeline import ChunkLoop, LoopHooks, RunInputs, run_config

from .comfy_backend import ComfyWanBackend, DecodeOptions, refuse_restoration_with_sampler, require_even_resolution
from .granular_nodes import everanimate_root
from .sockets import upstream_signature
from .images import RESIZE_MODES, prepare_reference
from .output import VideoOutput, output_inputs
from .progress import ChunkProgress
from .settings import anchor_inputs, build_settings, cfg_of, chunk_inputs, sampler_inputs, sampling_inputs, size_inputs
from .video_input import choose_audio, close_sources, driving_video, fit_note, replacement_inputs, replacement_source, resolve_fps
from .wan_patch import require_wan_animate, with_k_anchor_patch

log = logging.getLogger("EverAnimate")

RUN_FOLDER_CHOICES = ("remove_when_done", "keep")
DRIVING_TYPES = [io.Video, io.Image]

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
                io.MultiType.Input("pose_video", types=DRIVING_TYPES, tooltip="The driving pose video (rendered skeletons): a VIDEO from Load Video (read from the file chunk by chunk, never held whole in RAM; its fps and sound are used) or an IMAGE batch."),
                *size_inputs(),
                io.Combo.Input("resize_mode", options=list(RESIZE_MODES), default="crop", tooltip="How the reference and pose frames are fitted to width x height."),
                io.Float.Input("duration_seconds", default=0.0, min=0.0, max=3600.0, step=1.0, tooltip="0 = exactly as long as the pose video; otherwise this many seconds at fps (a shorter pose video is read with the window mode)."),
                *chunk_inputs(),
                *anchor_inputs(),
                *sampling_inputs(),
                io.Boolean.Input("tiled_decode", default=False, tooltip="Decode in tiles to save VRAM at large sizes."),
                io.String.Input("run_name", default="", tooltip="Run folder under output/everanimate/runs. Empty = named after the settings, so the same prompt resumes its own run. A named folder made with other settings is refused."),
                io.Combo.Input("run_folder", options=list(RUN_FOLDER_CHOICES), default="remove_when_done", tooltip="What happens to the run folder (chunk checkpoints and lossless frame segments: 0.3 GB per minute of 480x832 synthetic test video, more for detailed footage) once the MP4 is written: remove_when_done deletes it; keep leaves it: queueing again with another fps, sound or filename_prefix re-stitches the MP4 from it without generating. A cancelled or failed run always keeps it, so queueing again resumes."),
                *output_inputs(),
                io.MultiType.Input("face_video", types=DRIVING_TYPES, optional=True, tooltip="Optional face crops (512x512), a VIDEO or an IMAGE batch, read with the same window mode over its own length."),
                io.ClipVision.Input("clip_vision", optional=True, tooltip="CLIP vision model (clip_vision_h): the reference for chunk 0, the previous chunk's last frame after."),
                io.Image.Input("anchor_images", optional=True, tooltip="Extra views of the character for the 'user' anchor policy."),
                io.Audio.Input("audio", optional=True, tooltip="Sound for the MP4 (e.g. Get Video Components' audio of the original dance), cut to the animation's length. Empty = the pose VIDEO's own audio track, if it has one."),
                *sampler_inputs(),
                *replacement_inputs(),
            ],
            outputs=VideoOutput.outputs(),
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
            is_output_node=True,
        )

    @classmethod
    def execute(
        cls, model, positive, negative, vae, reference_image, pose_video, width, height, resize_mode,
        duration_seconds, tiled_decode, run_name, run_folder="remove_when_done", face_video=None, clip_vision=None,
        anchor_images=None, audio=None, **kw,
    ) -> io.NodeOutput:
        require_wan_animate(model, "EverAnimate Long Animation")
        require_even_resolution(width, height)
        if run_folder not in RUN_FOLDER_CHOICES:
            raise ConfigError(f"run_folder must be one of {RUN_FOLDER_CHOICES}; got {run_folder!r}.")
        settings = build_settings(kw)
        ref, users = prepare_reference(reference_image, anchor_images, width, height, resize_mode)
        with contextlib.ExitStack() as opened:  # every driving file is closed however this ends
            driving = driving_video(pose_video, "pose video", width, height, resize_mode)
            opened.callback(close_sources, driving.frames)
            pose = driving.frames
            face_driving = None if face_video is None else driving_video(face_video, "face video")
            face = None if face_driving is None else face_driving.frames
            opened.callback(close_sources, face)
            replacement = replacement_source(kw.get("background_video"), kw.get("character_mask"), width, height, resize_mode, driving)
            if replacement is not None:
                opened.callback(close_sources, *replacement.sources)
            fps, fps_note = resolve_fps(kw.get("fps", 0.0), driving)
            out = VideoOutput.from_widgets(kw, fps)
            sound, sound_note = choose_audio(audio, driving)
            notes = [n for n in (fps_note, fit_note(driving, width, height, resize_mode), sound_note) if n]
            if replacement is not None:
                notes += [n for n in (fit_note(replacement.background, width, height, resize_mode),) if n]
            if face is not None and len(face) != len(pose):
                log.warning(
                    "EverAnimate: the face video has %d frames and the pose video %d; each is read over its "
                    "own length with the '%s' window mode (the release does the same).", len(face), len(pose), settings.window_mode,
                )
            total = int(round(duration_seconds * float(fps))) if duration_seconds > 0 else None
            inputs = RunInputs(ref, pose, face, users, total, None if replacement is None else replacement.source)
            if settings.restoration is not None or settings.background_restoration is not None:
                refuse_restoration_with_sampler(kw.get("sampler"))
            backend = ComfyWanBackend(
                with_k_anchor_patch(model, settings.chunk.anchors), vae, positive, negative, clip_vision,
                cfg_of(kw), decode=DecodeOptions(tiled=tiled_decode), sampler=kw.get("sampler"),
            )
            loop = ChunkLoop(backend, settings)
            plan = loop.plan(inputs)
            config = run_config(
                settings, inputs, plan.total_frames,
                extra={
                    "face_frames": 0 if face is None else len(face), "cfg": cfg_of(kw),
                    "upstream": upstream_signature(cls.hidden.prompt, cls.hidden.unique_id), "users": len(users),
                    "pose": driving.identity, "face": None if face_driving is None else face_driving.identity,
                    "users_sha256": array_digest(*users),
                    **({} if replacement is None else {"replacement": replacement.identity}),
                },
            )
            run = RunStore.open(everanimate_root() / "runs", config, name=run_name)
            folder = run.path
            done = run.finished()
            progress = ChunkProgress(len(plan), settings.num_steps, cls.hidden.unique_id, first_chunk=done)
            for note in notes:
                progress.text(note)
            if done:
                progress.text(f"EverAnimate: resuming after chunk {done} of {len(plan)} from {folder}")
            current = [done]

            def between_chunks(c: int) -> None:
                current[0] = c
                progress.between_chunks(c)

            hooks = LoopHooks(
                on_step=progress.on_step,
                between_chunks=between_chunks,
                on_chunk=lambda o, n: progress.chunk_done(o.chunk.index, o.kept_frames[-1]),
            )
            try:
                with out.writer(sound, ref) as sink:
                    loop.run(inputs, sink, run, hooks)
            except DrivingVideoError as e:
                c = current[0]
                kept = f"Chunks 1..{c} are kept in {folder} and their frames in {out.partial_path.name}" if c else "No chunk had finished yet"
                raise DrivingVideoError(f"Chunk {c + 1} of {len(plan)} stopped: {e} {kept}.") from None
            log.info("EverAnimate: %d frames in %d chunks written to %s at %s fps", plan.total_frames, len(plan), out.path, float(fps))
            if run_folder == "remove_when_done":
                freed = run.remove()
                log.info("EverAnimate: removed the run folder %s (%.1f MB); set run_folder to keep to keep it.", folder, freed / 1e6)
            vae_calls = {"vae_frame_encodes": backend.frame_encodes, "vae_video_encodes": backend.video_encodes}
            log.info("EverAnimate stats: %s", json.dumps({**loop.stats.as_dict(), **vae_calls}))
            return out.node_output()
