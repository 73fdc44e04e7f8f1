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
import math
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

from .errors import ConfigError, ResumeStateError

__all__ = [
    "FORMAT_VERSION",
    "RUN_FORMAT_VERSION",
    "canonical_config",
    "config_fingerprint",
    "config_diff",
    "save_state",
    "load_state",
    "RunFolder",
]

FORMAT_VERSION = 1
"""Version of the checkpoint JSON written by :func:`save_state`."""
RUN_FORMAT_VERSION = 1
"""Version of ``progress.json`` written by :class:`RunFolder`."""

_STATE_KIND = "everanimate-state"
_RUN_KIND = "everanimate-run"
_START_OVER = "delete the run folder or pick another one to start over"
_HASH_BLOCK = 1 << 20


# --------------------------------------------------------------------------------------
# Config fingerprints
# --------------------------------------------------------------------------------------


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


def _write_text_atomic(path: Path, text: str) -> None:
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
    _write_text_atomic(json_path, json.dumps(record, indent=1, sort_keys=True))

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
            f"{_START_OVER}."
        )
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError("top level is not an object")
    except (OSError, ValueError) as exc:
        raise ResumeStateError(
            f"checkpoint record {str(json_path)!r} is not valid JSON (corrupted: {exc}); "
            f"{_START_OVER}."
        ) from None
    if record.get("format") != _STATE_KIND:
        raise ResumeStateError(
            f"{str(json_path)!r} is not an EverAnimate checkpoint record; {_START_OVER}."
        )
    version = record.get("format_version")
    if version != FORMAT_VERSION:
        raise ResumeStateError(
            f"checkpoint {str(json_path)!r} has format version {version!r}, but this "
            f"EverAnimate reads version {FORMAT_VERSION}. Resume it with the EverAnimate "
            f"version that wrote it, or {_START_OVER}."
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
            f"{_START_OVER}."
        ) from None

    if expected_config is not None and expected_fingerprint is None:
        expected_fingerprint = config_fingerprint(expected_config)
    if expected_fingerprint is not None:
        stored = meta.get("fingerprint")
        if stored is None:
            raise ResumeStateError(
                f"checkpoint {str(json_path)!r} has no config fingerprint, so it cannot be "
                f"checked against the current settings; {_START_OVER}."
            )
        if stored != expected_fingerprint:
            raise ResumeStateError(_mismatch_message(
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
                f"interrupted while saving or the disk is damaged; {_START_OVER}."
            )
    try:
        tensors = load_file(str(source))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ResumeStateError(
            f"checkpoint tensor file {str(source)!r} cannot be read ({exc}); {_START_OVER}."
        ) from None
    return tensors, meta


def _mismatch_message(
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


# --------------------------------------------------------------------------------------
# Run folders
# --------------------------------------------------------------------------------------


class RunFolder:
    """Bookkeeping for a run directory holding one checkpoint per finished chunk.

    Layout: ``chunk_00000.safetensors``/``.json``, ... and ``progress.json`` (format
    version, fingerprint, config, sorted list of finished chunks). A chunk counts as
    finished only once ``progress.json`` lists it, and that update happens after the
    chunk's checkpoint is fully written; a crash in between only means that chunk is
    recomputed. All state lives on disk (nothing that matters is cached in the object),
    so separate processes can use the same folder one after another, e.g. a ComfyUI
    restart resuming a run.
    """

    PROGRESS = "progress.json"

    def __init__(self, path: str | os.PathLike[str], config: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.config = canonical_config(config)
        self._fingerprint = config_fingerprint(self.config)

    @property
    def fingerprint(self) -> str:
        """:func:`config_fingerprint` of this run's config."""
        return self._fingerprint

    @property
    def progress_path(self) -> Path:
        """Path of ``progress.json``."""
        return self.path / self.PROGRESS

    @staticmethod
    def chunk_name(index: int) -> str:
        """Checkpoint name of chunk ``index`` (``chunk_00042``)."""
        if index < 0:
            raise ConfigError(f"chunk index must be >= 0, got {index}.")
        return f"chunk_{int(index):05d}"

    def _read_progress(self) -> dict[str, Any] | None:
        """Parsed and validated ``progress.json``, or None if it does not exist."""
        p = self.progress_path
        if not p.is_file():
            return None
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("top level is not an object")
        except (OSError, ValueError) as exc:
            raise ResumeStateError(
                f"{str(p)!r} is not valid JSON (corrupted: {exc}); {_START_OVER}."
            ) from None
        if data.get("format") != _RUN_KIND:
            raise ResumeStateError(
                f"{str(p)!r} is not an EverAnimate run progress file; {_START_OVER}."
            )
        if data.get("format_version") != RUN_FORMAT_VERSION:
            raise ResumeStateError(
                f"{str(p)!r} has format version {data.get('format_version')!r}, but this "
                f"EverAnimate reads version {RUN_FORMAT_VERSION}. Resume it with the "
                f"EverAnimate version that wrote it, or {_START_OVER}."
            )
        chunks = data.get("finished_chunks")
        if not isinstance(data.get("fingerprint"), str) or not isinstance(chunks, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in chunks
        ):
            raise ResumeStateError(f"{str(p)!r} is incomplete (corrupted); {_START_OVER}.")
        return data

    def _write_progress(self, finished: list[int]) -> None:
        data = {
            "format": _RUN_KIND,
            "format_version": RUN_FORMAT_VERSION,
            "fingerprint": self._fingerprint,
            "config": self.config,
            "finished_chunks": sorted(set(finished)),
        }
        _write_text_atomic(self.progress_path, json.dumps(data, indent=1, sort_keys=True))

    def check_compatible(self) -> None:
        """Raise ResumeStateError if the folder was created with another config.

        The message names the differing keys. A folder without ``progress.json`` (not
        created yet) is compatible.
        """
        data = self._read_progress()
        if data is not None:
            self._raise_if_other_config(data)

    def _raise_if_other_config(self, data: dict[str, Any]) -> None:
        if data["fingerprint"] != self._fingerprint:
            raise ResumeStateError(_mismatch_message(
                f"run folder {str(self.path)!r}", data.get("config"), self.config
            ))

    def open_or_create(self) -> "RunFolder":
        """Create the folder and an empty ``progress.json`` if absent; else validate it.

        Returns self, so ``run = RunFolder(path, cfg).open_or_create()`` works.
        """
        self.path.mkdir(parents=True, exist_ok=True)
        if self._read_progress() is None:
            self._write_progress([])
        else:
            self.check_compatible()
        return self

    def finished_chunks(self) -> list[int]:
        """Sorted indices of the chunks recorded as finished ([] for a new folder)."""
        data = self._read_progress()
        if data is None:
            return []
        self._raise_if_other_config(data)
        return sorted(set(data["finished_chunks"]))

    def last_finished(self) -> int | None:
        """Highest k such that chunks 0..k are all finished, or None if chunk 0 is not.

        This is where a sequential run can resume from (at chunk k+1): a chunk finished
        after a gap is not counted, because the chunks after the gap depend on it.
        """
        done = set(self.finished_chunks())
        k = -1
        while k + 1 in done:
            k += 1
        return k if k >= 0 else None

    def save_chunk(
        self,
        index: int,
        tensors: Mapping[str, torch.Tensor],
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        """Checkpoint chunk ``index`` and then record it as finished in ``progress.json``.

        ``meta`` gets ``fingerprint``, ``config`` and ``chunk_index`` added. Creates the
        folder if needed and refuses (ResumeStateError) to write into a folder made with
        another config.
        """
        name = self.chunk_name(index)
        self.open_or_create()
        full_meta = dict(meta or {})
        full_meta.update(fingerprint=self._fingerprint, config=self.config, chunk_index=int(index))
        save_state(self.path, name, tensors, full_meta)
        data = self._read_progress()
        finished = list(data["finished_chunks"]) if data else []
        finished.append(int(index))
        self._write_progress(finished)

    def load_chunk(self, index: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Load chunk ``index`` (verified, and checked against this run's config)."""
        if index not in self.finished_chunks():
            last = self.last_finished()
            raise ResumeStateError(
                f"chunk {index} is not recorded as finished in {str(self.progress_path)!r}; "
                f"resume from chunk {0 if last is None else last + 1} instead."
            )
        return load_state(self.path, self.chunk_name(index), expected_config=self.config)
