"""LoRA key parsing / conversion for the released EverAnimate Wan2.2-Animate-14B LoRAs.

The synthetic files mimic the released ones: 40 blocks x (q, k, v, o of self_attn and
cross_attn + ffn.0, ffn.2) = 400 modules, 800 tensors, no alpha. Dimensions are tiny
(rank 4) so everything runs in well under a second on CPU.
"""

from __future__ import annotations

import pytest
import torch

from everanimate_core.errors import ConfigError, EverAnimateError
from everanimate_core.infra.lora import (
    LoraFile,
    canonical_module_name,
    expected_wan_animate_modules,
    lora_unet_to_module,
    match_modules,
    module_to_lora_unet,
    parse_lora_state_dict,
    to_comfy_keys,
    to_released_keys,
)

RANK = 4
DIM = 8
FFN = 16
PREFIXES = ["", "pipe.dit.", "dit.", "model."]


def _dims(module: str) -> tuple[int, int]:
    """(in, out) of a Wan block module in the tiny synthetic model."""
    if module.endswith("ffn.0"):
        return DIM, FFN
    if module.endswith("ffn.2"):
        return FFN, DIM
    return DIM, DIM


def released_state_dict(
    with_default: bool = True, prefix: str = "", seed: int = 0, num_blocks: int = 40
) -> dict[str, torch.Tensor]:
    """A state dict in the authors' released format, random tensors."""
    g = torch.Generator().manual_seed(seed)
    infix = ".default" if with_default else ""
    sd: dict[str, torch.Tensor] = {}
    for name in expected_wan_animate_modules(num_blocks):
        fan_in, fan_out = _dims(name)
        sd[f"{prefix}{name}.lora_A{infix}.weight"] = torch.randn(RANK, fan_in, generator=g)
        sd[f"{prefix}{name}.lora_B{infix}.weight"] = torch.randn(fan_out, RANK, generator=g)
    return sd


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-exact comparison (stricter than torch.equal: -0.0 vs 0.0, NaN payloads)."""
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))
    )


def _expected_comfy_keys(modules: list[str], alpha: bool = False) -> set[str]:
    keys = set()
    for m in modules:
        keys |= {f"diffusion_model.{m}.lora_A.weight", f"diffusion_model.{m}.lora_B.weight"}
        if alpha:
            keys.add(f"diffusion_model.{m}.alpha")
    return keys


# --------------------------------------------------------------------------- released format


def test_expected_modules_are_400_distinct_names():
    names = expected_wan_animate_modules()
    assert len(names) == 400 == len(set(names))
    assert names[:10] == [
        "blocks.0.self_attn.q", "blocks.0.self_attn.k", "blocks.0.self_attn.v",
        "blocks.0.self_attn.o", "blocks.0.cross_attn.q", "blocks.0.cross_attn.k",
        "blocks.0.cross_attn.v", "blocks.0.cross_attn.o", "blocks.0.ffn.0", "blocks.0.ffn.2",
    ]
    assert names[-1] == "blocks.39.ffn.2"
    assert len(expected_wan_animate_modules(2)) == 20
    with pytest.raises(ConfigError):
        expected_wan_animate_modules(0)


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("with_default", [True, False])
def test_released_format_parses_converts_and_round_trips(with_default, prefix):
    sd = released_state_dict(with_default, prefix)
    assert len(sd) == 800
    lora = parse_lora_state_dict(sd)
    expected = expected_wan_animate_modules()

    assert isinstance(lora, LoraFile)
    assert len(lora) == 400
    assert list(lora.modules) == expected  # the file's order is kept
    assert lora.format == "released"
    assert lora.adapter_name == ("default" if with_default else None)
    assert lora.ranks == {RANK}
    assert not lora.has_alpha
    for mod in lora.modules.values():
        assert mod.alpha is None and mod.scale == 1.0 and mod.rank == RANK

    # ComfyUI form: exactly the expected key set, no alpha, values bit-exact.
    comfy = to_comfy_keys(lora)
    assert set(comfy) == _expected_comfy_keys(expected)
    assert len(comfy) == 800
    infix = ".default" if with_default else ""
    for name in expected:
        for ab in "AB":
            src = sd[f"{prefix}{name}.lora_{ab}{infix}.weight"]
            assert _bits_equal(comfy[f"diffusion_model.{name}.lora_{ab}.weight"], src)

    # released -> canonical -> released is the identity (minus the export prefix).
    back = to_released_keys(lora, with_default=with_default)
    stripped = {k[len(prefix):]: v for k, v in sd.items()}
    assert list(back) == list(stripped)
    assert all(_bits_equal(back[k], stripped[k]) for k in stripped)


def test_comfy_output_reparses_to_same_modules():
    lora = parse_lora_state_dict(released_state_dict())
    again = parse_lora_state_dict(to_comfy_keys(lora))
    assert again.format == "comfy"
    assert list(again.modules) == list(lora.modules)
    for name, mod in lora.modules.items():
        assert _bits_equal(again.modules[name].A, mod.A)
        assert _bits_equal(again.modules[name].B, mod.B)


def test_to_released_keys_from_plain_mapping():
    sd = released_state_dict(with_default=False, num_blocks=2)
    lora = parse_lora_state_dict(sd)
    # As a training loop would produce it: peft-wrapped names.
    state = {f"base_model.model.{n}": (m.A, m.B) for n, m in lora.modules.items()}
    out = to_released_keys(state)
    with_infix = {k.replace(".weight", ".default.weight"): v for k, v in sd.items()}
    assert list(out) == list(with_infix)
    assert all(_bits_equal(out[k], v) for k, v in with_infix.items())
    assert parse_lora_state_dict(out).adapter_name == "default"

    a, b = torch.zeros(RANK, DIM), torch.zeros(DIM, RANK + 1)
    with pytest.raises(ConfigError, match="blocks.0.self_attn.q"):
        to_released_keys({"blocks.0.self_attn.q": (a, b)})
    with pytest.raises(ConfigError, match="twice"):
        to_released_keys({"dit.blocks.0.ffn.0": (a, a.T), "blocks.0.ffn.0": (a, a.T)})


def test_to_released_keys_refuses_or_folds_alpha():
    a = torch.randn(RANK, DIM)
    b = torch.randn(DIM, RANK)
    sd = {"lora_unet_blocks_0_self_attn_q.lora_down.weight": a,
          "lora_unet_blocks_0_self_attn_q.lora_up.weight": b,
          "lora_unet_blocks_0_self_attn_q.alpha": torch.tensor(8.0)}
    lora = parse_lora_state_dict(sd)
    assert lora.modules["blocks.0.self_attn.q"].scale == 2.0
    with pytest.raises(ConfigError, match="fold_alpha"):
        to_released_keys(lora)
    out = to_released_keys(lora, fold_alpha=True)
    assert torch.allclose(out["blocks.0.self_attn.q.lora_B.default.weight"], b * 2.0)
    refolded = parse_lora_state_dict(out).modules["blocks.0.self_attn.q"]
    assert torch.allclose(refolded.delta_weight(), lora.modules["blocks.0.self_attn.q"].delta_weight())
    # alpha == rank is scale 1: exported untouched.
    sd["lora_unet_blocks_0_self_attn_q.alpha"] = torch.tensor(float(RANK))
    out = to_released_keys(parse_lora_state_dict(sd), with_default=False)
    assert _bits_equal(out["blocks.0.self_attn.q.lora_B.weight"], b)


# --------------------------------------------------------------------------- other formats


def test_lora_unet_form_parses_to_same_modules():
    sd = released_state_dict(with_default=False)
    ref = parse_lora_state_dict(sd)
    kohya = {}
    for name, mod in ref.modules.items():
        base = module_to_lora_unet(name)
        kohya[f"{base}.lora_down.weight"] = mod.A
        kohya[f"{base}.lora_up.weight"] = mod.B
        kohya[f"{base}.alpha"] = torch.tensor(float(RANK), dtype=torch.float16)
    assert "lora_unet_blocks_7_self_attn_q.lora_down.weight" in kohya
    assert "lora_unet_blocks_7_ffn_0.lora_up.weight" in kohya

    lora = parse_lora_state_dict(kohya)
    assert lora.format == "lora_unet"
    assert list(lora.modules) == expected_wan_animate_modules()
    assert lora.has_alpha
    for name, mod in lora.modules.items():
        assert _bits_equal(mod.A, ref.modules[name].A)
        assert _bits_equal(mod.B, ref.modules[name].B)
        assert mod.scale == 1.0
    comfy = to_comfy_keys(lora)
    assert set(comfy) == _expected_comfy_keys(expected_wan_animate_modules(), alpha=True)
    assert _bits_equal(comfy["diffusion_model.blocks.7.self_attn.q.alpha"],
                       kohya["lora_unet_blocks_7_self_attn_q.alpha"])


def test_comfy_form_with_down_up_and_alpha():
    a, b = torch.randn(RANK, DIM), torch.randn(DIM, RANK)
    sd = {"diffusion_model.blocks.3.cross_attn.o.lora_down.weight": a,
          "diffusion_model.blocks.3.cross_attn.o.lora_up.weight": b,
          "diffusion_model.blocks.3.cross_attn.o.alpha": torch.tensor(2.0)}
    lora = parse_lora_state_dict(sd)
    assert lora.format == "comfy"
    mod = lora.modules["blocks.3.cross_attn.o"]
    assert mod.A is a and mod.B is b and mod.scale == 0.5
    assert torch.allclose(mod.delta_weight(), b @ a * 0.5)
    assert set(to_comfy_keys(lora)) == _expected_comfy_keys(["blocks.3.cross_attn.o"], alpha=True)


def test_mixed_formats_are_labelled_mixed():
    a, b = torch.randn(RANK, DIM), torch.randn(DIM, RANK)
    sd = {"blocks.0.self_attn.q.lora_A.weight": a, "blocks.0.self_attn.q.lora_B.weight": b,
          "lora_unet_blocks_0_self_attn_k.lora_down.weight": a,
          "lora_unet_blocks_0_self_attn_k.lora_up.weight": b}
    lora = parse_lora_state_dict(sd)
    assert lora.format == "mixed"
    assert list(lora.modules) == ["blocks.0.self_attn.q", "blocks.0.self_attn.k"]


WAN_EXTRA_NAMES = [
    "blocks.12.cross_attn.k_img",
    "blocks.12.cross_attn.v_img",
    "blocks.12.cross_attn.norm_k_img",
    "blocks.12.cross_attn.norm_k",
    "blocks.12.self_attn.norm_q",
    "blocks.3.norm3",
    "blocks.3.modulation",
    "text_embedding.0",
    "time_embedding.2",
    "time_projection.1",
    "img_emb.proj.1",
    "head.head",
    "patch_embedding",
    "pose_patch_embedding",
    "face_adapter.fuser_blocks.4.linear1_kv",
    "face_adapter.fuser_blocks.4.linear1_q",
    "face_adapter.fuser_blocks.4.q_norm",
    "face_encoder.out_proj",
]


def test_lora_unet_name_round_trip_is_unambiguous():
    names = expected_wan_animate_modules() + WAN_EXTRA_NAMES
    unders = [module_to_lora_unet(n) for n in names]
    assert all(u.startswith("lora_unet_") and "." not in u for u in unders)
    wrong = [(n, u, lora_unet_to_module(u)) for n, u in zip(names, unders) if lora_unet_to_module(u) != n]
    assert wrong == []
    # A naive replace would have broken these; the vocabulary parser does not.
    assert module_to_lora_unet("blocks.7.self_attn.q") == "lora_unet_blocks_7_self_attn_q"
    assert "lora_unet_blocks_7_self_attn_q".replace("lora_unet_", "").replace("_", ".") != "blocks.7.self_attn.q"


def test_lora_unet_examples_and_known_modules():
    assert lora_unet_to_module("lora_unet_blocks_7_self_attn_q") == "blocks.7.self_attn.q"
    assert lora_unet_to_module("blocks_7_ffn_0") == "blocks.7.ffn.0"
    assert lora_unet_to_module("lora_unet_blocks_0_cross_attn_norm_k_img") == "blocks.0.cross_attn.norm_k_img"
    # A name outside the vocabulary is split at every underscore...
    assert lora_unet_to_module("lora_unet_extra_mlp_fc_in") == "extra.mlp.fc.in"
    # ...unless the model's own module names are given: then it is exact.
    known = ["diffusion_model.extra_mlp.fc_in", "blocks.0.self_attn.q"]
    assert lora_unet_to_module("lora_unet_extra_mlp_fc_in", known) == "extra_mlp.fc_in"
    sd = {"lora_unet_extra_mlp_fc_in.lora_down.weight": torch.zeros(RANK, DIM),
          "lora_unet_extra_mlp_fc_in.lora_up.weight": torch.zeros(DIM, RANK)}
    assert list(parse_lora_state_dict(sd, known_modules=known).modules) == ["extra_mlp.fc_in"]


def test_canonical_module_name_strips_known_prefixes():
    assert canonical_module_name("pipe.dit.blocks.1.ffn.2") == "blocks.1.ffn.2"
    assert canonical_module_name("base_model.model.blocks.1.ffn.2") == "blocks.1.ffn.2"
    assert canonical_module_name("diffusion_model.blocks.1.ffn.2") == "blocks.1.ffn.2"
    assert canonical_module_name("model.diffusion_model.blocks.1.ffn.2") == "blocks.1.ffn.2"
    assert canonical_module_name("transformer.blocks.0.attn1.to_q") == "transformer.blocks.0.attn1.to_q"


# --------------------------------------------------------------------------- errors


def test_a_without_b_names_the_module():
    sd = released_state_dict(num_blocks=2)
    del sd["blocks.1.cross_attn.v.lora_B.default.weight"]
    with pytest.raises(ConfigError, match=r"blocks\.1\.cross_attn\.v.*lora_B") as exc:
        parse_lora_state_dict(sd)
    assert isinstance(exc.value, EverAnimateError)


def test_b_without_a_names_the_module():
    sd = released_state_dict(num_blocks=2)
    del sd["blocks.0.ffn.0.lora_A.default.weight"]
    with pytest.raises(ConfigError, match=r"blocks\.0\.ffn\.0.*lora_A"):
        parse_lora_state_dict(sd)


def test_alpha_without_a_and_b():
    sd = released_state_dict(num_blocks=1)
    sd["blocks.0.ffn.0.alpha"] = torch.tensor(4.0)
    parse_lora_state_dict(sd)  # fine next to its A and B
    sd["blocks.0.norm3.alpha"] = torch.tensor(4.0)
    with pytest.raises(ConfigError, match=r"blocks\.0\.norm3"):
        parse_lora_state_dict(sd)


def test_rank_mismatch_is_reported_with_shapes():
    sd = released_state_dict(num_blocks=1)
    sd["blocks.0.self_attn.o.lora_B.default.weight"] = torch.randn(DIM, RANK * 2)
    with pytest.raises(ConfigError, match=r"blocks\.0\.self_attn\.o.*rank mismatch.*\(8, 8\)"):
        parse_lora_state_dict(sd)


def test_duplicate_module_under_two_key_forms():
    sd = released_state_dict(num_blocks=1)
    sd["dit.blocks.0.ffn.2.lora_A.weight"] = sd["blocks.0.ffn.2.lora_A.default.weight"].clone()
    with pytest.raises(ConfigError, match="appears twice"):
        parse_lora_state_dict(sd)


def test_not_a_lora_names_first_keys():
    base = {"blocks.0.self_attn.q.weight": torch.zeros(2, 2),
            "blocks.0.self_attn.q.bias": torch.zeros(2),
            "patch_embedding.weight": torch.zeros(2, 2)}
    with pytest.raises(ConfigError, match=r"not a LoRA: first keys are 'blocks\.0\.self_attn\.q\.bias'"):
        parse_lora_state_dict(base)
    with pytest.raises(ConfigError, match="not a LoRA"):
        parse_lora_state_dict({})
    with pytest.raises(ConfigError, match="not a LoRA"):
        parse_lora_state_dict({"blocks.0.alpha": torch.tensor(1.0)})


def test_unknown_extra_keys_refused_unless_ignored():
    sd = released_state_dict(num_blocks=1)
    sd["blocks.0.self_attn.q.lora_magnitude_vector.default.weight"] = torch.ones(DIM)
    with pytest.raises(ConfigError, match="lora_magnitude_vector"):
        parse_lora_state_dict(sd)
    lora = parse_lora_state_dict(sd, ignore_unknown_keys=True)
    assert len(lora) == 10
    assert lora.ignored_keys == ("blocks.0.self_attn.q.lora_magnitude_vector.default.weight",)


def test_non_tensor_value_refused():
    with pytest.raises(ConfigError, match="not a tensor"):
        parse_lora_state_dict({"blocks.0.ffn.0.lora_A.weight": [[1.0]],
                               "blocks.0.ffn.0.lora_B.weight": torch.zeros(1, 1)})


# --------------------------------------------------------------------------- matching


def test_wrong_model_gives_zero_matched_and_names_first_keys():
    sd = {}
    for layer in range(3):
        for proj in ("q_proj", "k_proj", "v_proj"):
            sd[f"model.layers.{layer}.{proj}.lora_A.weight"] = torch.zeros(RANK, DIM)
            sd[f"model.layers.{layer}.{proj}.lora_B.weight"] = torch.zeros(DIM, RANK)
    lora = parse_lora_state_dict(sd)  # a valid LoRA, just not for Wan
    report = match_modules(lora, expected_wan_animate_modules())
    assert report.matched == []
    assert len(report.unmatched) == 9 == report.total
    assert report.unmatched == sorted(report.unmatched)
    assert report.fraction == 0.0
    with pytest.raises(ConfigError) as exc:
        report.raise_if_insufficient()
    msg = str(exc.value)
    assert "Only 0 of 9" in msg
    assert "'layers.0.k_proj'" in msg
    assert "model.layers.0.k_proj.lora_A.weight" in msg
    assert "and 4 more" in msg
    assert "another model" in msg and "Wan2.2-Animate-14B" in msg
    with pytest.raises(ConfigError):
        report.raise_if_insufficient(expected_count=400)


def test_full_match_against_comfy_style_model_names():
    lora = parse_lora_state_dict(released_state_dict(prefix="pipe.dit."))
    model = [f"diffusion_model.{m}.weight" for m in expected_wan_animate_modules()]
    model += ["diffusion_model.blocks.0.norm3.weight", "diffusion_model.head.head.weight"]
    report = match_modules(lora, model)
    assert len(report.matched) == 400 and report.unmatched == [] and report.fraction == 1.0
    report.raise_if_insufficient()
    report.raise_if_insufficient(expected_count=400)


def test_partial_match_reporting():
    lora = parse_lora_state_dict(released_state_dict())
    model = expected_wan_animate_modules(20)  # a 20-block model: half the LoRA is foreign
    report = match_modules(lora, model)
    assert len(report.matched) == 200 and len(report.unmatched) == 200
    assert report.fraction == 0.5
    assert set(report.unmatched) == set(expected_wan_animate_modules()[200:])
    assert set(report.matched) == set(expected_wan_animate_modules()[:200])
    # Sorted with numbers compared as numbers: blocks.20 ... blocks.39, not blocks.2x/3x mixed.
    blocks = [int(n.split(".")[1]) for n in report.unmatched]
    assert blocks == sorted(blocks) and blocks[0] == 20 and blocks[-1] == 39
    assert report.unmatched[0] == "blocks.20.cross_attn.k"
    report.raise_if_insufficient(min_fraction=0.5)
    report.raise_if_insufficient(expected_count=200)
    with pytest.raises(ConfigError, match=r"Only 200 of 400.*'blocks\.20\..*and 195 more"):
        report.raise_if_insufficient()
    with pytest.raises(ConfigError, match="at least 400 modules"):
        report.raise_if_insufficient(expected_count=400)


def test_shape_mismatch_against_model_weight_shapes():
    lora = parse_lora_state_dict(released_state_dict(num_blocks=1))
    shapes = {m: (_dims(m)[1], _dims(m)[0]) for m in expected_wan_animate_modules(1)}
    assert len(match_modules(lora, shapes).matched) == 10
    shapes["blocks.0.ffn.0"] = (FFN * 2, DIM)  # e.g. a LoRA for a smaller Wan
    report = match_modules(lora, shapes)
    assert report.shape_mismatched == ["blocks.0.ffn.0"]
    assert len(report.matched) == 9 and report.total == 10
    with pytest.raises(ConfigError, match=r"blocks\.0\.ffn\.0' \(wrong shape\)"):
        report.raise_if_insufficient()


# --------------------------------------------------------------------------- math vs peft


class _Attn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q = torch.nn.Linear(DIM, 6)


class _Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.self_attn = _Attn()


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.blocks = torch.nn.ModuleList([_Block()])

    def forward(self, x):
        return self.blocks[0].self_attn.q(x)


@pytest.mark.parametrize("lora_alpha", [RANK, 2 * RANK])
def test_lora_math_matches_peft(lora_alpha):
    """W + B@A*(alpha/rank) from the parsed file == what peft computes; no alpha == scale 1."""
    peft = pytest.importorskip("peft")
    torch.manual_seed(0)
    target = "blocks.0.self_attn.q"
    a = torch.randn(RANK, DIM, dtype=torch.float64)
    b = torch.randn(6, RANK, dtype=torch.float64)
    sd = {f"{target}.lora_A.default.weight": a, f"{target}.lora_B.default.weight": b}
    if lora_alpha != RANK:
        sd[f"{target}.alpha"] = torch.tensor(float(lora_alpha))
    lora = parse_lora_state_dict(sd)
    mod = lora.modules[target]
    assert mod.scale == lora_alpha / RANK

    base = _Tiny().double().eval()
    w0 = base.blocks[0].self_attn.q.weight.detach().clone()
    bias = base.blocks[0].self_attn.q.bias.detach().clone()
    ours = w0 + mod.delta_weight(torch.float64)
    assert torch.allclose(ours, w0 + b @ a * (lora_alpha / RANK))

    cfg = peft.LoraConfig(r=RANK, lora_alpha=lora_alpha, target_modules=[target], lora_dropout=0.0)
    wrapped = peft.get_peft_model(base, cfg).eval()
    # Load through peft's own loader, in the key form peft itself writes.
    released = to_released_keys({target: (mod.A, mod.B)}, with_default=False)
    result = peft.set_peft_model_state_dict(wrapped, {f"base_model.model.{k}": v for k, v in released.items()})
    assert not [k for k in result.unexpected_keys if "lora" in k]
    layer = wrapped.base_model.model.blocks[0].self_attn.q
    assert torch.equal(layer.lora_A["default"].weight, a)
    assert torch.equal(layer.lora_B["default"].weight, b)

    x = torch.randn(5, DIM, dtype=torch.float64)
    with torch.no_grad():
        peft_out = wrapped(x)
    assert torch.allclose(peft_out, x @ ours.T + bias, atol=1e-12)

    # peft's own export reads back as the same module with the same tensors.
    exported = peft.get_peft_model_state_dict(wrapped)
    again = parse_lora_state_dict(exported)
    assert list(again.modules) == [target]
    assert torch.equal(again.modules[target].A, a) and torch.equal(again.modules[target].B, b)

    merged = wrapped.merge_and_unload()
    assert torch.allclose(merged.blocks[0].self_attn.q.weight, ours, atol=1e-12)
