"""Run identity: a configuration's canonical JSON, its fingerprint, and what differs between two.

A run folder or checkpoint made with one configuration refuses to resume with another; these are
the functions that decide "the same" (key order ignored, ``5 == 5.0``) and name the differing keys.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import ConfigError

__all__ = ["canonical_config", "config_fingerprint", "config_diff", "mismatch_message", "array_digest", "reference_identity"]



def _canonical(value: Any, where: str) -> Any:
    """Recursively normalize a config value (see :func:`canonical_config`)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(
                f"config value {where} is {value!r}; NaN/inf cannot be part of a run "
                "configuration. Use a finite number or None."
            )
        if value.is_integer():
            return int(value)
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ConfigError(
                    f"config key {k!r} at {where or 'top level'} is not a string; "
                    "use string keys."
                )
            out[k] = _canonical(v, f"{where}.{k}" if where else k)
        return out
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    # numpy scalars and 0-d tensors: use their Python value.
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "ndim", 1) == 0:
        return _canonical(item(), where)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise ConfigError(
        f"config value {where} has type {type(value).__name__}, which cannot be "
        "fingerprinted; use numbers, strings, booleans, None, lists or dicts."
    )


def canonical_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """Return the normalized, JSON-safe form of a config used for fingerprints.

    Normalization: tuples become lists; numpy scalars become Python numbers; paths become
    strings; floats with an integral value become ints, so ``5`` and ``5.0`` give the same
    fingerprint (UI widgets and JSON round trips turn one into the other, and treating
    them as different settings would refuse valid resumes). Non-finite floats and
    non-string keys raise ConfigError. Key order does not matter.
    """
    if not isinstance(config, Mapping):
        raise ConfigError(f"config must be a mapping, got {type(config).__name__}.")
    return _canonical(config, "")


def _canonical_json(config: Mapping[str, Any]) -> str:
    return json.dumps(
        canonical_config(config),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """sha256 hex digest of the canonical JSON of ``config`` (sorted keys, compact).

    Two configs get the same fingerprint exactly when :func:`canonical_config` makes them
    equal; in particular key order is ignored and ``5 == 5.0``. Used to refuse resuming a
    run folder with different settings.
    """
    return hashlib.sha256(_canonical_json(config).encode("ascii")).hexdigest()


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Human-readable list of the keys whose values differ between two configs.

    Nested dicts are compared key by key and reported with dotted paths, e.g.
    ``"sampler.steps: 20 -> 30"``; missing keys are shown as ``<absent>``. Values are
    compared after :func:`canonical_config` normalization.
    """
    out: list[str] = []
    _diff(canonical_config(old), canonical_config(new), "", out)
    return out


def _diff(old: Any, new: Any, where: str, out: list[str]) -> None:
    missing = object()
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            path = f"{where}.{key}" if where else key
            a, b = old.get(key, missing), new.get(key, missing)
            if a is missing or b is missing:
                fa = "<absent>" if a is missing else json.dumps(a)
                fb = "<absent>" if b is missing else json.dumps(b)
                out.append(f"{path}: {fa} -> {fb}")
            else:
                _diff(a, b, path, out)
    elif old != new or type(old) is not type(new):
        out.append(f"{where or '<config>'}: {json.dumps(old)} -> {json.dumps(new)}")


def mismatch_message(
    what: str, stored_config: Any, current_config: Mapping[str, Any] | None
) -> str:
    """Error text for a fingerprint mismatch, naming differing keys when possible."""
    head = f"{what} was made with different settings than the current ones"
    tail = (
        "Resume with the original settings, or use a new run folder (or delete this one) "
        "to start over with the new settings."
    )
    if isinstance(stored_config, Mapping) and current_config is not None:
        try:
            diffs = config_diff(stored_config, current_config)
        except ConfigError:
            diffs = []
        if diffs:
            return f"{head}; differing keys (stored -> current): {'; '.join(diffs)}. {tail}"
    return f"{head} (config fingerprints differ). {tail}"


def array_digest(*arrays: Any) -> str:
    """Short sha256 of the bytes of some arrays (an input's identity in a run configuration)."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def reference_identity(reference: Any) -> dict[str, Any]:
    """The reference image's entry in a run configuration: digest and shape."""
    ref = np.asarray(reference)
    return {"reference_sha256": array_digest(ref), "reference_shape": list(ref.shape)}
