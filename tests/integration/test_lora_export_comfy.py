"""A LoRA in the released key format as everanimate_core exports it, patched by ComfyUI's own LoRA
machinery.

The file is read by the converter the Load EverAnimate LoRA node uses (parse_lora_state_dict ->
to_comfy_keys), handed to ``comfy.lora.load_lora`` and applied by a ``ModelPatcher``; the patched
model must equal the core's merge (tests/test_training.py proves that merge equals the PEFT model
the LoRA was trained in; PEFT itself is not imported here because ComfyUI's environment may lack it).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from safetensors.torch import save_file

from everanimate_core.infra.lora import parse_lora_state_dict, to_comfy_keys, to_released_keys
from everanimate_core.tiny.dit import TinyAnimateDiT
from everanimate_core.training.trainer import merge_lora

pytestmark = pytest.mark.integration
TARGETS = ("qkv", "o", "ffn.0", "ffn.2")


def _dit() -> TinyAnimateDiT:
    torch.manual_seed(0)
    dit = TinyAnimateDiT(latent_channels=4, mask_channels=4, dim=32, depth=2, heads=2)
    with torch.no_grad():
        for p in dit.parameters():
            if p.abs().sum() == 0:
                p.normal_(0, 0.05)
    return dit.eval()


def test_exported_lora_through_comfyui_patcher_equals_the_core_merge(comfy, tmp_path):
    import comfy.lora
    import comfy.model_patcher

    g = torch.Generator().manual_seed(1)
    pairs = {}
    for name, mod in _dit().named_modules():
        if isinstance(mod, torch.nn.Linear) and name.endswith(TARGETS) and name.startswith("blocks."):
            pairs[name] = (0.1 * torch.randn(4, mod.in_features, generator=g), 0.1 * torch.randn(mod.out_features, 4, generator=g))
    save_file({k: v.contiguous() for k, v in to_released_keys(pairs).items()}, str(tmp_path / "lora.safetensors"))
    trained = _dit()
    merge_lora(trained, load_file(str(tmp_path / "lora.safetensors")))

    lora = parse_lora_state_dict(load_file(str(tmp_path / "lora.safetensors")))
    key_map = {f"diffusion_model.{name}": f"{name}.weight" for name in lora.modules}
    patches = comfy.lora.load_lora(to_comfy_keys(lora), key_map, log_missing=True)
    assert len(patches) == len(lora.modules) == 4 * 2

    base = _dit()
    patcher = comfy.model_patcher.ModelPatcher(base, torch.device("cpu"), torch.device("cpu"))
    assert len(patcher.add_patches(patches, 1.0)) == len(lora.modules)
    patcher.patch_model()

    x = torch.randn(2, 4, 5, 4, 4)
    y = torch.randn(2, 8, 5, 4, 4)
    pose = torch.randn(2, 4, 3, 4, 4)
    t = torch.tensor([250.0, 750.0])
    with torch.no_grad():
        want = trained(x, t, y, pose, 2)
        got = patcher.model(x, t, y, pose, 2)
        plain = _dit()(x, t, y, pose, 2)
    assert (want - plain).abs().max() > 1e-3
    assert torch.allclose(got, want, atol=1e-5), float((got - want).abs().max())
