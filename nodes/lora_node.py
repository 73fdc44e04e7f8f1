"""Load EverAnimate LoRA: the released file as downloaded, through ComfyUI's own LoRA machinery."""

from __future__ import annotations

import logging

from .api_version import io

from everanimate_core import defaults as release
from everanimate_core.errors import ConfigError
from everanimate_core.infra.lora import match_modules, parse_lora_state_dict, to_comfy_keys

from .wan_patch import require_wan_animate, with_k_anchor_patch, with_shift

log = logging.getLogger("EverAnimate")


def apply_everanimate_lora(model, lora_state_dict, strength: float, shift: float):
    """Returns (patched MODEL, matched module count). Raises when the model is not Wan-Animate or
    when any module of the file has no counterpart in the model (naming the first ones)."""
    import comfy.lora

    require_wan_animate(model, "Load EverAnimate LoRA")
    lora = parse_lora_state_dict(lora_state_dict, ignore_unknown_keys=True)
    model_keys = comfy.lora.model_lora_keys_unet(model.model, {})
    names = {
        v[len("diffusion_model.") : -len(".weight")]
        for v in model_keys.values()
        if isinstance(v, str) and v.startswith("diffusion_model.") and v.endswith(".weight")
    }
    report = match_modules(lora, names)
    report.raise_if_insufficient(min_fraction=1.0, model_name="Wan2.2-Animate-14B")
    loaded = comfy.lora.load_lora(to_comfy_keys(lora), model_keys, log_missing=False)
    patched = model.clone()
    applied = patched.add_patches(loaded, strength)
    if len(applied) != len(lora.modules):
        raise ConfigError(
            f"ComfyUI applied {len(applied)} of {len(lora.modules)} LoRA modules. Connect Load EverAnimate "
            "LoRA straight to the Wan2.2-Animate model loader (before other model patches); if it still "
            "fails, please report this with the LoRA file's name."
        )
    log.info("EverAnimate LoRA: %d/%d modules matched and applied (format %s)", len(applied), len(lora.modules), lora.format)
    patched = with_k_anchor_patch(patched, None)
    return with_shift(patched, shift), len(applied)


class LoadEverAnimateLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        import folder_paths

        return io.Schema(
            node_id="EverAnimateLoadLoRA",
            display_name="Load EverAnimate LoRA",
            category="EverAnimate",
            description=(
                "Applies an EverAnimate LoRA (the released stage1/stage2 files as downloaded, or "
                "ComfyUI-format files) to a Wan2.2-Animate-14B model through ComfyUI's LoRA machinery, "
                "installs the K-anchor pose/face offset and sets the sampling shift."
            ),
            inputs=[
                io.Model.Input("model", tooltip="Wan2.2-Animate-14B from Load Diffusion Model (bf16, fp8 or GGUF)."),
                io.Combo.Input(
                    "lora_name",
                    options=folder_paths.get_filename_list("loras"),
                    tooltip="The EverAnimate LoRA file in models/loras (e.g. stage2_480p.safetensors).",
                ),
                io.Float.Input("strength", default=1.0, min=-4.0, max=4.0, step=0.05, tooltip="LoRA strength; the release uses 1.0."),
                io.Float.Input("shift", default=release.SHIFT, min=0.0, max=100.0, step=0.1, tooltip="Sampling shift (ModelSamplingSD3); the release samples with 5, ComfyUI's Wan default is 8."),
            ],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="The model with the LoRA, the K-anchor patch and the shift.")],
        )

    @classmethod
    def execute(cls, model, lora_name, strength, shift) -> io.NodeOutput:
        import comfy.utils
        import folder_paths

        path = folder_paths.get_full_path_or_raise("loras", lora_name)
        sd = comfy.utils.load_torch_file(path, safe_load=True)
        patched, _ = apply_everanimate_lora(model, sd, strength, shift)
        return io.NodeOutput(patched)
