"""Read, check and convert LoRA files for Wan2.2-Animate-14B.

Accepted forms: the authors' released PEFT-style files (``blocks.7.self_attn.q.lora_A[.default].weight``,
optionally behind ``pipe.dit.``/``dit.``/``model.``; no alpha tensors, so scale 1 = alpha/rank),
ComfyUI's form (``diffusion_model.``, ``lora_A``/``lora_B`` or ``lora_down``/``lora_up``) and kohya's
(``lora_unet_blocks_7_self_attn_q.lora_down.weight`` + ``.alpha``). All parse into :class:`LoraFile`,
keyed by the canonical module path (``blocks.7.self_attn.q``), and are written back for ComfyUI
(:func:`to_comfy_keys`) or in the released format (:func:`to_released_keys`). :func:`match_modules`
checks a LoRA against a model before anything is patched, so a LoRA for another model fails loudly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence, Union

import torch

from ..errors import ConfigError

__all__ = [
    "LoraModule",
    "LoraFile",
    "MatchReport",
    "KNOWN_PREFIXES",
    "WAN_ANIMATE_TARGETS",
    "canonical_module_name",
    "module_to_lora_unet",
    "lora_unet_to_module",
    "parse_lora_state_dict",
    "to_comfy_keys",
    "to_released_keys",
    "match_modules",
    "expected_wan_animate_modules",
]

#: Leading prefixes stripped (repeatedly, in this order of preference) to get the
#: canonical module path. ``base_model.model.`` is what PEFT's own
#: ``get_peft_model_state_dict`` writes; the others come from the released exports
#: and from ComfyUI-format files.
KNOWN_PREFIXES: tuple[str, ...] = (
    "base_model.model.",
    "diffusion_model.",
    "pipe.dit.",
    "dit.",
    "model.",
)

#: The per-block sub-modules the released EverAnimate LoRAs target.
WAN_ANIMATE_TARGETS: tuple[str, ...] = (
    "self_attn.q",
    "self_attn.k",
    "self_attn.v",
    "self_attn.o",
    "cross_attn.q",
    "cross_attn.k",
    "cross_attn.v",
    "cross_attn.o",
    "ffn.0",
    "ffn.2",
)

# Names inside Wan 2.x / Wan2.2-Animate module paths that themselves contain
# underscores. ``lora_unet_`` names replace every '.' with '_', so these must be
# re-joined by vocabulary, longest match first (``norm_k_img`` before ``norm_k``).
_UNDERSCORE_WORDS: tuple[str, ...] = (
    "self_attn",
    "cross_attn",
    "norm_q",
    "norm_k",
    "norm_k_img",
    "k_img",
    "v_img",
    "text_embedding",
    "time_embedding",
    "time_projection",
    "patch_embedding",
    "pose_patch_embedding",
    "img_emb",
    "face_adapter",
    "fuser_blocks",
    "linear1_kv",
    "linear1_q",
    "q_norm",
    "k_norm",
    "pre_norm_feat",
    "pre_norm_motion",
    "face_encoder",
    "conv1_local",
    "out_proj",
    "padding_tokens",
    "motion_encoder",
    "net_app",
    "vace_blocks",
    "vace_patch_embedding",
    "before_proj",
    "after_proj",
)
_WORDS_BY_LENGTH: tuple[tuple[str, ...], ...] = tuple(
    sorted((tuple(w.split("_")) for w in set(_UNDERSCORE_WORDS)), key=len, reverse=True)
)

_LORA_UNET = "lora_unet_"
_COMFY_PREFIX = "diffusion_model."

# <module>.lora_A[.<adapter>].weight / <module>.lora_B[.<adapter>].weight
_RE_AB = re.compile(r"^(?P<mod>.+?)\.lora_(?P<ab>[AB])(?:\.(?P<adapter>[^.]+))?\.weight$")
# <module>.lora_down.weight / <module>.lora_up.weight
_RE_DOWNUP = re.compile(r"^(?P<mod>.+?)\.lora_(?P<ud>down|up)\.weight$")
# <module>.alpha
_RE_ALPHA = re.compile(r"^(?P<mod>.+?)\.alpha$")


@dataclass(frozen=True)
class LoraModule:
    """One low-rank update ``delta W = B @ A * scale`` for one model module.

    ``A`` (a.k.a. ``lora_down``) is ``[rank, in, *kernel]``, ``B`` (``lora_up``)
    is ``[out, rank, *1]``. ``alpha`` is the scalar tensor stored in the file, or
    ``None`` when the file had none (released EverAnimate files never do); the
    scale is then 1.0, which is also what ComfyUI and PEFT (``lora_alpha == r``)
    use. ``source_keys`` are the original keys, for error messages.
    """

    name: str
    A: torch.Tensor
    B: torch.Tensor
    alpha: torch.Tensor | None
    rank: int
    source_keys: tuple[str, ...] = ()

    @property
    def scale(self) -> float:
        """``alpha / rank``, or 1.0 when the file stored no alpha."""
        if self.alpha is None:
            return 1.0
        return float(self.alpha.item()) / self.rank

    def delta_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The dense update ``B @ A * scale`` with the shape of the target weight.

        For a Linear this is ``[out, in]``; for a conv LoRA (A ``[rank, in, k...]``,
        B ``[out, rank, 1...]``) it is ``[out, in, k...]``. Computed in ``dtype``.
        """
        a = self.A.to(dtype).reshape(self.rank, -1)
        b = self.B.to(dtype).reshape(self.B.shape[0], self.rank)
        delta = (b @ a) * self.scale
        return delta.reshape(self.B.shape[0], *self.A.shape[1:])


