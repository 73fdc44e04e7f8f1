"""Unit tests of the node pack's ComfyUI-free helpers: images, session bookkeeping, the K patch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from everanimate_core.errors import ConfigError, ResumeStateError
from everanimate_core.infra.runs import RunStore
from nodes.sockets import ChunkHandle, GraphMemory, check_chunk_follows, upstream_signature
from nodes.images import ImageFrames, image_to_frames, resize_images
from nodes.wan_patch import KAnchorPatch
from everanimate_core.memory import init_memory


def test_image_rounding_is_exact_for_8bit_inputs_and_truncates_decoded_outputs():
    levels = torch.arange(256, dtype=torch.float32) / 255.0
    img = levels.view(1, 16, 16, 1).repeat(1, 1, 1, 3)
    assert np.array_equal(image_to_frames(img)[0, :, :, 0].reshape(-1), np.arange(256))
    assert image_to_frames(torch.full((1, 1, 1, 3), 0.999), "floor")[0, 0, 0, 0] == 254
    assert image_to_frames(torch.full((1, 1, 1, 3), 0.999), "round")[0, 0, 0, 0] == 255


def test_resize_modes():
    img = torch.zeros(1, 20, 40, 3)
    img[:, :, :20] = 1.0  # left half white
    crop = resize_images(img, 16, 16, "crop")
    pad = resize_images(img, 16, 16, "pad")
    stretch = resize_images(img, 16, 16, "stretch")
    assert crop.shape == pad.shape == stretch.shape == (1, 16, 16, 3)
    assert pad[0, 0].abs().sum() == 0 and pad[0, -1].abs().sum() == 0, "pad adds black bars top and bottom"
    assert crop[0, 8, 0, 0] > 0.9 and crop[0, 8, -1, 0] < 0.1, "crop keeps the centre"
    with pytest.raises(ConfigError):
        resize_images(img, 16, 16, "zoom")


def test_image_frames_converts_only_what_is_asked():
    video = torch.rand(50, 8, 8, 3)
    frames = ImageFrames(video, 16, 16)
    out = frames[np.array([3, 3, 49])]
    assert out.shape == (3, 16, 16, 3) and out.dtype == np.uint8 and len(frames) == 50
    assert np.array_equal(out[0], out[1])
    with pytest.raises(ConfigError, match="empty"):
        ImageFrames(torch.zeros(0, 8, 8, 3))


def test_session_folders_and_chunk_latents(tmp_path):
    store = RunStore.open(tmp_path, {"k": 4}, prefix="my run!")
    a = store.path
    assert a == RunStore.open(tmp_path, {"k": 4}, prefix="my run!").path and a != RunStore.open(tmp_path, {"k": 1}, prefix="my run!").path
    assert "/" not in a.name and "!" not in a.name
    lat = torch.randn(16, 5, 2, 2)
    store.save_latents(3, lat)
    assert torch.equal(store.load_latents(3), lat)
    with pytest.raises(ResumeStateError, match="Chunk Sampler"):
        store.load_latents(4)
    (a / "latents_00003.safetensors").write_bytes(b"garbage")
    with pytest.raises(ResumeStateError, match="damaged"):
        store.load_latents(3)


def test_propagate_refuses_a_chunk_from_elsewhere(tmp_path):
    mem = GraphMemory(init_memory(torch.zeros(16, 1, 2, 2), 4), np.zeros((16, 16, 3), np.uint8), RunStore(tmp_path / "s1", {}), 16, 16)
    handle = ChunkHandle(RunStore(tmp_path / "s1", {}), 1, 100, {"frames": 77, "overlap": 4, "anchors": 4, "motion_latents": 1, "temporal_factor": 4})
    with pytest.raises(ConfigError, match="ready for chunk 0"):
        check_chunk_follows(mem, handle)
    handle.index, handle.store = 0, RunStore(tmp_path / "s2", {})
    with pytest.raises(ConfigError, match="different sessions"):
        check_chunk_follows(mem, handle)


def test_upstream_signature_follows_the_inputs_graph():
    prompt = {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "a.safetensors"}},
        "2": {"class_type": "EverAnimateLoadLoRA", "inputs": {"model": ["1", 0], "lora_name": "stage2_480p.safetensors"}},
        "3": {"class_type": "EverAnimateLongAnimation", "inputs": {"model": ["2", 0], "seed": 42}},
        "4": {"class_type": "SaveVideo", "inputs": {"video": ["3", 0]}},
    }
    base = upstream_signature(prompt, "3")
    changed = {**prompt, "2": {**prompt["2"], "inputs": {**prompt["2"]["inputs"], "lora_name": "stage1_480p.safetensors"}}}
    unrelated = {**prompt, "4": {"class_type": "SaveVideo", "inputs": {"video": ["3", 0], "filename_prefix": "x"}}}
    assert base and upstream_signature(changed, "3") != base
    assert upstream_signature(unrelated, "3") == base
    assert upstream_signature(None, "3") == ""


class _FakeAnimate(torch.nn.Module):
    """Just the parts after_patch_embedding touches, with the shapes of ComfyUI's AnimateWanModel."""

    def __init__(self, dim=8, heads=2):
        super().__init__()
        self.pose_patch_embedding = torch.nn.Conv3d(16, dim, (1, 2, 2), stride=(1, 2, 2))
        self.heads = heads

        class Motion:
            def get_motion(self, x):
                return x.mean(dim=(2, 3))[:, :1].repeat(1, 4)  # [n, 4]

        self.motion_encoder = Motion()
        self.face_encoder = lambda m: m.unsqueeze(2).repeat(1, 1, heads, 1)  # [b, t, heads, 4]


def _native(dm, x, pose, face):
    """ComfyUI's native computation as COMFYUI.md states it: pose from slot 1, one zero face vector."""
    x = x.clone()
    p = dm.pose_patch_embedding(pose)
    x[:, :, 1 : p.shape[2] + 1] += p[:, :, : x.shape[2] - 1]
    b, c, t, h, w = face.shape
    m = dm.motion_encoder.get_motion(face.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)).reshape(b, t, -1)
    m = dm.face_encoder(m)
    m = torch.cat([torch.zeros_like(m[:, :1]), m], dim=1)
    m = torch.cat([m, torch.zeros_like(m[:, :1]).repeat(1, max(0, x.shape[2] - m.shape[1]), 1, 1)], 1)[:, : x.shape[2]]
    return x, m


def test_k_anchor_patch_is_native_for_k1_and_offsets_by_k():
    torch.manual_seed(0)
    dm = _FakeAnimate()
    x, pose, face = torch.randn(1, 8, 6, 2, 2), torch.randn(1, 16, 5, 4, 4), torch.randn(1, 3, 5, 8, 8)
    with torch.no_grad():
        nx, nm = _native(dm, x, pose, face)
        px, pm = KAnchorPatch(dm, 1)(x.clone(), pose, face)
        assert torch.equal(nx, px) and torch.equal(nm, pm)
        kx, km = KAnchorPatch(dm, 3)(x.clone(), pose[:, :, :3], face[:, :, :3])
        pe = dm.pose_patch_embedding(pose[:, :, :3])
    assert torch.equal(kx[:, :, :3], x[:, :, :3]) and torch.allclose(kx[:, :, 3:], x[:, :, 3:] + pe)
    assert km[:, :3].abs().sum() == 0 and km[:, 3:].abs().sum() > 0
