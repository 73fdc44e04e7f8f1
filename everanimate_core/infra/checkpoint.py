"""Resume checkpoints for long runs, stored as safetensors + JSON (never pickle).

A checkpoint ``<name>`` is ``<name>.safetensors`` (the tensors) plus ``<name>.json``, the commit
record written last: format version, byte size and sha256 of the tensor file, and the caller's
``meta`` (config ``fingerprint`` and the ``config`` itself, for messages naming what differs).
Every file is written to a temporary name, fsynced and moved with ``os.replace``; a checkpoint
exists once its JSON does. Before the tensor file is replaced, the old one is kept under a hidden
hard link ``.<name>.<sha16>.prev.safetensors`` so a crash between the two writes leaves the previous
checkpoint readable (:func:`load_state` falls back to it; the next save removes it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import ConfigError, ResumeStateError
from .identity import config_fingerprint, mismatch_message

__all__ = [
    "FORMAT_VERSION",
    "save_state",
    "load_state",
    "write_text_atomic",
    "START_OVER",
]

FORMAT_VERSION = 1
"""Version of the checkpoint JSON written by :func:`save_state`."""

_STATE_KIND = "everanimate-state"
START_OVER = "delete the run folder or pick another one to start over"
_HASH_BLOCK = 1 << 20


# --------------------------------------------------------------------------------------
# Atomic file helpers
# --------------------------------------------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable (POSIX only; a no-op where unsupported)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _temp_path(directory: Path, name: str, suffix: str) -> Path:
    """A fresh, unused temporary file name in ``directory``."""
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=f"{suffix}.tmp")
    os.close(fd)
    return Path(tmp)


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via temp file + fsync + os.replace."""
    tmp = _temp_path(path.parent, path.stem, path.suffix)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(_HASH_BLOCK)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _prev_path(directory: Path, name: str, sha: str) -> Path:
    return directory / f".{name}.{sha[:16]}.prev.safetensors"


def _check_name(name: str) -> None:
    if not name or name != Path(name).name or name.startswith("."):
        raise ConfigError(
            f"checkpoint name {name!r} must be a plain file name (no folders, not hidden)."
        )


def _prepare_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detach, move to CPU and make contiguous; un-share storage safetensors refuses."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, t in tensors.items():
        if not isinstance(key, str):
            raise ConfigError(f"tensor names must be strings, got {key!r}.")
        if not isinstance(t, torch.Tensor):
            raise ConfigError(f"value for {key!r} is {type(t).__name__}, not a torch.Tensor.")
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen or t.untyped_storage().nbytes() != t.numel() * t.element_size():
            t = t.clone()  # views of a shared/bigger storage: save just this tensor's data
        seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


# --------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------


def _read_record(json_path: Path) -> dict[str, Any] | None:
    """The committed JSON record at ``json_path``, or None if absent/unreadable."""
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _recorded_sha(record: dict[str, Any] | None) -> str | None:
    try:
        sha = record["safetensors"]["sha256"]  # type: ignore[index]
    except (TypeError, KeyError):
        return None
    return sha if isinstance(sha, str) and len(sha) == 64 else None


def save_state(
    directory: str | os.PathLike[str],
    name: str,
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
) -> None:
    """Write checkpoint ``name`` (``<name>.safetensors`` + ``<name>.json``) atomically.

    ``tensors`` maps names to tensors of any dtype safetensors supports (float32, bf16,
    int64, uint8, ...); they are detached, moved to CPU and made contiguous first.
    ``meta`` must be JSON-serializable (checked before anything is written); to allow
    fingerprint checks on load put ``fingerprint`` (and ``config``) in it.

    Crash safety: tensors are written to a temp file, fsynced and renamed; then the JSON
    (with sha256 and size of the tensor file) is written the same way, last. If the
    process dies at any point, :func:`load_state` returns either the new checkpoint or
    the previous one, never a mix. ``directory`` is created if needed.
    """
    _check_name(name)
    directory = Path(directory)
    try:
        meta_json = json.loads(json.dumps(dict(meta)))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"checkpoint meta must be JSON-serializable: {exc}") from None
    prepared = _prepare_tensors(tensors)
    directory.mkdir(parents=True, exist_ok=True)
    st_path = directory / f"{name}.safetensors"
    json_path = directory / f"{name}.json"

    # Preserve the committed tensor file (if any) so the old JSON stays loadable until
    # the new JSON is in place.
    old_sha = _recorded_sha(_read_record(json_path))
    keep_prev: Path | None = None
    if old_sha is not None:
        keep_prev = _prev_path(directory, name, old_sha)
        if not keep_prev.exists() and st_path.exists():
            # No backup for the committed hash yet, so st_path *is* the committed file:
            # a mismatching st_path only happens after a crash that already made one.
            try:
                os.link(st_path, keep_prev)
            except OSError:
                shutil.copyfile(st_path, keep_prev)

    tmp = _temp_path(directory, name, ".safetensors")
    try:
        save_file(prepared, str(tmp))
        _fsync_file(tmp)
        size = tmp.stat().st_size
        sha = _sha256_file(tmp)
        os.replace(tmp, st_path)
    except BaseException:
        _unlink(tmp)
        raise
    _fsync_dir(directory)

    record = {
        "format": _STATE_KIND,
        "format_version": FORMAT_VERSION,
        "safetensors": {"file": st_path.name, "bytes": size, "sha256": sha},
        "tensors": sorted(prepared),
        "meta": meta_json,
    }
    write_text_atomic(json_path, json.dumps(record, indent=1, sort_keys=True))

    # Committed: drop backups and temp files left by this or earlier interrupted saves
    # (matched exactly, so that checkpoint "a" never touches the files of "a.b").
    leftovers = re.compile(
        rf"\.{re.escape(name)}\.(?:[0-9a-f]{{16}}\.prev\.safetensors|[^.]+\.(?:safetensors|json)\.tmp)"
    )
    for entry in directory.iterdir():
        if leftovers.fullmatch(entry.name):
            _unlink(entry)