@dataclass(frozen=True)
class LoraFile:
    """A parsed LoRA: modules keyed by canonical module path, in the file's order.

    ``format`` is ``"released"`` (PEFT-style ``lora_A``/``lora_B``, the authors'
    format, any of the known prefixes or none), ``"comfy"`` (``diffusion_model.``
    prefix), ``"lora_unet"`` (kohya underscore names) or ``"mixed"``.
    ``adapter_name`` is the PEFT infix seen (``"default"``) or ``None``.
    ``ignored_keys`` lists keys skipped because ``ignore_unknown_keys=True``.
    """

    modules: dict[str, LoraModule]
    format: str
    adapter_name: str | None = None
    ignored_keys: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.modules)

    @property
    def has_alpha(self) -> bool:
        """True if any module carried an ``alpha`` tensor."""
        return any(m.alpha is not None for m in self.modules.values())

    @property
    def ranks(self) -> set[int]:
        """The distinct ranks present (usually one)."""
        return {m.rank for m in self.modules.values()}


# --------------------------------------------------------------------------- names


def _natural_key(name: str) -> tuple:
    """Sort key putting ``blocks.2`` before ``blocks.10``."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", name))


def canonical_module_name(name: str) -> str:
    """Strip the known leading prefixes (``pipe.dit.``, ``dit.``, ``model.``,
    ``diffusion_model.``, ``base_model.model.``) from a module path, repeatedly.

    ``pipe.dit.blocks.7.self_attn.q`` -> ``blocks.7.self_attn.q``. Names are kept
    otherwise untouched, so a LoRA for another model keeps a recognisably foreign
    name (``layers.0.q_proj``) for the mismatch report.
    """
    changed = True
    while changed:
        changed = False
        for prefix in KNOWN_PREFIXES:
            if name.startswith(prefix) and len(name) > len(prefix):
                name = name[len(prefix):]
                changed = True
                break
    return name


def module_to_lora_unet(name: str) -> str:
    """Canonical module path -> kohya name: ``blocks.7.ffn.0`` -> ``lora_unet_blocks_7_ffn_0``."""
    return _LORA_UNET + canonical_module_name(name).replace(".", "_")


def lora_unet_to_module(name: str, known_modules: Iterable[str] | None = None) -> str:
    """Kohya name -> canonical module path, e.g. ``lora_unet_blocks_7_self_attn_q``
    -> ``blocks.7.self_attn.q``.

    A naive ``replace("_", ".")`` would break ``self_attn``, ``cross_attn``,
    ``norm_k_img`` and friends, so the underscore-separated words are re-joined
    using a vocabulary of Wan module-name words (longest match first). When
    ``known_modules`` (the model's module paths or weight keys) is given and one has
    exactly this underscore form, that one is returned: exact for any model.
    The leading ``lora_unet_`` is optional.
    """
    index = _underscore_index(known_modules) if known_modules is not None else None
    return _lora_unet_to_module(name, index)


def _model_module_name(raw: str) -> str:
    """A model's module path or weight key -> canonical path (drops ``.weight``)."""
    name = raw[: -len(".weight")] if raw.endswith(".weight") else raw
    return canonical_module_name(name)


def _underscore_index(known_modules: Iterable[str]) -> dict[str, str]:
    """Map underscore form -> canonical path for the model's module names."""
    index: dict[str, str] = {}
    for mod in known_modules:
        canon = _model_module_name(mod)
        index.setdefault(canon.replace(".", "_"), canon)
    return index


def _lora_unet_to_module(name: str, index: Mapping[str, str] | None) -> str:
    body = name[len(_LORA_UNET):] if name.startswith(_LORA_UNET) else name
    if index is not None and body in index:
        return index[body]
    parts = body.split("_")
    out: list[str] = []
    i = 0
    while i < len(parts):
        for word in _WORDS_BY_LENGTH:
            if tuple(parts[i:i + len(word)]) == word:
                out.append("_".join(word))
                i += len(word)
                break
        else:
            out.append(parts[i])
            i += 1
    return ".".join(out)


def expected_wan_animate_modules(num_blocks: int = 40) -> list[str]:
    """The canonical module paths a full EverAnimate LoRA targets, in block order.

    q, k, v, o of ``self_attn`` and ``cross_attn`` and ``ffn.0``, ``ffn.2`` in
    each of the ``num_blocks`` transformer blocks: 400 for Wan2.2-Animate-14B.
    """
    if num_blocks < 1:
        raise ConfigError(f"num_blocks must be at least 1, got {num_blocks}.")
    return [f"blocks.{i}.{t}" for i in range(num_blocks) for t in WAN_ANIMATE_TARGETS]


# --------------------------------------------------------------------------- parse


def _key_format(raw_module: str) -> str:
    if raw_module.startswith(_LORA_UNET):
        return "lora_unet"
    if raw_module.startswith(_COMFY_PREFIX):
        return "comfy"
    return "released"


def _first_keys(keys: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(repr(k) for k in keys[:n])
    more = f" (and {len(keys) - n} more)" if len(keys) > n else ""
    return shown + more


def parse_lora_state_dict(
    sd: Mapping[str, torch.Tensor],
    known_modules: Iterable[str] | None = None,
    ignore_unknown_keys: bool = False,
) -> LoraFile:
    """Detect the key format of a LoRA state dict and group its tensors by module.

    Accepts, in any mix: the released/PEFT form ``<m>.lora_A[.default].weight``
    (optionally under ``pipe.dit.``, ``dit.``, ``model.``, ``base_model.model.``),
    ComfyUI's ``diffusion_model.<m>.lora_A|lora_down.weight`` and the kohya form
    ``lora_unet_<m_with_underscores>.lora_down.weight``; each with an optional
    ``<m>.alpha``. ``known_modules`` (model module paths) makes ``lora_unet_``
    names resolve exactly for any model; without it a Wan vocabulary is used.

    Raises :class:`ConfigError` when the dict holds no LoRA keys at all, when a
    module has A without B (or B without A, or alpha without either), when A and
    B disagree on the rank, when one module appears under two different keys, and
    (unless ``ignore_unknown_keys``) when keys that are not LoRA A/B/alpha are
    present, because silently dropping them would change what the file does.
    """
    keys = list(sd.keys())
    if not keys:
        raise ConfigError("This file is not a LoRA: it holds no tensors at all.")
    index = _underscore_index(known_modules) if known_modules is not None else None

    parts: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    formats: set[str] = set()
    adapters: set[str] = set()
    unknown: list[str] = []

    def resolve(raw: str) -> str:
        if raw.startswith(_LORA_UNET):
            return _lora_unet_to_module(raw, index)
        return canonical_module_name(raw)

    for key in keys:
        m = _RE_AB.match(key)
        if m:
            raw, role = m.group("mod"), m.group("ab")
            if m.group("adapter") is not None:
                adapters.add(m.group("adapter"))
        else:
            m = _RE_DOWNUP.match(key)
            if m:
                raw, role = m.group("mod"), ("A" if m.group("ud") == "down" else "B")
            else:
                m = _RE_ALPHA.match(key)
                if m:
                    raw, role = m.group("mod"), "alpha"
                else:
                    unknown.append(key)
                    continue
        value = sd[key]
        if not isinstance(value, torch.Tensor):
            raise ConfigError(
                f"LoRA key {key!r} holds a {type(value).__name__}, not a tensor; "
                "load the file with safetensors/torch and pass the tensors."
            )
        formats.add(_key_format(raw))
        name = resolve(raw)
        slot = parts.setdefault(name, {})
        if role in slot:
            raise ConfigError(
                f"LoRA module {name!r} appears twice: keys {slot[role][0]!r} and {key!r} "
                "both give its " + ("alpha" if role == "alpha" else f"lora_{role}")
                + ". The file mixes two copies of the same LoRA; keep one."
            )
        slot[role] = (key, value)

    if not any("A" in slot or "B" in slot for slot in parts.values()):
        raise ConfigError(
            f"This file is not a LoRA: first keys are {_first_keys(sorted(keys))}. "
            "A LoRA has '<module>.lora_A.weight'/'lora_B.weight' (or lora_down/lora_up) pairs; "
            "check that you picked the LoRA file and not a base model or VAE."
        )
    if unknown and not ignore_unknown_keys:
        raise ConfigError(
            f"LoRA file has {len(unknown)} key(s) that are not LoRA A/B/alpha tensors: "
            f"{_first_keys(sorted(unknown))}. Only plain low-rank LoRAs are supported "
            "(no DoRA, full-weight diffs or biases); pass ignore_unknown_keys=True to skip them."
        )
    if len(adapters) > 1:
        raise ConfigError(
            f"LoRA file holds several PEFT adapters {sorted(adapters)}; export one adapter per file."
        )

    modules: dict[str, LoraModule] = {}
    for name, slot in parts.items():
        if "A" not in slot or "B" not in slot:
            present = sorted(k for k, _ in slot.values())
            missing = "lora_A (lora_down)" if "A" not in slot else "lora_B (lora_up)"
            raise ConfigError(
                f"LoRA module {name!r} has no {missing}: only {present} present. "
                "The file is truncated or was not exported completely."
            )
        (ka, a), (kb, b) = slot["A"], slot["B"]
        if a.ndim < 2 or b.ndim < 2:
            raise ConfigError(
                f"LoRA module {name!r}: A {tuple(a.shape)} and B {tuple(b.shape)} must both be "
                "at least 2-D ([rank, in] and [out, rank])."
            )
        rank = int(a.shape[0])
        if int(b.shape[1]) != rank or any(int(s) != 1 for s in b.shape[2:]):
            raise ConfigError(
                f"LoRA module {name!r}: rank mismatch, A {ka!r} is {tuple(a.shape)} (rank {rank}) "
                f"but B {kb!r} is {tuple(b.shape)} (expected [out, {rank}]). The file is corrupted "
                "or A and B were swapped."
            )
        alpha = None
        source = [ka, kb]
        if "alpha" in slot:
            kal, alpha = slot["alpha"]
            source.append(kal)
            if alpha.numel() != 1:
                raise ConfigError(
                    f"LoRA module {name!r}: alpha {kal!r} must be a single number, "
                    f"got shape {tuple(alpha.shape)}."
                )
        modules[name] = LoraModule(name, a, b, alpha, rank, tuple(source))

    fmt = formats.pop() if len(formats) == 1 else "mixed"
    return LoraFile(
        modules=modules,
        format=fmt,
        adapter_name=adapters.pop() if adapters else None,
        ignored_keys=tuple(sorted(unknown)),
    )


# --------------------------------------------------------------------------- export


def to_comfy_keys(lora: LoraFile) -> dict[str, torch.Tensor]:
    """The state dict ComfyUI's LoRA loader expects for a Wan model.

    ``diffusion_model.<module>.lora_A.weight`` and ``.lora_B.weight`` per module,
    plus ``diffusion_model.<module>.alpha`` only for modules whose file had an
    alpha (no alpha = scale 1.0 in ComfyUI, as in the released files). Tensors are
    passed through unchanged (same objects, bit-exact).
    """
    out: dict[str, torch.Tensor] = {}
    for name, mod in lora.modules.items():
        base = _COMFY_PREFIX + name
        out[base + ".lora_A.weight"] = mod.A
        out[base + ".lora_B.weight"] = mod.B
        if mod.alpha is not None:
            out[base + ".alpha"] = mod.alpha
    return out


def to_released_keys(
    state: Union[LoraFile, Mapping[str, tuple[torch.Tensor, torch.Tensor]]],
    with_default: bool = True,
    fold_alpha: bool = False,
) -> dict[str, torch.Tensor]:
    """Export to the authors' released format: ``<module>.lora_A[.default].weight``.

    ``state`` maps module path -> ``(A, B)`` (prefixes such as ``base_model.model.``
    are stripped), or is a :class:`LoraFile`. The released format has no alpha, so
    its scale is 1.0; a :class:`LoraFile` whose alpha gives another scale is refused
    unless ``fold_alpha=True``, which multiplies the scale into B (in float32, cast
    back to B's dtype). Otherwise tensors are passed through unchanged. Keys come
    out in the order of ``state``. Raises :class:`ConfigError` on rank mismatch or on
    two entries for the same module.
    """
    pairs: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if isinstance(state, LoraFile):
        for name, mod in state.modules.items():
            b = mod.B
            if mod.scale != 1.0:
                if not fold_alpha:
                    raise ConfigError(
                        f"LoRA module {name!r} has alpha {float(mod.alpha.item())} with rank "
                        f"{mod.rank} (scale {mod.scale}); the released format has no alpha "
                        "(scale 1). Pass fold_alpha=True to fold the scale into lora_B."
                    )
                b = (b.to(torch.float32) * mod.scale).to(b.dtype)
            pairs[name] = (mod.A, b)
    else:
        for raw, ab in state.items():
            if not (isinstance(ab, (tuple, list)) and len(ab) == 2):
                raise ConfigError(f"Entry {raw!r} must be an (A, B) pair of tensors.")
            name = canonical_module_name(raw)
            if name in pairs:
                raise ConfigError(f"Module {name!r} given twice (as {raw!r} and an earlier name).")
            a, b = ab
            if a.ndim < 2 or b.ndim < 2 or int(b.shape[1]) != int(a.shape[0]):
                raise ConfigError(
                    f"LoRA module {name!r}: A {tuple(a.shape)} and B {tuple(b.shape)} are not "
                    "[rank, in] and [out, rank] with the same rank."
                )
            pairs[name] = (a, b)
    infix = ".default" if with_default else ""
    out: dict[str, torch.Tensor] = {}
    for name, (a, b) in pairs.items():
        out[f"{name}.lora_A{infix}.weight"] = a
        out[f"{name}.lora_B{infix}.weight"] = b
    return out


# --------------------------------------------------------------------------- match


@dataclass(frozen=True)
class MatchReport:
    """How a LoRA's modules line up with a model's modules.

    ``matched``: LoRA modules found in the model (and with fitting shapes when
    shapes were given). ``unmatched``: LoRA modules the model does not have.
    ``shape_mismatched``: found by name but the LoRA's ``[out, in]`` does not fit
    the model weight (typically a LoRA for Wan 1.3B/5B on the 14B model). All
    three are sorted. ``source_keys`` maps a LoRA module to its original keys.
    """

    matched: list[str]
    unmatched: list[str]
    shape_mismatched: list[str] = field(default_factory=list)
    source_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Number of modules in the LoRA."""
        return len(self.matched) + len(self.unmatched) + len(self.shape_mismatched)

    @property
    def fraction(self) -> float:
        """Share of the LoRA's modules that will actually be applied."""
        return len(self.matched) / self.total if self.total else 0.0

    def raise_if_insufficient(
        self,
        min_fraction: float = 1.0,
        expected_count: int | None = None,
        model_name: str = "Wan2.2-Animate-14B",
    ) -> None:
        """Raise :class:`ConfigError` unless enough of the LoRA applies to the model.

        With ``expected_count`` the check is ``len(matched) >= expected_count``
        (e.g. 400 for a full EverAnimate LoRA); otherwise it is
        ``fraction >= min_fraction`` (default: every module must match). The
        message names the first five unmatched modules with their original keys
        and says the LoRA was probably made for a model other than ``model_name``.
        """
        if expected_count is not None:
            ok = len(self.matched) >= expected_count
            need = f"at least {expected_count} modules"
        else:
            ok = self.fraction >= min_fraction - 1e-12
            need = f"at least {min_fraction:.0%} of its modules"
        if ok:
            return
        bad = self.unmatched + self.shape_mismatched
        shown = []
        for name in bad[:5]:
            keys = self.source_keys.get(name, ())
            why = " (wrong shape)" if name in self.shape_mismatched else ""
            shown.append(f"{name!r}{why} (from {keys[0]!r})" if keys else f"{name!r}{why}")
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ConfigError(
            f"Only {len(self.matched)} of {self.total} LoRA modules match the model; need {need}. "
            f"Not found or not fitting: {', '.join(shown)}{more}. "
            f"This LoRA was probably made for another model (not {model_name}); "
            "pick a LoRA trained for this model."
        )


def match_modules(
    lora: LoraFile,
    model_module_names: Union[Iterable[str], Mapping[str, Sequence[int]]],
) -> MatchReport:
    """Compare the LoRA's modules with the model's.

    ``model_module_names`` are module paths as the model names them (e.g. from
    ``named_modules()`` or ComfyUI's ``diffusion_model.*`` state-dict keys; known
    prefixes and a trailing ``.weight`` are stripped). If it is a mapping of name
    -> weight shape, each matched module's ``B.shape[0]`` and ``A.shape[1:]`` are
    also checked against ``[out, in, ...]``. Nothing is raised here; call
    :meth:`MatchReport.raise_if_insufficient` to enforce a threshold.
    """
    shapes: dict[str, tuple[int, ...]] | None = None
    if isinstance(model_module_names, Mapping):
        items = [(n, tuple(int(s) for s in sh)) for n, sh in model_module_names.items()]
        shapes = {}
    else:
        items = [(n, None) for n in model_module_names]
    names: set[str] = set()
    for raw, shape in items:
        name = _model_module_name(raw)
        names.add(name)
        if shapes is not None and shape is not None:
            shapes[name] = shape

    matched, unmatched, wrong = [], [], []
    for name, mod in lora.modules.items():
        if name not in names:
            unmatched.append(name)
            continue
        if shapes is not None and name in shapes:
            want = shapes[name]
            have = (int(mod.B.shape[0]), *(int(s) for s in mod.A.shape[1:]))
            if tuple(want) != have:
                wrong.append(name)
                continue
        matched.append(name)
    return MatchReport(
        matched=sorted(matched, key=_natural_key),
        unmatched=sorted(unmatched, key=_natural_key),
        shape_mismatched=sorted(wrong, key=_natural_key),
        source_keys={n: m.source_keys for n, m in lora.modules.items()},
    )