def _verify(path: Path, size: int, sha: str) -> str | None:
    """None if ``path`` has the recorded size and hash, else what is wrong with it."""
    try:
        actual_size = path.stat().st_size
    except FileNotFoundError:
        return "is missing"
    if actual_size != size:
        kind = "truncated" if actual_size < size else "longer than recorded"
        return f"is {kind} ({actual_size} bytes, expected {size})"
    if _sha256_file(path) != sha:
        return "is corrupted (its sha256 does not match the checkpoint record)"
    return None


def load_state(
    directory: str | os.PathLike[str],
    name: str,
    expected_fingerprint: str | None = None,
    expected_config: Mapping[str, Any] | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load checkpoint ``name`` from ``directory``; returns ``(tensors, meta)``.

    The tensor file is verified against the size and sha256 recorded in the JSON before
    it is parsed. With ``expected_fingerprint`` (or ``expected_config``, whose
    fingerprint is then used) the checkpoint's ``meta["fingerprint"]`` must match; when
    ``expected_config`` is given and the checkpoint stored ``meta["config"]``, the error
    names the keys that differ. Every problem raises :class:`ResumeStateError` with a
    message that says what to do.
    """
    _check_name(name)
    directory = Path(directory)
    json_path = directory / f"{name}.json"
    st_path = directory / f"{name}.safetensors"
    if not json_path.is_file():
        raise ResumeStateError(
            f"no checkpoint {name!r} in {str(directory)!r} ({json_path.name} is missing). "
            "If this run never finished that step, start it again without resuming, or "
            f"{START_OVER}."
        )
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError("top level is not an object")
    except (OSError, ValueError) as exc:
        raise ResumeStateError(
            f"checkpoint record {str(json_path)!r} is not valid JSON (corrupted: {exc}); "
            f"{START_OVER}."
        ) from None
    if record.get("format") != _STATE_KIND:
        raise ResumeStateError(
            f"{str(json_path)!r} is not an EverAnimate checkpoint record; {START_OVER}."
        )
    version = record.get("format_version")
    if version != FORMAT_VERSION:
        raise ResumeStateError(
            f"checkpoint {str(json_path)!r} has format version {version!r}, but this "
            f"EverAnimate reads version {FORMAT_VERSION}. Resume it with the EverAnimate "
            f"version that wrote it, or {START_OVER}."
        )
    try:
        info = record["safetensors"]
        size, sha = int(info["bytes"]), str(info["sha256"])
        meta = record["meta"]
        if not isinstance(meta, dict):
            raise TypeError("meta is not an object")
    except (KeyError, TypeError, ValueError) as exc:
        raise ResumeStateError(
            f"checkpoint record {str(json_path)!r} is incomplete (corrupted: {exc}); "
            f"{START_OVER}."
        ) from None

    if expected_config is not None and expected_fingerprint is None:
        expected_fingerprint = config_fingerprint(expected_config)
    if expected_fingerprint is not None:
        stored = meta.get("fingerprint")
        if stored is None:
            raise ResumeStateError(
                f"checkpoint {str(json_path)!r} has no config fingerprint, so it cannot be "
                f"checked against the current settings; {START_OVER}."
            )
        if stored != expected_fingerprint:
            raise ResumeStateError(mismatch_message(
                f"checkpoint {str(json_path)!r}", meta.get("config"), expected_config
            ))

    source = st_path
    problem = _verify(st_path, size, sha)
    if problem is not None:
        # A save interrupted after replacing the tensor file keeps the committed one here.
        prev = _prev_path(directory, name, sha)
        if prev.is_file() and _verify(prev, size, sha) is None:
            source = prev
        else:
            raise ResumeStateError(
                f"checkpoint tensor file {str(st_path)!r} {problem}: the run was probably "
                f"interrupted while saving or the disk is damaged; {START_OVER}."
            )
    try:
        tensors = load_file(str(source))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ResumeStateError(
            f"checkpoint tensor file {str(source)!r} cannot be read ({exc}); {START_OVER}."
        ) from None
    return tensors, meta
